/**
 * RFC 791 §3.2 fragmentation of the inner datagram (`fragmentInner`).
 *
 * Every fragment goes into its own slot of a slab poisoned with 0xA5:
 *
 *   slot k:  [ headroom (outer header later) | fragment k | ... poison ... ]
 *            ^ k * slotSize                   ^ k * slotSize + headroom
 *
 * Each fragment is checked field by field against the original, the poison around it must be
 * intact, and reassembling the payloads by their offsets must give the original bytes. Header
 * checksums are verified by `refChecksum`, an independent implementation.
 */
import { describe, expect, it } from 'vitest';
import { fragmentInner } from '../../src/ipip/fragment.js';
import { hex, refChecksum, rng } from '../helpers/packets.js';

// ---------------------------------------------------------------- helpers

interface DgSpec {
  /** Total length in bytes (header + data). */
  total: number;
  /** Options bytes (length a multiple of 4); default none. */
  options?: Buffer;
  /** Flags + fragment offset word; default 0 (DF clear, first and only fragment). */
  flags?: number;
  id?: number;
  seed?: number;
}

/** A UDP-ish datagram 10.0.1.1 -> 10.0.2.1, TTL 61, TOS 0x2e, data from a seeded PRNG. */
function datagram(spec: DgSpec): Buffer {
  const opts = spec.options ?? Buffer.alloc(0);
  const hl = 20 + opts.length;
  const b = Buffer.alloc(spec.total);
  b[0] = 0x40 | (hl >> 2);
  b[1] = 0x2e;
  b.writeUInt16BE(spec.total, 2);
  b.writeUInt16BE(spec.id ?? 0xabcd, 4);
  b.writeUInt16BE(spec.flags ?? 0, 6);
  b[8] = 61;
  b[9] = 17;
  b.writeUInt32BE(0x0a000101, 12);
  b.writeUInt32BE(0x0a000201, 16);
  opts.copy(b, 20);
  const r = rng(spec.seed ?? 1);
  for (let i = hl; i < spec.total; i++) b[i] = r() & 0xff;
  b.writeUInt16BE(refChecksum(b, 0, hl), 10);
  return b;
}

interface Frag {
  off: number; // where in the slab
  len: number;
  hl: number;
  mf: boolean;
  unitOffset: number;
}

interface Run {
  count: number;
  frags: Frag[];
  slab: Buffer;
  lens: Int32Array;
}

const SLOT = 2048;
const HEADROOM = 20;

/** Fragments `dg` (placed at offset 7 of a poisoned buffer) into a poisoned slab of `slots` slots. */
function run(dg: Buffer, mtu: number, slots = 16, slotSize = SLOT, maxCount = slots): Run {
  const src = Buffer.concat([Buffer.alloc(7, 0xa5), dg, Buffer.alloc(5, 0xa5)]);
  const before = Buffer.from(src);
  const slab = Buffer.alloc(slots * slotSize, 0xa5);
  const lens = new Int32Array(slots).fill(-7);
  const count = fragmentInner(src, 7, dg.length, mtu, slab, slotSize, HEADROOM, lens, maxCount);
  expect(src.equals(before)).toBe(true); // the original is never written
  const frags: Frag[] = [];
  for (let k = 0; k < count; k++) {
    const off = k * slotSize + HEADROOM;
    const word = slab.readUInt16BE(off + 6);
    frags.push({ off, len: lens[k], hl: (slab[off] & 0x0f) * 4, mf: (word & 0x2000) !== 0, unitOffset: word & 0x1fff });
  }
  return { count, frags, slab, lens };
}

/**
 * The invariants every fragmentation must keep (RFC 791 §3.2), and reassembly by offset.
 * `ctx` is printed on failure (e.g. the seed).
 */
