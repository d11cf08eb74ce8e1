/**
 * The multi-queue data path (`io.queues: 2`) with real daemons and real packets, for both data
 * paths (offload on, the default, and off). Topology from scripts/netns-setup.sh with a per-run
 * prefix, torn down on every exit path (STYLE rule 16):
 *
 *   P-h1p1 pod A               P-h1 host A                              P-h2 host B               P-h2p1 pod B
 *   198.51.100.10 --- p1 [ipip0 x2 queues] ul0 192.0.2.1 ===== IPIP =====> 192.0.2.2 ul0 [ipip0 x2 queues] p1 --- 203.0.113.10
 *                        ipipd io.queues: 2     ^ tcpdump -w (h1 -> h2)          ipipd io.queues: 2
 *                        queue 0: main thread, queue 1: worker thread "ipipd-q1" (each: a TUN fd, a steered raw socket)
 *
 * What is checked: a fresh pair has counted nothing in any queue and put nothing on the
 * underlay while starting (every queue's warm-up sends nowhere); the TUN is one device with two
 * queues and queue 1 runs in its own thread; ping, concurrent TCP transfers (distinct source
 * ports) both ways with SHA-256 on both ends, and UDP from 16 source ports all arrive; h2's
 * queues each took exactly the UDP flows the steering model (test/helpers/steering-model.ts)
 * assigns them, and both of h2's queues read from the underlay and wrote to the TUN; every
 * per-queue figure adds up to its counter, the peer's figures equal the counters, nothing was
 * dropped; on the wire (h1 -> h2), one queue's outer IDs are all even and the other's all odd,
 * each advancing by 2 with no repeat, as many of each as that queue counted; after SIGTERM the
 * daemons exit 0, leave no device or route, and their final counters include the worker's.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { StatusReport } from '../../src/daemon/daemon.js';
import { IPIPD, editedConfig, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectFreshPair, expectNothingLeft, have, pingBothWays, startPair, tcpTransfer, type StartedPair } from '../helpers/pair.js';
import { flowQueue } from '../helpers/steering-model.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';
import { integrationSkip } from '../helpers/skip.js';

const why = integrationSkip('queue tests', have('tcpdump') ? null : "'tcpdump' not installed: it captures the underlay");

/** The per-queue fields of the status and the counter each one is a share of. */
const QUEUE_FIELDS = [
  ['tunRxPackets', 'tun_rx_packets'],
  ['txPackets', 'tx_packets'],
  ['underlayRxPackets', 'underlay_rx_packets'],
  ['rxPackets', 'rx_packets'],
] as const;
type QueueField = (typeof QUEUE_FIELDS)[number][0];

/** The status once two reports 300 ms apart agree on the packet counters (traffic has settled). */
async function settled(h: HostInfo): Promise<StatusReport> {
  let last = await status(h);
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 300));
    const next = await status(h);
    if (QUEUE_FIELDS.every(([, c]) => next.counters[c] === last.counters[c])) return next;
    last = next;
  }
  return last;
}

function perQueue(s: StatusReport, field: QueueField): number[] {
  return s.queues.map((q) => q[field]);
}

