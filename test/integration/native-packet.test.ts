/**
 * The native side of `underlay.send: packet` (native/ipipd.cc openPacket, sendPacket; the
 * contract is in src/tun/native.ts), with src/dataplane/underlay-send.ts choosing each packet's
 * way as the data path does, against the real kernel, in two network namespaces this test
 * creates and always deletes, joined by a veth. The child fixture (test/fixtures/packet-child.ts,
 * run from dist/ after `npm run build`) sends IPIP datagrams from the sender namespace and
 * captures, with tcpdump, every frame that reaches the peer's end of the veth; it reports what it
 * sent, what sendPacket returned and what was on the wire. Every assertion is here.
 *
 *   root namespace: nothing but `ip netns add/del npk-<pid>-<random>, npkp-<pid>-<random>`
 *
 *   npk-<pid>-<random> (sender)                    npkp-<pid>-<random> (peer)
 *   +------------------------------------------+   +--------------------------------------+
 *   |  pkv0 8e:10:20:30:40:01  192.0.2.1/24    |===|  pkv1 8e:a1:b2:c3:d4:e5  192.0.2.2/24 |
 *   |    neigh 192.0.2.2 -> 8e:a1:b2:c3:d4:e5  |   |    tcpdump: the frames as they came  |
 *   |    neigh 192.0.2.3 -> 8e:33:33:33:33:03  |   +--------------------------------------+
 *   |  pkx0 (veth, down)                       |
 *   |  openPacket fd --sendPacket, hop [ifindex, MAC]--> straight onto the link          |
 *   |  openRaw@192.0.2.1 <-- hop ifindex 0 / hopOf out of range: routed by the kernel    |
 *   +------------------------------------------+
 *
 * How a frame tells which way its packet went: the AF_PACKET way puts the hop's MAC in front of
 * it, the raw way the kernel's (permanent) neighbour MAC of the packet's destination. Hops that
 * name the made-up MAC fe:dc:ba:98:76:54 or go to 192.0.2.3 make the two differ.
 *
 * 1. openPacket: an AF_PACKET SOCK_DGRAM socket of protocol 0, non-blocking, close-on-exec,
 *    with SO_SNDBUF as asked (0: the kernel's default).
 * 2. The AF_PACKET way: each datagram, byte for byte, in an IPv4 Ethernet frame from pkv0 to its
 *    hop's MAC (the peer's own, or made up), in order.
 * 3. Both ways in one batch of 200 (more than one sendmmsg chunk): ifindex 0, hopOf < 0 or
 *    >= hops.length / 3 (also a half entry at the end of the table) take the raw way; every
 *    packet arrives once, each peer's in order; entries past n are never sent.
 * 4. Per-packet failures on either way mark exactly those packets (-errno), res = [count, last
 *    errno], the others are still sent.
 * 5. Native sendPacket alone has no raw way: ifindex 0 fails with the kernel's ENXIO, a hopOf
 *    outside the table with EINVAL.
 * 6. DISCARD_FD: nothing leaves either way, every usable packet is counted.
 * 7. Argument checks: TypeError / RangeError, and nothing is sent.
 */
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

import { checksum } from '../fixtures/native-packets.js';
import type { BatchReport, Frame } from '../fixtures/packet-child.js';
import { hasCommand } from '../../tools/netns/exec.js';
import { createNetns, deleteNetns } from '../../tools/netns/namespaces.js';
import { expectCleanRun, runFixtureInNetns, type ChildReport, type ChildResult } from '../helpers/child-fixture.js';
import { integrationSkip } from '../helpers/skip.js';

const FIXTURE = fileURLToPath(new URL('../../dist/test/fixtures/packet-child.js', import.meta.url));

const SENDER_MAC = '8e:10:20:30:40:01';
const PEER_MAC = '8e:a1:b2:c3:d4:e5';
const NEIGH3_MAC = '8e:33:33:33:33:03';
const MADE_UP_MAC = 'fe:dc:ba:98:76:54';
/** The sender's neighbour entries: where the raw way sends each destination. */
const NEIGHBOUR: Record<string, string> = { '192.0.2.2': PEER_MAC, '192.0.2.3': NEIGH3_MAC };

const ENXIO = 6;
const EINVAL = 22;
const EMSGSIZE = 90;
const ENETDOWN = 100;
const ENETUNREACH = 101;