function checkFragments(dg: Buffer, mtu: number, r: Run, ctx: string, slotSize = SLOT): void {
  const hl0 = (dg[0] & 0x0f) * 4;
  const word0 = dg.readUInt16BE(6);
  const base = word0 & 0x1fff;
  const origMf = (word0 & 0x2000) !== 0;
  const data = dg.subarray(hl0);
  expect(r.count, ctx).toBeGreaterThan(0);
  const re = Buffer.alloc(data.length, 0x5a);
  const covered = new Uint8Array(data.length);
  let expectOffset = base;
  for (let k = 0; k < r.count; k++) {
    const f = r.frags[k];
    const last = k === r.count - 1;
    const s = r.slab;
    const c = `${ctx} fragment ${k}/${r.count}`;
    // Poison around the fragment in its slot is intact.
    expect(s.subarray(k * slotSize, f.off).every((x) => x === 0xa5), c).toBe(true);
    expect(s.subarray(f.off + f.len, (k + 1) * slotSize).every((x) => x === 0xa5), c).toBe(true);
    // Header.
    expect(f.len, c).toBe(s.readUInt16BE(f.off + 2)); // lens[k] = Total Length
    expect(f.len, c).toBeLessThanOrEqual(mtu);
    expect(s[f.off] >> 4, c).toBe(4);
    expect(f.hl, c).toBeGreaterThanOrEqual(20);
    expect(f.hl % 4, c).toBe(0);
    if (k === 0) expect(s.subarray(f.off + 20, f.off + f.hl).equals(dg.subarray(20, hl0)), c).toBe(true);
    expect(refChecksum(s, f.off, f.hl), c).toBe(0);
    expect(s[f.off + 1], c).toBe(dg[1]); // TOS
    expect(s.readUInt16BE(f.off + 4), c).toBe(dg.readUInt16BE(4)); // ID unchanged
    expect(s.readUInt16BE(f.off + 6) & 0xc000, c).toBe(word0 & 0xc000); // reserved, DF as given
    expect(s.subarray(f.off + 8, f.off + 10).equals(dg.subarray(8, 10)), c).toBe(true); // TTL, protocol
    expect(s.subarray(f.off + 12, f.off + 20).equals(dg.subarray(12, 20)), c).toBe(true); // addresses
    expect(f.mf, c).toBe(last ? origMf : true);
    expect(f.unitOffset, c).toBe(expectOffset);
    const n = f.len - f.hl;
    expect(n, c).toBeGreaterThan(0);
    if (!last) expect(n % 8, c).toBe(0);
    // Reassemble by offset, relative to the original datagram's own offset.
    const at = (f.unitOffset - base) * 8;
    s.copy(re, at, f.off + f.hl, f.off + f.len);
    for (let i = at; i < at + n; i++) covered[i]++;
    expectOffset += n >> 3;
  }
  expect(covered.every((x) => x === 1), `${ctx}: every data byte exactly once`).toBe(true);
  expect(re.equals(data), `${ctx}: reassembly`).toBe(true);
}

// ---------------------------------------------------------------- fixed cases

describe('fragmentInner: a 1400-byte UDP datagram', () => {
  const dg = datagram({ total: 1400 });

  it('at MTU 576: 3 fragments of 552 + 552 + 276 data bytes (556 rounded down to 8)', () => {
    const r = run(dg, 576);
    expect(r.count).toBe(3);
    // data 1380; room (576 - 20) & ~7 = 552; 552 + 552 + 276; offsets 0, 69, 138 (units of 8)
    expect(r.frags.map((f) => [f.hl, f.len, f.mf, f.unitOffset])).toEqual([
      [20, 572, true, 0],
      [20, 572, true, 69],
      [20, 296, false, 138],
    ]);
    expect(Array.from(r.lens.subarray(0, 3))).toEqual([572, 572, 296]);
    expect(r.lens[3]).toBe(-7); // nothing written past the count
    checkFragments(dg, 576, r, 'mtu 576');
  });

  it('at MTU 1000: 2 fragments of 976 + 404 data bytes', () => {
    const r = run(dg, 1000);
    // room (1000 - 20) & ~7 = 976; 1380 - 976 = 404; second offset 976 / 8 = 122
    expect(r.frags.map((f) => [f.hl, f.len, f.mf, f.unitOffset])).toEqual([
      [20, 996, true, 0],
      [20, 424, false, 122],
    ]);
    checkFragments(dg, 1000, r, 'mtu 1000');
  });

  it('the first fragment, byte for byte (hand-built header: only length, MF and checksum change)', () => {
    const r = run(dg, 576);
    // 45 2e 023c abcd 2000 3d 11 ckk 0a000101 0a000201; sum without checksum:
    //   452e+023c+abcd+2000+3d11+0a00+0101+0a00+0201 = 1674a -> 674b, checksum 98b4
    const head = hex('45 2e 02 3c ab cd 20 00 3d 11 98 b4 0a 00 01 01 0a 00 02 01');
    const f = r.frags[0];
    expect(r.slab.subarray(f.off, f.off + 20).toString('hex')).toBe(head.toString('hex'));
    expect(r.slab.subarray(f.off + 20, f.off + 572).equals(dg.subarray(20, 572))).toBe(true);
    // Last: total 296 = 0128, flags/offset 008a (offset 138, no MF).
    //   452e+0128+abcd+008a+3d11+0a00+0101+0a00+0201 = 146c0 -> 46c1, checksum b93e
    const tail = hex('45 2e 01 28 ab cd 00 8a 3d 11 b9 3e 0a 00 01 01 0a 00 02 01');
    const l = r.frags[2];
    expect(r.slab.subarray(l.off, l.off + 20).toString('hex')).toBe(tail.toString('hex'));
  });

});

