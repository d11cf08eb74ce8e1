/**
 * PrefixTable: hand-made edge cases (empty table, default route, /32 host routes, the sign
 * boundary at 128.0.0.0, 255.255.255.255, nested prefixes, misses), the build-time guards, and
 * a reference model: seeded random prefix sets checked against a linear scan over all prefixes
 * where the longest match wins (as wireguard-go's allowedips_rand_test.go does).
 *
 * Reproduce a model failure with the seed it prints: LPM_SEED=<seed> npx vitest run test/unit/table.test.ts
 */
import { describe, expect, it } from 'vitest';
import { formatIPv4, formatPrefix, maskOf, parseIPv4, parsePrefix } from '../../src/routing/prefix.js';
import { PrefixTable, type PrefixEntry } from '../../src/routing/table.js';
import { rng } from '../helpers/packets.js';

/** mulberry32: small seeded PRNG returning int32s. */
function mulberry32(seed: number): () => number {
  const next = rng(seed);
  return () => next() | 0; // int32
}

const ip = (s: string): number => {
  const a = parseIPv4(s);
  if (a === undefined) throw new Error(`bad test address ${s}`);
  return a;
};

/** Entries from "a.b.c.d/len" strings, valued by the string itself. */
function entriesOf(prefixes: string[]): Array<PrefixEntry<string>> {
  return prefixes.map((s) => {
    const r = parsePrefix(s);
    if (typeof r === 'string') throw new Error(r);
    return { ...r, value: s };
  });
}

