/**
 * The data path's JIT warm-up (src/dataplane/warmup.ts) run for real, and what it leaves
 * behind; its synthetic packets are checked in warmup-packets.test.ts, the flows it picks in
 * warmup-flows.test.ts.
 *
 * `warmUp` runs with a real Tunnel (test/helpers/warmup-setup.ts) and Dataplane, over FIFOs
 * standing in for the TUN and raw fds, with a recording I/O (test/helpers/recording-io.ts) that
 * hands every call to the native binding:
 *
 *   warmUp --> onTunBatch --encapsulate--> sendRaw(DISCARD_FD)   raw FIFO: stays empty
 *          --> onRawBatch --decapsulate--> writeTun(DISCARD_FD)  TUN FIFO: stays empty
 *   afterwards: fds back (a real write reaches the FIFO), peers and their figures as before,
 *   counters 0
 *
 * Flow of this file: the run and its clean-up; the real fds back; nothing done without flows or
 * rounds; a peer with a small MTU; a batch smaller than the largest warm-up batch, once without
 * offload and once with it.
 *
 * Needs the native addon (build/Release/ipipd_native.node), as `npm ci` builds it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/logger.js';
import { Dataplane, type DataplaneOptions } from '../../src/dataplane/dataplane.js';
import { COUNTER_NAMES } from '../../src/dataplane/figures.js';
import { HEADROOM } from '../../src/dataplane/slabs.js';
import { WARM_ICMP, WARM_TCP, WARM_UDP, warmUp, warmUpFlows, writeWarmOuter, writeWarmPacket } from '../../src/dataplane/warmup.js';
import type { Peer, Tunnel } from '../../src/ipip/index.js';
import { Fifos, drain } from '../helpers/fifos.js';
import { ip } from '../helpers/packets.js';
import { RecordingIo } from '../helpers/recording-io.js';
import { TUN_MTU, TWO_PEERS, tunnelOf } from '../helpers/warmup-setup.js';

/** The sum of the batch sizes warmUp uses over `rounds` rounds, as warmup.ts cycles them. */
function warmBatchTotal(rounds: number, batch: number): number {
  const sizes = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 64];
  let total = 0;
  for (let r = 0; r < rounds; r++) total += Math.min(batch, sizes[r % sizes.length]!);
  return total;
}

/**
 * The TCP super-packets warmUp hands over in offload mode over `rounds` rounds, as warmup.ts
 * `warmRound` makes them: the first packet of every fourth round, when that round starts on TCP.
 */
function warmSuperPackets(rounds: number): number {
  let n = 0;
  for (let r = 0; r < rounds; r++) if (r % 4 === 0 && r % 3 === WARM_TCP) n++; // its kind: (r + 0) % 3
  return n;
}

