/**
 * Live tracing: the sampler (src/dataplane/trace.ts) in a real Dataplane, its batch handlers
 * driven by hand with crafted packets (sends go to the native discard fd), and the control
 * half's sessions (src/daemon/trace.ts TraceHub) with a connection of the test's own.
 *
 *   TUN slots: [UDP 198.51.100.10:5000 > 203.0.113.10:53] [ICMP > 203.0.113.11] [UDP > 198.51.100.99 (no route)] [TCP]
 *   raw slots: [192.0.2.2 > 192.0.2.1 | UDP 203.0.113.10 > 198.51.100.10] [same, inner source 198.51.100.77: spoofed]
 */
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import type { ControlConnection } from '../../src/daemon/control.js';
import { createLogger } from '../../src/daemon/logger.js';
import { TraceHub, parseTraceRequest, traceLine } from '../../src/daemon/trace.js';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { buildTunnel } from '../../src/dataplane/queue.js';
import { HEADROOM, ICMP_SLOT } from '../../src/dataplane/slabs.js';
import { TRACE_ANY, TRACE_ANY_DROP, TRACE_ICMP, TRACE_RATE, TRACE_RING, Tracer, type TraceFilter, type TraceRecord } from '../../src/dataplane/trace.js';
import { WARM_ICMP, WARM_TCP, WARM_UDP, writeWarmOuter, writeWarmPacket } from '../../src/dataplane/warmup.js';
import { Verdict } from '../../src/ipip/verdict.js';
import { Fifos } from '../helpers/fifos.js';
import { ourOuter, routerError } from '../helpers/icmp-packets.js';
import { ip } from '../helpers/packets.js';

const CONFIG = `
tun: { name: trc0, address: 198.51.100.1/25, mtu: 1400 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: b, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
  - { name: c, endpoint: 192.0.2.3, prefixes: [203.0.113.128/25] }
`;
const config = parseConfig(CONFIG);
const fifos = new Fifos('ipipd-trace-');
fifos.setUp();
let clock = 1_000_000;
const { tunnel } = buildTunnel(config, 1400);
const dp = new Dataplane({
  tunFd: fifos.fifo('tun'), rawFd: fifos.fifo('raw'), icmpFd: -1, tunnel, batch: 64, tunMtu: 1400, underlayMax: 1500,
  icmpSource: ip('198.51.100.1'), icmpRate: 100, icmpBurst: 10, log: createLogger('silent'), now: () => clock,
});
// Everything written goes to the native discard fd: nothing leaves the test.
dp.ports.tun = dp.ports.io.DISCARD_FD;
dp.ports.raw = dp.ports.io.DISCARD_FD;
afterAll(() => {
  dp.close();
  fifos.closeAll();
  fifos.remove();
});

const LOCAL = ip('198.51.100.10');
/** The four TUN packets of the diagram; returns the batch size. */
function tunBatch(): number {
  const { txBuf, tunLens } = dp.slabs;
  const put = (i: number, kind: number, dst: string): void => {
    tunLens[i] = writeWarmPacket(txBuf, dp.slabs.placeTun(i), kind, LOCAL, ip(dst), 100, i, 1, false);
  };
  put(0, WARM_UDP, '203.0.113.10');
  put(1, WARM_ICMP, '203.0.113.11');
  put(2, WARM_UDP, '198.51.100.99');
  put(3, WARM_TCP, '203.0.113.200');
  return 4;
}

/** The two raw datagrams of the diagram. */
function rawBatch(): number {
  const { rxBuf, rawLens, rawSlot } = dp.slabs;
  ['198.51.100.10', '198.51.100.77'].forEach((dst, i) => {
    const inner = writeWarmPacket(rxBuf, i * rawSlot + 20, WARM_UDP, ip('203.0.113.10'), ip(dst), 64, i, 1, false);
    rawLens[i] = writeWarmOuter(rxBuf, i * rawSlot, inner, ip('192.0.2.2'), ip('192.0.2.1'), i + 1);
  });
  // The second claims a source that peer b does not own.
  rxBuf.writeUInt32BE(ip('198.51.100.77') >>> 0, rawSlot + 20 + 12);
  rxBuf.writeUInt32BE(ip('198.51.100.10') >>> 0, rawSlot + 20 + 16);
  const h = rawSlot + 20;
  rxBuf.writeUInt16BE(0, h + 10);
  let sum = 0;
  for (let o = 0; o < 20; o += 2) sum += rxBuf.readUInt16BE(h + o);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  rxBuf.writeUInt16BE(~sum & 0xffff, h + 10);
  return 2;
}

