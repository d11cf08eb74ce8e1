/**
 * Segmentation offloads: what the virtio_net_hdr (vnet.ts) in front of a packet read from the
 * TUN asks for, done in userspace before encapsulation, as the kernel's GSO would (issue 4).
 *
 * Flow, in the order of this file:
 *   1. `completeChecksum`: a plain packet with NEEDS_CSUM (what the kernel calls
 *      CHECKSUM_PARTIAL) gets its TCP/UDP checksum finished, as skb_checksum_help does;
 *   2. the checks every super-packet passes (`checkGsoIPv4`) and the copy of segment i with its
 *      own IPv4 fields (`copySegmentIPv4`), shared by TCP and UDP;
 *   3. USO: `checkUdp4Gso` validates a UDP_L4 super-packet once, `writeUdp4Segment` writes its
 *      datagram i, as __udp_gso_segment does;
 *   4. TSO: `checkTcp4Gso` validates a TCPV4 super-packet once, `tcp4SegmentCount` counts its
 *      segments, `writeTcp4Segment` writes its segment i into a caller's slot (headers copied,
 *      IPv4 total length, ID + i and header checksum, sequence number advanced, FIN/PSH only on
 *      the last segment, CWR only on the first, full TCP checksum), as tcp_gso_segment does.
 *      Each segment then goes through the unchanged `Tunnel.encapsulate`; `writeTcp4SegmentHead`
 *      writes the same segment's headers only, its payload left where it is (`tcp4SegmentPayload`)
 *      for a send in two pieces;
 *   5. `groSegmentSize`: the segment size to cut again a decapsulated packet that the
 *      underlay's GRO merged, for a TUN without offloads (with `writeTcp4Segment`).
 *
 * Pure: no I/O, no throws, no allocation per packet.
 */
import type { Buffer } from 'node:buffer';
import { foldSum, onesSum, onesSum32 } from './checksum.js';
import {
  IPV4_MIN_HEADER,
  IPV4_OK,
  checkIPv4,
  computeHeaderChecksum,
  getHeaderLength,
  getId,
  getProtocol,
  getTotalLength,
  isFragment,
  isIPv4NoOptions,
  setChecksum,
  setId,
  setTotalLength,
} from './ipv4.js';
import {
  IPPROTO_TCP,
  TCP_CSUM_OFFSET,
  TCP_CWR,
  TCP_FIN,
  TCP_MIN_HEADER,
  TCP_PSH,
  getTcpFlags,
  getTcpHeaderLength,
  getTcpSeq,
  tcpPseudoSum,
  setTcpChecksum,
  setTcpFlags,
  setTcpSeq,
} from './tcp.js';
import { IPPROTO_UDP, UDP_HEADER, UDP_OFF_CHECKSUM, setUdpChecksum, setUdpLength } from './udp.js';
import {
  VNET_F_NEEDS_CSUM,
  VNET_GSO_ECN,
  VNET_GSO_TCPV4,
  VNET_GSO_UDP_L4,
  getVnetCsumOffset,
  getVnetCsumStart,
  getVnetFlags,
  getVnetGsoSize,
  getVnetGsoType,
} from './vnet.js';

// ---- 1. Partial checksums -------------------------------------------------------------------

/**
 * NEEDS_CSUM on a plain packet `buf[off, off+len)`: the 16-bit field at `csumStart + csumOffset`
 * holds the pseudo-header sum; add every byte from `csumStart` to the end to it and store the
 * complement (as Linux's skb_checksum_help; a result of 0 is sent as 0xffff, which means the
 * same in one's complement and is what UDP requires, RFC 768). Returns false, touching nothing,
 * if the field is not inside the packet.
 */
export function completeChecksum(buf: Buffer, off: number, len: number, csumStart: number, csumOffset: number): boolean {
  const at = csumStart + csumOffset;
  if (csumStart < 0 || csumOffset < 0 || at + 2 > len) return false;
  const sum = onesSum32(buf, off + csumStart, len - csumStart, 0);
  const check = ~sum & 0xffff;
  const v = check === 0 ? 0xffff : check;
  buf[off + at] = v >> 8;
  buf[off + at + 1] = v & 0xff;
  return true;
}