describe('PrefixTable edge cases', () => {
  it('empty table misses everywhere', () => {
    const t = PrefixTable.build<string>([]);
    expect(t.size).toBe(0);
    expect(t.entries()).toEqual([]);
    for (const a of [0, -1, 1, 0x7fffffff, -0x80000000, ip('192.0.2.1')]) {
      expect(t.lookup(a)).toBeUndefined();
      expect(t.lookupIndex(a)).toBe(-1);
    }
  });

  it('default route 0.0.0.0/0 matches every address, including negative int32', () => {
    const t = PrefixTable.build(entriesOf(['0.0.0.0/0']));
    expect(t.size).toBe(1);
    for (const a of [0, -1, 1, 0x7fffffff, -0x80000000, ip('192.0.2.1'), ip('10.0.0.1')]) {
      expect(t.lookup(a)).toBe('0.0.0.0/0');
      expect(t.lookupIndex(a)).toBe(0);
    }
  });

  it('/32 host routes match only themselves, at both ends of the address space', () => {
    const hosts = ['0.0.0.0/32', '127.255.255.255/32', '128.0.0.0/32', '203.0.113.7/32', '255.255.255.255/32'];
    const t = PrefixTable.build(entriesOf(hosts));
    hosts.forEach((h, i) => {
      const a = ip(h.slice(0, -3));
      expect(t.lookup(a)).toBe(h);
      expect(t.lookupIndex(a)).toBe(i);
    });
    for (const miss of ['0.0.0.1', '127.255.255.254', '128.0.0.1', '203.0.113.6', '203.0.113.8', '255.255.255.254']) {
      expect(t.lookup(ip(miss)), miss).toBeUndefined();
      expect(t.lookupIndex(ip(miss)), miss).toBe(-1);
    }
  });

  it('nested prefixes: the longest one containing the address wins', () => {
    const t = PrefixTable.build(
      entriesOf(['0.0.0.0/0', '10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '10.1.2.3/32', '10.1.2.128/25']),
    );
    const cases: Array<[string, string]> = [
      ['10.1.2.3', '10.1.2.3/32'],
      ['10.1.2.2', '10.1.2.0/24'],
      ['10.1.2.4', '10.1.2.0/24'],
      ['10.1.2.127', '10.1.2.0/24'],
      ['10.1.2.128', '10.1.2.128/25'],
      ['10.1.2.255', '10.1.2.128/25'],
      ['10.1.3.0', '10.1.0.0/16'],
      ['10.1.1.255', '10.1.0.0/16'],
      ['10.1.255.255', '10.1.0.0/16'],
      ['10.2.0.0', '10.0.0.0/8'],
      ['10.0.255.255', '10.0.0.0/8'],
      ['10.255.255.255', '10.0.0.0/8'],
      ['11.0.0.0', '0.0.0.0/0'],
      ['9.255.255.255', '0.0.0.0/0'],
      ['255.255.255.255', '0.0.0.0/0'],
    ];
    for (const [addr, want] of cases) expect(t.lookup(ip(addr)), addr).toBe(want);
  });

  it('nested prefixes above 128.0.0.0 (negative int32) and the two halves /1', () => {
    const t = PrefixTable.build(
      entriesOf(['128.0.0.0/1', '0.0.0.0/1', '192.168.0.0/16', '192.168.1.0/24', '255.0.0.0/8', '255.255.255.255/32']),
    );
    const cases: Array<[string, string]> = [
      ['127.255.255.255', '0.0.0.0/1'],
      ['0.0.0.0', '0.0.0.0/1'],
      ['128.0.0.0', '128.0.0.0/1'],
      ['192.167.255.255', '128.0.0.0/1'],
      ['192.168.0.0', '192.168.0.0/16'],
      ['192.168.1.77', '192.168.1.0/24'],
      ['192.168.2.0', '192.168.0.0/16'],
      ['192.169.0.0', '128.0.0.0/1'],
      ['254.255.255.255', '128.0.0.0/1'],
      ['255.0.0.0', '255.0.0.0/8'],
      ['255.255.255.254', '255.0.0.0/8'],
      ['255.255.255.255', '255.255.255.255/32'],
    ];
    for (const [addr, want] of cases) {
      expect(t.lookup(ip(addr)), addr).toBe(want);
      // The uint32 form of the same address gives the same answer.
      expect(t.lookup(ip(addr) >>> 0), `${addr} as uint32`).toBe(want);
    }
  });

  it('misses outside every prefix, just before and just after each one', () => {
    const t = PrefixTable.build(entriesOf(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '198.51.100.0/24']));
    for (const miss of [
      '9.255.255.255',
      '11.0.0.0',
      '172.15.255.255',
      '172.32.0.0',
      '192.167.255.255',
      '192.169.0.0',
      '198.51.99.255',
      '198.51.101.0',
      '0.0.0.0',
      '255.255.255.255',
    ]) {
      expect(t.lookup(ip(miss)), miss).toBeUndefined();
      expect(t.lookupIndex(ip(miss)), miss).toBe(-1);
    }
    expect(t.lookup(ip('172.31.255.255'))).toBe('172.16.0.0/12');
    expect(t.lookup(ip('172.16.0.0'))).toBe('172.16.0.0/12');
  });

  it('a prefix that fills an existing branch point is not a duplicate', () => {
    // 10.0.0.0/24 and 10.0.1.0/24 meet at 10.0.0.0/23, which the trie holds as a valueless node.
    const t = PrefixTable.build(entriesOf(['10.0.0.0/24', '10.0.1.0/24', '10.0.0.0/23', '10.0.2.0/23']));
    expect(t.lookup(ip('10.0.0.1'))).toBe('10.0.0.0/24');
    expect(t.lookup(ip('10.0.1.1'))).toBe('10.0.1.0/24');
    expect(t.lookup(ip('10.0.2.1'))).toBe('10.0.2.0/23');
    expect(t.lookup(ip('10.0.4.0'))).toBeUndefined();
    // A branch point alone (no value) matches nothing.
    const g = PrefixTable.build(entriesOf(['10.0.0.0/24', '10.0.1.0/24']));
    expect(g.lookup(ip('10.0.0.255'))).toBe('10.0.0.0/24');
    expect(g.lookup(ip('10.0.2.0'))).toBeUndefined();
  });

  it('lookupIndex is the insertion index; lookup results do not depend on insertion order', () => {
    const prefixes = ['0.0.0.0/0', '10.0.0.0/8', '10.1.0.0/16', '10.1.2.3/32', '128.0.0.0/1', '255.255.255.255/32'];
    const forward = PrefixTable.build(entriesOf(prefixes));
    const backward = PrefixTable.build(entriesOf([...prefixes].reverse()));
    const probes = ['10.1.2.3', '10.1.9.9', '10.9.9.9', '9.9.9.9', '200.0.0.1', '255.255.255.255'];
    for (const p of probes) {
      expect(backward.lookup(ip(p)), p).toBe(forward.lookup(ip(p)));
      const i = forward.lookupIndex(ip(p));
      expect(prefixes[i]).toBe(forward.lookup(ip(p)));
      expect(backward.lookupIndex(ip(p))).toBe(prefixes.length - 1 - i);
    }
  });

  it('entries() returns a fresh copy in insertion order with int32 addresses', () => {
    const input = [
      { addr: 0xc0a80000, len: 16, value: { peer: 'b' } }, // 192.168.0.0 given as uint32
      { addr: ip('10.0.0.0'), len: 8, value: { peer: 'a' } },
    ];
    const t = PrefixTable.build(input);
    const out = t.entries();
    expect(out).toEqual([
      { addr: ip('192.168.0.0'), len: 16, value: { peer: 'b' } },
      { addr: ip('10.0.0.0'), len: 8, value: { peer: 'a' } },
    ]);
    expect(out[0].addr).toBeLessThan(0);
    expect(out[0].value).toBe(input[0].value); // values are not copied
    out[0].len = 1;
    out.pop();
    expect(t.entries()).toHaveLength(2);
    expect(t.entries()[0].len).toBe(16);
    expect(t.lookup(ip('192.168.3.4'))).toBe(input[0].value);
  });

  it('accepts any iterable, read once', () => {
    function* gen(): Generator<PrefixEntry<number>> {
      yield { addr: ip('10.0.0.0'), len: 8, value: 1 };
      yield { addr: ip('10.0.0.0'), len: 16, value: 2 };
    }
    const t = PrefixTable.build(gen());
    expect(t.size).toBe(2);
    expect(t.lookup(ip('10.0.1.1'))).toBe(2);
    expect(t.lookup(ip('10.1.0.0'))).toBe(1);
  });

  it('keeps undefined values distinguishable through lookupIndex', () => {
    const t = PrefixTable.build<string | undefined>([{ addr: 0, len: 0, value: undefined }]);
    expect(t.lookup(1)).toBeUndefined();
    expect(t.lookupIndex(1)).toBe(0);
  });
});

describe('PrefixTable.build guards', () => {
  it('throws RangeError naming a duplicate prefix and both entries', () => {
    expect(() => PrefixTable.build(entriesOf(['10.0.0.0/8', '192.0.2.0/24', '10.0.0.0/8']))).toThrow(
      new RangeError('duplicate prefix 10.0.0.0/8 (entries 0 and 2)'),
    );
    expect(() => PrefixTable.build(entriesOf(['0.0.0.0/0', '0.0.0.0/0']))).toThrow(
      new RangeError('duplicate prefix 0.0.0.0/0 (entries 0 and 1)'),
    );
    expect(() => PrefixTable.build(entriesOf(['255.255.255.255/32', '255.255.255.255/32']))).toThrow(
      new RangeError('duplicate prefix 255.255.255.255/32 (entries 0 and 1)'),
    );
    // A duplicate of a prefix that first arrived into a branch point.
    expect(() =>
      PrefixTable.build(entriesOf(['10.0.0.0/24', '10.0.1.0/24', '10.0.0.0/23', '10.0.0.0/23'])),
    ).toThrow(new RangeError('duplicate prefix 10.0.0.0/23 (entries 2 and 3)'));
    // The same prefix as int32 and as uint32 is a duplicate.
    expect(() =>
      PrefixTable.build([
        { addr: ip('192.168.0.0'), len: 16, value: 0 },
        { addr: 0xc0a80000, len: 16, value: 1 },
      ]),
    ).toThrow(new RangeError('duplicate prefix 192.168.0.0/16 (entries 0 and 1)'));
  });

  it('throws RangeError on host bits, bad lengths and non-32-bit addresses', () => {
    const one = (addr: number, len: number) => () => PrefixTable.build([{ addr, len, value: 0 }]);
    expect(one(ip('198.51.100.1'), 25)).toThrow(new RangeError('host bits set: 198.51.100.1/25 (entry 0)'));
    expect(one(1, 0)).toThrow(new RangeError('host bits set: 0.0.0.1/0 (entry 0)'));
    expect(one(0, 33)).toThrow(new RangeError('prefix length must be 0..32: 33 (entry 0)'));
    expect(one(0, -1)).toThrow(new RangeError('prefix length must be 0..32: -1 (entry 0)'));
    expect(one(0, 8.5)).toThrow(new RangeError('prefix length must be 0..32: 8.5 (entry 0)'));
    expect(one(0, NaN)).toThrow(new RangeError('prefix length must be 0..32: NaN (entry 0)'));
    expect(one(2 ** 32, 32)).toThrow(new RangeError('not a 32-bit IPv4 address: 4294967296 (entry 0)'));
    expect(one(-(2 ** 31) - 1, 32)).toThrow(RangeError);
    expect(one(1.5, 32)).toThrow(RangeError);
    expect(one(NaN, 32)).toThrow(RangeError);
  });
});

// --- Reference model ---------------------------------------------------------------------------

interface RandomPrefix {
  addr: number;
  len: number;
}

/**
 * `count` distinct random prefixes. Lengths: ~88% uniform in 8..32, ~12% in 0..7. Half are
 * derived from an earlier prefix (same leading bits, then a longer or shorter length), so that
 * nesting, shared paths and branch points near the first-level stride are common, not rare.
 */
function randomPrefixes(rand: () => number, count: number): RandomPrefix[] {
  const seen = new Set<number>();
  const out: RandomPrefix[] = [];
  while (out.length < count) {
    const r = rand() >>> 0;
    const len = r % 100 < 12 ? (r >>> 8) % 8 : 8 + ((r >>> 8) % 25);
    let bits = rand();
    if (out.length > 0 && (rand() & 1) === 0) {
      const base = out[(rand() >>> 0) % out.length];
      const keep = maskOf(base.len);
      bits = (base.addr & keep) | (bits & ~keep);
    }
    const addr = bits & maskOf(len);
    const key = (addr >>> 0) * 33 + len;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ addr, len });
  }
  return out;
}

