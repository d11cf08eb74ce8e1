/**
 * isoTime (src/daemon/iso-time.ts) against the reference it replaces, Date.prototype.toISOString:
 * random times over a Date's whole range and around now, the edges of days, months, leap years,
 * centuries and the 0-9999 year range, and the values toISOString refuses.
 */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { isoTime } from '../../src/daemon/iso-time.js';

const MAX = 8.64e15;
const DAY = 86_400_000;

describe('isoTime', () => {
  test('equals toISOString over the whole range of a Date', () => {
    fc.assert(fc.property(fc.integer({ min: -MAX, max: MAX }), (t) => isoTime(t) === new Date(t).toISOString()), { numRuns: 20_000 });
  });

  test('equals toISOString around now (the times the daemon writes)', () => {
    const now = Date.now();
    fc.assert(fc.property(fc.integer({ min: now - 200 * 365 * DAY, max: now + 200 * 365 * DAY }), (t) => isoTime(t) === new Date(t).toISOString()), { numRuns: 20_000 });
  });

  test('equals toISOString at the edges of days, months and years', () => {
    const edges: number[] = [0, -1, 1, MAX, -MAX, MAX - 1, -MAX + 1];
    for (const y of [-271821, -10000, -1, 0, 1, 1600, 1700, 1899, 1900, 1970, 1999, 2000, 2024, 2100, 2400, 9999, 10000, 275759]) {
      for (let m = 0; m < 12; m++) {
        const t = Date.UTC(y, m, 1);
        if (Number.isNaN(t)) continue;
        // Date.UTC maps years 0-99 to 1900-1999: set the year explicitly.
        const d = new Date(t);
        d.setUTCFullYear(y);
        const first = d.getTime();
        if (Math.abs(first) <= MAX) edges.push(first);
        for (const dt of [-1, 1, DAY - 1, -DAY, 28 * DAY, 29 * DAY]) if (Math.abs(first + dt) <= MAX) edges.push(first + dt);
      }
    }
    for (const t of edges) expect(isoTime(t), String(t)).toBe(new Date(t).toISOString());
  });

  test('fractions of a millisecond are cut as a Date cuts them', () => {
    fc.assert(fc.property(fc.double({ min: -MAX, max: MAX, noNaN: true }), (t) => isoTime(t) === new Date(t).toISOString()), { numRuns: 5000 });
    expect(isoTime(-0)).toBe(new Date(-0).toISOString());
    expect(isoTime(-0.5)).toBe(new Date(-0.5).toISOString());
  });

  test('a time that is no Date is a RangeError, as for toISOString', () => {
    for (const t of [NaN, Infinity, -Infinity, MAX + 1, -MAX - 1]) {
      expect(() => new Date(t).toISOString()).toThrow(RangeError);
      expect(() => isoTime(t)).toThrow(RangeError);
    }
  });
});
