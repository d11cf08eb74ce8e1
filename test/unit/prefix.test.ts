/**
 * IPv4 address and prefix helpers: known byte vectors against Buffer's own int32 reading,
 * poisoned-buffer round trips at an odd offset, every parse error with its exact message,
 * and the set relations at their boundaries (including negative int32 addresses).
 */
import { describe, expect, it } from 'vitest';
import {
  formatIPv4,
  formatPrefix,
  maskOf,
  parseIPv4,
  parsePrefix,
  prefixContains,
  prefixesOverlap,
} from '../../src/routing/prefix.js';
import { rng } from '../helpers/packets.js';

/** mulberry32: small seeded PRNG so that any failure reproduces from the printed seed. */
function mulberry32(seed: number): () => number {
  const next = rng(seed);
  return () => next() | 0; // int32
}

/** The int32 that Buffer reads for four bytes: the reference representation. */
function int32Of(b0: number, b1: number, b2: number, b3: number): number {
  return Buffer.from([b0, b1, b2, b3]).readInt32BE(0);
}

describe('parseIPv4', () => {
  const vectors: Array<[string, [number, number, number, number]]> = [
    ['0.0.0.0', [0, 0, 0, 0]],
    ['0.0.0.1', [0, 0, 0, 1]],
    ['1.2.3.4', [1, 2, 3, 4]],
    ['10.0.0.1', [10, 0, 0, 1]],
    ['127.255.255.255', [127, 255, 255, 255]],
    ['128.0.0.0', [128, 0, 0, 0]],
    ['192.0.2.1', [192, 0, 2, 1]],
    ['198.51.100.200', [198, 51, 100, 200]],
    ['203.0.113.7', [203, 0, 113, 7]],
    ['255.255.255.254', [255, 255, 255, 254]],
    ['255.255.255.255', [255, 255, 255, 255]],
  ];

  it.each(vectors)('%s reads as Buffer.readInt32BE of its bytes', (text, bytes) => {
    expect(parseIPv4(text)).toBe(int32Of(...bytes));
  });

  it('gives signed int32 values at the sign boundary', () => {
    expect(parseIPv4('127.255.255.255')).toBe(0x7fffffff);
    expect(parseIPv4('128.0.0.0')).toBe(-0x80000000);
    expect(parseIPv4('255.255.255.255')).toBe(-1);
    expect(parseIPv4('192.168.1.1')).toBeLessThan(0);
    // Small integers stay int32 (not a uint32 heap number).
    for (const [text] of vectors) expect(parseIPv4(text)! | 0).toBe(parseIPv4(text));
  });

  it('writes the original bytes back into a poisoned buffer at a non-zero offset', () => {
    for (const [text, bytes] of vectors) {
      const buf = Buffer.alloc(11, 0xa5);
      buf.writeInt32BE(parseIPv4(text)!, 3);
      const want = Buffer.alloc(11, 0xa5);
      want.set(bytes, 3);
      expect(buf.equals(want), text).toBe(true);
      expect(buf.readInt32BE(3)).toBe(parseIPv4(text));
    }
  });

  it.each([
    [''],
    ['1'],
    ['1.2.3'],
    ['1.2.3.4.5'],
    ['1.2.3.4.'],
    ['.1.2.3'],
    ['1..3.4'],
    ['1.2.3.'],
    ['...'],
    ['256.0.0.0'],
    ['0.0.0.256'],
    ['1000.1.1.1'],
    ['300.300.300.300'],
    ['01.2.3.4'],
    ['1.2.3.010'],
    ['1.2.3.00'],
    ['00.0.0.0'],
    [' 1.2.3.4'],
    ['1.2.3.4 '],
    ['1.2.3.4\n'],
    ['1. 2.3.4'],
    ['1.2.3.4/32'],
    ['+1.2.3.4'],
    ['1.2.3.-4'],
    ['0x1.2.3.4'],
    ['1.2.3.4e0'],
    ['１.2.3.4'], // fullwidth digit one
    ['1.2.3.٤'], // Arabic-Indic digit four
    ['1,2,3,4'],
    ['::ffff:1.2.3.4'],
    ['16909060'], // the inet_aton single-number form
    ['1.2.772'], // the inet_aton a.b.c form
  ])('rejects %j', (text) => {
    expect(parseIPv4(text)).toBeUndefined();
  });

  it('round-trips with formatIPv4 on seeded random addresses', () => {
    const seed = 0x1b873593;
    const rand = mulberry32(seed);
    for (let i = 0; i < 20_000; i++) {
      const a = rand();
      const text = formatIPv4(a);
      expect(parseIPv4(text), `seed ${seed} i ${i} ${text}`).toBe(a);
    }
  });
});