const lines = (): ReturnType<typeof traceLine>[] => dp.tracer.drain().records.map(traceLine);

describe('the sampler in the data path', () => {
  it('off: nothing is sampled, drops are still counted', () => {
    expect(dp.tracer.on).toBe(false);
    dp.send.onTunBatch(tunBatch());
    dp.receive.onRawBatch(rawBatch());
    expect(dp.tracer.drain()).toEqual({ records: [], skipped: 0 });
    expect(dp.figures.drops[Verdict.no_route]).toBe(1);
    expect(dp.figures.drops[Verdict.spoofed_source]).toBe(1);
  });

  it('on: each packet of a batch with its verdict, outer and inner addresses, protocol, ports, length', () => {
    dp.tracer.configure({ verdict: TRACE_ANY, peerEndpoint: 0 });
    dp.send.onTunBatch(tunBatch());
    dp.receive.onRawBatch(rawBatch());
    const got = lines();
    expect(got.map((l) => [l.direction, l.verdict, l.outer, l.proto, l.dst])).toEqual([
      ['send', 'forward', { src: '192.0.2.1', dst: '192.0.2.2' }, 'udp', '203.0.113.10'],
      ['send', 'forward', { src: '192.0.2.1', dst: '192.0.2.2' }, 'icmp', '203.0.113.11'],
      ['send', 'no_route', null, 'udp', '198.51.100.99'],
      ['send', 'forward', { src: '192.0.2.1', dst: '192.0.2.3' }, 'tcp', '203.0.113.200'],
      ['receive', 'forward', { src: '192.0.2.2', dst: '192.0.2.1' }, 'udp', '198.51.100.10'],
      ['receive', 'spoofed_source', { src: '192.0.2.2', dst: '192.0.2.1' }, 'udp', '198.51.100.10'],
    ]);
    expect(got[0]).toMatchObject({ queue: 0, src: '198.51.100.10', sport: expect.any(Number), dport: expect.any(Number), length: 20 + 8 + 100 });
    expect(got[1]).toMatchObject({ sport: null, dport: null });
    expect(got[5]).toMatchObject({ src: '198.51.100.77', length: 20 + 8 + 64 });
    expect(got[0]!.time).toBe(new Date(clock).toISOString());
  });

  it('a slot that dropped in one batch and forwards in the next is traced as a forward', () => {
    const { txBuf, tunLens, tunOffs } = dp.slabs;
    tunBatch();
    // The same length as before, so packet 2 takes the same place in the packed slab.
    tunLens[2] = writeWarmPacket(txBuf, tunOffs[2]! + HEADROOM, WARM_UDP, LOCAL, ip('203.0.113.12'), 100, 2, 1, false);
    dp.send.onTunBatch(4);
    expect(lines().map((l) => l.verdict)).toEqual(['forward', 'forward', 'forward', 'forward']);
  });

  it('filters: a drop reason, any drop, a peer', () => {
    const run = (f: TraceFilter): string[] => {
      dp.tracer.configure(f);
      dp.send.onTunBatch(tunBatch());
      dp.receive.onRawBatch(rawBatch());
      return lines().map((l) => `${l.direction} ${l.verdict} ${l.dst}`);
    };
    expect(run({ verdict: Verdict.no_route, peerEndpoint: 0 })).toEqual(['send no_route 198.51.100.99']);
    expect(run({ verdict: TRACE_ANY_DROP, peerEndpoint: 0 })).toEqual(['send no_route 198.51.100.99', 'receive spoofed_source 198.51.100.10']);
    expect(run({ verdict: Verdict.forward, peerEndpoint: ip('192.0.2.3') })).toEqual(['send forward 203.0.113.200']);
    expect(run({ verdict: TRACE_ANY, peerEndpoint: ip('192.0.2.2') })).toHaveLength(4);
  });

  it('underlay ICMP: each message with what became of it, the router as outer source and the quoted inner packet', () => {
    const { icmpInSlab, icmpInLens } = dp.slabs;
    // A router's Fragmentation Needed (MTU 1300) about our outer packet to b, quoting all of it,
    // and a Port Unreachable about it (not relayed, RFC 2003 §4).
    const ours = ourOuter(0x4000, 1372, { src: '192.0.2.1', dst: '192.0.2.2' });
    const msgs = [routerError(3, 4, 1300, ours, 548), routerError(3, 3, 0, ours, 548)];
    msgs.forEach((m, i) => {
      m.copy(icmpInSlab, i * ICMP_SLOT);
      icmpInLens[i] = m.length;
    });
    dp.tracer.configure({ verdict: TRACE_ICMP, peerEndpoint: 0 });
    dp.icmpIn.onIcmpBatch(2);
    dp.tracer.configure(null);
    const got = lines();
    expect(got.map((l) => [l.direction, l.verdict, l.outer, l.proto, l.src, l.dst])).toEqual([
      ['icmp', 'icmp_relayed', { src: '203.0.113.254', dst: '192.0.2.1' }, 'udp', '10.0.1.1', '10.0.2.1'],
      ['icmp', 'icmp_not_relayed', { src: '203.0.113.254', dst: '192.0.2.1' }, 'udp', '10.0.1.1', '10.0.2.1'],
    ]);
    // The forwards and drops of the data path are not ICMP: none of them with this filter.
    dp.tracer.configure({ verdict: TRACE_ICMP, peerEndpoint: 0 });
    dp.send.onTunBatch(tunBatch());
    expect(lines()).toEqual([]);
    dp.tracer.configure(null);
    tunnel.peers[0]!.mtu = 1400; // what the Fragmentation Needed lowered
  });

  it(`bounded: ${TRACE_RATE} samples a second at most, the rest counted as skipped; the ring holds ${TRACE_RING}`, () => {
    dp.tracer.configure({ verdict: TRACE_ANY, peerEndpoint: 0 });
    for (let b = 0; b < 100; b++) dp.send.onTunBatch(tunBatch());
    let d = dp.tracer.drain();
    expect(d.records).toHaveLength(TRACE_RATE);
    expect(d.skipped).toBeGreaterThan(0);
    // A second later the bucket is full again; without a drain the ring fills and the rest is skipped.
    for (let s = 0; s < 3; s++) {
      clock += 1000;
      for (let b = 0; b < 100; b++) dp.send.onTunBatch(tunBatch());
    }
    d = dp.tracer.drain();
    expect(d.records).toHaveLength(TRACE_RING);
    expect(d.records.length + d.skipped).toBe(3 * 100 * 4);
    dp.tracer.configure(null);
  });
});

