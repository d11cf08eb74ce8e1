/**
 * `underlaySend` (src/dataplane/underlay-send.ts), the choice between the next-hop way
 * (AF_PACKET, native sendPacket) and the raw way (native sendRaw), against a fake of the two
 * native sends that records each call and fails the packets it is told to, as the addon does
 * (lens[i] = -errno, res = [failures, last errno]). The real sends across a veth are in
 * test/integration/native-packet.test.ts.
 */
import { describe, expect, it } from 'vitest';

import { underlaySend, type UnderlayIo } from '../../src/dataplane/underlay-send.js';
import { native } from '../../src/tun/native.js';

const RAW_FD = 7;
const PACKET_FD = 9;
const ENETDOWN = 100;
const ENETUNREACH = 101;

interface Call {
  way: 'packet' | 'raw';
  fd: number;
  /** The packets, by offset, and where each was sent (hop entry or destination). */
  offs: number[];
  to: number[];
  arrays: Int32Array[];
}

/** A fake of the two sends: records every call; a packet whose offset is in `fail` fails with that errno. */
function fakeIo(fail: Record<number, number> = {}): { io: UnderlayIo; calls: Call[] } {
  const calls: Call[] = [];
  const send = (way: Call['way'], fd: number, offs: Int32Array, lens: Int32Array, to: Int32Array, n: number, res: Int32Array): number => {
    calls.push({ way, fd, offs: Array.from(offs.subarray(0, n)), to: Array.from(to.subarray(0, n)), arrays: [offs, lens, to] });
    let failed = 0;
    let last = 0;
    for (let i = 0; i < n; i++) {
      const err = fail[offs[i]!];
      if (err === undefined) continue;
      lens[i] = -err;
      failed++;
      last = err;
    }
    res[0] = failed;
    res[1] = last;
    return n - failed;
  };
  const io: UnderlayIo = {
    sendRaw: (fd, _slab, offs, lens, dsts, n, res) => send('raw', fd, offs, lens, dsts, n, res),
    sendPacket: (fd, _slab, offs, lens, hopOf, n, res) => send('packet', fd, offs, lens, hopOf, n, res),
  };
  return { io, calls };
}

/** Hop table: entry 0 and 1 usable, entry 2 ifindex 0, then half an entry (out of range). */
const HOPS = Int32Array.from([5, 0x8ea1b2c3, 0xd4e50000, 5, 0x0a0b0c0d, 0x0e0f0000, 0, 0x01020304, 0x05060000, 5, 1]);
const DIRECT = new Set([0, 1]);

/** A batch whose packet i belongs to peer `peerOf(i)` (its hopOf), offset 100 * i + 1, to 0xc0000200 + peer. */
function batch(n: number, peerOf: (i: number) => number, extra = 0) {
  const size = n + extra;
  const offs = Int32Array.from({ length: size }, (_, i) => 100 * i + 1);
  const lens = Int32Array.from({ length: size }, (_, i) => 60 + (i % 7));
  const hopOf = Int32Array.from({ length: size }, (_, i) => peerOf(i));
  const dsts = Int32Array.from(hopOf, (p) => (0xc0000200 + (p & 0xff)) | 0);
  return { slab: Buffer.alloc(100 * size + 100), offs, lens, dsts, hopOf, res: new Int32Array([-1, -1]) };
}

type Batch = ReturnType<typeof batch>;
const send = (io: UnderlayIo, b: Batch, n: number, packetFd = PACKET_FD): number =>
  underlaySend(io, RAW_FD, packetFd, HOPS, b.slab, b.offs, b.lens, b.dsts, b.hopOf, n, b.res);
const offOf = (i: number): number => 100 * i + 1;
const indexOf = (off: number): number => (off - 1) / 100;