// ---- 2. What TCP and UDP super-packets share --------------------------------------------------

/**
 * What every super-packet read from the TUN must be, whatever its transport (header at `h`,
 * packet `buf[off, off+len)`): NEEDS_CSUM and gso_size > 0; an IPv4 header `checkIPv4` accepts
 * (its checksum not verified: the kernel just wrote it) with Total Length = len, protocol
 * `protocol`, not a fragment (MF clear, offset 0); csum_start = the IP header length and
 * csum_offset = `csumOffset`. Returns the IP header length, or 0.
 */
function checkGsoIPv4(buf: Buffer, h: number, off: number, len: number, protocol: number, csumOffset: number): number {
  if ((getVnetFlags(buf, h) & VNET_F_NEEDS_CSUM) === 0) return 0;
  if (getVnetGsoSize(buf, h) === 0) return 0;
  if (checkIPv4(buf, off, len, false) !== IPV4_OK || getTotalLength(buf, off) !== len) return 0;
  if (getProtocol(buf, off) !== protocol || isFragment(buf, off)) return 0;
  const ipHl = getHeaderLength(buf, off);
  if (getVnetCsumStart(buf, h) !== ipHl || getVnetCsumOffset(buf, h) !== csumOffset) return 0;
  return ipHl;
}

/**
 * Segment `i` of a super-packet `buf[off, off+len)` with `hdrLen` bytes of headers: the headers
 * and the i-th `gsoSize` bytes of payload (fewer for the last) copied to `out[o ...]`, then the
 * IPv4 fields every segment has its own of, as inet_gso_segment sets them: Total Length, ID =
 * the first ID + i (mod 2^16), header checksum. Returns the segment's length.
 */
function copySegmentIPv4(buf: Buffer, off: number, len: number, hdrLen: number, gsoSize: number, i: number, out: Buffer, o: number): number {
  const start = off + hdrLen + i * gsoSize;
  const left = off + len - start;
  const pay = left < gsoSize ? left : gsoSize;
  if (out === buf) {
    // copyWithin: native memmove, no view allocated per call (Buffer.copy makes one).
    buf.copyWithin(o, off, off + hdrLen);
    buf.copyWithin(o + hdrLen, start, start + pay);
  } else {
    buf.copy(out, o, off, off + hdrLen);
    buf.copy(out, o + hdrLen, start, start + pay);
  }
  const total = hdrLen + pay;
  setTotalLength(out, o, total);
  setId(out, o, getId(buf, off) + i);
  setChecksum(out, o, computeHeaderChecksum(out, o));
  return total;
}

// ---- 3. USO: cutting a UDP super-packet into datagrams ------------------------------------------

/**
 * The one validation of a UDP super-packet (gso_type UDP_L4, Linux 6.2+; what a socket with
 * UDP_SEGMENT sends): NEEDS_CSUM, gso_size > 0; IPv4 with IHL >= 5, Total Length = len,
 * protocol UDP, not a fragment; csum_start = IP header length and csum_offset = 6; at least one
 * payload byte after the 8-byte UDP header. Returns the header length (IP + UDP) every datagram
 * repeats, or 0.
 */
export function checkUdp4Gso(buf: Buffer, h: number, off: number, len: number): number {
  if (len < IPV4_MIN_HEADER + UDP_HEADER + 1) return 0;
  if (getVnetGsoType(buf, h) !== VNET_GSO_UDP_L4) return 0;
  const ipHl = checkGsoIPv4(buf, h, off, len, IPPROTO_UDP, UDP_OFF_CHECKSUM);
  if (ipHl === 0) return 0;
  const hdrLen = ipHl + UDP_HEADER;
  return hdrLen < len ? hdrLen : 0;
}

/**
 * Write datagram `i` (0-based) of the UDP super-packet `buf[off, off+len)` (accepted by
 * `checkUdp4Gso`, which returned `hdrLen`) at `out[o ...]` and return its length: hdrLen +
 * min(gsoSize, what is left). As Linux's __udp_gso_segment: headers copied, IPv4 Total Length
 * the datagram's, ID the first ID + i, header checksum recomputed; UDP Length the datagram's and
 * the checksum computed in full (0 sent as 0xffff, RFC 768). Same buffer rules as
 * `writeTcp4Segment`.
 */
