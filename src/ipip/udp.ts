/**
 * The UDP header (RFC 768) as a view over bytes, for the offload path (segment.ts cuts UDP_L4
 * super-packets into datagrams, coalesce.ts merges datagrams into them):
 *
 *     0      7 8     15 16    23 24    31
 *    +--------+--------+--------+--------+
 *    |     Source      |   Destination   |
 *    |      Port       |      Port       |
 *    +--------+--------+--------+--------+
 *    |                 |                 |
 *    |     Length      |    Checksum     |
 *    +--------+--------+--------+--------+
 *    |
 *    |          data octets ...
 *    +---------------- ...
 *
 * Flow: offsets and the protocol number; then the Length and Checksum accessors. The checksum
 * covers the pseudo-header (tcp.ts `tcpPseudoSum`, the same for UDP), the header and the data;
 * a computed 0 is sent as 0xffff, since a 0 field means "no checksum" (RFC 768 "Checksum").
 *
 * Accessors take `(buf, u)`, `u` the first byte of the UDP header, and are unchecked: the 8
 * bytes must be there. Pure: no I/O, no allocation, no throws.
 */
import type { Buffer } from 'node:buffer';

/** IP protocol number of UDP. */
export const IPPROTO_UDP = 17;
/** The UDP header (RFC 768): ports, Length (header + data), Checksum; 8 bytes. */
export const UDP_HEADER = 8;
export const UDP_OFF_LENGTH = 4;
/** Offset of the UDP checksum field (`csum_offset` for UDP). */
export const UDP_OFF_CHECKSUM = 6;

/** Length (16 bits): bytes of the UDP header and data. */
export function getUdpLength(buf: Buffer, u: number): number {
  return (buf[u + UDP_OFF_LENGTH] << 8) | buf[u + UDP_OFF_LENGTH + 1];
}

/** Length (16 bits), in bytes. */
export function setUdpLength(buf: Buffer, u: number, length: number): void {
  buf[u + UDP_OFF_LENGTH] = (length >> 8) & 0xff;
  buf[u + UDP_OFF_LENGTH + 1] = length & 0xff;
}

/** Checksum (16 bits); 0 means the sender computed none. */
export function getUdpChecksum(buf: Buffer, u: number): number {
  return (buf[u + UDP_OFF_CHECKSUM] << 8) | buf[u + UDP_OFF_CHECKSUM + 1];
}

/** Checksum (16 bits). */
export function setUdpChecksum(buf: Buffer, u: number, checksum: number): void {
  buf[u + UDP_OFF_CHECKSUM] = (checksum >> 8) & 0xff;
  buf[u + UDP_OFF_CHECKSUM + 1] = checksum & 0xff;
}
