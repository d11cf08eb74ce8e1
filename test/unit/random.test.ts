/** random16 (src/dataplane/random.ts): how many, in range, and spread over the whole range. */
import { describe, expect, test } from 'vitest';
import { random16 } from '../../src/dataplane/random.js';

describe('random16', () => {
  test('gives n whole numbers in 0..65535, none for n = 0', () => {
    expect(random16(0)).toEqual([]);
    const xs = random16(4096);
    expect(xs).toHaveLength(4096);
    for (const x of xs) expect(Number.isInteger(x) && x >= 0 && x <= 0xffff).toBe(true);
    // Both bytes vary, and 4096 draws from 65536 give ~3970 different numbers.
    expect(xs.some((x) => x >= 0x8000)).toBe(true);
    expect(xs.some((x) => x < 0x8000)).toBe(true);
    expect(xs.some((x) => (x & 0xff) >= 0x80)).toBe(true);
    expect(new Set(xs).size).toBeGreaterThan(3500);
  });
});
