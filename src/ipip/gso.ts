/**
 * Offloads across the TUN device: fewer, larger packets cross the kernel boundary (issue 4).
 *
 * A TUN opened with IFF_VNET_HDR puts a struct virtio_net_hdr in front of every packet, both
 * ways (include/uapi/linux/virtio_net.h; the legacy header, in host byte order: little-endian
 * on the hosts ipipd runs on):
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
 * Flow, in the order of this file:
 *   1. the header's offsets, constants and accessors;
 *   2. `completeChecksum`: a plain packet with NEEDS_CSUM (what the kernel calls
 *      CHECKSUM_PARTIAL) gets its TCP/UDP checksum finished, as skb_checksum_help does;
 *   3. TSO, TUN -> underlay: `checkTcp4Gso` validates a TCPV4 super-packet once,
 *      `writeTcp4Segment` writes its segment i into a caller's slot (headers copied, IPv4 total
 *      length, ID + i and header checksum, sequence number advanced, FIN/PSH only on the last
 *      segment, CWR only on the first, full TCP checksum), as the kernel's tcp_gso_segment does.
 *      Each segment then goes through the unchanged `Tunnel.encapsulate`;
 *   4. GRO, underlay -> TUN: `Coalescer` merges consecutive segments of one TCP/IPv4 flow in a
 *      batch of decapsulated packets into super-packets with a TCPV4 header, and (when the
 *      kernel takes UDP_L4) consecutive same-sized datagrams of one UDP/IPv4 flow into UDP_L4
 *      super-packets, as Linux's UDP GRO does; it puts a zero header in front of every packet it
 *      does not merge (in the 10 bytes before it, which hold the outer header's addresses, no
 *      longer needed after decapsulation: no copy).
 *
 * Pure: no I/O, no throws, no allocation per packet (the coalescer's arrays are allocated once).
 */
import type { Buffer } from 'node:buffer';
import { foldSum, onesSum32 } from './checksum.js';
import {
  FLAG_DF,
  FLAG_MF,
  FRAG_OFFSET_MASK,
  IPV4_MAX_TOTAL_LENGTH,
  IPV4_MIN_HEADER,
  IPV4_VERSION_IHL_NO_OPTIONS,
  OFF_FLAGS_FRAG,
  OFF_PROTOCOL,
  OFF_TOS,
  OFF_TTL,
  computeHeaderChecksum,
  getId,
  getTotalLength,
  setChecksum,
  setId,
  setTotalLength,
} from './ipv4.js';
import {
  IPPROTO_TCP,
  TCP_ACK,
  TCP_CWR,
  TCP_FIN,
  TCP_MIN_HEADER,
  TCP_OFF_ACK,
  TCP_OFF_CHECKSUM,
  TCP_OFF_DATA_OFFSET,
  TCP_OFF_FLAGS,
  TCP_OFF_SEQ,
  TCP_OFF_WINDOW,
  TCP_PSH,
  TCP_TIMESTAMP_HEADER,
  tcpPseudoSum,
} from './tcp.js';

// ---- 1. struct virtio_net_hdr -----------------------------------------------------------------

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

/** Offset of the TCP checksum field from the start of the TCP header (`csum_offset` for TCP). */
export const TCP_CSUM_OFFSET = TCP_OFF_CHECKSUM;

/** IP protocol number of UDP. */
export const IPPROTO_UDP = 17;
/** The UDP header (RFC 768): ports, Length (header + data), Checksum; 8 bytes. */
export const UDP_HEADER = 8;
export const UDP_OFF_LENGTH = 4;
/** Offset of the UDP checksum field (`csum_offset` for UDP). */
export const UDP_OFF_CHECKSUM = 6;
/** Most datagrams in one UDP super-packet: Linux's UDP_GRO_CNT_MAX. */
export const UDP_GRO_MAX_SEGMENTS = 64;

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

// ---- 2. Partial checksums -------------------------------------------------------------------

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

// ---- 3. TSO: segmenting a TCP/IPv4 super-packet (TUN -> underlay) ------------------------------

/**
 * What every super-packet read from the TUN must be, whatever its transport (header at `h`,
 * packet `buf[off, off+len)`): NEEDS_CSUM and gso_size > 0; IPv4 with IHL >= 5, Total Length =
 * len, protocol `protocol`, not a fragment (MF clear, offset 0); csum_start = the IP header
 * length and csum_offset = `csumOffset`. Returns the IP header length, or 0.
 */
