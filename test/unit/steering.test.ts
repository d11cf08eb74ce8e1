/**
 * The underlay steering program (src/tun/steering.ts) against the reference model
 * (test/helpers/steering-model.ts), run in a cBPF interpreter (test/helpers/cbpf.ts), no root
 * needed: every program of every (index, count) passes the kernel's checks; on the hand-made
 * datagrams of the kernel test (test/helpers/steer-datagrams.ts) and on seeded random ones,
 * exactly the socket of the model's queue keeps each datagram, whole. Then the bytes themselves
 * (struct sock_filter in host order) and the argument checks.
 * test/integration/steering.test.ts runs the same programs in the kernel.
 */
import { endianness } from 'node:os';
import { describe, expect, it } from 'vitest';

import { SOCK_FILTER_SIZE, steeringFilter, type RawSteering } from '../../src/tun/steering.js';
import { check, decode, run, type Insn } from '../helpers/cbpf.js';
import { rng } from '../helpers/packets.js';
import { datagrams } from '../helpers/steer-datagrams.js';
import { steer } from '../helpers/steering-model.js';

const program = (index: number, count: number): Insn[] => decode(steeringFilter({ index, count }));

/** For each datagram, the indices of `count` whose program keeps it, and what each returned. */
function keptBy(count: number, ds: Uint8Array[]): Array<{ queues: number[]; kept: number[] }> {
  const progs = Array.from({ length: count }, (_, i) => program(i, count));
  return ds.map((d) => {
    const out = progs.map((p) => run(p, d));
    return { queues: out.flatMap((v, i) => (v !== 0 ? [i] : [])), kept: out.filter((v) => v !== 0) };
  });
}

/** Datagrams that misroute under `count`: kept by other than exactly the model's queue, or cut. */
function misrouted(count: number, ds: Uint8Array[]): Array<{ i: number; expected: number; got: number[] }> {
  return keptBy(count, ds).flatMap(({ queues, kept }, i) => {
    const expected = steer(ds[i]!, count).queue;
    const ok = queues.length === 1 && queues[0] === expected && kept[0] === 0xffffffff;
    return ok ? [] : [{ i, expected, got: queues }];
  });
}

/**
 * Seeded random IPIP datagrams as a raw socket hands them over: an outer header of IHL 5..15
 * (the kernel checks it), then 0..79 random bytes with the inner fields that steer drawn from the
 * interesting values (IHL, protocol, flags/fragment offset).
 */
function randomDatagrams(seed: number, n: number): Uint8Array[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => {
    const outer = 4 * (5 + (r() % 11));
    const d = new Uint8Array(outer + (r() % 80));
    for (let i = 0; i < d.length; i++) d[i] = r() & 0xff;
    d[0] = 0x40 | (outer / 4);
    const set = (off: number, v: number): void => {
      if (off < d.length) d[off] = v;
    };
    if (r() % 4 !== 0) set(outer, 0x40 | (5 + (r() % 11)));
    const proto = [6, 17, 6, 17, 1, r() & 0xff][r() % 6]!;
    set(outer + 9, proto);
    const frag = [0, 0x4000, 0x8000, 0x2000, r() & 0xffff][r() % 5]!;
    set(outer + 6, frag >>> 8);
    set(outer + 7, frag & 0xff);
    return d;
  });
}

