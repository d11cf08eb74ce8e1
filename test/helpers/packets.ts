/**
 * Small, independent helpers shared by the packet tests: a seeded PRNG so that random tests
 * reproduce, address, hex and tcpdump hex-dump parsing, and RFC 1071 the slow, obvious way (a reference that
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

/**
 * `tcpdump -l -n -x` output -> one entry per frame: its summary line (`head`) and the IP datagram
 * the hex lines after it spell (`bytes`).
 */
export function tcpdumpFrames(text: string): Array<{ head: string; bytes: Buffer }> {
  return text.split(/\n(?=\d{2}:\d{2})/).map((f) => {
    const lines = f.split('\n');
    return { head: lines[0]!, bytes: hex(lines.slice(1).map((l) => l.replace(/^\s*0x[0-9a-f]+:/, '')).join('')) };
  });
}

/** RFC 1071 by the book over `len` bytes (odd byte padded), folded, complemented. 0 = verifies. */
export function refChecksum(b: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += (b[off + i]! << 8) | (i + 1 < len ? b[off + i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