function checkGsoIPv4(buf: Buffer, h: number, off: number, len: number, protocol: number, csumOffset: number): number {
  if ((buf[h + VNET_OFF_FLAGS] & VNET_F_NEEDS_CSUM) === 0) return 0;
  if (getVnetGsoSize(buf, h) === 0) return 0;
  const vihl = buf[off];
  const ipHl = (vihl & 0x0f) << 2;
  if (vihl >> 4 !== 4 || ipHl < IPV4_MIN_HEADER) return 0;
  if (getTotalLength(buf, off) !== len) return 0;
  if (buf[off + OFF_PROTOCOL] !== protocol) return 0;
  if ((((buf[off + OFF_FLAGS_FRAG] << 8) | buf[off + OFF_FLAGS_FRAG + 1]) & (FLAG_MF | FRAG_OFFSET_MASK)) !== 0) return 0;
  if (getVnetCsumStart(buf, h) !== ipHl || getVnetCsumOffset(buf, h) !== csumOffset) return 0;
  return ipHl;
}

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
  if ((buf[h + VNET_OFF_GSO_TYPE] & ~VNET_GSO_ECN) !== VNET_GSO_TCPV4) return 0;
  const ipHl = checkGsoIPv4(buf, h, off, len, IPPROTO_TCP, TCP_CSUM_OFFSET);
  if (ipHl === 0) return 0;
  const tcpHl = (buf[off + ipHl + TCP_OFF_DATA_OFFSET] >> 4) << 2;
  if (tcpHl < TCP_MIN_HEADER) return 0;
  const hdrLen = ipHl + tcpHl;
  return hdrLen < len ? hdrLen : 0;
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

/**
 * The same validation for a UDP super-packet (gso_type UDP_L4, Linux 6.2+; what a socket with
 * UDP_SEGMENT sends): NEEDS_CSUM, gso_size > 0; IPv4 with IHL >= 5, Total Length = len,
 * protocol UDP, not a fragment; csum_start = IP header length and csum_offset = 6; at least one
 * payload byte after the 8-byte UDP header. Returns the header length (IP + UDP) every datagram
 * repeats, or 0.
 */
export function checkUdp4Gso(buf: Buffer, h: number, off: number, len: number): number {
  if (len < IPV4_MIN_HEADER + UDP_HEADER + 1) return 0;
  if (buf[h + VNET_OFF_GSO_TYPE] !== VNET_GSO_UDP_L4) return 0;
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
  out[u + UDP_OFF_LENGTH] = udpLen >> 8;
  out[u + UDP_OFF_LENGTH + 1] = udpLen & 0xff;
  out[u + UDP_OFF_CHECKSUM] = 0;
  out[u + UDP_OFF_CHECKSUM + 1] = 0;
  const c = ~onesSum32(out, u, udpLen, foldSum(tcpPseudoSum(out, o, IPPROTO_UDP, udpLen))) & 0xffff;
  const v = c === 0 ? 0xffff : c;
  out[u + UDP_OFF_CHECKSUM] = v >> 8;
  out[u + UDP_OFF_CHECKSUM + 1] = v & 0xff;
  return total;
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
  const ipHl = (buf[off] & 0x0f) << 2;
  const total = copySegmentIPv4(buf, off, len, hdrLen, gsoSize, i, out, o);
  const last = i * gsoSize + total === len; // the payload reached the end

  // TCP: Sequence Number, flags, Checksum.
  const t = o + ipHl;
  const s = t + TCP_OFF_SEQ;
  const seq = (((out[s] << 24) | (out[s + 1] << 16) | (out[s + 2] << 8) | out[s + 3]) + i * gsoSize) | 0;
  out[s] = (seq >> 24) & 0xff;
  out[s + 1] = (seq >> 16) & 0xff;
  out[s + 2] = (seq >> 8) & 0xff;
  out[s + 3] = seq & 0xff;
  let flags = out[t + TCP_OFF_FLAGS];
  if (!last) flags &= ~(TCP_FIN | TCP_PSH);
  if (i > 0) flags &= ~TCP_CWR;
  out[t + TCP_OFF_FLAGS] = flags;
  out[t + TCP_OFF_CHECKSUM] = 0;
  out[t + TCP_OFF_CHECKSUM + 1] = 0;
  const tcpLen = total - ipHl;
  const tcpCheck = ~onesSum32(out, t, tcpLen, foldSum(tcpPseudoSum(out, o, IPPROTO_TCP, tcpLen))) & 0xffff;
  out[t + TCP_OFF_CHECKSUM] = tcpCheck >> 8;
  out[t + TCP_OFF_CHECKSUM + 1] = tcpCheck & 0xff;
  return total;
}

