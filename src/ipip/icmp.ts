/**
 * ICMP errors (RFC 792) as ipipd sends and reads them: the tunnel entry point answers packets it
 * cannot carry (RFC 2003 §5.1 Fragmentation Needed, §3.1 Time Exceeded) and relays errors that
 * routers inside the tunnel send about our outer packets (§4).
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |     Type      |     Code      |          Checksum             |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |     unused (Frag Needed: unused | Next-Hop MTU, RFC 1191)     |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |      Internet Header + as much of the original datagram       |
 *    |      as fits in 576 bytes (RFC 1812 §4.3.2.3)                 |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Flow, in the order of this file: type/code constants; `mayAnswerWithIcmpError`, the RFC 1122
 * §3.2.2 rules on when an error must not be sent; `writeIcmpError`, which builds a whole IPv4 +
 * ICMP error datagram; `classifyUnderlayIcmp` (with its verdicts `UnderlayIcmp` and its
 * out-parameter `IcmpQuote`), which decides what an ICMP error received from the underlay means
 * for the tunnel (RFC 2003 §4) and where the quoted inner packet is; `plateauBelow`, the RFC 1191
 * §5 guess of a path MTU when a router did not say.
 *
 * Pure: no I/O, no allocation, no throws; offsets and lengths in, numbers out.
 */
import type { Buffer } from 'node:buffer';
import { finishChecksum, onesSum } from './checksum.js';
import {
  IPPROTO_IPIP,
  IPV4_MIN_HEADER,
  IPV4_OK,
  checkIPv4,
  computeHeaderChecksum,
  getDst,
  getFragmentOffset,
  getHeaderLength,
  getProtocol,
  getSrc,
  getTotalLength,
  getVersion,
  isDontFragment,
  setChecksum,
  setDst,
  setFlagsFragment,
  setId,
  setProtocol,
  setSrc,
  setTos,
  setTotalLength,
  setTtl,
  setVersionIhl,
} from './ipv4.js';
import { IPPROTO_UDP, UDP_HEADER } from './udp.js';

export const IPPROTO_ICMP = 1;
/** ICMP header length: type, code, checksum, 4 bytes of type-specific data. */
export const ICMP_HEADER = 8;
/** RFC 1812 §4.3.2.3: an error datagram carries as much of the original as fits in 576 bytes. */
export const ICMP_ERROR_MAX = 576;

export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_SOURCE_QUENCH = 4;
export const ICMP_REDIRECT = 5;
export const ICMP_ECHO = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_PARAMETER_PROBLEM = 12;

export const UNREACH_NET = 0;
export const UNREACH_HOST = 1;
export const UNREACH_PROTOCOL = 2;
export const UNREACH_PORT = 3;
export const UNREACH_FRAG_NEEDED = 4;
export const UNREACH_SOURCE_ROUTE = 5;

const OFF_ICMP_TYPE = 0;
const OFF_ICMP_CODE = 1;
const OFF_ICMP_CHECKSUM = 2;
const OFF_ICMP_MTU = 6;

/** True for the ICMP types that are errors (RFC 1122 §3.2.2: never answer an error with one). */
function isIcmpErrorType(type: number): boolean {
  return type === ICMP_DEST_UNREACH || type === ICMP_SOURCE_QUENCH || type === ICMP_REDIRECT ||
    type === ICMP_TIME_EXCEEDED || type === ICMP_PARAMETER_PROBLEM;
}

/**
 * RFC 1122 §3.2.2: an ICMP error MUST NOT be sent about an ICMP error, a fragment other than the
 * first, a datagram to a broadcast or multicast address, or one whose source is not a single
 * host (0.0.0.0, loopback, broadcast, multicast, class E). `buf[off..off+len)` is a validated
 * IPv4 datagram (the caller checked it: unchecked header reads).
 */
export function mayAnswerWithIcmpError(buf: Buffer, off: number, len: number): boolean {
  if (getFragmentOffset(buf, off) !== 0) return false;
  const src = getSrc(buf, off);
  const dst = getDst(buf, off);
  const s0 = src >>> 24;
  if (src === 0 || s0 === 127 || s0 >= 224) return false; // 0.0.0.0, loopback, multicast, class E, broadcast
  if (dst >>> 24 >= 224) return false; // multicast, class E, limited broadcast
  if (getProtocol(buf, off) === IPPROTO_ICMP) {
    const hl = getHeaderLength(buf, off);
    if (len < hl + 1) return false;
    if (isIcmpErrorType(buf[off + hl + OFF_ICMP_TYPE])) return false;
  }
  return true;
}

