/**
 * Small, independent helpers shared by the packet tests: a seeded PRNG so that random tests
 * reproduce, address and hex parsing, and RFC 1071 the slow, obvious way (a reference that
 * shares no code with src/ipip/checksum.ts).
 */
import { Buffer } from 'node:buffer';

/** Seeded PRNG (mulberry32): a function returning uint32s, the same sequence for the same seed. */
export { prng as rng } from '../../tools/fuzz/prng.js';

/** "a.b.c.d" -> signed int32, as `readInt32BE` gives it. */
export function ip(s: string): number {
  const p = s.split('.').map(Number);
  return (p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!;
}

/** Hex text (white space ignored) -> bytes. */
export function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

/** RFC 1071 by the book over `len` bytes (odd byte padded), folded, complemented. 0 = verifies. */
export function refChecksum(b: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += (b[off + i]! << 8) | (i + 1 < len ? b[off + i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