describe('formatIPv4', () => {
  it('formats int32 and the equivalent uint32 identically', () => {
    expect(formatIPv4(0)).toBe('0.0.0.0');
    expect(formatIPv4(-1)).toBe('255.255.255.255');
    expect(formatIPv4(0xffffffff)).toBe('255.255.255.255');
    expect(formatIPv4(-0x80000000)).toBe('128.0.0.0');
    expect(formatIPv4(0x80000000)).toBe('128.0.0.0');
    expect(formatIPv4(0x7fffffff)).toBe('127.255.255.255');
    expect(formatIPv4(int32Of(198, 51, 100, 7))).toBe('198.51.100.7');
    expect(formatIPv4(int32Of(10, 0, 255, 1))).toBe('10.0.255.1');
  });
});

describe('maskOf', () => {
  it('has len leading ones for every length 0..32', () => {
    for (let len = 0; len <= 32; len++) {
      const bytes = [0, 0, 0, 0];
      for (let bit = 0; bit < len; bit++) bytes[bit >> 3] |= 0x80 >> (bit & 7);
      const want = int32Of(bytes[0], bytes[1], bytes[2], bytes[3]);
      expect(maskOf(len), `len ${len}`).toBe(want);
    }
  });

  it('is an int32 at the ends', () => {
    expect(maskOf(0)).toBe(0);
    expect(maskOf(1)).toBe(-0x80000000);
    expect(maskOf(8)).toBe(parseIPv4('255.0.0.0'));
    expect(maskOf(24)).toBe(parseIPv4('255.255.255.0'));
    expect(maskOf(31)).toBe(-2);
    expect(maskOf(32)).toBe(-1);
  });

  it.each([[-1], [33], [1.5], [NaN], [Infinity], [-Infinity]])('throws RangeError for %s', (len) => {
    expect(() => maskOf(len)).toThrow(RangeError);
  });
});

