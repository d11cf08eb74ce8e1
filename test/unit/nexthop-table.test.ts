/**
 * The next-hop table of `underlay.send: packet` (src/daemon/nexthop.ts), which the data path
 * reads: HOP_INTS int32s per peer. Flow of this file:
 *   1. `writeHop` / `readHop`: the layout (ifindex, MAC bytes 0-3 big-endian, MAC bytes 4-5 in the
 *      top 16 bits), round trips of MACs with the high bits set, peers independent of each other,
 *      and "none" (ifindex 0, no MAC, a MAC of the wrong length) zeroing all three int32s;
 *   2. `hopEntry` / `setHopEntry`: one peer's entry as a queue worker is sent it, copied into
 *      another table; an entry that does not fit is refused.
 *
 * No device and no netlink socket (the addon is loaded for its HOP_INTS only).
 */
import { describe, expect, test } from 'vitest';
import { HOP_INTS, hopEntry, readHop, setHopEntry, writeHop } from '../../src/dataplane/hops.js';
import { MAC_A, MAC_B, MAC_C, mac } from '../helpers/hop-kernel.js';

// ---------------------------------------------------------------- 1. writeHop / readHop

describe('writeHop / readHop: the next-hop table', () => {
  test('HOP_INTS is 3, as native HOP_INTS', () => {
    expect(HOP_INTS).toBe(3);
  });

  test('the layout is ifindex, MAC bytes 0-3 big-endian, MAC bytes 4-5 in the top 16 bits', () => {
    const t = new Int32Array(HOP_INTS);
    writeHop(t, 0, 7, mac('ff:ee:dd:cc:bb:aa'));
    expect(hopEntry(t, 0)).toEqual([7, 0xffeeddcc | 0, 0xbbaa0000 | 0]);
    writeHop(t, 0, 9, mac('01:02:03:04:05:06'));
    expect(hopEntry(t, 0)).toEqual([9, 0x01020304, 0x05060000]);
  });

  // The top bit of bytes 0 and 4 is the sign bit of an int32: the bytes must come back unsigned.
  test.each(['ff:ff:ff:ff:ff:ff', 'ff:ee:dd:cc:bb:aa', '80:00:00:00:80:00', '80:01:02:03:04:85', '00:00:00:00:00:01', '7f:ff:ff:ff:7f:ff'])(
    'MAC %s survives the round trip',
    (m) => {
      const t = new Int32Array(HOP_INTS);
      writeHop(t, 0, 4, mac(m));
      expect(readHop(t, 0)).toEqual([4, m]);
    },
  );

  test('a fresh table has no entry', () => {
    const t = new Int32Array(3 * HOP_INTS);
    expect([readHop(t, 0), readHop(t, 1), readHop(t, 2)]).toEqual([null, null, null]);
  });

  test('the entries of several peers are independent', () => {
    const t = new Int32Array(3 * HOP_INTS);
    writeHop(t, 0, 2, mac(MAC_A));
    writeHop(t, 1, 3, mac(MAC_B));
    writeHop(t, 2, 4, mac(MAC_C));
    expect([readHop(t, 0), readHop(t, 1), readHop(t, 2)]).toEqual([
      [2, MAC_A],
      [3, MAC_B],
      [4, MAC_C],
    ]);
    // Rewriting and clearing the middle one leaves its neighbours alone.
    writeHop(t, 1, 5, mac(MAC_A));
    expect([readHop(t, 0), readHop(t, 1), readHop(t, 2)]).toEqual([
      [2, MAC_A],
      [5, MAC_A],
      [4, MAC_C],
    ]);
    writeHop(t, 1, 0, null);
    expect(hopEntry(t, 1)).toEqual([0, 0, 0]);
    expect([readHop(t, 0), readHop(t, 1), readHop(t, 2)]).toEqual([[2, MAC_A], null, [4, MAC_C]]);
  });

  // ifindex 0 or below, or no MAC: all three int32s zeroed, not just the ifindex.
  test.each([
    ['ifindex 0 and no MAC', 0, null],
    ['no MAC', 2, null],
    ['ifindex 0 with a MAC', 0, mac(MAC_B)],
    ['a negative ifindex', -1, mac(MAC_B)],
  ])('writing none (%s) zeroes the entry', (_name, ifindex, m) => {
    const t = new Int32Array(HOP_INTS);
    writeHop(t, 0, 2, mac(MAC_A));
    writeHop(t, 0, ifindex, m);
    expect(hopEntry(t, 0)).toEqual([0, 0, 0]);
    expect(readHop(t, 0)).toBeNull();
  });

  test.each([0, 5, 7, 8, 20])('a %i-byte MAC gives none', (len) => {
    const t = new Int32Array(HOP_INTS);
    writeHop(t, 0, 2, mac(MAC_A));
    writeHop(t, 0, 2, new Uint8Array(len).fill(0xab));
    expect(hopEntry(t, 0)).toEqual([0, 0, 0]);
    expect(readHop(t, 0)).toBeNull();
  });
});

// ---------------------------------------------------------------- 2. hopEntry / setHopEntry

describe('hopEntry / setHopEntry: one entry as a queue worker is sent it', () => {
  test('an entry copied into another table reads back the same, and only that peer changes', () => {
    const src = new Int32Array(3 * HOP_INTS);
    writeHop(src, 1, 9, mac('80:01:02:03:04:ff'));
    const dst = new Int32Array(3 * HOP_INTS);
    writeHop(dst, 0, 4, mac('02:00:00:00:00:01'));
    expect(setHopEntry(dst, 1, hopEntry(src, 1))).toBe(true);
    expect(readHop(dst, 1)).toEqual([9, '80:01:02:03:04:ff']);
    expect(readHop(dst, 0)).toEqual([4, '02:00:00:00:00:01']);
    expect(readHop(dst, 2)).toBeNull();
  });

  test.each([
    ['a short entry', 0, [1, 2]],
    ['a long entry', 0, [1, 2, 3, 4]],
    ['a negative peer', -1, [1, 2, 3]],
    ['a peer past the table', 3, [1, 2, 3]],
  ])('%s is refused and nothing is written', (_name, peer, entry) => {
    const t = new Int32Array(3 * HOP_INTS);
    writeHop(t, 0, 4, mac('02:00:00:00:00:01'));
    const before = Array.from(t);
    expect(setHopEntry(t, peer as number, entry as number[])).toBe(false);
    expect(Array.from(t)).toEqual(before);
  });
});