export function writeUdp4Segment(buf: Buffer, off: number, len: number, hdrLen: number, gsoSize: number, i: number, out: Buffer, o: number): number {
  const ipHl = hdrLen - UDP_HEADER;
  const total = copySegmentIPv4(buf, off, len, hdrLen, gsoSize, i, out, o);
  const u = o + ipHl;
  const udpLen = total - ipHl;
  setUdpLength(out, u, udpLen);
  setUdpChecksum(out, u, 0);
  const c = ~onesSum32(out, u, udpLen, foldSum(tcpPseudoSum(out, o, IPPROTO_UDP, udpLen))) & 0xffff;
  setUdpChecksum(out, u, c === 0 ? 0xffff : c);
  return total;
}

// ---- 4. TSO: cutting a TCP super-packet into segments -------------------------------------------

/**
 * The one validation of a super-packet read from the TUN: header at `h`, packet at
 * `buf[off, off+len)`. Checks: gso_type TCPV4 (with or without ECN), NEEDS_CSUM, gso_size > 0;
 * IPv4 with IHL >= 5, Total Length = len, protocol TCP, not a fragment (MF clear, offset 0);
 * csum_start = IP header length and csum_offset = 16; TCP data offset >= 5 and at least one
 * payload byte after the headers. Returns the header length (IP + TCP, options included) that
 * every segment repeats, or 0 if any check fails. Accessors and `writeTcp4Segment` are unchecked
 * after it.
 */
export function checkTcp4Gso(buf: Buffer, h: number, off: number, len: number): number {
  if (len < IPV4_MIN_HEADER + TCP_MIN_HEADER + 1) return 0;
  if ((getVnetGsoType(buf, h) & ~VNET_GSO_ECN) !== VNET_GSO_TCPV4) return 0;
  const ipHl = checkGsoIPv4(buf, h, off, len, IPPROTO_TCP, TCP_CSUM_OFFSET);
  if (ipHl === 0) return 0;
  const tcpHl = getTcpHeaderLength(buf, off + ipHl);
  if (tcpHl < TCP_MIN_HEADER) return 0;
  const hdrLen = ipHl + tcpHl;
  return hdrLen < len ? hdrLen : 0;
}

/** Number of segments of a super-packet of `len` bytes: ceil((len - hdrLen) / gsoSize). */
export function tcp4SegmentCount(len: number, hdrLen: number, gsoSize: number): number {
  return Math.ceil((len - hdrLen) / gsoSize);
}

/**
 * Write segment `i` (0-based) of the super-packet `buf[off, off+len)` (accepted by
 * `checkTcp4Gso`, which returned `hdrLen`) at `out[o ...]`, and return its length: hdrLen +
 * min(gsoSize, what is left). Per segment, as Linux's inet_gso_segment and tcp_gso_segment:
 * the IP and TCP headers (options included) are copied; IPv4 Total Length is the segment's, the
 * ID is the first ID + i (mod 2^16), the header checksum is recomputed; the TCP sequence number
 * is advanced by i * gsoSize (mod 2^32); FIN and PSH stay only on the last segment and CWR only
 * on the first; the TCP checksum is computed in full over the pseudo-header (RFC 9293 §3.1),
 * header and payload. The super-packet is not modified. `out` may be `buf`, with the target
 * range outside the super-packet; the caller guarantees the room (unchecked).
 */
export function writeTcp4Segment(buf: Buffer, off: number, len: number, hdrLen: number, gsoSize: number, i: number, out: Buffer, o: number): number {
  const total = copySegmentIPv4(buf, off, len, hdrLen, gsoSize, i, out, o);
  setTcpSegmentFields(out, o, getHeaderLength(buf, off), hdrLen, total, i, gsoSize, i * gsoSize + total === len, out, o + hdrLen);
  return total;
}