/**
 * A decapsulated packet `buf[off, off+len)` larger than the TUN's MTU `tunMtu`: if it is what
 * the kernel's GRO makes of TCP/IPv4 segments (Linux merges IPIP-encapsulated TCP on the
 * underlay device before the raw socket sees it: IPv4 without options, as inet_gro_receive
 * requires, TCP, not a fragment, some payload), the segment size to cut it into again for the
 * TUN: `tunMtu` less its IP and TCP headers (the MSS the kernel merged by is not passed to a raw
 * socket). Else 0.
 */
export function groSegmentSize(buf: Buffer, off: number, len: number, tunMtu: number): number {
  if (buf[off] !== IPV4_VERSION_IHL_NO_OPTIONS || buf[off + OFF_PROTOCOL] !== IPPROTO_TCP) return 0;
  if ((((buf[off + OFF_FLAGS_FRAG] << 8) | buf[off + OFF_FLAGS_FRAG + 1]) & (FLAG_MF | FRAG_OFFSET_MASK)) !== 0) return 0;
  if (len < IPV4_MIN_HEADER + TCP_MIN_HEADER) return 0;
  const tcpHl = (buf[off + IPV4_MIN_HEADER + TCP_OFF_DATA_OFFSET] >> 4) << 2;
  const hdrLen = IPV4_MIN_HEADER + tcpHl;
  if (tcpHl < TCP_MIN_HEADER || hdrLen >= len) return 0;
  const mss = tunMtu - hdrLen;
  return mss > 0 ? mss : 0;
}

// ---- 4. GRO: coalescing received segments (underlay -> TUN) ----------------------------------

/** Flows the coalescer keeps open at once (TCP and UDP together); more and the oldest is closed. */
const OPEN_FLOWS = 8;
/** The header length of a TCP/IPv4 segment it merges: no IP options, TCP with or without a timestamp. */
const IP_HL = IPV4_MIN_HEADER;
/** Flags + fragment word of a segment it merges: DF set, not a fragment. */
const DF_ONLY = FLAG_DF;

const ST_MEMBER = 0;
const ST_CLOSED = 1;
const ST_OPEN = 2;

/**
 * The payload length of `buf[off, off+len)` if it is a segment the coalescer may merge, else 0:
 * IPv4 without options, TCP, DF set and not a fragment, a TCP header of 20 bytes or 32 with
 * exactly Linux's timestamp option layout (NOP NOP TS), no reserved bits, flags ACK or ACK+PSH
 * (no SYN, FIN, RST, URG, ECE, CWR), at least one payload byte. The packet is a forwarded,
 * decapsulated one: its IPv4 header was validated by `Tunnel.decapsulate`.
 */
function mergeablePayload(buf: Buffer, off: number, len: number): number {
  if (buf[off] !== IPV4_VERSION_IHL_NO_OPTIONS || buf[off + OFF_PROTOCOL] !== IPPROTO_TCP) return 0;
  if (((buf[off + OFF_FLAGS_FRAG] << 8) | buf[off + OFF_FLAGS_FRAG + 1]) !== DF_ONLY) return 0;
  if (len <= IP_HL + TCP_MIN_HEADER) return 0;
  const t = off + IP_HL;
  const flags = buf[t + TCP_OFF_FLAGS];
  if (flags !== TCP_ACK && flags !== (TCP_ACK | TCP_PSH)) return 0;
  const doff = buf[t + TCP_OFF_DATA_OFFSET];
  let tcpHl: number;
  if (doff === 0x50) tcpHl = TCP_MIN_HEADER;
  else if (doff === 0x80 && buf[t + 20] === 1 && buf[t + 21] === 1 && buf[t + 22] === 8 && buf[t + 23] === 10) tcpHl = TCP_TIMESTAMP_HEADER;
  else return 0;
  const pay = len - IP_HL - tcpHl;
  return pay > 0 ? pay : 0;
}

/**
 * The payload length of `buf[off, off+len)` if it is a datagram the coalescer may merge, else 0:
 * IPv4 without options, UDP, not a fragment (MF clear, offset 0), a UDP Length that matches the
 * IP payload, a checksum present (not 0: a super-packet's datagrams all get one from the
 * kernel, so one sent without must stay as it came), at least one payload byte.
 */