/**
 * Build an ICMP error datagram at `out[o..]`: IPv4 header (no options; TTL 64; ID `id`; DF
 * clear), ICMP type/code, the 32-bit `rest` word (for Fragmentation Needed: the next-hop MTU in
 * its low 16 bits, RFC 1191 §4), and the quoted datagram `q[qOff, qOff+qLen)` cut so that the
 * whole error fits in 576 bytes. Returns the datagram's length. `out` must have room for 576
 * bytes from `o`.
 */
export function writeIcmpError(
  out: Buffer,
  o: number,
  type: number,
  code: number,
  rest: number,
  src: number,
  dst: number,
  id: number,
  q: Buffer,
  qOff: number,
  qLen: number,
): number {
  const quote = Math.min(qLen, ICMP_ERROR_MAX - IPV4_MIN_HEADER - ICMP_HEADER);
  const total = IPV4_MIN_HEADER + ICMP_HEADER + quote;
  setVersionIhl(out, o, 4, 5);
  setTos(out, o, 0);
  setTotalLength(out, o, total);
  setId(out, o, id & 0xffff);
  setFlagsFragment(out, o, 0);
  setTtl(out, o, 64);
  setProtocol(out, o, IPPROTO_ICMP);
  setSrc(out, o, src);
  setDst(out, o, dst);
  setChecksum(out, o, computeHeaderChecksum(out, o));

  const c = o + IPV4_MIN_HEADER;
  out[c + OFF_ICMP_TYPE] = type;
  out[c + OFF_ICMP_CODE] = code;
  out[c + OFF_ICMP_CHECKSUM] = 0;
  out[c + OFF_ICMP_CHECKSUM + 1] = 0;
  out[c + 4] = (rest >>> 24) & 0xff;
  out[c + 5] = (rest >>> 16) & 0xff;
  out[c + 6] = (rest >>> 8) & 0xff;
  out[c + 7] = rest & 0xff;
  q.copy(out, c + ICMP_HEADER, qOff, qOff + quote);
  const sum = finishChecksum(onesSum(out, c, ICMP_HEADER + quote, 0));
  out[c + OFF_ICMP_CHECKSUM] = sum >> 8;
  out[c + OFF_ICMP_CHECKSUM + 1] = sum & 0xff;
  return total;
}

/** What an ICMP message read from the underlay means for the tunnel (RFC 2003 §4). */
export const UnderlayIcmp = Object.freeze({
  /** Not an error about one of our outer packets (other traffic, an echo, a bad header). */
  notOurs: 0,
  /** Fragmentation Needed: lower the peer's tunnel MTU; relay to the inner sender if its DF is set. */
  fragNeeded: 1,
  /** Net/host/protocol unreachable, time exceeded: relay as Host Unreachable (and mark the peer). */
  relayUnreachable: 2,
  /** Port unreachable, source route failed, redirect, source quench, others: MUST/SHOULD NOT relay. */
  noRelay: 3,
} as const);
export type UnderlayIcmp = (typeof UnderlayIcmp)[keyof typeof UnderlayIcmp];

/**
 * Where the parts of an ICMP error received from the underlay are. Filled by
 * `classifyUnderlayIcmp`; reuse one instance.
 */
export class IcmpQuote {
  /** ICMP type and code. */
  type = 0;
  code = 0;
  /** Fragmentation Needed: the next-hop MTU (0 if the router did not say, RFC 1191 §5). */
  nextHopMtu = 0;
  /** The quoted outer header's destination: the peer endpoint it was sent to. */
  endpoint = 0;
  /** The quoted outer header's Total Length (RFC 1191 §5 plateau estimate when nextHopMtu is 0). */
  outerLength = 0;
  /** Start and length of the quoted inner datagram's bytes (0 length if none were quoted). */
  innerOffset = 0;
  innerLength = 0;
  /** True if the quote holds the inner header in full and its DF bit is set. */
  innerDf = false;
  /** True if the quoted outer packet was FOU (UDP to our FOU port): 28 bytes of overhead, not 20. */
  fou = false;
}