/**
 * `writeTcp4Segment` without the payload: segment i's headers (`hdrLen` bytes) at `out[o ...]`,
 * their fields and the TCP checksum as there, the checksum summed over the payload where it is
 * in the super-packet, `buf[off + hdrLen + i * gsoSize ...]` (returned by `tcp4SegmentPayload`),
 * so that the segment can be sent as two pieces without copying its payload. Returns the
 * segment's length (headers and payload). Same rules as `writeTcp4Segment`.
 */
export function writeTcp4SegmentHead(buf: Buffer, off: number, len: number, hdrLen: number, gsoSize: number, i: number, out: Buffer, o: number): number {
  const start = tcp4SegmentPayload(off, hdrLen, gsoSize, i);
  const left = off + len - start;
  const total = hdrLen + (left < gsoSize ? left : gsoSize);
  if (out === buf) buf.copyWithin(o, off, off + hdrLen);
  else buf.copy(out, o, off, off + hdrLen);
  setTotalLength(out, o, total);
  setId(out, o, getId(buf, off) + i);
  setChecksum(out, o, computeHeaderChecksum(out, o));
  setTcpSegmentFields(out, o, getHeaderLength(buf, off), hdrLen, total, i, gsoSize, left <= gsoSize, buf, start);
  return total;
}

/** Where the payload of segment i of a super-packet at `off` (`hdrLen` bytes of headers) starts. */
export function tcp4SegmentPayload(off: number, hdrLen: number, gsoSize: number, i: number): number {
  return off + hdrLen + i * gsoSize;
}

/**
 * TCP fields of segment i, its headers at `out[o, o+hdrLen)` (IP header `ipHl` bytes), `total`
 * bytes long, its payload at `pay[p ...]`: Sequence Number advanced, FIN/PSH only if `last`, CWR
 * only on the first, the checksum over the pseudo-header, the header and the payload (RFC 9293
 * §3.1; the TCP header is a whole number of 32-bit words, so the two sums add up).
 */
function setTcpSegmentFields(out: Buffer, o: number, ipHl: number, hdrLen: number, total: number, i: number, gsoSize: number, last: boolean, pay: Buffer, p: number): void {
  const t = o + ipHl;
  setTcpSeq(out, t, (getTcpSeq(out, t) + i * gsoSize) | 0);
  let flags = getTcpFlags(out, t);
  if (!last) flags &= ~(TCP_FIN | TCP_PSH);
  if (i > 0) flags &= ~TCP_CWR;
  setTcpFlags(out, t, flags);
  setTcpChecksum(out, t, 0);
  const tcpLen = total - ipHl;
  const head = onesSum(out, t, hdrLen - ipHl, foldSum(tcpPseudoSum(out, o, IPPROTO_TCP, tcpLen)));
  setTcpChecksum(out, t, ~onesSum32(pay, p, total - hdrLen, head) & 0xffff);
}

// ---- 5. Cutting again what the underlay's GRO merged ---------------------------------------------

/**
 * A decapsulated packet `buf[off, off+len)` larger than the TUN's MTU `tunMtu`: if it is what
 * the kernel's GRO makes of TCP/IPv4 segments (Linux merges IPIP-encapsulated TCP on the
 * underlay device before the raw socket sees it: IPv4 without options, as inet_gro_receive
 * requires, TCP, not a fragment, some payload), the segment size to cut it into again for the
 * TUN: `tunMtu` less its IP and TCP headers (the MSS the kernel merged by is not passed to a raw
 * socket). Else 0.
 */
export function groSegmentSize(buf: Buffer, off: number, len: number, tunMtu: number): number {
  if (!isIPv4NoOptions(buf, off) || getProtocol(buf, off) !== IPPROTO_TCP) return 0;
  if (isFragment(buf, off)) return 0;
  if (len < IPV4_MIN_HEADER + TCP_MIN_HEADER) return 0;
  const tcpHl = getTcpHeaderLength(buf, off + IPV4_MIN_HEADER);
  const hdrLen = IPV4_MIN_HEADER + tcpHl;
  if (tcpHl < TCP_MIN_HEADER || hdrLen >= len) return 0;
  const mss = tunMtu - hdrLen;
  return mss > 0 ? mss : 0;
}