describe('parsePrefix', () => {
  it.each([
    ['0.0.0.0/0', [0, 0, 0, 0], 0],
    ['10.0.0.0/8', [10, 0, 0, 0], 8],
    ['128.0.0.0/1', [128, 0, 0, 0], 1],
    ['0.0.0.0/1', [0, 0, 0, 0], 1],
    ['192.168.0.0/16', [192, 168, 0, 0], 16],
    ['198.51.100.0/25', [198, 51, 100, 0], 25],
    ['198.51.100.128/25', [198, 51, 100, 128], 25],
    ['203.0.113.7/32', [203, 0, 113, 7], 32],
    ['255.255.255.255/32', [255, 255, 255, 255], 32],
    ['255.255.255.254/31', [255, 255, 255, 254], 31],
    ['0.0.0.0/32', [0, 0, 0, 0], 32],
  ] as Array<[string, [number, number, number, number], number]>)('parses %s', (text, bytes, len) => {
    expect(parsePrefix(text)).toEqual({ addr: int32Of(...bytes), len });
  });

  it.each([
    ['198.51.100.1/25', 'host bits set: 198.51.100.1/25 (did you mean 198.51.100.0/25?)'],
    ['10.1.2.3/8', 'host bits set: 10.1.2.3/8 (did you mean 10.0.0.0/8?)'],
    ['0.0.0.1/0', 'host bits set: 0.0.0.1/0 (did you mean 0.0.0.0/0?)'],
    ['255.255.255.255/31', 'host bits set: 255.255.255.255/31 (did you mean 255.255.255.254/31?)'],
    ['128.0.0.0/0', 'host bits set: 128.0.0.0/0 (did you mean 0.0.0.0/0?)'],
    ['10.0.0.0/33', 'prefix length must be 0..32: "33"'],
    ['10.0.0.0/99', 'prefix length must be 0..32: "99"'],
    ['10.0.0.0/100', 'prefix length must be 0..32: "100"'],
    ['10.0.0.0/', 'prefix length must be 0..32: ""'],
    ['10.0.0.0/-1', 'prefix length must be 0..32: "-1"'],
    ['10.0.0.0/+8', 'prefix length must be 0..32: "+8"'],
    ['10.0.0.0/08', 'prefix length must be 0..32: "08"'],
    ['10.0.0.0/00', 'prefix length must be 0..32: "00"'],
    ['10.0.0.0/8 ', 'prefix length must be 0..32: "8 "'],
    ['10.0.0.0/8/8', 'prefix length must be 0..32: "8/8"'],
    ['10.0.0.0/255.0.0.0', 'prefix length must be 0..32: "255.0.0.0"'],
    ['10.0.0.0/x', 'prefix length must be 0..32: "x"'],
    ['10.0.0/8', 'not an IPv4 address: "10.0.0"'],
    ['010.0.0.0/8', 'not an IPv4 address: "010.0.0.0"'],
    [' 10.0.0.0/8', 'not an IPv4 address: " 10.0.0.0"'],
    ['10.0.0.0 /8', 'not an IPv4 address: "10.0.0.0 "'],
    ['/8', 'not an IPv4 address: ""'],
    ['256.0.0.0/8', 'not an IPv4 address: "256.0.0.0"'],
    ['2001:db8::/32', 'not an IPv4 address: "2001:db8::"'],
    ['10.0.0.1', 'missing prefix length: 10.0.0.1 (write 10.0.0.1/32 for a single host)'],
    ['', 'not an IPv4 prefix: "" (expected a.b.c.d/len)'],
    ['default', 'not an IPv4 prefix: "default" (expected a.b.c.d/len)'],
    ['10.0.0.0\t', 'not an IPv4 prefix: "10.0.0.0\\t" (expected a.b.c.d/len)'],
  ])('rejects %j', (text, message) => {
    expect(parsePrefix(text)).toBe(message);
  });

  it('round-trips every length with formatPrefix on seeded random prefixes', () => {
    const seed = 0x85ebca6b;
    const rand = mulberry32(seed);
    for (let i = 0; i < 10_000; i++) {
      const len = (rand() >>> 0) % 33;
      const addr = rand() & maskOf(len);
      const text = formatPrefix(addr, len);
      expect(parsePrefix(text), `seed ${seed} i ${i} ${text}`).toEqual({ addr, len });
    }
  });
});

describe('formatPrefix', () => {
  it('formats int32 addresses with their length', () => {
    expect(formatPrefix(0, 0)).toBe('0.0.0.0/0');
    expect(formatPrefix(-1, 32)).toBe('255.255.255.255/32');
    expect(formatPrefix(-0x80000000, 1)).toBe('128.0.0.0/1');
    expect(formatPrefix(int32Of(192, 0, 2, 0), 24)).toBe('192.0.2.0/24');
  });
});