/** Probe addresses: edges, uniform random, inside random prefixes, and both sides of their ends. */
function probesFor(rand: () => number, prefixes: RandomPrefix[], count: number): Int32Array {
  const probes = new Int32Array(count);
  const edges = [0, -1, 1, -2, 0x7fffffff, -0x80000000];
  probes.set(edges.slice(0, count));
  for (let i = edges.length; i < count; i++) {
    const p = prefixes[(rand() >>> 0) % prefixes.length];
    const host = ~maskOf(p.len);
    switch ((rand() >>> 0) % 6) {
      case 0:
      case 1:
        probes[i] = rand();
        break;
      case 2:
      case 3:
        probes[i] = p.addr | (rand() & host);
        break;
      case 4:
        probes[i] = (rand() & 1) === 0 ? p.addr : p.addr | host; // first or last address
        break;
      default:
        probes[i] = (rand() & 1) === 0 ? (p.addr - 1) | 0 : ((p.addr | host) + 1) | 0; // just outside
    }
  }
  return probes;
}

/**
 * The reference: every prefix as an unsigned range [lo, hi]; scan all, keep the longest
 * containing x. Deliberately shares no bit tricks with the table.
 */
function linearReference(prefixes: RandomPrefix[]): (x: number) => number {
  const n = prefixes.length;
  const lo = new Float64Array(n);
  const hi = new Float64Array(n);
  const len = new Int8Array(n);
  prefixes.forEach((p, i) => {
    lo[i] = p.addr >>> 0;
    hi[i] = lo[i] + 2 ** (32 - p.len) - 1;
    len[i] = p.len;
  });
  return (x: number): number => {
    const u = x >>> 0;
    let best = -1;
    let bestLen = -1;
    for (let i = 0; i < n; i++) {
      if (len[i] > bestLen && u >= lo[i] && u <= hi[i]) {
        best = i;
        bestLen = len[i];
      }
    }
    return best;
  };
}