function udpMergeablePayload(buf: Buffer, off: number, len: number): number {
  if (buf[off] !== IPV4_VERSION_IHL_NO_OPTIONS || buf[off + OFF_PROTOCOL] !== IPPROTO_UDP) return 0;
  if ((((buf[off + OFF_FLAGS_FRAG] << 8) | buf[off + OFF_FLAGS_FRAG + 1]) & (FLAG_MF | FRAG_OFFSET_MASK)) !== 0) return 0;
  if (len <= IP_HL + UDP_HEADER) return 0;
  const u = off + IP_HL;
  if (((buf[u + UDP_OFF_LENGTH] << 8) | buf[u + UDP_OFF_LENGTH + 1]) !== len - IP_HL) return 0;
  if (buf[u + UDP_OFF_CHECKSUM] === 0 && buf[u + UDP_OFF_CHECKSUM + 1] === 0) return 0;
  return len - IP_HL - UDP_HEADER;
}

/** The UDP checksum (present) of the option-less IPv4 packet `buf[off, off+len)` verifies. */
function udpChecksumOk(buf: Buffer, off: number, len: number): boolean {
  const udpLen = len - IP_HL;
  return onesSum32(buf, off + IP_HL, udpLen, foldSum(tcpPseudoSum(buf, off, IPPROTO_UDP, udpLen))) === 0xffff;
}

/** Bytes `[a, a+n)` and `[b, b+n)` of `buf` are equal. */
function sameBytes(buf: Buffer, a: number, b: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (buf[a + i] !== buf[b + i]) return false;
  return true;
}

/** The TCP checksum of the option-less IPv4 packet `buf[off, off+len)` verifies. */
function tcpChecksumOk(buf: Buffer, off: number, len: number): boolean {
  const tcpLen = len - IP_HL;
  return onesSum32(buf, off + IP_HL, tcpLen, foldSum(tcpPseudoSum(buf, off, IPPROTO_TCP, tcpLen))) === 0xffff;
}

/**
 * Merges TCP/IPv4 segments of a batch of decapsulated packets into super-packets for a TUN
 * opened with IFF_VNET_HDR, like Linux's tcp_gro_receive (and wireguard-go's tcpGRO), within one
 * batch; with `udp`, UDP/IPv4 datagrams too, like Linux's udp_gro_receive_segment (and
 * wireguard-go's udpGRO). Allocate one per data path (arrays for `maxPackets`) and call
 * `coalesce` per batch.
 *
 * Segment j is appended to the open super-packet of its flow (same addresses and ports) when it
 * is mergeable (`mergeablePayload`), its sequence number follows the last byte so far, and TTL,
 * TOS, ACK number, window and TCP header (with the timestamp option, byte for byte) equal the
 * first segment's; its payload is no larger than the first's (a smaller one, or PSH, ends the
 * super-packet), the result stays within 65535 bytes, and the TCP checksums of both verify (the
 * kernel trusts a super-packet's checksum, so a corrupted segment must not hide in one; a
 * segment that fails is written as it came, and the kernel drops it). A segment of the same flow
 * that does not follow ends the flow's super-packet (Linux GRO's flush) and may start the next.
 * IP IDs are not compared: with DF set they carry nothing (RFC 6864 §4.1).
 *
 * UDP (`udp`: only for a kernel that takes UDP_L4 from a TUN, Linux 6.2+): datagram j joins the
 * open super-packet of its flow (same addresses and ports) when it is mergeable
 * (`udpMergeablePayload`), TTL, TOS and the flags word (DF) equal the first datagram's, its
 * payload is no larger than the first's (a smaller one ends the super-packet, as every datagram
 * but the last is cut to gso_size when the kernel splits it again), there are fewer than 64
 * (UDP_GRO_CNT_MAX) and the result stays within 65535 bytes; without DF its IP ID must be the
 * first's plus its position, since the kernel gives segment i the ID first + i; and the UDP
 * checksums of both verify. The kernel splits the super-packet into the same datagrams, byte for
 * byte (with DF, IDs aside), before any socket sees them. UDP_L4 header: NEEDS_CSUM, hdr_len 28,
 * gso_size = the first datagram's payload, csum_start 20, csum_offset 6; UDP Length and the
 * checksum field (the pseudo-header sum, as udp4_gro_complete leaves it) for the whole.
 *
 * Output, in the order of the first segment of each: `count` packets at `offs[x]`, `lens[x]`,
 * each starting with its 10-byte virtio_net_hdr; `segments[x]` input packets in it, `bytes[x]`
 * their summed lengths, `first[x]` the index of the first. A packet merged with nothing stays
 * where it was, with a zero header in the 10 bytes before it. A super-packet is built in the
 * pool: TCP header (NEEDS_CSUM, TCPV4, hdr_len, gso_size = the first segment's payload, csum_start
 * 20, csum_offset 16), the first segment, the payload of the others; Total Length and header
 * checksum rewritten; flags of the last segment (ACK, or ACK+PSH); the TCP checksum field set to
 * the pseudo-header sum for the super-packet's length, as Linux's tcp4_gro_complete does, for
 * the kernel to complete.
 *
 * Buffer ownership: nothing is kept across calls; the input packets may be overwritten by the
 * zero headers and the pool is reused by every call.
 */
