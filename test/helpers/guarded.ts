/**
 * Poisoned slots for the property tests (test/unit/*.property.test.ts): a packet's bytes laid
 * out in a buffer with guard bytes before and after its slot, to check that a function over
 * `(buf, off, len)` neither writes nor reads outside the slot.
 *
 * Writes are caught by comparing the guards after the call. Reads are caught differentially:
 * the same call runs on three layouts of the same slot, with guards of 0xA5, with guards of
 * 0x5A, and with the buffer ending exactly where the slot ends (a read past it gives
 * `undefined` in JavaScript); a function that reads only inside its slot gives the same result
 * and the same slot bytes on all three. (A Proxy cannot stand in for a Buffer here: Buffer
 * methods such as `readUInt16BE` and `copy` refuse a Proxy as `this`.)
 */
import { Buffer } from 'node:buffer';
import { expect } from 'vitest';

/** Guard bytes on each side of a slot. */
export const GUARD = 64;
/** The three layouts: guard fill before, guard fill after (null: the buffer ends with the slot). */
const LAYOUTS: readonly (readonly [number, number | null])[] = [
  [0xa5, 0xa5],
  [0x5a, 0x5a],
  [0x00, null],
];

/** One layout of a slot: `buf[start, start + slot.length)` holds the slot's bytes. */
export interface Laid {
  buf: Buffer;
  start: number;
}

/** `slot` at offset GUARD of a buffer with `before`/`after` guard bytes (none after if `after` is null). */
export function lay(slot: Uint8Array, before: number, after: number | null): Laid {
  const buf = Buffer.alloc(GUARD + slot.length + (after === null ? 0 : GUARD), before);
  if (after !== null) buf.fill(after, GUARD + slot.length);
  buf.set(slot, GUARD);
  return { buf, start: GUARD };
}

/** The guards of `l` (for a slot of `n` bytes) still hold their fill. */
export function expectGuards(l: Laid, n: number, before: number, after: number | null, what: string): void {
  for (let i = 0; i < l.start; i++) if (l.buf[i] !== before) expect.fail(`${what}: wrote byte ${i - l.start} before the slot`);
  if (after === null) return;
  for (let i = l.start + n; i < l.buf.length; i++) if (l.buf[i] !== after) expect.fail(`${what}: wrote byte ${i - l.start - n} after the slot`);
}

/**
 * Run `f` on each layout of `slot`; check the guards after each run; check that the results
 * (as `summary` renders them, offsets relative to the slot) and the slot's bytes afterwards are
 * the same on every layout. Returns the first layout's result and slot bytes.
 */
export function inSlot<R>(slot: Uint8Array, f: (l: Laid) => R, summary: (r: R, l: Laid) => unknown = (r) => r, what = 'call'): { result: R; after: Buffer } {
  let first: { result: R; after: Buffer; sum: unknown } | null = null;
  for (const [before, after] of LAYOUTS) {
    const l = lay(slot, before, after);
    const result = f(l);
    expectGuards(l, slot.length, before, after, what);
    const bytes = Buffer.from(l.buf.subarray(l.start, l.start + slot.length));
    const sum = summary(result, l);
    if (first === null) first = { result, after: bytes, sum };
    else {
      expect(sum, `${what}: result depends on bytes outside the slot`).toEqual(first.sum);
      expect(bytes.equals(first.after), `${what}: slot bytes depend on bytes outside the slot`).toBe(true);
    }
  }
  return { result: first!.result, after: first!.after };
}
