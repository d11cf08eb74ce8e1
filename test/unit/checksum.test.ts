import { describe, expect, it } from 'vitest';
import {
  checksumUpdate16,
  checksumUpdate32,
  finishChecksum,
  foldSum,
  int32Sum,
  internetChecksum,
  onesSum,
  onesSum32,
} from '../../src/ipip/checksum.js';
import { rng } from '../helpers/packets.js';

/** Reference: RFC 1071 the slow, obvious way (byte pairs, big integers, fold at the end). */
function referenceChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += bytes[i] * 256 + (i + 1 < bytes.length ? bytes[i + 1] : 0);
  }
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return 0xffff - sum;
}

describe('checksum (RFC 1071)', () => {
  it('RFC 1071 §3 worked example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2', () => {
    const b = Buffer.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    expect(onesSum(b, 0, 8, 0)).toBe(0xddf2);
    expect(internetChecksum(b, 0, 8)).toBe(0x220d);
  });

  it('the classic IPv4 header has checksum b861 and verifies to 0', () => {
    const h = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
    expect(internetChecksum(h, 0, 20)).toBe(0xb861);
    h.writeUInt16BE(0xb861, 10);
    expect(internetChecksum(h, 0, 20)).toBe(0);
    expect(onesSum(h, 0, 20, 0)).toBe(0xffff);
  });

  it('odd lengths pad the last byte on the right', () => {
    expect(onesSum(Buffer.from([0xab]), 0, 1, 0)).toBe(0xab00);
    expect(onesSum(Buffer.from([0x12, 0x34, 0x56]), 0, 3, 0)).toBe(0x1234 + 0x5600);
    expect(onesSum(Buffer.from([0x12, 0x34, 0x56, 0x78, 0x9a]), 0, 5, 0)).toBe(foldSum(0x1234 + 0x5678 + 0x9a00));
    expect(onesSum(Buffer.from([0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde]), 0, 7, 0)).toBe(
      foldSum(0x1234 + 0x5678 + 0x9abc + 0xde00),
    );
  });

  it('empty range and all-ones data', () => {
    expect(onesSum(Buffer.alloc(0), 0, 0, 0)).toBe(0);
    expect(onesSum(Buffer.alloc(0), 0, 0, 0x1234)).toBe(0x1234);
    expect(onesSum(Buffer.alloc(64, 0xff), 0, 64, 0)).toBe(0xffff);
    expect(internetChecksum(Buffer.alloc(64, 0xff), 0, 64)).toBe(0);
  });

  it('respects the offset and reads nothing outside the range', () => {
    const b = Buffer.alloc(40, 0xee);
    Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex').copy(b, 7);
    expect(internetChecksum(b, 7, 20)).toBe(0xb861);
  });

  it('matches the reference on random data of every length 0..300 at random offsets', () => {
    const r = rng(1071);
    for (let len = 0; len <= 300; len++) {
      const off = r() % 9;
      const b = Buffer.alloc(off + len + 3);
      for (let i = 0; i < b.length; i++) b[i] = r() & 0xff;
      expect(internetChecksum(b, off, len)).toBe(referenceChecksum(b.subarray(off, off + len)));
    }
  });

  it('stays exact over long buffers (past the 16 KiB fold interval)', () => {
    for (const len of [16383, 16384, 16385, 65535, 70001]) {
      const b = Buffer.alloc(len, 0xff);
      b[0] = 0xfe;
      expect(internetChecksum(b, 0, len)).toBe(referenceChecksum(b));
      const r = rng(len);
      for (let i = 0; i < len; i++) b[i] = r() & 0xff;
      expect(internetChecksum(b, 0, len)).toBe(referenceChecksum(b));
    }
  });

  it('partial sums combine (RFC 1071 §2 (B), (C)) over even-length pieces', () => {
    const r = rng(2);
    for (let n = 0; n < 500; n++) {
      const b = Buffer.alloc(60);
      for (let i = 0; i < 60; i++) b[i] = r() & 0xff;
      const cut = (r() % 30) * 2;
      const whole = onesSum(b, 0, 60, 0);
      expect(onesSum(b, cut, 60 - cut, onesSum(b, 0, cut, 0))).toBe(whole);
      expect(foldSum(onesSum(b, 0, cut, 0) + onesSum(b, cut, 60 - cut, 0))).toBe(whole);
    }
  });

  it('foldSum, finishChecksum and int32Sum', () => {
    expect(foldSum(0)).toBe(0);
    expect(foldSum(0xffff)).toBe(0xffff);
    expect(foldSum(0x10000)).toBe(1);
    expect(foldSum(0x2479c)).toBe(0x479e);
    expect(foldSum(0xffffffff)).toBe(0xffff);
    expect(finishChecksum(0x2479c)).toBe(0xb861);
    expect(int32Sum(0xc0a80001 | 0)).toBe(0xc0a8 + 0x0001);
    expect(int32Sum(0xc0a80001)).toBe(0xc0a8 + 0x0001);
    expect(int32Sum(-1)).toBe(0x1fffe);
  });

  it('RFC 1624 update equals full recomputation over thousands of seeded random headers', () => {
    const r = rng(1624);
    const h = Buffer.alloc(60);
    for (let n = 0; n < 5000; n++) {
      const ihl = 5 + (r() % 11);
      const hlen = ihl * 4;
      for (let i = 0; i < hlen; i++) h[i] = r() & 0xff;
      h[0] = 0x40 | ihl;
      h.writeUInt16BE(0, 10);
      const before = internetChecksum(h, 0, hlen);
      h.writeUInt16BE(before, 10);
      // Change one 16-bit word other than the checksum itself.
      let w = r() % (hlen / 2);
      if (w === 5) w = 4;
      const oldWord = h.readUInt16BE(w * 2);
      const newWord = n % 50 === 0 ? 0 : r() & 0xffff; // include zero and identical words
      h.writeUInt16BE(newWord, w * 2);
      const updated = checksumUpdate16(before, oldWord, newWord);
      h.writeUInt16BE(0, 10);
      expect(updated).toBe(internetChecksum(h, 0, hlen));
    }
  });

  it('RFC 1624 32-bit update (address rewrite) equals full recomputation', () => {
    const r = rng(32);
    const h = Buffer.alloc(20);
    for (let n = 0; n < 3000; n++) {
      for (let i = 0; i < 20; i++) h[i] = r() & 0xff;
      h[0] = 0x45;
      h.writeUInt16BE(0, 10);
      const before = internetChecksum(h, 0, 20);
      const field = n % 2 === 0 ? 12 : 16;
      const oldAddr = h.readInt32BE(field);
      const newAddr = r() | 0;
      h.writeInt32BE(newAddr, field);
      expect(checksumUpdate32(before, oldAddr, newAddr)).toBe(internetChecksum(h, 0, 20));
    }
  });

  it('RFC 1624 §4 example: eqn. 3 gives 0x0000 where eqn. 2 would give -0 (0xffff)', () => {
    // HC = 0xdd2f, m = 0x5555 -> m' = 0x3285: ~HC + ~m + m' = 0x22d0 + 0xaaaa + 0x3285 = 0xffff.
    expect(checksumUpdate16(0xdd2f, 0x5555, 0x3285)).toBe(0x0000);
  });
});

describe('onesSum32', () => {
  it('equals onesSum for every alignment, length and initial value (seeded random)', () => {
    const r = rng(42);
    const big = Buffer.alloc(80_000);
    for (let i = 0; i < big.length; i++) big[i] = r() & 0xff;
    const views = [big, big.subarray(1), big.subarray(2), big.subarray(3)];
    for (let k = 0; k < 3000; k++) {
      const v = views[k & 3]!;
      const len = k < 200 ? k : r() % 70_000;
      const off = r() % (v.length - len);
      const init = k % 5 === 0 ? 0 : r() & 0xffff;
      expect(onesSum32(v, off, len, init), `k=${k} off=${off} len=${len}`).toBe(onesSum(v, off, len, init));
    }
    // All-0xff data: the sum is 0xffff, never the "-0" 0.
    const ff = Buffer.alloc(4096, 0xff);
    expect(onesSum32(ff, 0, 4096, 0)).toBe(0xffff);
  });
});