export class Coalescer {
  /** Output: start of packet x (its virtio_net_hdr) in the buffer given to `coalesce`. */
  readonly offs: Int32Array;
  /** Output: length of packet x, header included. */
  readonly lens: Int32Array;
  /** Output: input packets merged into packet x (1 for a packet written as it came). */
  readonly segments: Int32Array;
  /** Output: the summed lengths of those input packets. */
  readonly bytes: Int32Array;
  /** Output: index of the first input packet in packet x. */
  readonly first: Int32Array;

  private readonly next: Int32Array;
  private readonly tail: Int32Array;
  private readonly segs: Int32Array;
  private readonly sumLen: Int32Array;
  private readonly payload: Int32Array;
  private readonly gsoSize: Int32Array;
  private readonly nextSeq: Int32Array;
  private readonly state: Uint8Array;
  private readonly verified: Uint8Array;
  private readonly proto: Uint8Array;
  private readonly open = new Int32Array(OPEN_FLOWS);
  private openCount = 0;

  /** `udp`: merge UDP datagrams too (the kernel takes UDP_L4 super-packets from a TUN). */
  constructor(readonly maxPackets: number, readonly udp = false) {
    this.offs = new Int32Array(maxPackets);
    this.lens = new Int32Array(maxPackets);
    this.segments = new Int32Array(maxPackets);
    this.bytes = new Int32Array(maxPackets);
    this.first = new Int32Array(maxPackets);
    this.next = new Int32Array(maxPackets);
    this.tail = new Int32Array(maxPackets);
    this.segs = new Int32Array(maxPackets);
    this.sumLen = new Int32Array(maxPackets);
    this.payload = new Int32Array(maxPackets);
    this.gsoSize = new Int32Array(maxPackets);
    this.nextSeq = new Int32Array(maxPackets);
    this.state = new Uint8Array(maxPackets);
    this.verified = new Uint8Array(maxPackets);
    this.proto = new Uint8Array(maxPackets);
  }

