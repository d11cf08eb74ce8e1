/**
 * fast-check arbitraries for the property tests: hostile packets, either random bytes or a valid
 * packet mutated field by field (test/helpers/tunnel-sides.ts builds the valid ones), and the
 * run count and seed every property file shares.
 *
 * `IPIPD_PROPERTY_RUNS` scales the runs (default 1000 per property), `IPIPD_PROPERTY_SEED`
 * replays one seed (fast-check prints the seed and path of a failure).
 */
import { Buffer } from 'node:buffer';
import fc from 'fast-check';
import { computeHeaderChecksum } from '../../src/ipip/index.js';

/** Runs per property: IPIPD_PROPERTY_RUNS, default 1000. */
export const RUNS = Number(process.env.IPIPD_PROPERTY_RUNS ?? 1000);

/** fast-check parameters: the run count, and the seed when IPIPD_PROPERTY_SEED is set. */
export function params(runs = RUNS): fc.Parameters<unknown> {
  const seed = process.env.IPIPD_PROPERTY_SEED;
  return seed === undefined ? { numRuns: runs } : { numRuns: runs, seed: Number(seed) };
}

/** A field mutation: set byte `at` (mod the length) to `value`, or a 16-bit word to an edge value. */
export type Mutation = readonly [at: number, value: number, wide: boolean];

const EDGE_WORDS = [0, 1, 19, 20, 21, 0x3fff, 0x4000, 0x7fff, 0x8000, 0xfffe, 0xffff];
const EDGE_BYTES = [0, 1, 4, 5, 6, 15, 17, 0x40, 0x45, 0x46, 0x4f, 0x60, 0xff];

/** One mutation, biased to the IPv4 header's fields (the first 24 bytes) and edge values. */
export const mutation: fc.Arbitrary<Mutation> = fc.tuple(
  fc.oneof(fc.integer({ min: 0, max: 23 }), fc.nat(2000)),
  fc.oneof(fc.constantFrom(...EDGE_BYTES), fc.constantFrom(...EDGE_WORDS), fc.nat(0xffff)),
  fc.boolean(),
);

/**
 * Apply mutations to a copy of `p`; then maybe truncate or extend it (`cut`: bytes kept, -1 for
 * all, or extra random bytes with `tail`), and maybe fix the IPv4 header checksum at `fixAt`
 * (so the mutation reaches the checks after the checksum).
 */
export function mutate(p: Buffer, muts: readonly Mutation[], cut: number, tail: Uint8Array, fixAt: number | null): Buffer {
  let b = Buffer.from(p);
  for (const [at, value, wide] of muts) {
    if (b.length === 0) break;
    const i = at % b.length;
    if (wide && i + 1 < b.length) b.writeUInt16BE(value & 0xffff, i);
    else b[i] = value & 0xff;
  }
  if (fixAt !== null && b.length >= fixAt + 20 && (b[fixAt] & 0x0f) >= 5 && fixAt + (b[fixAt] & 0x0f) * 4 <= b.length) {
    b.writeUInt16BE(computeHeaderChecksum(b, fixAt), fixAt + 10);
  }
  if (cut >= 0 && cut < b.length) b = b.subarray(0, cut);
  if (cut === -2) b = Buffer.concat([b, tail]);
  return b;
}

/** Mutations to apply to a valid packet: how many, which, the cut, the extra tail, the checksum fix. */
export const mutations = fc.record({
  muts: fc.array(mutation, { maxLength: 4 }),
  cut: fc.oneof({ weight: 3, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.constant(-2) }, { weight: 1, arbitrary: fc.nat(80) }),
  tail: fc.uint8Array({ minLength: 1, maxLength: 40 }),
  fix: fc.boolean(),
});

/** An IPv4 address as a signed int32, biased to the given ones. */
export function addrNear(...addrs: number[]): fc.Arbitrary<number> {
  return fc.oneof(fc.constantFrom(...addrs), fc.integer({ min: -0x80000000, max: 0x7fffffff }));
}