interface ErrShape { threw: boolean; name?: string; message?: string }
/** What the fixture reports per batch (its own types: the fixture is the one that fills them). */
type Batch = BatchReport;
interface FdInfo {
  isSocket: boolean;
  /** sk_sndbuf (ss skmem tb). */
  sndbuf: number | null;
  packetRow: { type: number; proto: string; iface: number; running: number } | null;
  nonBlocking: boolean;
  closeOnExec: boolean;
}
interface Report extends ChildReport {
  setup: { pkv0: number; pkx0: number; missing: number; pkv0Up: boolean; pkx0Flags: string[]; macs: Record<string, string> };
  openPacket: { fd: number; fdIsInt: boolean; info: FdInfo; defaultBuf: { fdIsInt: boolean; distinct: boolean; info: FdInfo }; wmemDefault: number; HOP_INTS: number; DISCARD_FD: number };
  packetOnly: Batch;
  mixed: Batch;
  perPacket: { downThenMissing: Batch; missingThenDown: Batch; bothWays: Batch; bulk: Batch };
  direct: Batch;
  discard: { all: Batch; withBad: Batch; none: Batch };
  args: { checks: Record<string, ErrShape>; frames: Frame[]; captureDropped: number | null; lensUnchanged: boolean };
}

/** A MAC from a hop entry's two int32s (bytes 0-3 big-endian; bytes 4-5 in the top 16 bits). */
function macOfInts(hi: number, lo: number): string {
  return [hi >>> 24, (hi >>> 16) & 255, (hi >>> 8) & 255, hi & 255, lo >>> 24, (lo >>> 16) & 255]
    .map((b) => b.toString(16).padStart(2, '0'))
    .join(':');
}

/** Which way packet i of `b` must take, by the contract: its hop's MAC, or the raw way (null). */
function hopMac(b: Batch, i: number): string | null {
  const peers = Math.floor(b.hops.length / 3);
  const p = b.packets[i].hopOf;
  if (p < 0 || p >= peers || b.hops[p * 3] <= 0) return null;
  return macOfInts(b.hops[p * 3 + 1], b.hops[p * 3 + 2]);
}

/** The frame packet i of `b` must arrive as. */
function wire(b: Batch, i: number): Frame {
  const p = b.packets[i];
  return { dst: hopMac(b, i) ?? NEIGHBOUR[p.to], src: SENDER_MAC, type: 0x0800, hex: p.hex };
}

const idOf = (hex: string): number => parseInt(hex.slice(8, 12), 16);

/**
 * The peer saw exactly packets `delivered` of `b` (indices), each once, whole, in the frame
 * `wire` says, and each peer's (hopOf value's) packets in the order they were given.
 */
function expectDelivered(b: Batch, delivered: number[]): void {
  expect(b.captureDropped).toBe(0);
  const index = new Map(b.packets.map((p, i) => [p.id, i]));
  const got = b.frames.map((f) => index.get(idOf(f.hex)) ?? -1);
  expect([...got].sort((x, y) => x - y)).toEqual(delivered);
  expect(b.frames).toEqual(got.map((i) => wire(b, i)));
  for (const hopOf of new Set(b.packets.map((p) => p.hopOf))) {
    const order = got.filter((i) => b.packets[i].hopOf === hopOf);
    expect(order, `hopOf ${hopOf}`).toEqual([...order].sort((x, y) => x - y));
  }
}