  /**
   * Plan and build the writes for input packets j < n, each `buf[inOffs[j], inOffs[j] +
   * inLens[j])`, a valid IPv4 datagram with at least 10 writable bytes before it (n <=
   * maxPackets). Super-packets are built in `buf[poolStart, poolEnd)`, which must not overlap
   * the inputs; if it runs out, the segments of a super-packet are written as they came. Returns
   * the number of output packets. `inGso[j] > 0` marks input j as a TCP/IPv4 super-packet
   * already (one the kernel's GRO merged before the raw socket, its TCP checksum field holding
   * the pseudo-header sum): it is written as it is behind a TCPV4 header with gso_size
   * `inGso[j]`, and ends its flow's open super-packet.
   */
  coalesce(buf: Buffer, inOffs: Int32Array, inLens: Int32Array, n: number, poolStart: number, poolEnd: number, inGso: Int32Array | null = null): number {
    const { next, tail, segs, sumLen, payload, gsoSize, nextSeq, state, verified, proto, open } = this;
    this.openCount = 0;
    for (let j = 0; j < n; j++) {
      const off = inOffs[j];
      const len = inLens[j];
      next[j] = -1;
      tail[j] = j;
      segs[j] = 1;
      sumLen[j] = len;
      verified[j] = 0;
      payload[j] = 0;
      gsoSize[j] = 0;
      const p = buf[off + OFF_PROTOCOL];
      proto[j] = p;
      if (inGso !== null && inGso[j] > 0) {
        // A TCP super-packet already (merged by the kernel's GRO before the raw socket): written
        // as it is, with a TCPV4 header; it ends its flow's open super-packet, keeping the order.
        state[j] = ST_CLOSED;
        gsoSize[j] = inGso[j];
        this.closeFlowOf(buf, inOffs, off, len, p);
        continue;
      }
      if (p === IPPROTO_UDP && this.udp) {
        this.addDatagram(buf, inOffs, inLens, j, off, len);
        continue;
      }
      const pay = mergeablePayload(buf, off, len);
      if (pay === 0) {
        state[j] = ST_CLOSED;
        this.closeFlowOf(buf, inOffs, off, len, p);
        continue;
      }
      const t = off + IP_HL;
      const seq = (buf[t + TCP_OFF_SEQ] << 24) | (buf[t + TCP_OFF_SEQ + 1] << 16) | (buf[t + TCP_OFF_SEQ + 2] << 8) | buf[t + TCP_OFF_SEQ + 3];
      const last = (buf[t + TCP_OFF_FLAGS] & TCP_PSH) !== 0;
      let merged = false;
      for (let q = this.openCount - 1; q >= 0; q--) {
        const h = open[q];
        const ho = inOffs[h];
        // Flow key: protocol, source and destination addresses (IPv4 bytes 12-19), ports (TCP bytes 0-3).
        if (proto[h] !== IPPROTO_TCP || !sameBytes(buf, ho + 12, off + 12, 8) || !sameBytes(buf, ho + IP_HL, t, 4)) continue;
        if (this.follows(buf, h, ho, off, pay, seq) && this.verify(buf, h, ho, inLens[h]) && tcpChecksumOk(buf, off, len)) {
          next[tail[h]] = j;
          tail[h] = j;
          segs[h]++;
          sumLen[h] += len;
          payload[h] += pay;
          nextSeq[h] = (seq + pay) | 0;
          state[j] = ST_MEMBER;
          merged = true;
          if (last || pay < gsoSize[h]) this.closeAt(q);
        } else {
          this.closeAt(q);
        }
        break;
      }
      if (merged) continue;
      payload[j] = pay;
      gsoSize[j] = pay;
      nextSeq[j] = (seq + pay) | 0;
      if (last) {
        state[j] = ST_CLOSED;
        continue;
      }
      this.openFlow(j);
    }
    return this.build(buf, inOffs, inLens, n, poolStart, poolEnd);
  }

  /**
   * A packet that is not merged (`buf[off, off+len)`, protocol `p`) ends the open super-packet of
   * its flow, as a flush does in Linux GRO: what follows of the flow is written after it, so the
   * flow keeps its order. The flow key is read at the packet's own header length; a packet too
   * short to show its ports, or a fragment after the first, ends every open super-packet between
   * its two addresses.
   */
  private closeFlowOf(buf: Buffer, inOffs: Int32Array, off: number, len: number, p: number): void {
    if (this.openCount === 0 || (p !== IPPROTO_TCP && p !== IPPROTO_UDP)) return;
    const ihl = (buf[off] & 0x0f) << 2;
    const ports = len >= ihl + 4 && ((((buf[off + OFF_FLAGS_FRAG] << 8) | buf[off + OFF_FLAGS_FRAG + 1]) & FRAG_OFFSET_MASK) === 0);
    for (let q = this.openCount - 1; q >= 0; q--) {
      const ho = inOffs[this.open[q]];
      if (this.proto[this.open[q]] !== p || !sameBytes(buf, ho + 12, off + 12, 8)) continue;
      if (ports && !sameBytes(buf, ho + IP_HL, off + ihl, 4)) continue;
      this.closeAt(q);
    }
  }

  /** Open a super-packet headed by packet j, closing the oldest if all slots are taken. */
  private openFlow(j: number): void {
    if (this.openCount === OPEN_FLOWS) this.closeAt(0);
    this.state[j] = ST_OPEN;
    this.open[this.openCount++] = j;
  }