/**
 * Classify an IPv4 datagram `buf[off, off+len)` read from a raw ICMP socket (IPv4 header
 * included). It is about our tunnel only if it is a valid ICMP error quoting an IPv4 header with
 * protocol 4 and source `local`, or (with `fouPort` >= 0) protocol 17 and a UDP header to
 * `fouPort` (FOU, fou.ts: `q.fou`). Fills `q` (endpoint, MTU, where the quoted inner packet is).
 */
export function classifyUnderlayIcmp(buf: Buffer, off: number, len: number, local: number, q: IcmpQuote, fouPort = -1): UnderlayIcmp {
  q.innerLength = 0;
  q.innerDf = false;
  q.fou = false;
  if (len < 0 || off + len > buf.length || checkIPv4(buf, off, len, true) !== IPV4_OK) return UnderlayIcmp.notOurs;
  if (getProtocol(buf, off) !== IPPROTO_ICMP) return UnderlayIcmp.notOurs;
  const hl = getHeaderLength(buf, off);
  const icmp = off + hl;
  const icmpLen = getTotalLength(buf, off) - hl;
  if (icmpLen < ICMP_HEADER + IPV4_MIN_HEADER) return UnderlayIcmp.notOurs;
  if (finishChecksum(onesSum(buf, icmp, icmpLen, 0)) !== 0) return UnderlayIcmp.notOurs;
  const type = buf[icmp + OFF_ICMP_TYPE];
  const code = buf[icmp + OFF_ICMP_CODE];
  if (!isIcmpErrorType(type)) return UnderlayIcmp.notOurs;

  // The quoted outer header: ours if protocol 4 from our address. Only its first 20 bytes need
  // be there; its length fields describe the original, not the (cut) quote.
  const qo = icmp + ICMP_HEADER;
  const quoted = icmpLen - ICMP_HEADER;
  if (getVersion(buf, qo) !== 4) return UnderlayIcmp.notOurs;
  const qhl = getHeaderLength(buf, qo);
  if (qhl < IPV4_MIN_HEADER || quoted < qhl) return UnderlayIcmp.notOurs;
  if (getSrc(buf, qo) !== local) return UnderlayIcmp.notOurs;
  // FOU (fou.ts, `fouPort` >= 0): a quoted UDP datagram to our FOU port; the inner packet follows its 8-byte header.
  let skip = 0;
  if (getProtocol(buf, qo) === IPPROTO_UDP && fouPort >= 0 && quoted >= qhl + UDP_HEADER && ((buf[qo + qhl + 2] << 8) | buf[qo + qhl + 3]) === fouPort) {
    q.fou = true;
    skip = UDP_HEADER;
  } else if (getProtocol(buf, qo) !== IPPROTO_IPIP) return UnderlayIcmp.notOurs;

  q.type = type;
  q.code = code;
  q.endpoint = getDst(buf, qo);
  q.outerLength = getTotalLength(buf, qo);
  q.nextHopMtu = (buf[icmp + OFF_ICMP_MTU] << 8) | buf[icmp + OFF_ICMP_MTU + 1];
  q.innerOffset = qo + qhl + skip;
  q.innerLength = quoted - qhl - skip;
  const inner = q.innerOffset;
  // The inner header is usable only when quoted whole (a router may quote just 8 bytes of it).
  if (q.innerLength >= IPV4_MIN_HEADER && getVersion(buf, inner) === 4 && getHeaderLength(buf, inner) <= q.innerLength) {
    q.innerDf = isDontFragment(buf, inner);
  } else {
    q.innerLength = 0;
  }

  if (type === ICMP_DEST_UNREACH) {
    if (code === UNREACH_FRAG_NEEDED) return UnderlayIcmp.fragNeeded;
    if (code === UNREACH_PORT || code === UNREACH_SOURCE_ROUTE) return UnderlayIcmp.noRelay;
    return UnderlayIcmp.relayUnreachable; // net, host, protocol, unknown, prohibited, ...
  }
  if (type === ICMP_TIME_EXCEEDED) return UnderlayIcmp.relayUnreachable;
  return UnderlayIcmp.noRelay; // source quench, redirect, parameter problem
}

/**
 * RFC 1191 §5 plateau table: when a router reports Fragmentation Needed with MTU 0, guess the
 * largest plateau below the length of the datagram that did not fit.
 */
const PLATEAUS = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];
export function plateauBelow(length: number): number {
  for (const p of PLATEAUS) if (p < length) return p;
  return 68;
}
