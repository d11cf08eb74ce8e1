/**
 * A config reload on a running queue (src/dataplane/queue.ts `reloadQueue`): the new peer set and
 * prefix table are swapped in; a peer that stays keeps its outer-ID sequence (same endpoint), its
 * learned path MTU (same configured MTU), counters, last packet time and reachability; a new
 * peer starts fresh; the ICMP limits follow. Over fifos and the recording I/O (no network).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/logger.js';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { buildTunnel, reloadQueue } from '../../src/dataplane/queue.js';
import { parseIPv4 } from '../../src/routing/prefix.js';
import { Fifos } from '../helpers/fifos.js';
import { RecordingIo } from '../helpers/recording-io.js';

const OLD = `
tun: { address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: a, endpoint: 192.0.2.2, prefixes: [203.0.113.0/26] }
  - { name: b, endpoint: 192.0.2.3, prefixes: [203.0.113.64/26], mtu: 1400 }
  - { name: c, endpoint: 192.0.2.4, prefixes: [203.0.113.128/26] }
`;
// c removed, d added, b moved to a new endpoint, a gains a prefix.
const NEW = `
tun: { address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
icmp: { rate: 10, burst: 4 }
peers:
  - { name: d, endpoint: 192.0.2.5, prefixes: [198.51.100.128/25] }
  - { name: a, endpoint: 192.0.2.2, prefixes: [203.0.113.0/26, 203.0.113.192/26] }
  - { name: b, endpoint: 192.0.2.33, prefixes: [203.0.113.64/26], mtu: 1400 }
`;

describe('reloadQueue', () => {
  const fifos = new Fifos('ipipd-reload-');
  beforeAll(() => fifos.setUp());
  afterAll(() => fifos.remove());
  afterEach(() => fifos.closeAll());

  it('swaps the tunnel core and carries what stays, by name', () => {
    const c0 = parseConfig(OLD);
    const { tunnel, peers } = buildTunnel(c0, 1480);
    const dp = new Dataplane({
      tunFd: fifos.fifo(),
      rawFd: fifos.fifo(),
      icmpFd: -1,
      tunnel,
      batch: 8,
      tunMtu: 1480,
      underlayMax: 1540,
      icmpSource: c0.tun.address!.addr,
      icmpRate: 1000,
      icmpBurst: 50,
      log: createLogger('silent'),
      io: new RecordingIo(),
    });
    const f = dp.figures.peers;
    peers.forEach((p, i) => {
      p.nextId = 1000 + i;
      f.txPackets[i] = 10 + i;
      f.txBytes[i] = 100 + i;
      f.rxPackets[i] = 20 + i;
      f.rxBytes[i] = 200 + i;
      f.lastRxAt[i] = 5000 + i;
    });
    peers[0]!.mtu = 1300; // learned from ICMP
    peers[0]!.pmtuLearnedAt = 4242;
    f.unreachableAt[0] = 77;
    f.unreachableReason[0] = 'host unreachable from 192.0.2.126';

    const next = parseConfig(NEW);
    const got = reloadQueue(dp, peers, { config: next, carry: [-1, 0, 1], idStarts: [7, 8, 9] }, 0, 1, 1480);
    expect(got.map((p) => [p.index, p.name])).toEqual([[0, 'd'], [1, 'a'], [2, 'b']]);
    got.forEach((p, i) => expect(dp.tunnel.peers[i]).toBe(p));
    const g = dp.figures.peers;
    expect(g.count).toBe(3);
    // d: new, fresh.
    expect([got[0]!.nextId, g.txPackets[0], g.rxPackets[0], g.lastRxAt[0]]).toEqual([7, 0, 0, 0]);
    // a: same endpoint: ID sequence, learned MTU, figures and reachability carried.
    expect([got[1]!.nextId, got[1]!.mtu, got[1]!.pmtuLearnedAt, got[1]!.baseMtu]).toEqual([1000, 1300, 4242, 1480]);
    expect([g.txPackets[1], g.txBytes[1], g.rxPackets[1], g.rxBytes[1], g.lastRxAt[1], g.unreachableAt[1], g.unreachableReason[1]]).toEqual([10, 100, 20, 200, 5000, 77, 'host unreachable from 192.0.2.126']);
    // b: new endpoint: a fresh ID sequence toward it, but its counters stay.
    expect([got[2]!.nextId, got[2]!.mtu, g.txPackets[2], g.rxPackets[2]]).toEqual([9, 1400, 11, 21]);
    // The new prefix table, both ways.
    expect(dp.tunnel.routes.lookup(parseIPv4('203.0.113.200')!)).toBe(got[1]);
    expect(dp.tunnel.routes.lookup(parseIPv4('198.51.100.129')!)).toBe(got[0]);
    expect(dp.tunnel.routes.lookup(parseIPv4('203.0.113.129')!)).toBeUndefined();
    expect(dp.tunnel.peerByEndpoint(parseIPv4('192.0.2.4')!)).toBeNull();
    expect(dp.tunnel.peerByEndpoint(parseIPv4('192.0.2.33')!)).toBe(got[2]);
    dp.close();
  });
});