  /** UDP datagram j (`buf[off, off+len)`): joins its flow's open super-packet, or heads one. */
  private addDatagram(buf: Buffer, inOffs: Int32Array, inLens: Int32Array, j: number, off: number, len: number): void {
    const { next, tail, segs, sumLen, payload, gsoSize, state, proto, open } = this;
    const pay = udpMergeablePayload(buf, off, len);
    if (pay === 0) {
      state[j] = ST_CLOSED;
      this.closeFlowOf(buf, inOffs, off, len, IPPROTO_UDP);
      return;
    }
    for (let q = this.openCount - 1; q >= 0; q--) {
      const h = open[q];
      const ho = inOffs[h];
      // Flow key: protocol, addresses, ports.
      if (proto[h] !== IPPROTO_UDP || !sameBytes(buf, ho + 12, off + 12, 8) || !sameBytes(buf, ho + IP_HL, off + IP_HL, 4)) continue;
      if (this.datagramFollows(buf, h, ho, off, pay) && this.verifyUdp(buf, h, ho, inLens[h]) && udpChecksumOk(buf, off, len)) {
        next[tail[h]] = j;
        tail[h] = j;
        segs[h]++;
        sumLen[h] += len;
        payload[h] += pay;
        state[j] = ST_MEMBER;
        if (pay < gsoSize[h] || segs[h] === UDP_GRO_MAX_SEGMENTS) this.closeAt(q);
        return;
      }
      this.closeAt(q);
      break;
    }
    payload[j] = pay;
    gsoSize[j] = pay;
    this.openFlow(j);
  }

  /** The datagram at `off` (payload `pay`) may be appended to head h's UDP super-packet. */
  private datagramFollows(buf: Buffer, h: number, ho: number, off: number, pay: number): boolean {
    if (pay > this.gsoSize[h] || IP_HL + UDP_HEADER + this.payload[h] + pay > IPV4_MAX_TOTAL_LENGTH) return false;
    if (buf[ho + OFF_TTL] !== buf[off + OFF_TTL] || buf[ho + OFF_TOS] !== buf[off + OFF_TOS]) return false;
    const ff = buf[ho + OFF_FLAGS_FRAG];
    if (ff !== buf[off + OFF_FLAGS_FRAG]) return false;
    if ((ff << 8) & FLAG_DF) return true;
    // Without DF the ID matters (a router may fragment): it must be what the kernel will give.
    return getId(buf, off) === ((getId(buf, ho) + this.segs[h]) & 0xffff);
  }

  /** Head h's UDP checksum verifies (computed once, when the first datagram is merged into it). */
  private verifyUdp(buf: Buffer, h: number, ho: number, hlen: number): boolean {
    if (this.verified[h] === 0) {
      if (!udpChecksumOk(buf, ho, hlen)) return false;
      this.verified[h] = 1;
    }
    return true;
  }

  /** The segment at `off` (payload `pay`, sequence `seq`) continues head h's super-packet. */
  private follows(buf: Buffer, h: number, ho: number, off: number, pay: number, seq: number): boolean {
    if (seq !== this.nextSeq[h] || pay > this.gsoSize[h]) return false;
    const tcpHl = (buf[off + IP_HL + TCP_OFF_DATA_OFFSET] >> 4) << 2;
    if (IP_HL + tcpHl + this.payload[h] + pay > IPV4_MAX_TOTAL_LENGTH) return false;
    if (buf[ho + OFF_TTL] !== buf[off + OFF_TTL] || buf[ho + OFF_TOS] !== buf[off + OFF_TOS]) return false;
    const ht = ho + IP_HL;
    const t = off + IP_HL;
    // Data offset (so the same header length), then ACK number, then window: equal.
    if (buf[ht + TCP_OFF_DATA_OFFSET] !== buf[t + TCP_OFF_DATA_OFFSET]) return false;
    if (!sameBytes(buf, ht + TCP_OFF_ACK, t + TCP_OFF_ACK, 4) || !sameBytes(buf, ht + TCP_OFF_WINDOW, t + TCP_OFF_WINDOW, 2)) return false;
    // The timestamp option, when there is one: equal byte for byte (Linux GRO's rule too).
    return tcpHl === TCP_MIN_HEADER || sameBytes(buf, ht + TCP_MIN_HEADER, t + TCP_MIN_HEADER, tcpHl - TCP_MIN_HEADER);
  }

  /** Head h's TCP checksum verifies (computed once, when the first segment is merged into it). */
  private verify(buf: Buffer, h: number, ho: number, hlen: number): boolean {
    if (this.verified[h] === 0) {
      if (!tcpChecksumOk(buf, ho, hlen)) return false;
      this.verified[h] = 1;
    }
    return true;
  }

  private closeAt(q: number): void {
    const open = this.open;
    this.state[open[q]] = ST_CLOSED;
    for (let r = q + 1; r < this.openCount; r++) open[r - 1] = open[r];
    this.openCount--;
  }

