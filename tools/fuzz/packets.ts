/**
 * The fuzzer's packets: seeded, written into a slab slot, no allocation per packet.
 *
 * Flow (the PRNG is prng.ts: a seed replays a run): the address plan a face is fuzzed with
 * (`Plan`); `writeInner`, a valid inner IPv4 packet (ICMP echo, TCP or UDP) between two pods;
 * `mutateInner`, one or two field mutations of it (the `CASES`: version, IHL, every length,
 * flags and fragment offsets, protocol, checksum, options, truncation, trailing bytes, TTL 0/1,
 * loops, spoofed sources, or none); `tunPacket` (what goes into the TUN) and `underlayPacket`
 * (an outer header from the peer or a stranger around such an inner, itself mutated; or random
 * bytes). Built with the checksum code below, not ipipd's: a shared bug must not hide itself.
 *
 * What the kernel drops without counting it anywhere cannot be accounted for, so an outer
 * header never carries a source-route option (LSRR 0x83, SSRR 0x89: with accept_source_route 0,
 * ip_rcv_options drops them silently), and an outer source is never a martian (0/8, 127/8,
 * 224/3) or one of the receiving host's own addresses. Random "garbage" is re-rolled until the
 * kernel's header checks (ip_rcv_core) would refuse it: anything else could be routed away.
 */

export { prng } from './prng.js';

/** Addresses (signed int32) of a fuzzed face. */
export interface Plan {
  /** Inner source and destination of a valid packet (a pod on each side). */
  innerSrc: number;
  innerDst: number;
  /** The receiving side's pod block (network, mask): a spoofed inner source inside it is moved to `innerSrc`. */
  ownBlock: number;
  ownMask: number;
  /** Tunnel endpoints (for loops). */
  local: number;
  peer: number;
  /** Largest packet the face takes (the device MTU). */
  mtu: number;
}

/** The mutation cases, by index; `counts[i]` in the injector's report. */
export const CASES = [
  'valid', 'random_bytes', 'version', 'ihl', 'total_length', 'flags_fragment', 'protocol', 'checksum', 'options',
  'truncated', 'trailing_bytes', 'ttl_0_1', 'loop', 'spoofed_source', 'outer_header',
] as const;
export const C_VALID = 0;
/** IPIPD_FUZZ_CASES=i,j,...: only these cases, indices into CASES, underlay faces (to find which one a discrepancy comes from). */
const ONLY = process.env.IPIPD_FUZZ_CASES ? process.env.IPIPD_FUZZ_CASES.split(',').map(Number) : null;
const C_RANDOM = 1;
const C_OUTER = 14;