const BASE_SEED = process.env.LPM_SEED !== undefined ? Number(process.env.LPM_SEED) : 0x2003_0004;

describe('PrefixTable against a linear-scan reference', () => {
  // [prefixes per set, sets, probes per set]: tens of thousands of probes per size, and a
  // probe budget at the large sizes that keeps the linear scan to a second or two.
  const plan: Array<[number, number, number]> = [
    [1, 200, 300],
    [2, 100, 300],
    [3, 100, 300],
    [10, 100, 500],
    [100, 20, 2_000],
    [1_000, 5, 10_000],
    [20_000, 1, 20_000],
    [100_000, 1, 2_000],
  ];

  it.each(plan)('%i prefixes x %i sets x %i probes', (size, sets, probeCount) => {
    for (let set = 0; set < sets; set++) {
      const seed = (BASE_SEED + Math.imul(size, 0x9e3779b1) + set * 0x632be5ab) | 0;
      const where = `seed ${seed} (LPM_SEED=${BASE_SEED}, size ${size}, set ${set})`;
      const rand = mulberry32(seed);
      const prefixes = randomPrefixes(rand, size);
      const table = PrefixTable.build(prefixes.map((p, i) => ({ ...p, value: `v${i}` })));
      expect(table.size, where).toBe(size);
      const reference = linearReference(prefixes);
      const probes = probesFor(rand, prefixes, probeCount);
      let hits = 0;
      for (let i = 0; i < probes.length; i++) {
        const x = probes[i];
        const want = reference(x);
        const got = table.lookupIndex(x);
        const value = table.lookup(x);
        if (got !== want || value !== (want < 0 ? undefined : `v${want}`)) {
          const show = (k: number) => (k < 0 ? 'none' : formatPrefix(prefixes[k].addr, prefixes[k].len));
          expect.fail(
            `${where}: ${formatIPv4(x)} -> index ${got} (${show(got)}), value ${String(value)}; ` +
              `reference ${want} (${show(want)})`,
          );
        }
        if (want >= 0) hits++;
      }
      // The probes must exercise both outcomes, or the test proves little.
      if (size >= 10 && sets > 0) expect(hits, where).toBeGreaterThan(0);
    }
  });

  it('agrees with the reference for shuffled insertion orders of the same set', () => {
    const seed = (BASE_SEED ^ 0x5bd1e995) | 0;
    const rand = mulberry32(seed);
    const prefixes = randomPrefixes(rand, 2_000);
    const byKey = (p: RandomPrefix) => `${p.addr}/${p.len}`;
    const base = PrefixTable.build(prefixes.map((p) => ({ ...p, value: byKey(p) })));
    for (let round = 0; round < 3; round++) {
      const shuffled = [...prefixes];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = (rand() >>> 0) % (i + 1);
        [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
      }
      const t = PrefixTable.build(shuffled.map((p) => ({ ...p, value: byKey(p) })));
      const probes = probesFor(rand, prefixes, 20_000);
      for (const x of probes) {
        if (t.lookup(x) !== base.lookup(x)) {
          expect.fail(`seed ${seed} round ${round}: ${formatIPv4(x)} -> ${t.lookup(x)} vs ${base.lookup(x)}`);
        }
      }
    }
  });

  it('misses as well as hits in a sparse set without short prefixes', () => {
    const rand = mulberry32(BASE_SEED);
    const prefixes: RandomPrefix[] = [];
    const seen = new Set<string>();
    while (prefixes.length < 1_000) {
      const len = 16 + ((rand() >>> 0) % 17);
      const addr = rand() & maskOf(len);
      if (seen.has(`${addr}/${len}`)) continue;
      seen.add(`${addr}/${len}`);
      prefixes.push({ addr, len });
    }
    const table = PrefixTable.build(prefixes.map((p, i) => ({ ...p, value: i })));
    const reference = linearReference(prefixes);
    const probes = probesFor(rand, prefixes, 20_000);
    let hits = 0;
    let misses = 0;
    for (const x of probes) {
      const want = reference(x);
      if (table.lookupIndex(x) !== want) expect.fail(`LPM_SEED=${BASE_SEED}: ${formatIPv4(x)}`);
      if (want < 0) misses++;
      else hits++;
    }
    expect(hits).toBeGreaterThan(5_000);
    expect(misses).toBeGreaterThan(5_000);
  });
});
