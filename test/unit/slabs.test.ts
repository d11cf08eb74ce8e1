/**
 * The packed TUN slab (src/dataplane/slabs.ts): its size, and `placeTun`, the layout the native
 * Reader's packed mode writes (test/integration/native.test.ts checks the Reader against the
 * same rule) and that the warm-up, benches and tests use for batches they build themselves.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { HEADROOM, Slabs, TUN_PACK_BYTES } from '../../src/dataplane/slabs.js';
import { VNET_HDR_LEN } from '../../src/ipip/index.js';

const slabs = (offload: boolean, batch = 64): Slabs => new Slabs({ batch, tunMtu: 1480, underlayMax: 1500, offload });

describe('Slabs: the packed TUN slab', () => {
  it('offload mode: TUN_PACK_BYTES and one 64 KiB slot, not a 64 KiB slot per packet', () => {
    const s = slabs(true);
    expect(s.tunSlot).toBeGreaterThan(65535);
    expect(s.tunSlab.length).toBe(TUN_PACK_BYTES + s.tunSlot);
    expect(s.tunSlab.length).toBeLessThan(64 * s.tunSlot / 10);
    expect(s.gsoBase).toBe(s.tunSlab.length); // the segment region follows it
  });

  it('plain mode: a whole batch of MTU-sized slots when that is smaller', () => {
    const s = slabs(false);
    expect(s.tunSlab.length).toBe(64 * s.tunSlot);
  });

  it('placeTun: each packet on the first 64-byte boundary after the last; a truncated one takes a whole slot', () => {
    for (const offload of [false, true]) {
      const s = slabs(offload);
      const vnet = offload ? VNET_HDR_LEN : 0;
      expect(s.placeTun(0)).toBe(HEADROOM);
      s.tunLens[0] = 100 + vnet; // 20 - vnet + 100 + vnet = 120 -> 128
      expect(s.placeTun(1)).toBe(128 + HEADROOM);
      s.tunLens[1] = 44 - HEADROOM + vnet + 1; // ends at 45 past its slot start -> 64
      expect(s.placeTun(2)).toBe(128 + 64 + HEADROOM);
      s.tunLens[2] = -1;
      expect(s.placeTun(3)).toBe(192 + s.tunSlot + HEADROOM);
      expect(Array.from(s.tunOffs.subarray(0, 4))).toEqual([0, 128, 192, 192 + s.tunSlot]);
    }
  });

  it('placeTun: a packet may start anywhere in the first TUN_PACK_BYTES, not after (RangeError)', () => {
    const s = slabs(true);
    let i = 0;
    const place = (): number => {
      const off = s.placeTun(i);
      s.tunLens[i++] = 65000;
      return off - HEADROOM;
    };
    // 65 000-byte super-packets take 65 024 bytes each: starts 0, 65 024, ... 260 096, then 325 120.
    const starts = [place(), place(), place(), place(), place()];
    expect(starts).toEqual([0, 1, 2, 3, 4].map((k) => k * 65024));
    expect(() => place()).toThrow(RangeError);
  });

  it('placeTun: packets never overlap and stay inside the slab (any lengths)', () => {
    fc.assert(
      fc.property(fc.boolean(), fc.array(fc.oneof(fc.integer({ min: 1, max: 65560 }), fc.constant(-1)), { minLength: 1, maxLength: 64 }), (offload, lens) => {
        const s = slabs(offload);
        const vnet = offload ? VNET_HDR_LEN : 0;
        const max = s.tunSlot - (HEADROOM - vnet) - 1; // what a read can return untruncated
        let end = 0;
        for (let i = 0; i < lens.length; i++) {
          let at: number;
          try {
            at = s.placeTun(i);
          } catch (e) {
            expect(e).toBeInstanceOf(RangeError);
            expect(s.tunOffs[i - 1]! + s.tunSlot * 2).toBeGreaterThan(s.tunSlab.length);
            return;
          }
          const start = at - HEADROOM;
          expect(start % 64).toBe(0);
          expect(start).toBeGreaterThanOrEqual(end);
          expect(start + s.tunSlot).toBeLessThanOrEqual(s.tunSlab.length);
          const len = lens[i]! === -1 ? -1 : Math.min(lens[i]!, max);
          s.tunLens[i] = len;
          end = len === -1 ? start + s.tunSlot : start + HEADROOM - vnet + len;
        }
      }),
    );
  });
});