function sum16(b: Buffer, start: number, end: number, initial: number): number {
  let s = initial;
  for (let i = start; i + 1 < end; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if ((end - start) & 1) s += b[end - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Recompute the IPv4 header checksum at `o` if the IHL fits in `len` bytes. */
function fixChecksum(b: Buffer, o: number, len: number): void {
  const hl = (b[o]! & 0x0f) * 4;
  if (hl < 20 || hl > len) return;
  b[o + 10] = 0;
  b[o + 11] = 0;
  const c = ~sum16(b, o, o + hl, 0) & 0xffff;
  b[o + 10] = c >> 8;
  b[o + 11] = c & 0xff;
}

function put32(b: Buffer, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

function get32(b: Buffer, o: number): number {
  return (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!;
}

function randomBytes(b: Buffer, o: number, n: number, r: () => number): void {
  for (let i = 0; i < n; i++) b[o + i] = r() & 0xff;
}

/** A valid inner packet at `b[o..]` of at most `max` bytes, ID `id`: returns its length. */
export function writeInner(b: Buffer, o: number, max: number, id: number, p: Plan, r: () => number): number {
  const kind = r() % 3;
  const proto = kind === 0 ? 1 : kind === 1 ? 6 : 17;
  const l4 = proto === 6 ? 20 : 8;
  const room = max - 20 - l4;
  const pay = r() % 4 === 0 ? r() % (room + 1) : r() % Math.min(room + 1, 200);
  const total = 20 + l4 + pay;
  b[o] = 0x45;
  b[o + 1] = r() & 0xff & 0xfc; // any DSCP, not-ECT
  b[o + 2] = total >> 8;
  b[o + 3] = total & 0xff;
  b[o + 4] = (id >> 8) & 0xff;
  b[o + 5] = id & 0xff;
  b[o + 6] = r() & 1 ? 0x40 : 0;
  b[o + 7] = 0;
  b[o + 8] = 64;
  b[o + 9] = proto;
  put32(b, o + 12, p.innerSrc);
  put32(b, o + 16, p.innerDst);
  const t = o + 20;
  randomBytes(b, t, l4 + pay, r);
  // Ports and ICMP type away from the valid TCP transfer's (which uses a port below 40000).
  if (proto === 1) b[t] = 8;
  else {
    b[t] = 0xc0 | (b[t]! & 0x3f);
    b[t + 2] = 0xc0 | (b[t + 2]! & 0x3f);
  }
  if (proto === 17) {
    b[t + 4] = (l4 + pay) >> 8;
    b[t + 5] = (l4 + pay) & 0xff;
  }
  fixChecksum(b, o, total);
  return total;
}

/** One mutation `c` of the packet `b[o, o+len)` (room for `max` bytes): returns the new length. */
function mutateOnce(c: number, b: Buffer, o: number, len: number, max: number, p: Plan, r: () => number): number {
  switch (c) {
    case 2: b[o] = ((r() & 0x0f) << 4) | (b[o]! & 0x0f); return len;
    case 3: b[o] = (b[o]! & 0xf0) | (r() & 0x0f); return len;
    case 4: { const v = r() & 3 ? (len + (r() % 41) - 20) & 0xffff : r() & 0xffff; b[o + 2] = v >> 8; b[o + 3] = v & 0xff; return len; }
    case 5: b[o + 6] = r() & 0xff; b[o + 7] = r() & 0xff; return len;
    case 6: b[o + 9] = r() & 0xff; return len;
    case 7: b[o + 10] ^= 1 + (r() & 0x7f); return len;
    case 8: return withOptions(b, o, len, max, r);
    case 9: return 1 + (r() % len);
    case 10: { const extra = Math.min(max - len, 1 + (r() % 64)); randomBytes(b, o + len, extra, r); return len + extra; }
    case 11: b[o + 8] = r() & 1; return len;
    case 12: put32(b, o + (r() & 1 ? 12 : 16), r() & 1 ? p.local : p.peer); return len;
    case 13: put32(b, o + 12, r() | 0); return len;
    default: return len;
  }
}

/** Options after the fixed header: NOPs, a Record Route, a Timestamp, or random bytes; lengths updated. */
function withOptions(b: Buffer, o: number, len: number, max: number, r: () => number): number {
  const words = 1 + (r() % 10);
  const add = words * 4;
  if (len < 20 || len + add > max) return len;
  b.copyWithin(o + 20 + add, o + 20, o + len);
  const kind = r() % 4;
  for (let i = 0; i < add; i++) b[o + 20 + i] = kind === 3 ? r() & 0xff : 1;
  if (kind === 1) { b[o + 20] = 7; b[o + 21] = Math.min(add, 39); b[o + 22] = 4; } // Record Route
  if (kind === 2) { b[o + 20] = 0x44; b[o + 21] = add; b[o + 22] = 5; b[o + 23] = 0; } // Timestamp
  b[o] = 0x40 | (5 + words);
  const total = len + add;
  b[o + 2] = total >> 8;
  b[o + 3] = total & 0xff;
  return total;
}

/**
 * `b[o..]` := a valid inner packet mutated (case `c`, maybe a second one), checksum fixed half
 * the time; returns its length.
 */
function mutatedInner(c: number, b: Buffer, o: number, max: number, id: number, p: Plan, r: () => number): number {
  let len = writeInner(b, o, max, id, p, r);
  if (c === C_VALID) return len;
  len = mutateOnce(c, b, o, len, max, p, r);
  if (r() % 4 === 0) len = mutateOnce(2 + (r() % 12), b, o, len, max, p, r);
  if (c !== 7 && r() & 1) fixChecksum(b, o, len);
  return len;
}

/** A spoofed source inside the sender's own pod block would come back into the TUN: keep it to the pod. */
function keepOwnBlock(b: Buffer, s: number, p: Plan): void {
  const src = get32(b, s);
  if ((src & p.ownMask) === p.ownBlock && src !== p.innerSrc) put32(b, s, p.innerSrc);
}

/** A packet for the TUN face at `b[o..]`; its case in `kind[0]`. Returns the length. */
export function tunPacket(b: Buffer, o: number, id: number, p: Plan, r: () => number, kind: Int32Array): number {
  const c = r() % 14;
  kind[0] = c;
  if (c === C_RANDOM) {
    const n = 1 + (r() % p.mtu);
    randomBytes(b, o, n, r);
    if (n >= 20 && b[o]! >> 4 === 4) keepOwnBlock(b, o + 12, p);
    return n;
  }
  const len = mutatedInner(c, b, o, p.mtu, id, p, r);
  if (len >= 16) keepOwnBlock(b, o + 12, p);
  return len;
}

/** Would Linux's ip_rcv_core refuse `b[o, o+len)`? (version, IHL, checksum, Total Length.) */
export function kernelRefuses(b: Buffer, o: number, len: number): boolean {
  if (len < 20 || b[o]! >> 4 !== 4 || (b[o]! & 0x0f) < 5) return true;
  const hl = (b[o]! & 0x0f) * 4;
  if (hl > len || sum16(b, o, o + hl, 0) !== 0xffff) return true;
  const total = (b[o + 2]! << 8) | b[o + 3]!;
  return total > len || total < hl;
}

/** Make an outer source of a stranger: any unicast address that is neither a martian nor one of `avoid`. */
export function strangerAddress(r: () => number, avoid: readonly number[]): number {
  for (;;) {
    const a = r() | 0;
    const top = a >>> 24;
    if (top === 0 || top === 127 || top >= 224 || avoid.includes(a)) continue;
    return a;
  }
}

/**
 * A packet for an underlay face at `b[o..]`, from `src` to `p.local`: an outer header (protocol
 * 4, DF) around a mutated inner, the outer mutated too in one case of 14 (`outer_header`);
 * random bytes (re-rolled until the kernel refuses them) in the `random_bytes` case.
 */
export function underlayPacket(b: Buffer, o: number, id: number, src: number, p: Plan, r: () => number, kind: Int32Array): number {
  let c = r() % 15;
  while (ONLY !== null && !ONLY.includes(c)) c = r() % 15;
  kind[0] = c;
  if (c === C_RANDOM) {
    let n: number;
    do {
      n = 1 + (r() % p.mtu);
      randomBytes(b, o, n, r);
    } while (!kernelRefuses(b, o, n));
    return n;
  }
  const inner = mutatedInner(c === C_OUTER ? C_VALID : c, b, o + 20, p.mtu - 20, id, p, r);
  const total = 20 + inner;
  b[o] = 0x45;
  b[o + 1] = r() % 8 === 0 ? 3 : 0; // sometimes CE
  b[o + 2] = total >> 8;
  b[o + 3] = total & 0xff;
  b[o + 4] = (id >> 8) & 0xff;
  b[o + 5] = id & 0xff;
  b[o + 6] = 0x40;
  b[o + 7] = 0;
  b[o + 8] = 64;
  b[o + 9] = 4;
  put32(b, o + 12, src);
  put32(b, o + 16, p.local);
  fixChecksum(b, o, total);
  if (c !== C_OUTER) return total;
  // The outer header mutated: any fixed field but the addresses and the protocol.
  const which = [2, 3, 4, 5, 7, 8, 9, 10, 11][r() % 9]!;
  let len = mutateOnce(which, b, o, total, p.mtu, p, r);
  // Options (added, or the inner's bytes under a larger IHL): never a source route (see above).
  const hl = Math.min((b[o]! & 0x0f) * 4, len);
  for (let i = 20; i < hl; i++) if (b[o + i] === 0x83 || b[o + i] === 0x89) b[o + i] = 1;
  if (which !== 7 && r() & 1) fixChecksum(b, o, len);
  if (len < 1) len = 1;
  return len;
}