describe('steeringFilter', () => {
  it('every program for count 1..64 and each index passes the checks the kernel makes', () => {
    for (let count = 1; count <= 64; count++) {
      for (let index = 0; index < count; index++) expect(check(program(index, count)), `${index}/${count}`).toBeNull();
    }
  });

  const crafted = datagrams().map((d) => d.bytes);

  it.each([1, 2, 3, 5, 8, 13, 64])('count %i: each hand-made datagram is kept, whole, by exactly the queue the model picks', (count) => {
    expect(crafted.length).toBeGreaterThan(3000);
    const wrong = misrouted(count, crafted);
    expect(wrong.slice(0, 10), `${wrong.length} of ${crafted.length} misrouted`).toEqual([]);
  });

  it.each([2, 3, 4, 7, 16])('count %i: each of 4000 seeded random datagrams is kept, whole, by exactly the queue the model picks', (count) => {
    const ds = randomDatagrams(0x57ee2 + count, 4000);
    const paths = new Set(ds.map((d) => steer(d, count).path));
    expect(paths).toEqual(new Set(['ports', 'no-ports', 'short']));
    const wrong = misrouted(count, ds);
    expect(wrong.slice(0, 10), `${wrong.length} of ${ds.length} misrouted`).toEqual([]);
  });

  it('is struct sock_filter entries in host byte order: code u16, jt u8, jf u8, k u32', () => {
    const bytes = steeringFilter({ index: 1, count: 3 });
    expect(bytes).toBeInstanceOf(Uint8Array);
    expect(SOCK_FILTER_SIZE).toBe(8);
    expect(bytes.byteLength % SOCK_FILTER_SIZE).toBe(0);
    const le = endianness() === 'LE';
    const entry = (code: number, jt: number, jf: number, k: number): string => {
      const b = Buffer.alloc(8);
      if (le) b.writeUInt16LE(code, 0);
      else b.writeUInt16BE(code, 0);
      b[2] = jt;
      b[3] = jf;
      if (le) b.writeUInt32LE(k, 4);
      else b.writeUInt32BE(k, 4);
      return b.toString('hex');
    };
    const hex = Buffer.from(bytes).toString('hex').match(/.{16}/g)!;
    // ldxb 4*([0]&0xf); stx M[1]; ... ; jeq #1 (the index), then ja to the drop; ret #-1; ret #0.
    expect(hex.slice(0, 2)).toEqual([entry(0xb1, 0, 0, 0), entry(0x03, 0, 0, 1)]);
    expect(hex.slice(-4)).toEqual([entry(0x15, 1, 2, 1), entry(0x05, 0, 0, 1), entry(0x06, 0, 0, 0xffffffff), entry(0x06, 0, 0, 0)]);
    // The queue count is the multiplier before the last shift.
    expect(hex[hex.length - 6]).toBe(entry(0x24, 0, 0, 3));
    // Index 0 takes the datagrams too short to hash: its `ja` goes to the accept.
    expect(Buffer.from(steeringFilter({ index: 0, count: 3 })).toString('hex').match(/.{16}/g)!.at(-3)).toBe(entry(0x05, 0, 0, 0));
  });

  it('refuses a steering outside count [1, 64] x index [0, count) (RangeError) or not { index, count } numbers (TypeError)', () => {
    const bad = (s: unknown): () => Uint8Array => () => steeringFilter(s as RawSteering);
    for (const s of [{ index: 0, count: 0 }, { index: 0, count: 65 }, { index: 2, count: 2 }, { index: -1, count: 2 }, { index: 0.5, count: 2 }, { index: 0, count: 2.5 }]) {
      expect(bad(s), JSON.stringify(s)).toThrow(RangeError);
    }
    for (const s of [3, null, { index: 0 }, { index: '0', count: 2 }]) expect(bad(s), JSON.stringify(s)).toThrow(TypeError);
    expect(steeringFilter({ index: 63, count: 64 }).byteLength).toBeGreaterThan(0);
  });
});

describe('the cBPF interpreter (test helper)', () => {
  it('refuses what the kernel refuses: no final return, a jump out of the program, M[16]', () => {
    const ret = { code: 0x06, jt: 0, jf: 0, k: 0 };
    expect(check([ret])).toBeNull();
    expect(check([])).not.toBeNull();
    expect(check([{ code: 0x00, jt: 0, jf: 0, k: 0 }])).toMatch(/return/);
    expect(check([{ code: 0x15, jt: 1, jf: 0, k: 0 }, ret])).toMatch(/out of the program/);
    expect(check([{ code: 0x02, jt: 0, jf: 0, k: 16 }, ret])).toMatch(/M\[16\]/);
  });

  it('drops a packet when a load runs past its end', () => {
    const prog = [{ code: 0x20, jt: 0, jf: 0, k: 0 }, { code: 0x06, jt: 0, jf: 0, k: 7 }]; // ld [0]; ret #7
    expect(run(prog, new Uint8Array(4))).toBe(7);
    expect(run(prog, new Uint8Array(3))).toBe(0);
  });
});