describe.each([
  { offload: false, udpGro: false },
  { offload: true, udpGro: true },
])('warmUp (offload $offload)', ({ offload, udpGro }) => {
  const NOW = 1_700_000_123_456;
  const BATCH = 64;
  // The TUN and raw fds: FIFOs.
  const fifos = new Fifos('ipipd-warmup-');

  beforeAll(() => {
    fifos.setUp();
  });
  afterAll(() => {
    fifos.remove();
  });
  afterEach(() => {
    fifos.closeAll();
  });

  /** Everything the warm-up may touch about peer `p`: its own fields and its figures. */
  const peerState = (dp: Dataplane, p: Peer): unknown[] => {
    const f = dp.figures.peers;
    const i = p.index;
    return [p.nextId, f.txPackets[i], f.txBytes[i], f.rxPackets[i], f.rxBytes[i], f.lastRxAt[i], f.unreachableAt[i], f.unreachableReason[i], p.mtu, p.pmtuLearnedAt];
  };

  /** Every peer field and figure exactly as in `before` (`Object.is`: the -0 of pmtuLearnedAt too). */
  function expectPeersAsBefore(dp: Dataplane, peers: Peer[], before: unknown[][]): void {
    const after = peers.map((p) => peerState(dp, p));
    for (let i = 0; i < peers.length; i++) {
      before[i]!.forEach((v, j) => expect(Object.is(after[i]![j], v), `peer ${i} field ${j}: ${String(after[i]![j])} vs ${String(v)}`).toBe(true));
    }
  }

  /** A Dataplane on FIFOs for the config `text`, with the options in `over` changed. */
  function setup(text = TWO_PEERS, over: Partial<DataplaneOptions> = {}): { c: Config; tunnel: Tunnel; peers: Peer[]; dp: Dataplane; io: RecordingIo; tunFd: number; rawFd: number } {
    const { c, tunnel, peers } = tunnelOf(text);
    const tunFd = fifos.fifo();
    const rawFd = fifos.fifo();
    const io = new RecordingIo();
    const dp = new Dataplane({
      tunFd,
      rawFd,
      icmpFd: -1,
      tunnel,
      batch: BATCH,
      tunMtu: TUN_MTU,
      underlayMax: 1540,
      icmpSource: c.tun.address!.addr,
      icmpRate: 1000,
      icmpBurst: 50,
      log: createLogger('silent'),
      now: () => NOW,
      offload,
      udpGro,
      io,
      ...over,
    });
    return { c, tunnel, peers, dp, io, tunFd, rawFd };
  }

  it('runs the real data path into the discard fd only, then leaves counters, drops, errors and peers as they were', () => {
    const { c, tunnel, peers, dp, io, tunFd, rawFd } = setup();
    // Soft state a running daemon could have: all of it must come back exactly.
    const p = peers[0]!;
    const f = dp.figures.peers;
    p.nextId = 0xfff0; // wraps during the warm-up
    f.txPackets[0] = 5;
    f.txBytes[0] = 500;
    f.rxPackets[0] = 7;
    f.rxBytes[0] = 700;
    f.lastRxAt[0] = NOW - 60_000;
    f.unreachableAt[0] = NOW - 1000; // a packet from the peer would clear it
    f.unreachableReason[0] = 'host unreachable from 192.0.2.126';
    const before = peers.map((x) => peerState(dp, x));

    const flows = warmUpFlows(c, tunnel);
    expect(flows).toHaveLength(2);
    const rounds = 2000; // what the daemon runs
    const got = warmUp(dp, flows, rounds);
    const perWay = warmBatchTotal(rounds, BATCH);
    expect(got).toBeGreaterThan(0);
    expect(got).toBe(2 * perWay);

    // Everything went to the discard fd, every packet was taken (none failed the slab check),
    // and the synthetic traffic was forwarded, not dropped: one call per batch and direction.
    const calls = io.calls;
    expect(calls.filter((x) => x.fd !== io.DISCARD_FD)).toEqual([]);
    expect(calls.filter((x) => x.failed !== 0)).toEqual([]);
    const sends = calls.filter((x) => x.fn === 'sendRaw');
    const writes = calls.filter((x) => x.fn === 'writeTun');
    expect(sends).toHaveLength(rounds);
    expect(writes).toHaveLength(rounds);
    const sent = sends.reduce((s, x) => s + x.done, 0);
    const written = writes.reduce((s, x) => s + x.done, 0);
    if (offload) {
      // Super-packets go out as 8 segments each (8 times the largest segment that fits the path);
      // received runs are coalesced before the write.
      expect(sent).toBe(perWay + 7 * warmSuperPackets(rounds));
      expect(written).toBeLessThan(perWay);
    } else {
      expect(sent).toBe(perWay);
      expect(written).toBe(perWay);
    }

    // Nothing reached the real fds.
    expect(drain(tunFd)).toBe('EAGAIN');
    expect(drain(rawFd)).toBe('EAGAIN');

    // The status report starts from zero.
    expect(dp.figures.counters.every((v) => v === 0)).toBe(true);
    expect(dp.figures.drops.every((v) => v === 0)).toBe(true);
    expect(dp.figures.lastErrors).toEqual({});
    const snap = dp.snapshot();
    expect(Object.keys(snap.counters)).toEqual([...COUNTER_NAMES]);
    expect(Object.values(snap.counters).every((v) => v === 0)).toBe(true);
    expect(Object.values(snap.drops).every((v) => v === 0)).toBe(true);

    // Every peer and its figures exactly as before; the untouched peer's figures still 0.
    expectPeersAsBefore(dp, peers, before);
    expect([f.txPackets[1], f.txBytes[1], f.rxPackets[1], f.rxBytes[1], f.lastRxAt[1], f.unreachableAt[1]]).toEqual([0, 0, 0, 0, 0, 0]);
    dp.close();
  });

  it('puts the real fds back: a packet after the warm-up goes to the TUN fd, a send to the raw fd', () => {
    const { c, tunnel, peers, dp, tunFd } = setup();
    warmUp(dp, warmUpFlows(c, tunnel), 50);
    // The data path's own batch handlers, as the Readers would call them.
    const { rxBuf, rawLens, txBuf, tunLens } = dp.slabs;
    const inner = writeWarmPacket(rxBuf, 20, WARM_UDP, ip('203.0.113.5'), ip('198.51.100.10'), 32, 77, 0, false);
    const expected = Buffer.from(rxBuf.subarray(20, 20 + inner));
    rawLens[0] = writeWarmOuter(rxBuf, 0, inner, peers[0]!.endpoint, tunnel.local, 1);
    dp.receive.onRawBatch(1);
    const tunGot = drain(tunFd);
    expect(Buffer.isBuffer(tunGot)).toBe(true);
    // Offload mode writes a (zero) virtio_net_hdr in front of each packet.
    const vnet = offload ? 10 : 0;
    expect([...(tunGot as Buffer).subarray(0, vnet)]).toEqual(new Array(vnet).fill(0));
    expect((tunGot as Buffer).subarray(vnet).equals(expected)).toBe(true);
    expect(dp.snapshot().counters.rx_packets).toBe(1);
    expect(dp.figures.peers.rxPackets[0]).toBe(1);
    expect(dp.figures.peers.lastRxAt[0]).toBe(NOW);

    // A raw send to a FIFO fails (ENOTSOCK): proof that the real raw fd is back, not the discard fd.
    const off = HEADROOM;
    const len = writeWarmPacket(txBuf, off, WARM_ICMP, ip('198.51.100.10'), ip('203.0.113.5'), 56, 1, 1, false);
    if (offload) txBuf.fill(0, off - 10, off);
    tunLens[0] = len + vnet;
    dp.send.onTunBatch(1);
    expect(dp.snapshot().drops.socket_write_error).toBe(1);
    expect(dp.figures.lastErrors.underlaySend).toBe('ENOTSOCK');
    dp.close();
  });

  it('with no flows, 0 rounds or negative rounds: returns 0 and touches nothing', () => {
    const { c, tunnel, peers, dp, io, tunFd, rawFd } = setup();
    dp.figures.counters[0] = 3;
    dp.figures.drops[1] = 4;
    dp.figures.lastErrors.tunRead = 'EIO';
    peers[0]!.nextId = 1234;
    const before = peers.map((p) => peerState(dp, p));
    expect(warmUp(dp, [], 2000)).toBe(0);
    expect(warmUp(dp, warmUpFlows(c, tunnel), 0)).toBe(0);
    expect(warmUp(dp, warmUpFlows(c, tunnel), -1)).toBe(0);
    expect(io.calls).toEqual([]);
    expect(dp.figures.counters[0]).toBe(3);
    expect(dp.figures.drops[1]).toBe(4);
    expect(dp.figures.lastErrors).toEqual({ tunRead: 'EIO' });
    expectPeersAsBefore(dp, peers, before);
    expect(drain(tunFd)).toBe('EAGAIN');
    expect(drain(rawFd)).toBe('EAGAIN');
    dp.close();
  });

  it('a peer with a small MTU: warm packets are sized to its path, so every one is forwarded', () => {
    // Toward a 1000-byte tunnel the full-sized TCP segments are 1000 bytes (payload 948), the
    // super-packets cut at 948: nothing is too big, no ICMP answer is written.
    const { c, tunnel, peers, dp, io, tunFd, rawFd } = setup(TWO_PEERS.replace('prefixes: [203.0.113.0/25] }', 'prefixes: [203.0.113.0/25], mtu: 1000 }'));
    expect(tunnel.mtuFor(peers[0]!)).toBe(1000);
    const before = peers.map((p) => peerState(dp, p));
    // What was counted by the time of each write (the last one: just before the reset).
    let drops = -1;
    let forwarded = -1;
    io.onCall = () => {
      drops = dp.figures.drops.reduce((s, x) => s + x, 0);
      forwarded = dp.figures.counters[COUNTER_NAMES.indexOf('tx_packets')]!;
    };
    expect(warmUp(dp, warmUpFlows(c, tunnel), 200)).toBe(2 * warmBatchTotal(200, BATCH));
    expect(drops).toBe(0);
    expect(forwarded).toBeGreaterThan(0);
    expect(io.calls.filter((x) => x.fd !== io.DISCARD_FD || x.failed !== 0)).toEqual([]);
    // One writeTun per underlay batch: no ICMP answers.
    expect(io.calls.filter((x) => x.fn === 'writeTun').length).toBe(200);
    expect(dp.figures.counters.every((v) => v === 0)).toBe(true);
    expect(dp.figures.drops.every((v) => v === 0)).toBe(true);
    expect(dp.figures.lastErrors).toEqual({});
    expectPeersAsBefore(dp, peers, before);
    expect(drain(tunFd)).toBe('EAGAIN');
    expect(drain(rawFd)).toBe('EAGAIN');
    dp.close();
  });

  it('a batch smaller than the largest warm-up batch: sizes are capped at it', () => {
    const { c, tunnel, dp, io } = setup(TWO_PEERS, { batch: 4, icmpSource: 1, now: undefined });
    expect(warmUp(dp, warmUpFlows(c, tunnel), 22)).toBe(2 * warmBatchTotal(22, 4));
    expect(io.calls.filter((x) => x.fd !== io.DISCARD_FD || x.failed !== 0)).toEqual([]);
    expect(dp.figures.counters.every((v) => v === 0)).toBe(true);
    dp.close();
  });
});