describe('prefixContains', () => {
  const p = (s: string): number => parseIPv4(s)!;

  it('default route contains everything', () => {
    for (const x of [0, -1, 1, 0x7fffffff, -0x80000000, p('192.0.2.1')]) {
      expect(prefixContains(0, 0, x)).toBe(true);
    }
  });

  it('a /32 contains only itself', () => {
    expect(prefixContains(-1, 32, -1)).toBe(true);
    expect(prefixContains(-1, 32, -2)).toBe(false);
    expect(prefixContains(0, 32, 0)).toBe(true);
    expect(prefixContains(0, 32, 1)).toBe(false);
    expect(prefixContains(0, 32, -0x80000000)).toBe(false);
    expect(prefixContains(p('203.0.113.7'), 32, p('203.0.113.7'))).toBe(true);
    expect(prefixContains(p('203.0.113.7'), 32, p('203.0.113.6'))).toBe(false);
  });

  it.each([
    ['198.51.100.128', 25, '198.51.100.128', true],
    ['198.51.100.128', 25, '198.51.100.255', true],
    ['198.51.100.128', 25, '198.51.100.127', false],
    ['198.51.100.128', 25, '198.51.101.0', false],
    ['128.0.0.0', 1, '128.0.0.0', true],
    ['128.0.0.0', 1, '255.255.255.255', true],
    ['128.0.0.0', 1, '127.255.255.255', false],
    ['0.0.0.0', 1, '127.255.255.255', true],
    ['0.0.0.0', 1, '128.0.0.0', false],
    ['10.0.0.0', 8, '10.255.255.255', true],
    ['10.0.0.0', 8, '11.0.0.0', false],
    ['10.0.0.0', 8, '9.255.255.255', false],
    ['255.255.255.0', 24, '255.255.255.255', true],
    ['255.255.255.0', 24, '255.255.254.255', false],
  ] as Array<[string, number, string, boolean]>)('%s/%i contains %s: %s', (a, len, x, want) => {
    expect(prefixContains(p(a), len, p(x))).toBe(want);
    // The uint32 form of the probe gives the same answer.
    expect(prefixContains(p(a), len, p(x) >>> 0)).toBe(want);
  });
});

describe('prefixesOverlap', () => {
  const q = (s: string): [number, number] => {
    const r = parsePrefix(s);
    if (typeof r === 'string') throw new Error(r);
    return [r.addr, r.len];
  };

  it.each([
    ['0.0.0.0/0', '203.0.113.7/32', true],
    ['0.0.0.0/0', '0.0.0.0/0', true],
    ['0.0.0.0/0', '255.255.255.255/32', true],
    ['10.0.0.0/8', '10.1.0.0/16', true],
    ['10.0.0.0/8', '10.0.0.0/8', true],
    ['10.0.0.0/8', '11.0.0.0/8', false],
    ['10.0.0.0/8', '10.255.255.255/32', true],
    ['10.0.0.0/9', '10.128.0.0/9', false],
    ['0.0.0.0/1', '128.0.0.0/1', false],
    ['128.0.0.0/1', '255.255.255.255/32', true],
    ['128.0.0.0/1', '127.255.255.255/32', false],
    ['198.51.100.0/25', '198.51.100.128/25', false],
    ['198.51.100.0/24', '198.51.100.128/25', true],
    ['203.0.113.7/32', '203.0.113.7/32', true],
    ['203.0.113.7/32', '203.0.113.6/32', false],
  ])('%s and %s: %s', (a, b, want) => {
    expect(prefixesOverlap(...q(a), ...q(b))).toBe(want);
    expect(prefixesOverlap(...q(b), ...q(a))).toBe(want);
  });

  it('agrees with unsigned range intersection on seeded random pairs', () => {
    const range = (addr: number, len: number): [number, number] => [
      addr >>> 0,
      (addr >>> 0) + 2 ** (32 - len) - 1,
    ];
    const seed = 0xc2b2ae35;
    const rand = mulberry32(seed);
    for (let i = 0; i < 20_000; i++) {
      // Short lengths and a shared high byte make overlaps common enough to matter.
      const alen = (rand() >>> 0) % 33;
      const blen = (rand() >>> 0) % 33;
      const hi = rand() & 0x03000000;
      const a = (hi | (rand() & 0x00ffffff)) & maskOf(alen);
      const b = (hi | (rand() & 0x00ffffff)) & maskOf(blen);
      const [alo, ahi] = range(a, alen);
      const [blo, bhi] = range(b, blen);
      const want = alo <= bhi && blo <= ahi;
      expect(prefixesOverlap(a, alen, b, blen), `seed ${seed} i ${i}`).toBe(want);
    }
  });
});
