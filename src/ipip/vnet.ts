/**
 * The struct virtio_net_hdr a TUN opened with IFF_VNET_HDR puts in front of every packet, both
 * ways (include/uapi/linux/virtio_net.h; the legacy header, in host byte order: little-endian on
 * the hosts ipipd runs on), as a view over bytes (STYLE rule 4):
 *
 *     0       1       2               4               6               8               10
 *    +-------+-------+---------------+---------------+---------------+---------------+
 *    | flags |gso_typ|    hdr_len    |   gso_size    |  csum_start   |  csum_offset  |
 *    +-------+-------+---------------+---------------+---------------+---------------+
 *
 *   flags       NEEDS_CSUM (1): the checksum at csum_start + csum_offset holds only the
 *               pseudo-header sum; the rest, from csum_start to the end, is still to be added.
 *   gso_type    NONE (0), or TCPV4 (1) for a TCP/IPv4 super-packet to be cut into segments of
 *               gso_size payload bytes (the MSS); ECN (0x80) may be or-ed in. UDP_L4 (5, Linux
 *               6.2+) for a UDP super-packet cut into datagrams of gso_size payload bytes.
 *   hdr_len     IP + TCP (or UDP) header length (not trusted on read: it is recomputed).
 *
 * Flow, in the order of this file: the offsets and field values; the getters, field by field;
 * `writeVnetHdr` (a whole header) and `writeVnetHdrNone` (the zero header of a plain packet).
 * What the header asks of a packet read from the TUN is done in segment.ts; the headers of the
 * packets written to it are made in coalesce.ts.
 *
 * Accessors take `(buf, h)`, `h` the header's first byte, and are unchecked: the 10 bytes must
 * be there (the TUN always writes them). Pure: no I/O, no allocation, no throws.
 */
import type { Buffer } from 'node:buffer';

/** Bytes of the header (without the mergeable-buffers `num_buffers`). */
export const VNET_HDR_LEN = 10;
export const VNET_OFF_FLAGS = 0;
export const VNET_OFF_GSO_TYPE = 1;
export const VNET_OFF_HDR_LEN = 2;
export const VNET_OFF_GSO_SIZE = 4;
export const VNET_OFF_CSUM_START = 6;
export const VNET_OFF_CSUM_OFFSET = 8;

/** flags: the checksum from csum_start on is to be completed (CHECKSUM_PARTIAL). */
export const VNET_F_NEEDS_CSUM = 1;
/** flags: the checksum was verified (CHECKSUM_UNNECESSARY). */
export const VNET_F_DATA_VALID = 2;
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_UDP = 3;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_UDP_L4 = 5;
/** gso_type bit: the TCP super-packet carries CWR, to be set on the first segment only. */
export const VNET_GSO_ECN = 0x80;

/** The little-endian 16-bit value at `buf[o]` (host byte order on the hosts ipipd runs on). */
function le16(buf: Buffer, o: number): number {
  return buf[o] | (buf[o + 1] << 8);
}

function putLe16(buf: Buffer, o: number, v: number): void {
  buf[o] = v & 0xff;
  buf[o + 1] = (v >> 8) & 0xff;
}

/** flags (8 bits) of the header at `h`. */
export function getVnetFlags(buf: Buffer, h: number): number {
  return buf[h + VNET_OFF_FLAGS];
}
/** gso_type (8 bits). */
export function getVnetGsoType(buf: Buffer, h: number): number {
  return buf[h + VNET_OFF_GSO_TYPE];
}
/** hdr_len (16 bits), bytes. */
export function getVnetHdrLen(buf: Buffer, h: number): number {
  return le16(buf, h + VNET_OFF_HDR_LEN);
}
/** gso_size (16 bits): payload bytes per segment. */
export function getVnetGsoSize(buf: Buffer, h: number): number {
  return le16(buf, h + VNET_OFF_GSO_SIZE);
}
/** csum_start (16 bits): offset from the packet's first byte where checksumming starts. */
export function getVnetCsumStart(buf: Buffer, h: number): number {
  return le16(buf, h + VNET_OFF_CSUM_START);
}
/** csum_offset (16 bits): offset of the checksum field from csum_start. */
export function getVnetCsumOffset(buf: Buffer, h: number): number {
  return le16(buf, h + VNET_OFF_CSUM_OFFSET);
}

/** Write a whole header at `h` (10 bytes). */
export function writeVnetHdr(
  buf: Buffer,
  h: number,
  flags: number,
  gsoType: number,
  hdrLen: number,
  gsoSize: number,
  csumStart: number,
  csumOffset: number,
): void {
  buf[h + VNET_OFF_FLAGS] = flags;
  buf[h + VNET_OFF_GSO_TYPE] = gsoType;
  putLe16(buf, h + VNET_OFF_HDR_LEN, hdrLen);
  putLe16(buf, h + VNET_OFF_GSO_SIZE, gsoSize);
  putLe16(buf, h + VNET_OFF_CSUM_START, csumStart);
  putLe16(buf, h + VNET_OFF_CSUM_OFFSET, csumOffset);
}

/** Write the all-zero header of a plain packet (no GSO, checksums complete) at `h`. */
export function writeVnetHdrNone(buf: Buffer, h: number): void {
  for (let i = 0; i < VNET_HDR_LEN; i++) buf[h + i] = 0;
}