// RFC 791 §3.2 fragmentation procedure: after the first NFB*8 data bytes are cut off, the rest is
// submitted again, and "if the total length is less than or equal the maximum transmission unit
// then submit this datagram" as is. Only a fragment that is not the last must carry a multiple
// of 8 data bytes (Linux ip_do_fragment likewise rounds down only when len < left).
// KNOWN SRC BUG (reported, src not changed here): fragmentInner rounds every piece, the last one
// included, down to 8, so a remainder within 7 bytes of the MTU is cut again into an extra tiny
// fragment (and a packet may be refused for maxCount although fewer fragments would do).
describe('fragmentInner: RFC 791 - a remainder that fits the MTU is not cut again', () => {
  it.each([
    // total, mtu, expected fragment lengths, why
    [1127, 576, [572, 575], 'data 1107: 552 cut (multiple of 8), the remaining 555 + 20 = 575 <= 576'],
    [1400, 1400, [1400], 'total length <= MTU: submitted unchanged'],
    [1000, 1003, [1000], 'total length <= MTU with an MTU that is not 20 + a multiple of 8'],
  ])('%i bytes at MTU %i -> %j (%s)', (total, mtu, lengths) => {
    const dg = datagram({ total, seed: 11 });
    const r = run(dg, mtu);
    expect(Array.from(r.lens.subarray(0, r.count))).toEqual(lengths);
    checkFragments(dg, mtu, r, `${total}@${mtu}`);
    // The same fragments are produced when maxCount is exactly their number.
    expect(run(dg, mtu, 16, SLOT, lengths.length).count).toBe(lengths.length);
  });
});

describe('fragmentInner: a datagram that is itself a fragment', () => {
  it('a middle fragment (MF, offset 100): MF on every piece, offsets shifted by 100', () => {
    const dg = datagram({ total: 1400, flags: 0x2000 | 100 });
    const r = run(dg, 576);
    expect(r.frags.map((f) => [f.len, f.mf, f.unitOffset])).toEqual([
      [572, true, 100],
      [572, true, 169],
      [296, true, 238],
    ]);
    checkFragments(dg, 576, r, 'middle');
  });

  it('a last fragment (offset 100, no MF): MF clear on the last piece only', () => {
    const dg = datagram({ total: 1400, flags: 100 });
    const r = run(dg, 576);
    expect(r.frags.map((f) => [f.mf, f.unitOffset])).toEqual([
      [true, 100],
      [true, 169],
      [false, 238],
    ]);
    checkFragments(dg, 576, r, 'last');
  });

  it('returns 0 when the offsets would pass the 13-bit field', () => {
    // Offset 8181 + 69 units after the first piece = 8250 > 8191 with data left.
    expect(run(datagram({ total: 1400, flags: 8181 }), 576).count).toBe(0);
  });
});

