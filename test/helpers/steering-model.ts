/**
 * A reference model of ipipd's underlay steering (io.queues > 1), written from its description
 * and sharing no code with it (the filter is a classic BPF program built by src/tun/steering.ts
 * `steeringFilter`): which queue of `count` keeps an IPIP datagram, given the datagram as the
 * raw socket receives it (from the outer IPv4 header on).
 *
 *   outer = outer IHL * 4; a datagram shorter than outer + 20 (no whole inner header): queue 0
 *   p = the first 32-bit word after the inner header (inner IHL * 4), big-endian, for an
 *       inner TCP (6) or UDP (17) packet that is not a fragment (MF clear and offset 0; DF
 *       and the reserved bit do not matter) and whose 4 port bytes are all there; else 0
 *   h = ((src * K + dst) * K + p) * K (mod 2^32, K = 0x9e3779b1)
 *   queue = ((h >>> 16) * count) >>> 16   (the top bits of h)
 *
 * (Two earlier hashes took the queue from low bits: src + dst + p folded and taken mod count
 * (until 725310d), then (h >>> 16) % count. A multiplication moves each input bit only upward,
 * so bit 16 of h depended on bits 0..16 of the inputs alone, and the port word's bit 16 is the
 * source port's low bit, always 0 for Linux's even connect() ports: every TCP flow of a host
 * went to one queue of two.)
 *
 * Used by test/unit/steering.test.ts (the program in a cBPF interpreter, on hand-made and random
 * datagrams), test/integration/steering.test.ts (the program in the kernel, on hand-made
 * datagrams) and test/integration/queues.test.ts (which daemon queue a UDP flow must land on).
 */

/** Why a datagram hashes the way it does: with ports, without them, or too short to hash. */
export type SteerPath = 'ports' | 'no-ports' | 'short';

export interface SteerVerdict {
  queue: number;
  path: SteerPath;
  /** The hash's upper 16 bits (0 for 'short'). */
  hash: number;
}

/** Fibonacci hashing's multiplier, 2^32 / golden ratio (odd). */
const K = 0x9e3779b1 | 0;

/** The 16 bits the queue is taken from: ((src * K + dst) * K + p) * K mod 2^32, upper half. */
export function flowHash(src: number, dst: number, ports: number): number {
  let h = Math.imul(src | 0, K);
  h = Math.imul((h + (dst | 0)) | 0, K);
  h = Math.imul((h + (ports | 0)) | 0, K);
  return h >>> 16;
}

/** The queue of `count` for the hash's upper 16 bits `hash`: its top bits, by multiply and shift. */
export function queueOf(hash: number, count: number): number {
  return (hash * count) >>> 16;
}

/** The queue of `count` that keeps datagram `d` (outer IPv4 header first), and why. */
export function steer(d: Uint8Array, count: number): SteerVerdict {
  const b = Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  const outer = (b[0]! & 0x0f) * 4;
  if (b.length < outer + 20) return { queue: 0, path: 'short', hash: 0 };
  const src = b.readUInt32BE(outer + 12);
  const dst = b.readUInt32BE(outer + 16);
  const frag = b.readUInt16BE(outer + 6) & 0x3fff;
  const proto = b[outer + 9]!;
  const l4 = outer + (b[outer]! & 0x0f) * 4;
  const hasPorts = frag === 0 && (proto === 6 || proto === 17) && b.length >= l4 + 4;
  const hash = flowHash(src, dst, hasPorts ? b.readUInt32BE(l4) : 0);
  return { queue: queueOf(hash, count), path: hasPorts ? 'ports' : 'no-ports', hash };
}

/** The queue of `count` for an unfragmented TCP/UDP packet of this flow (addresses as dotted quads). */
export function flowQueue(src: string, dst: string, sport: number, dport: number, count: number): number {
  const a = (s: string): number => s.split('.').reduce((acc, x) => ((acc << 8) | Number(x)) >>> 0, 0);
  return queueOf(flowHash(a(src), a(dst), ((sport << 16) | dport) >>> 0), count);
}