  private build(buf: Buffer, inOffs: Int32Array, inLens: Int32Array, n: number, poolStart: number, poolEnd: number): number {
    const { next, tail, segs, sumLen, payload, gsoSize, state, proto, offs, lens, segments, bytes, first } = this;
    let k = 0;
    let cursor = poolStart;
    for (let j = 0; j < n; j++) {
      if (state[j] === ST_MEMBER) continue;
      const off = inOffs[j];
      const len = inLens[j];
      const udp = proto[j] === IPPROTO_UDP;
      const hdrLen = udp ? IP_HL + UDP_HEADER : IP_HL + ((buf[off + IP_HL + TCP_OFF_DATA_OFFSET] >> 4) << 2);
      const total = hdrLen + payload[j];
      // The IPv4 header of a super-packet starts 16-byte aligned, its vnet header 10 bytes before.
      const o = ((cursor + VNET_HDR_LEN + 15) & ~15);
      if (segs[j] === 1 && gsoSize[j] > 0 && payload[j] === 0) {
        // A super-packet from the kernel's GRO (inGso): TCPV4 header, checksum field = the
        // pseudo-header sum for its length (as tcp4_gro_complete left it; rewritten to be sure).
        const tcpHl = (buf[off + IP_HL + TCP_OFF_DATA_OFFSET] >> 4) << 2;
        const pseudo = foldSum(tcpPseudoSum(buf, off, IPPROTO_TCP, len - IP_HL));
        buf[off + IP_HL + TCP_OFF_CHECKSUM] = pseudo >> 8;
        buf[off + IP_HL + TCP_OFF_CHECKSUM + 1] = pseudo & 0xff;
        writeVnetHdr(buf, off - VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, IP_HL + tcpHl, gsoSize[j], IP_HL, TCP_CSUM_OFFSET);
        offs[k] = off - VNET_HDR_LEN;
        lens[k] = len + VNET_HDR_LEN;
        segments[k] = 1;
        bytes[k] = len;
        first[k] = j;
        k++;
        continue;
      }
      if (segs[j] === 1 || o + total > poolEnd) {
        // Written as they came (the pool can only run out if it was sized too small).
        for (let m = j; m !== -1; m = next[m]) {
          const mo = inOffs[m];
          writeVnetHdrNone(buf, mo - VNET_HDR_LEN);
          offs[k] = mo - VNET_HDR_LEN;
          lens[k] = inLens[m] + VNET_HDR_LEN;
          segments[k] = 1;
          bytes[k] = inLens[m];
          first[k] = m;
          k++;
        }
        continue;
      }
      buf.copyWithin(o, off, off + len);
      let w = o + len;
      for (let m = next[j]; m !== -1; m = next[m]) {
        const mo = inOffs[m];
        buf.copyWithin(w, mo + hdrLen, mo + inLens[m]);
        w += inLens[m] - hdrLen;
      }
      setTotalLength(buf, o, total);
      setChecksum(buf, o, computeHeaderChecksum(buf, o));
      const t = o + IP_HL;
      const l4Len = total - IP_HL;
      if (udp) {
        buf[t + UDP_OFF_LENGTH] = l4Len >> 8;
        buf[t + UDP_OFF_LENGTH + 1] = l4Len & 0xff;
        const pseudo = foldSum(tcpPseudoSum(buf, o, IPPROTO_UDP, l4Len));
        buf[t + UDP_OFF_CHECKSUM] = pseudo >> 8;
        buf[t + UDP_OFF_CHECKSUM + 1] = pseudo & 0xff;
        writeVnetHdr(buf, o - VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4, hdrLen, gsoSize[j], IP_HL, UDP_OFF_CHECKSUM);
      } else {
        buf[t + TCP_OFF_FLAGS] = buf[inOffs[tail[j]] + IP_HL + TCP_OFF_FLAGS];
        const pseudo = foldSum(tcpPseudoSum(buf, o, IPPROTO_TCP, l4Len));
        buf[t + TCP_OFF_CHECKSUM] = pseudo >> 8;
        buf[t + TCP_OFF_CHECKSUM + 1] = pseudo & 0xff;
        writeVnetHdr(buf, o - VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, hdrLen, gsoSize[j], IP_HL, TCP_CSUM_OFFSET);
      }
      offs[k] = o - VNET_HDR_LEN;
      lens[k] = total + VNET_HDR_LEN;
      segments[k] = segs[j];
      bytes[k] = sumLen[j];
      first[k] = j;
      k++;
      cursor = o + total;
    }
    return k;
  }
}