/** The outer IPv4 headers of a pcap file (Ethernet, Linux cooked v1/v2 or raw IP framing). */
function outerHeaders(file: string): Array<{ id: number; src: string; dst: string; proto: number }> {
  const b = readFileSync(file);
  const magicLE = b.readUInt32LE(0);
  const le = magicLE === 0xa1b2c3d4 || magicLE === 0xa1b23c4d;
  if (!le && ![0xa1b2c3d4, 0xa1b23c4d].includes(b.readUInt32BE(0))) throw new Error(`${file}: not a pcap file`);
  const u32 = (o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const linkType = u32(20);
  const l2 = ({ 1: 14, 113: 16, 276: 20, 101: 0, 228: 0 } as Record<number, number>)[linkType];
  if (l2 === undefined) throw new Error(`${file}: link type ${linkType}`);
  const dotted = (o: number): string => [...b.subarray(o, o + 4)].join('.');
  const out: Array<{ id: number; src: string; dst: string; proto: number }> = [];
  for (let off = 24; off + 16 <= b.length; ) {
    const incl = u32(off + 8);
    const ip = off + 16 + l2;
    if (incl < l2 + 20) throw new Error(`${file}: a ${incl}-byte frame`);
    out.push({ id: b.readUInt16BE(ip + 4), src: dotted(ip + 12), dst: dotted(ip + 16), proto: b[ip + 9]! });
    off += 16 + incl;
  }
  return out;
}

describe.skipIf(why).each([{ offload: true }, { offload: false }])('ipipd with io.queues: 2 between two hosts (io.offload: $offload)', ({ offload }) => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let d1: RunningDaemon;
  let d2: RunningDaemon;
  // The underlay's packet counts around the start and the first status reports.
  let started: StartedPair;
  // The capture of h1's underlay (h1 -> h2), from before the first packet to after the last.
  let pcap: string;
  let capture: ReturnType<Topology['spawn']>;
  let captureErr = '';
  let captureExit: Promise<number | null>;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    const config = (h: HostInfo): string => editedConfig(topo, h, `queues2-offload-${offload}`, (c) => {
      c.io = { ...(c.io ?? {}), offload, queues: 2 };
      c.log = { ...(c.log ?? {}), stats_interval: 1 }; // the counter summary, with the worker's share
    });
    ({ h1, h2, d1, d2 } = started = await startPair(topo, config));

    pcap = join(topo.info.outDir, 'h1-ul0.pcap');
    capture = topo.spawn(h1.ns, ['tcpdump', '-i', h1.underlayDev, '-n', '-U', '-B', '65536', '-s', '96', '-w', pcap, `ip proto 4 and src host ${h1.underlay}`]);
    captureExit = new Promise((r) => capture.on('exit', (code) => r(code)));
    capture.stderr?.setEncoding('utf8').on('data', (d: string) => (captureErr += d));
    for (let i = 0; i < 100 && !/listening on/.test(captureErr) && capture.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
    if (!/listening on/.test(captureErr)) throw new Error(`tcpdump in ${h1.ns} did not start: ${captureErr}`);
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('a freshly started pair has counted nothing in any queue, and starting it put nothing on the underlay', () => {
    // Each queue (the main thread's and the worker's) ran its JIT warm-up into the discard fd.
    expectFreshPair(started, (s) => {
      expect(s.offload).toBe(offload);
      expect(s.queues).toEqual([0, 1].map((queue) => ({ queue, tunRxPackets: 0, txPackets: 0, underlayRxPackets: 0, rxPackets: 0 })));
      expect(s.peers[0]).toMatchObject({ txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, reachable: true, lastRxSecondsAgo: null });
    });
  });

  test('the TUN is one multi-queue device with two queues, and queue 1 runs in its own thread', async () => {
    for (const [h, d] of [[h1, d1], [h2, d2]] as const) {
      const r = await topo.exec(h.ns, ['ip', '-d', '-j', 'link', 'show']);
      const tuns = (JSON.parse(r.stdout) as Array<Record<string, any>>).filter((l) => l.ifname === 'ipip0');
      expect(tuns).toHaveLength(1);
      expect(tuns[0]!.linkinfo.info_data).toMatchObject({ type: 'tun', multi_queue: true, numqueues: 2, vnet_hdr: offload });
      expect(tuns[0]!.mtu).toBe(1480);
      // `ip netns exec` execs node, so the child's pid is the daemon's.
      const comms = readdirSync(`/proc/${d.child.pid}/task`).map((t) => readFileSync(`/proc/${d.child.pid}/task/${t}/comm`, 'utf8').trim());
      expect(comms.filter((c) => c === 'ipipd-q1')).toHaveLength(1);
      expect(comms.filter((c) => /^ipipd-q/.test(c))).toEqual(['ipipd-q1']);
    }
    // The CLI's JSON status is the same report, queues included.
    const cli = await topo.exec(h1.ns, [process.execPath, IPIPD, 'status', '--json', '--socket', h1.socket]);
    expect(cli.code, cli.stderr).toBe(0);
    expect((JSON.parse(cli.stdout) as StatusReport).queues.map((q) => q.queue)).toEqual([0, 1]);
  });

  test('ping from pod A to pod B and back', async () => {
    await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
  });

  test('concurrent TCP transfers from different source ports, both ways, arrive byte for byte', async () => {
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    const bytes = 4 * 1024 * 1024;
    const base = offload ? 600 : 700;
    // Four flows A -> B and two B -> A at once (each connection its own source port).
    await Promise.all([
      ...[1, 2, 3, 4].map((k) => tcpTransfer(topo, a, b, bytes, base + k)),
      ...[5, 6].map((k) => tcpTransfer(topo, b, a, bytes, base + k)),
    ]);
    const s2 = await status(h2);
    expect(s2.counters.rx_bytes).toBeGreaterThan(4 * bytes);
  });

  test('UDP from 16 source ports all arrives, and on h2 each flow was forwarded by the queue the steering hash picks', async () => {
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    const flows = 16;
    const count = 200;
    const size = 200;
    const before = await settled(h2);
    const sink = await topo.serve(b.ns, ['udp-sink', '--bind', b.address, '--port', '0', '--count', String(flows * count), '--timeout', '90']);
    const send = await topo.traffic(a.ns, ['udp-blast', '--to', b.address, '--port', String(sink.port), '--count', String(count), '--size', String(size), '--burst', '16', '--flows', String(flows), '--seed', '61', '--timeout', '90'], { timeoutMs: 100_000 });
    const got = await sink.stop();
    expect(send.code, send.stderr).toBe(0);
    expect(got.code, got.stderr).toBe(0);
    expect(got.json).toMatchObject({ datagrams: flows * count, bytes: flows * count * size, corrupt: 0, outOfOrder: 0 });
    const perFlow = got.json!.flows as Array<{ port: number; datagrams: number; outOfOrder: number }>;
    expect(new Set(perFlow.map((f) => f.port)).size).toBe(flows);
    for (const f of perFlow) expect(f).toMatchObject({ datagrams: count, outOfOrder: 0 });

    // What each of h2's queues must have taken from the underlay and written to the TUN: the
    // datagrams of the flows that hash to it (inner src, dst, source and destination port).
    const expected = [0, 0];
    for (const f of perFlow) expected[flowQueue(a.address, b.address, f.port, sink.port, 2)]! += f.datagrams;
    expect(expected.every((n) => n > 0), `the 16 flows' ports hash to both queues: ${expected}`).toBe(true);
    const after = await settled(h2);
    const delta = (field: QueueField): number[] => perQueue(after, field).map((v, q) => v - perQueue(before, field)[q]!);
    expect(delta('underlayRxPackets')).toEqual(expected);
    expect(delta('rxPackets')).toEqual(expected);
  });

  test('both of h2\'s queues read from the underlay and wrote to the TUN; both of h1\'s sent', async () => {
    const s1 = await settled(h1);
    const s2 = await settled(h2);
    for (const q of s2.queues) {
      expect(q.underlayRxPackets, `h2 queue ${q.queue} underlayRxPackets`).toBeGreaterThan(0);
      expect(q.rxPackets, `h2 queue ${q.queue} rxPackets`).toBeGreaterThan(0);
    }
    for (const q of s1.queues) expect(q.txPackets, `h1 queue ${q.queue} txPackets`).toBeGreaterThan(0);
  });

  test('every per-queue figure adds up to its counter, the peer\'s figures equal the counters, nothing was dropped', async () => {
    for (const h of [h1, h2]) {
      const s = await settled(h);
      expect(s.queues.map((q) => q.queue)).toEqual([0, 1]);
      for (const [field, counter] of QUEUE_FIELDS) {
        const shares = perQueue(s, field);
        expect(shares.reduce((x, y) => x + y, 0), `${h.name}: sum of queues[].${field} vs counters.${counter}`).toBe(s.counters[counter]);
      }
      // Every packet each way is the one peer's.
      expect(s.peers[0]!.txPackets, `${h.name} peer txPackets`).toBe(s.counters.tx_packets);
      expect(s.peers[0]!.rxPackets, `${h.name} peer rxPackets`).toBe(s.counters.rx_packets);
      expect(s.peers[0]!.txBytes, `${h.name} peer txBytes`).toBe(s.counters.tx_bytes);
      expect(s.peers[0]!.rxBytes, `${h.name} peer rxBytes`).toBe(s.counters.rx_bytes);
      expect(s.counters.tx_packets).toBeGreaterThan(1000);
      expect(Object.entries(s.drops).filter(([, v]) => v !== 0), `${h.name} drops`).toEqual([]);
      expect(s.counters.tun_read_errors).toBe(0);
      expect(s.counters.underlay_read_errors).toBe(0);
      expect(s.lastErrors).toEqual({});
    }
  });

  test('on the wire (h1 -> h2) one queue\'s outer IDs are even and the other\'s odd, each advancing by 2 and never repeating', async () => {
    const s1 = await settled(h1);
    capture.kill('SIGINT');
    expect(await captureExit).toBe(0);
    // tcpdump's own account: nothing was lost between the kernel and the file.
    expect(captureErr).toMatch(/\b0 packets dropped by kernel/);
    const pkts = outerHeaders(pcap);
    for (const p of pkts) expect(p).toMatchObject({ src: h1.underlay, dst: h2.underlay, proto: 4 });
    const byParity = [0, 1].map((parity) => pkts.filter((p) => (p.id & 1) === parity).map((p) => p.id));
    expect(byParity[0]!.length, 'even IDs').toBeGreaterThan(0);
    expect(byParity[1]!.length, 'odd IDs').toBeGreaterThan(0);
    for (const [parity, ids] of byParity.entries()) {
      // No ID twice within 32768 packets of one parity (a queue's IDs wrap after that many).
      const lastAt = new Map<number, number>();
      const repeats: Array<{ id: number; at: number; before: number }> = [];
      ids.forEach((id, i) => {
        const j = lastAt.get(id);
        if (j !== undefined && i - j < 32768) repeats.push({ id, at: i, before: j });
        lastAt.set(id, i);
      });
      expect(repeats.slice(0, 10), `parity ${parity}: ${repeats.length} repeats in ${ids.length} IDs`).toEqual([]);
      // A queue sends in order, one ID after the other (step 2), and none failed to go out.
      const jumps = ids.slice(1).map((id, i) => (id - ids[i]!) & 0xffff).filter((d) => d !== 2);
      expect(jumps.slice(0, 10), `parity ${parity}: ${jumps.length} steps other than 2`).toEqual([]);
    }
    // Everything h1's queues counted as sent is on the wire: one queue's count per parity.
    const counts = byParity.map((ids) => ids.length).sort((x, y) => x - y);
    expect(counts).toEqual(perQueue(s1, 'txPackets').sort((x, y) => x - y));
    expect(counts[0]! + counts[1]!).toBe(s1.counters.tx_packets);
  });

  test('after SIGTERM: exit 0, no device or route left, final counters that include the worker\'s', async () => {
    for (const [h, d] of [[h1, d1], [h2, d2]] as const) {
      const last = await settled(h);
      expect(last.queues[1]!.txPackets, `${h.name}: the worker sent something`).toBeGreaterThan(0);
      expect(last.queues[1]!.rxPackets, `${h.name}: the worker received something`).toBeGreaterThan(0);
      expect(await stopDaemon(d)).toBe(0);
      await expectNothingLeft(topo, h);

      const lines = d.log().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, any>);
      expect(lines.filter((l) => l.level >= 50), `${h.name}: error lines in the log`).toEqual([]);
      const final = lines.find((l) => l.msg === 'closed: final counters');
      expect(final, `${h.name}: no final counters line`).toBeDefined();
      // Nothing moved since the last status: the final figures are at least those (with queue
      // 1's share, which would be missing if the worker's were not added).
      for (const [k, v] of Object.entries(last.counters)) expect(final!.counters[k], `${h.name} final ${k}`).toBeGreaterThanOrEqual(v);
      expect(final!.counters.tx_packets).toBe(last.counters.tx_packets);
      // The summary (log.stats_interval: 1): only lines that differ from the one before, every
      // counter in each, queue 1's share included (never more than the final figures).
      const stats = lines.filter((l) => l.msg === 'counters' && l.subsystem === 'stats');
      expect(stats.length, `${h.name}: no counter summary in the log`).toBeGreaterThan(0);
      for (const [i, l] of stats.entries()) {
        expect(Object.keys(l.counters)).toEqual(Object.keys(final!.counters));
        expect(l.counters.tx_packets).toBeLessThanOrEqual(final!.counters.tx_packets);
        if (i > 0) expect(JSON.stringify([l.counters, l.drops])).not.toBe(JSON.stringify([stats[i - 1]!.counters, stats[i - 1]!.drops]));
      }
      expect(stats.some((l) => l.counters.tx_packets > 0)).toBe(true);
      expect(final!.counters.rx_packets).toBe(last.counters.rx_packets);
      expect(final!.peers[0].txPackets).toBe(last.peers[0]!.txPackets);
      expect(final!.peers[0].rxPackets).toBe(last.peers[0]!.rxPackets);
      expect(final!.drops).toEqual({});
    }
  });
});