/** Packets of `b` marked failed: index -> errno. Every other one keeps its length. */
function expectMarked(b: Batch, marked: Record<number, number>): void {
  expect(b.lensAfter).toEqual(b.packets.map((p, i) => (i in marked ? -marked[i] : p.len)));
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

const skipReason = integrationSkip('native-packet.test.ts', hasCommand('tcpdump') ? null : 'tcpdump is missing');

describe.skipIf(skipReason)('native openPacket/sendPacket (AF_PACKET) across a veth between two private namespaces', () => {
  let child: ChildResult;
  let r: Report;

  beforeAll(async () => {
    let peer: string | undefined;
    try {
      peer = createNetns('npkp');
      ({ child, report: r } = await runFixtureInNetns<Report>(FIXTURE, 'npk', [peer], 90_000));
    } finally {
      deleteNetns(peer);
    }
  });

  it('the child ran every step inside its namespace and exited by itself', () => {
    expectCleanRun(child, r);
    expect(r.setup.pkv0Up).toBe(true);
    expect(r.setup.pkx0Flags).not.toContain('UP');
    expect(r.setup.macs).toEqual({ sender: SENDER_MAC, peer: PEER_MAC, neigh3: NEIGH3_MAC, madeUp: MADE_UP_MAC });
  });

  it('openPacket returns a non-blocking, close-on-exec AF_PACKET SOCK_DGRAM socket of protocol 0 on no device, with the send buffer asked for', () => {
    const o = r.openPacket;
    const expected = { isSocket: true, packetRow: { type: 2, proto: '0000', iface: 0, running: 0 }, nonBlocking: true, closeOnExec: true };
    expect(o.fdIsInt).toBe(true);
    // SO_SNDBUF(FORCE) 1 MiB: the kernel keeps twice that.
    expect(o.info).toEqual({ ...expected, sndbuf: 2 << 20 });
    // sndbuf 0 keeps the kernel's default.
    expect(o.defaultBuf).toEqual({ fdIsInt: true, distinct: true, info: { ...expected, sndbuf: o.wmemDefault } });
    expect(o.HOP_INTS).toBe(3);
    expect(o.DISCARD_FD).toBe(-2);
  });

  it("sendPacket puts each datagram, byte for byte, in an IPv4 frame from the hop's device to the hop's MAC, the peer's own or a made-up one", () => {
    const b = r.packetOnly;
    // The datagrams are complete IPv4: version 4, IHL 5, protocol 4, header checksum right.
    for (const p of b.packets) {
      const h = Buffer.from(p.hex, 'hex');
      expect([h[0], h[9], h.readUInt16BE(2), checksum(h, 0, 20)]).toEqual([0x45, 4, p.len, 0]);
    }
    expect(b.packets.map((p) => p.len)).toContain(48); // a bare inner IPv4/UDP header
    expect(b.packets.map((p) => p.len)).toContain(1500); // exactly the link MTU
    expect(b.hops).toEqual([r.setup.pkv0, 0x8ea1b2c3 | 0, 0xd4e50000 | 0, r.setup.pkv0, 0xfedcba98 | 0, 0x76540000]);
    expect(b.sent).toBe(40);
    expect(b.res).toEqual([0, 0]);
    expectMarked(b, {});
    expectDelivered(b, range(40));
    // All of them the AF_PACKET way, in the order given; both MACs in use.
    expect(b.frames.map((f) => idOf(f.hex))).toEqual(b.packets.map((p) => p.id));
    expect(b.frames.filter((f) => f.dst === MADE_UP_MAC)).toHaveLength(13);
    expect(b.frames.filter((f) => f.dst === PEER_MAC)).toHaveLength(27);
  });

  it('ifindex 0 and hopOf out of range take the raw socket; a mixed batch of 200 arrives whole, each peer in order, and n bounds it', () => {
    const b = r.mixed;
    // 3 whole entries (the table's last 2 ints are half an entry, which is out of range).
    expect(b.hops).toHaveLength(11);
    expect(b.hops[6]).toBe(0);
    expect(b.sent).toBe(200);
    expect(b.res).toEqual([0, 0]);
    expectMarked(b, {});
    expectDelivered(b, range(200));
    // Which way each peer took, from the MAC its frames carry.
    const way = new Map<number, Set<string>>();
    b.frames.forEach((f) => {
      const hopOf = b.packets.find((p) => p.id === idOf(f.hex))!.hopOf;
      way.set(hopOf, (way.get(hopOf) ?? new Set()).add(f.dst));
    });
    expect(Object.fromEntries([...way].map(([k, v]) => [k, [...v]]))).toEqual({
      0: [PEER_MAC], // AF_PACKET, the peer's MAC
      1: [MADE_UP_MAC], // AF_PACKET, to 192.0.2.3 but the hop's MAC, not the neighbour's
      2: [PEER_MAC], // ifindex 0: raw, to 192.0.2.2
      3: [NEIGH3_MAC], // the half entry: raw, to 192.0.2.3's neighbour
      [-1]: [PEER_MAC],
      1000: [NEIGH3_MAC],
      [-2147483648]: [PEER_MAC],
    });
    // Every peer had packets in every 64-packet chunk.
    for (const hopOf of way.keys()) {
      const idx = b.packets.flatMap((p, i) => (p.hopOf === hopOf ? [i] : []));
      expect(new Set(idx.map((i) => i >> 6)), `hopOf ${hopOf}`).toEqual(new Set([0, 1, 2, 3]));
    }
  });

  it('a hop on a device that is down (ENETDOWN) or on no device (ENXIO) fails exactly those packets; the rest are sent', () => {
    const { downThenMissing: a, missingThenDown: m, bulk } = r.perPacket;
    // [ok, down, ok, ok, missing, ok]
    expect(a.hops.slice(3, 9).filter((_, j) => j % 3 === 0)).toEqual([r.setup.pkx0, r.setup.missing]);
    expect(a.sent).toBe(4);
    expect(a.res).toEqual([2, ENXIO]);
    expectMarked(a, { 1: ENETDOWN, 4: ENXIO });
    expectDelivered(a, [0, 2, 3, 5]);
    // [ok, missing, down, ok]: res[1] is the last failure's errno.
    expect(m.sent).toBe(2);
    expect(m.res).toEqual([2, ENETDOWN]);
    expectMarked(m, { 1: ENXIO, 2: ENETDOWN });
    expectDelivered(m, [0, 3]);
    // 100 packets, every fourth (from 1) to the down device, some of the others the raw way.
    const down = range(100).filter((i) => i % 4 === 1);
    expect(bulk.sent).toBe(75);
    expect(bulk.res).toEqual([25, ENETDOWN]);
    expectMarked(bulk, Object.fromEntries(down.map((i) => [i, ENETDOWN])));
    expectDelivered(bulk, range(100).filter((i) => i % 4 !== 1));
    expect(bulk.packets.filter((_, i) => i % 4 !== 1 && hopMac(bulk, i) === null).length).toBeGreaterThan(5);
  });

  it('both ways mark their own failures (EINVAL outside the slab, EMSGSIZE over the MTU, ENETUNREACH), the raw way last', () => {
    const b = r.perPacket.bothWays;
    // [ok outside the slab, ok, raw, ok of 1648 bytes, raw at offset -4, raw to 198.51.100.9, raw, ok]
    expect(b.packets[3].len).toBeGreaterThan(1504);
    expect(b.packets[5].to).toBe('198.51.100.9');
    expect(b.sent).toBe(4);
    expect(b.res).toEqual([4, ENETUNREACH]);
    expectMarked(b, { 0: EINVAL, 3: EMSGSIZE, 4: EINVAL, 5: ENETUNREACH });
    expectDelivered(b, [1, 2, 6, 7]);
  });

  it('native sendPacket alone sends every packet to its hop entry: ifindex 0 fails with ENXIO, a hopOf outside the table with EINVAL', () => {
    const b = r.direct;
    // [hop 0, hop 2 (ifindex 0), hop 1, hopOf -1, hopOf 3 (past 3 entries), hop 0]
    expect(b.packets.map((p) => p.hopOf)).toEqual([0, 2, 1, -1, 3, 0]);
    expect(b.sent).toBe(3);
    // The EINVALs are found while the chunk is gathered, the ENXIO when it is sent: that is last.
    expect(b.res).toEqual([3, ENXIO]);
    expectMarked(b, { 1: ENXIO, 3: EINVAL, 4: EINVAL });
    expectDelivered(b, [0, 2, 5]);
    expect(b.frames.map((f) => f.dst)).toEqual([PEER_MAC, MADE_UP_MAC, PEER_MAC]);
  });

  it('DISCARD_FD discards both ways: nothing leaves, every usable packet is counted', () => {
    const { all, withBad, none } = r.discard;
    // 80 packets, half of them the raw way (a real raw fd).
    expect(all.packets.filter((_, i) => hopMac(all, i) === null)).toHaveLength(40);
    expect(all.sent).toBe(80);
    expect(all.res).toEqual([0, 0]);
    expectMarked(all, {});
    expectDelivered(all, []);
    // A packet outside the slab is still checked and marked.
    expect(withBad.sent).toBe(2);
    expect(withBad.res).toEqual([1, EINVAL]);
    expectMarked(withBad, { 1: EINVAL });
    expectDelivered(withBad, []);
    // n = 0 on the real fds: nothing, and res reset.
    expect(none.sent).toBe(0);
    expect(none.res).toEqual([0, 0]);
    expectDelivered(none, []);
  });

  it('argument checks throw TypeError / RangeError, and a call that throws sends nothing', () => {
    const a = r.args;
    const typeErrors = ['fdString', 'slabNotBuffer', 'offsNotInt32', 'lensNotInt32', 'hopOfNotInt32', 'nString', 'resNotInt32', 'hopsNotInt32', 'hopsMissing', 'hopOfMissing', 'openPacketString', 'openPacketMissing'];
    const rangeErrors = ['hopOfShort', 'offsShort', 'lensShort', 'nNegative', 'nFractional', 'resShort', 'fdTooBig', 'openPacketNegative', 'openPacketFractional'];
    expect(Object.keys(a.checks).sort()).toEqual([...typeErrors, ...rangeErrors].sort());
    for (const k of typeErrors) expect(a.checks[k], k).toMatchObject({ threw: true, name: 'TypeError' });
    for (const k of rangeErrors) expect(a.checks[k], k).toMatchObject({ threw: true, name: 'RangeError' });
    expect(a.checks.hopOfShort.message).toContain('hopOf');
    expect(a.checks.hopsNotInt32.message).toContain('hops');
    expect(a.frames).toEqual([]);
    expect(a.captureDropped).toBe(0);
    expect(a.lensUnchanged).toBe(true);
  });
});