describe('the trace command (TraceHub)', () => {
  class Conn implements ControlConnection {
    sent: unknown[] = [];
    closed = false;
    ended = false;
    private closers: (() => void)[] = [];
    send(v: unknown): void {
      this.sent.push(v);
    }
    end(): void {
      this.ended = true;
      this.hangUp();
    }
    onClose(cb: () => void): void {
      this.closers.push(cb);
    }
    hangUp(): void {
      this.closed = true;
      for (const cb of this.closers.splice(0)) cb();
    }
  }
  const tracer = new Tracer(8, () => clock);
  const posted: (TraceFilter | null)[] = [];
  const workers = { count: 1, setTrace: (f: TraceFilter | null) => posted.push(f), onTrace: undefined as ((r: TraceRecord[], s: number) => void) | undefined };
  // The peers running now: the config's, and one learned from a kernel route since.
  let peers: { name: string; endpoint: { value: number } }[] = [...config.peers, { name: 'kernel:192.0.2.9', endpoint: { value: ip('192.0.2.9') } }];
  const hub = new TraceHub({ tracer: () => tracer, workers: () => workers, peers: () => peers });

  it('requests: reason, peer and count are checked against the peers running now', () => {
    expect(parseTraceRequest({ cmd: 'trace', reason: 'spoofed_source', peer: 'c', count: 3 }, peers)).toEqual({ filter: { verdict: Verdict.spoofed_source, peerEndpoint: ip('192.0.2.3') }, count: 3 });
    expect(parseTraceRequest({ cmd: 'trace', peer: 'kernel:192.0.2.9' }, peers).filter.peerEndpoint).toBe(ip('192.0.2.9'));
    expect(() => parseTraceRequest({ cmd: 'trace', reason: 'nope' }, peers)).toThrow(/unknown reason "nope"/);
    expect(() => parseTraceRequest({ cmd: 'trace', peer: 'z' }, peers)).toThrow(/no peer "z"; peers: b, c, kernel:192\.0\.2\.9$/);
    expect(() => parseTraceRequest({ cmd: 'trace', peer: 'z' }, [])).toThrow(/no peer "z"; peers: none$/);
    const mesh = Array.from({ length: 25 }, (_, i) => ({ name: `n${i}`, endpoint: { value: ip(`192.0.2.${i + 1}`) } }));
    expect(() => parseTraceRequest({ cmd: 'trace', peer: 'z' }, mesh)).toThrow(/peers: n0, n1, .*, n19 and 5 more$/);
    expect(() => parseTraceRequest({ cmd: 'trace', count: -1 }, peers)).toThrow(/count/);
  });

  it('a session asks for the peers at its start: one added by a reload can be traced, one removed cannot', () => {
    const before = peers;
    try {
      peers = [...before, { name: 'd', endpoint: { value: ip('192.0.2.4') } }];
      const a = new Conn();
      expect(hub.handle({ cmd: 'trace', peer: 'd', count: 1 }, a)).toBeDefined();
      a.hangUp();
      peers = before.filter((p) => p.name !== 'c');
      expect(() => hub.handle({ cmd: 'trace', peer: 'c' }, new Conn())).toThrow(/no peer "c"/);
    } finally {
      peers = before;
      posted.splice(0); // the later tests read what the workers were told from here on
    }
  });

  it('sampling is on while a client traces (the workers are told), off once it hangs up', () => {
    const a = new Conn();
    hub.handle({ cmd: 'trace', reason: 'drop' }, a);
    expect(tracer.on).toBe(true);
    expect(posted).toEqual([{ verdict: TRACE_ANY_DROP, peerEndpoint: 0 }]);
    expect(a.sent[0]).toMatchObject({ tracing: { reason: 'drop', queues: 2, ratePerQueue: TRACE_RATE } });
    // Two clients: the samplers take everything, each session filters for itself.
    const b = new Conn();
    hub.handle({ cmd: 'trace', reason: 'forward', count: 1 }, b);
    expect(posted.at(-1)).toEqual({ verdict: TRACE_ANY, peerEndpoint: 0 });
    const rec = { time: clock, queue: 1, dir: 0, outerSrc: ip('192.0.2.1'), outerDst: ip('192.0.2.2'), src: LOCAL, dst: ip('203.0.113.9'), proto: 17, sport: 1, dport: 2, length: 40 };
    workers.onTrace!([{ ...rec, verdict: Verdict.no_route }, { ...rec, verdict: Verdict.forward }], 0);
    expect(a.sent.slice(1)).toMatchObject([{ verdict: 'no_route', queue: 1 }]);
    expect(b.sent.slice(1)).toMatchObject([{ verdict: 'forward', outer: { dst: '192.0.2.2' }, sport: 1, dport: 2 }]);
    // b had its one packet: ended, and a alone is left, with its own filter again.
    expect(b.ended).toBe(true);
    expect(hub.active).toBe(1);
    expect(posted.at(-1)).toEqual({ verdict: TRACE_ANY_DROP, peerEndpoint: 0 });
    a.hangUp();
    expect(hub.active).toBe(0);
    expect(tracer.on).toBe(false);
    expect(posted.at(-1)).toBe(null);
    expect(workers.onTrace).toBeUndefined();
  });

  it('close() (daemon shutdown) ends every session and turns sampling off', () => {
    const a = new Conn();
    hub.handle({ cmd: 'trace' }, a);
    hub.close();
    expect(a.ended).toBe(true);
    expect(tracer.on).toBe(false);
    expect(hub.active).toBe(0);
  });
});
