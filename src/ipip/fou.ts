/**
 * FOU: IP-in-IP over UDP, wire-compatible with Linux's `ip fou add port P ipproto 4` and an
 * ipip device with `encap fou encap-sport auto encap-dport P` (net/ipv4/fou_core.c):
 *
 *    +----------------------+----------------------+--------------------------------+
 *    | outer IPv4 header    | UDP header (RFC 768) | inner IPv4 packet, unchanged   |
 *    | protocol 17, 20 bytes| dst port P, 8 bytes  | (the whole UDP payload)        |
 *    +----------------------+----------------------+--------------------------------+
 *
 * There is no FOU header of its own: the receiving kernel knows from the port that the payload
 * is protocol 4. The outer IPv4 and UDP headers are the kernel's (ipipd sends on a UDP socket,
 * so that `UDP_SEGMENT` and `UDP_GRO` work); what ipipd decides is the payload, the destination
 * and the source port. The source port carries the inner flow's entropy for ECMP and RSS, as the
 * kernel's `encap-sport auto` (udp_flow_src_port) does: `fouFlowHash` hashes the inner 5-tuple
 * (addresses, protocol, and the ports of an unfragmented TCP/UDP/SCTP/DCCP packet), and
 * `fouSourceIndex` picks one of the daemon's source-port sockets by it.
 *
 * Pure: no I/O, no allocation, no throws. Accessors are unchecked: callers pass a packet that
 * `Tunnel.encapsulate` accepted (a valid inner IPv4 header).
 */
import type { Buffer } from 'node:buffer';
import { IPV4_MIN_HEADER } from './ipv4.js';
import { UDP_HEADER } from './udp.js';

/** Bytes FOU adds before the inner packet beyond plain IPIP's 20: the UDP header. */
export const FOU_OVERHEAD = UDP_HEADER;
/** Total bytes FOU puts around an inner packet: outer IPv4 (20) + UDP (8). */
export const FOU_ENCAP_LEN = IPV4_MIN_HEADER + UDP_HEADER;
/** Linux's conventional FOU port (`ip fou add port 5555 ipproto 4`), the default of `fou.port`. */
export const FOU_DEFAULT_PORT = 5555;

/** Inner protocols whose first 4 payload bytes are source and destination port. */
function hasPorts(proto: number): boolean {
  return proto === 6 || proto === 17 || proto === 132 || proto === 33 || proto === 136;
}

/** One round of a multiply-xorshift mix (murmur3's fmix32), on int32s. */
function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * A 32-bit hash (int32) of the inner packet's flow at `buf[off]`: its addresses, protocol and,
 * for TCP/UDP/SCTP/DCCP/UDP-Lite that is not a fragment, its ports. Every packet of a flow (and
 * every segment of a super-packet) hashes alike, so a flow keeps one source port and is not
 * reordered across ECMP paths; fragments of a flow hash as its addresses and protocol.
 */
export function fouFlowHash(buf: Buffer, off: number): number {
  const proto = buf[off + 9];
  let h = mix(buf.readInt32BE(off + 12) ^ 0x6a09e667);
  h = mix(h ^ buf.readInt32BE(off + 16));
  h = mix(h ^ proto);
  // MF or a fragment offset: a fragment, whose ports (if any) only the first one holds.
  const frag = ((buf[off + 6] & 0x3f) << 8) | buf[off + 7];
  if (hasPorts(proto) && frag === 0) {
    const ihl = (buf[off] & 0x0f) << 2;
    h = mix(h ^ buf.readInt32BE(off + ihl));
  }
  return h;
}

/** Which of `count` source-port sockets the flow of hash `h` (fouFlowHash) uses: 0..count-1. */
export function fouSourceIndex(h: number, count: number): number {
  // The high bits, as the kernel scales its hash into the port range (udp_flow_src_port).
  return Math.floor(((h >>> 0) * count) / 0x100000000);
}
