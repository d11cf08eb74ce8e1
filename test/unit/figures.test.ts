/**
 * One data-path queue's figures (src/dataplane/figures.ts): the per-peer figures that used to be
 * fields of `Peer`, and the views the status report takes of them.
 *
 * Flow of this file:
 *   1. `PeerFigures`: doubles from the start, 0 (not "never" as anything else) in JSON; `carry`
 *      (what a reload does with `Peer.inheritSoftState`); `clone` / `setFrom` (the warm-up's
 *      save and restore);
 *   2. `Figures.resetCounters`, `nameFigures`, `queueSnapshot`.
 */
import { describe, expect, it } from 'vitest';
import { COUNTER_NAMES, C, Figures, PeerFigures, nameFigures, queueSnapshot } from '../../src/dataplane/figures.js';
import { VERDICT_NAMES, Verdict } from '../../src/ipip/index.js';

const ARRAYS = ['txPackets', 'txBytes', 'rxPackets', 'rxBytes', 'lastRxAt', 'unreachableAt'] as const;

describe('PeerFigures', () => {
  it('one Float64Array per figure, a slot per peer, all 0; reasons null; times 0 in JSON', () => {
    const f = new PeerFigures(3);
    for (const k of ARRAYS) {
      // Doubles from the start: the first timestamp or a counter past 2^30 changes no shape.
      expect(f[k], k).toBeInstanceOf(Float64Array);
      expect([...f[k]], k).toEqual([0, 0, 0]);
    }
    expect(f.unreachableReason).toEqual([null, null, null]);
    expect(JSON.stringify({ t: f.lastRxAt[0] })).toBe('{"t":0}');
  });

  it('carry: a reloaded peer keeps its traffic counters, from whatever index it had', () => {
    const old = new PeerFigures(4);
    old.txPackets[3] = 1;
    old.txBytes[3] = 2;
    old.rxPackets[3] = 3;
    old.rxBytes[3] = 4;
    old.lastRxAt[3] = 5;
    const fresh = new PeerFigures(1);
    fresh.carry(0, old, 3);
    expect([fresh.txPackets[0], fresh.txBytes[0], fresh.rxPackets[0], fresh.rxBytes[0]]).toEqual([1, 2, 3, 4]);
    // Soft state is not carried: a new configuration learns reachability afresh.
    expect(fresh.lastRxAt[0]).toBe(0);
  });

  it('clone and setFrom: a copy that does not follow the original, and back', () => {
    const f = new PeerFigures(2);
    f.txPackets[1] = 9;
    f.unreachableAt[0] = 7;
    f.unreachableReason[0] = 'host unreachable from 192.0.2.126';
    const saved = f.clone();
    for (const k of ARRAYS) f[k].fill(42);
    f.unreachableReason[0] = null;
    expect(saved.txPackets[1]).toBe(9);
    f.setFrom(saved);
    expect([...f.txPackets]).toEqual([0, 9]);
    expect([...f.unreachableAt]).toEqual([7, 0]);
    expect([...f.rxBytes]).toEqual([0, 0]);
    expect(f.unreachableReason).toEqual(['host unreachable from 192.0.2.126', null]);
  });
});

describe('Figures', () => {
  it('resetCounters clears counters, drops and last errors, and leaves the peer figures', () => {
    const f = new Figures(1);
    f.counters[C.tx_packets] = 3;
    f.drops[Verdict.too_big] = 2;
    f.lastErrors.tunWrite = 'EIO';
    f.peers.rxPackets[0] = 5;
    f.resetCounters();
    expect(f.counters.every((v) => v === 0)).toBe(true);
    expect(f.drops.every((v) => v === 0)).toBe(true);
    expect(f.lastErrors).toEqual({});
    expect(f.peers.rxPackets[0]).toBe(5);
  });

  it('nameFigures names every counter and every drop but forward, in order', () => {
    const f = new Figures(0);
    f.counters[C.rx_bytes] = 1500;
    f.drops[Verdict.unknown_peer] = 2;
    const n = nameFigures(f.counters, f.drops);
    expect(Object.keys(n.counters)).toEqual([...COUNTER_NAMES]);
    expect(Object.keys(n.drops)).toEqual(VERDICT_NAMES.filter((x) => x !== 'forward'));
    expect(n.counters.rx_bytes).toBe(1500);
    expect(n.drops.unknown_peer).toBe(2);
  });

  it('queueSnapshot: plain arrays, a copy of the last errors, one entry per peer', () => {
    const f = new Figures(2);
    f.counters[C.tun_rx_packets] = 4;
    f.drops[Verdict.malformed] = 1;
    f.lastErrors.underlaySend = 'ENOBUFS';
    f.peers.txPackets[1] = 6;
    f.peers.lastRxAt[0] = 123;
    const s = queueSnapshot(f);
    expect(s.counters).toHaveLength(COUNTER_NAMES.length);
    expect(s.counters[C.tun_rx_packets]).toBe(4);
    expect(s.drops[Verdict.malformed]).toBe(1);
    expect(s.lastErrors).toEqual({ underlaySend: 'ENOBUFS' });
    expect(s.peers).toEqual([
      { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, lastRxAt: 123 },
      { txPackets: 6, txBytes: 0, rxPackets: 0, rxBytes: 0, lastRxAt: 0 },
    ]);
    f.lastErrors.underlaySend = 'EAGAIN';
    expect(s.lastErrors.underlaySend).toBe('ENOBUFS');
  });
});