describe('underlaySend', () => {
  it('without a packet fd, sends everything through the raw socket in one call on the caller\'s arrays', () => {
    const { io, calls } = fakeIo();
    const b = batch(10, (i) => i % 2);
    expect(underlaySend(io, RAW_FD, -1, HOPS, b.slab, b.offs, b.lens, b.dsts, b.hopOf, 10, b.res)).toBe(10);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ way: 'raw', fd: RAW_FD, offs: Array.from(b.offs) });
    expect(calls[0]!.arrays).toEqual([b.offs, b.lens, b.dsts]);
    expect(calls[0]!.arrays[0]).toBe(b.offs);
    expect(Array.from(b.res)).toEqual([0, 0]);
  });

  // All of them have a next hop; none has one (ifindex 0, half an entry, hopOf < 0 or past the table).
  it.each([
    { what: 'all have a next hop: sendPacket', peers: [0, 1], way: 'packet', fd: PACKET_FD, n: 300 },
    { what: 'none has one: sendRaw', peers: [2, 3, -1, 1000, -2147483648], way: 'raw', fd: RAW_FD, n: 50 },
  ] as const)('a batch whose peers $what, in one call on the caller\'s arrays', ({ peers, way, fd, n }) => {
    const { io, calls } = fakeIo();
    const b = batch(n, (i) => peers[i % peers.length]!);
    expect(send(io, b, n)).toBe(n);
    expect(calls.map((c) => [c.way, c.fd, c.offs.length])).toEqual([[way, fd, n]]);
    expect(calls[0]!.arrays[0]).toBe(b.offs);
    expect(calls[0]!.arrays[2]).toBe(way === 'packet' ? b.hopOf : b.dsts);
  });

  it('splits a mixed batch: the next-hop way first, then the raw way, each packet once, each peer in order, n bounding it', () => {
    const { io, calls } = fakeIo();
    const peers = [0, 2, 1, -1, 3, 1000];
    const n = 700;
    const b = batch(n, (i) => peers[(i * 5 + (i >> 3)) % peers.length]!, 5);
    expect(send(io, b, n)).toBe(n);
    expect(Array.from(b.res)).toEqual([0, 0]);
    // No call mixes the ways, the next-hop calls all come first, none takes more than 256.
    const ways = calls.map((c) => c.way);
    expect(ways.indexOf('raw')).toBe(ways.lastIndexOf('packet') + 1);
    for (const c of calls) expect(c.offs.length).toBeLessThanOrEqual(256);
    for (const c of calls) expect(c.fd).toBe(c.way === 'packet' ? PACKET_FD : RAW_FD);
    // Each packet sent once, the way its peer's entry says, with its hop entry or destination.
    const sent = calls.flatMap((c) => c.offs.map((off, j) => ({ way: c.way, i: indexOf(off), to: c.to[j]! })));
    expect(sent.map((s) => s.i).sort((x, y) => x - y)).toEqual(Array.from({ length: n }, (_, i) => i));
    for (const s of sent) {
      const p = b.hopOf[s.i]!;
      expect(s, `packet ${s.i}`).toEqual({ way: DIRECT.has(p) ? 'packet' : 'raw', i: s.i, to: DIRECT.has(p) ? p : b.dsts[s.i] });
    }
    // Each peer's packets in the order given.
    for (const p of peers) {
      const order = sent.filter((s) => b.hopOf[s.i] === p).map((s) => s.i);
      expect(order, `peer ${p}`).toEqual([...order].sort((x, y) => x - y));
    }
  });

  it('marks the failed packets of a split batch in the caller\'s lens; res counts them all and keeps the raw way\'s last errno', () => {
    const b = batch(600, (i) => [0, 3, 1][i % 3]!);
    // Failures on both ways, in more than one chunk each.
    const fail: Record<number, number> = { [offOf(0)]: ENETDOWN, [offOf(301)]: ENETDOWN, [offOf(4)]: ENETUNREACH, [offOf(451)]: ENETUNREACH };
    const { io } = fakeIo(fail);
    const before = Array.from(b.lens);
    expect(send(io, b, 600)).toBe(596);
    expect(Array.from(b.res)).toEqual([4, ENETUNREACH]);
    expect(Array.from(b.lens)).toEqual(before.map((l, i) => (fail[offOf(i)] === undefined ? l : -fail[offOf(i)]!)));
    // Only the next-hop way fails: its errno is the last.
    const c = batch(600, (i) => [0, 3, 1][i % 3]!);
    expect(send(fakeIo({ [offOf(2)]: ENETDOWN }).io, c, 600)).toBe(599);
    expect(Array.from(c.res)).toEqual([1, ENETDOWN]);
    expect(c.lens[2]).toBe(-ENETDOWN);
  });

  it('with the discard fd as the packet fd, the raw way gets the discard fd too', () => {
    for (const peerOf of [(i: number) => i % 2 ? 2 : 0, () => 2]) {
      const { io, calls } = fakeIo();
      const b = batch(20, peerOf);
      send(io, b, 20, native.DISCARD_FD);
      expect(calls.length).toBeGreaterThan(0);
      for (const call of calls) expect(call.fd).toBe(native.DISCARD_FD);
    }
  });

  it('n = 0 sends nothing and resets res; a split batch reuses the same scratch arrays from one batch to the next', () => {
    const { io, calls } = fakeIo();
    const b = batch(4, (i) => i % 2 ? 2 : 0);
    expect(send(io, b, 0)).toBe(0);
    expect(Array.from(b.res)).toEqual([0, 0]);
    expect(calls.every((c) => c.offs.length === 0)).toBe(true);
    calls.length = 0;
    send(io, b, 4);
    send(io, b, 4);
    expect(calls).toHaveLength(4);
    expect(calls[2]!.arrays).toEqual(calls[0]!.arrays);
    calls[2]!.arrays.forEach((a, k) => expect(a).toBe(calls[0]!.arrays[k]));
    calls[3]!.arrays.forEach((a, k) => expect(a).toBe(calls[1]!.arrays[k]));
  });
});