describe('fragmentInner: options (RFC 791 §3.1 "copied" flag)', () => {
  // Record Route (0x07, not copied) len 7, NOP, Loose Source Route (0x83, copied) len 7, EOL:
  // 16 bytes, IHL 9.
  const RR = '07 07 04 00 00 00 00';
  const LSRR = '83 07 04 c6 33 64 02';
  const options = hex(`${RR} 01 ${LSRR} 00`);
  const dg = datagram({ total: 1400, options, seed: 5 });

  it('first fragment keeps all options; later ones only LSRR, padded to 4 with EOL', () => {
    const r = run(dg, 576);
    // data 1364. First: room (576 - 36) & ~7 = 536. Later headers 20 + 7 + 1 pad = 28:
    // room (576 - 28) & ~7 = 544. 536 + 544 + 284 = 1364; offsets 0, 67, 135.
    expect(r.frags.map((f) => [f.hl, f.len, f.mf, f.unitOffset])).toEqual([
      [36, 572, true, 0],
      [28, 572, true, 67],
      [28, 312, false, 135],
    ]);
    const s = r.slab;
    expect(s.subarray(r.frags[0].off + 20, r.frags[0].off + 36).equals(options)).toBe(true);
    for (const f of r.frags.slice(1)) {
      expect(s[f.off]).toBe(0x47);
      expect(s.subarray(f.off + 20, f.off + 28).toString('hex')).toBe(hex(`${LSRR} 00`).toString('hex'));
    }
    checkFragments(dg, 576, r, 'options');
  });

  it('options with no copied one: later fragments have a bare 20-byte header', () => {
    const d = datagram({ total: 900, options: hex(`${RR} 00`), seed: 6 });
    const r = run(d, 300);
    expect(r.frags[0].hl).toBe(28);
    for (const f of r.frags.slice(1)) expect(f.hl).toBe(20);
    checkFragments(d, 300, r, 'rr only');
  });

  it('several copied options are all kept, in order', () => {
    // Security (0x82, copied) len 11, Stream ID (0x88, copied) len 4, Timestamp (0x44, not) len 4.
    const sec = '82 0b 00 00 00 00 00 00 00 00 00';
    const sid = '88 04 12 34';
    const ts = '44 04 05 00';
    const d = datagram({ total: 700, options: hex(`${sec} ${ts} ${sid} 00`), seed: 7 }); // 20 opts
    const r = run(d, 200);
    for (const f of r.frags.slice(1)) {
      expect(f.hl).toBe(36); // 20 + 11 + 4 = 35 -> 36
      expect(r.slab.subarray(f.off + 20, f.off + 36).toString('hex')).toBe(hex(`${sec} ${sid} 00`).toString('hex'));
    }
    checkFragments(d, 200, r, 'copied options');
  });
});

describe('fragmentInner: refuses what it cannot do (returns 0)', () => {
  const dg = datagram({ total: 1400 });

  it('maxCount too small', () => {
    expect(run(dg, 576, 16, SLOT, 2).count).toBe(0); // needs 3
    expect(run(dg, 576, 16, SLOT, 3).count).toBe(3);
    expect(run(dg, 1000, 16, SLOT, 1).count).toBe(0);
    expect(run(dg, 1000, 16, SLOT, 0).count).toBe(0);
  });

  it('slot too small for headroom + fragment', () => {
    expect(run(dg, 576, 4, 20 + 571).count).toBe(0); // the first fragment is 572 bytes
    const r = run(dg, 576, 4, 20 + 572);
    expect(r.count).toBe(3);
    checkFragments(dg, 576, r, 'exact slot', 20 + 572);
  });

  it('an MTU that leaves no room for 8 data bytes', () => {
    expect(run(dg, 27).count).toBe(0);
    const opts = datagram({ total: 200, options: hex('83 07 04 c6 33 64 02 00') });
    expect(run(opts, 35, 64).count).toBe(0); // 28-byte header + 7 < 8
    // MTU 28: 8 data bytes a fragment; 1380 / 8 -> 173 fragments.
    const r = run(dg, 28, 200);
    expect(r.count).toBe(173);
    checkFragments(dg, 28, r, 'mtu 28');
  });
});

// ---------------------------------------------------------------- seeded random

describe('fragmentInner: seeded random datagrams always reassemble', () => {
  it('random lengths, MTUs, options and fragment offsets', () => {
    const seed = Number(process.env.FRAG_SEED ?? 791);
    const r = rng(seed);
    let fragmented = 0;
    for (let round = 0; round < 400; round++) {
      // Options: a random mix of NOPs, copied (LSRR-like) and non-copied (RR-like) options.
      const opt: number[] = [];
      const nOpts = r() % 4;
      for (let i = 0; i < nOpts; i++) {
        const kind = r() % 3;
        if (kind === 0) opt.push(1);
        else {
          const l = 3 + (r() % 6);
          opt.push(kind === 1 ? 0x83 : 0x07, l, 4);
          for (let j = 3; j < l; j++) opt.push(r() & 0xff);
        }
      }
      while (opt.length % 4) opt.push(0);
      const hl = 20 + opt.length;
      const total = hl + 1 + (r() % 4000);
      const baseOffset = r() % 2 === 0 ? 0 : r() % 1000;
      const mf = r() % 2 === 0 ? 0x2000 : 0;
      const mtu = 68 + (r() % 1500);
      const dg = datagram({ total, options: Buffer.from(opt), flags: mf | baseOffset, id: r() & 0xffff, seed: r() });
      const ctx = `seed ${seed} round ${round} total ${total} hl ${hl} mtu ${mtu} flags ${(mf | baseOffset).toString(16)}`;
      const run1 = run(dg, mtu, 128);
      if (total <= mtu) expect(run1.count, ctx).toBe(1);
      else fragmented++;
      checkFragments(dg, mtu, run1, ctx);
    }
    expect(fragmented).toBeGreaterThan(300);
  });
});
