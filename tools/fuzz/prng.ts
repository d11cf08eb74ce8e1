/**
 * Seeded PRNG (mulberry32): a function returning uint32s, the same sequence for the same seed.
 * The fuzzer's (tools/fuzz) and the packet tests' (test/helpers/packets.ts `rng`), so that a
 * seed printed by either replays the same numbers.
 */
export function prng(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}
