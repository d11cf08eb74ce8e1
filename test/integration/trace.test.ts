/**
 * `ipipd trace` and the metrics exporter with real daemons and real packets (STYLE rule 16).
 * Topology from scripts/netns-setup.sh with a per-run prefix, torn down on every exit path:
 *
 *   P-h1p1 pod A               P-h1 host A                         P-h2 host B                      P-h2p1 pod B
 *   198.51.100.10 --- p1 [ipip0] ul0 192.0.2.1 ===== IPIP =====> 192.0.2.2 ul0 [ipip0 x2 queues] p1 --- 203.0.113.10
 *                        ipipd; a route 203.0.113.200/32       ipipd io.queues: 2 (queue 1: a worker thread),
 *                        into ipip0 that no peer owns          metrics.listen 127.0.0.1:9474
 *
 * What is checked: `ipipd trace --json` on h2 shows a ping's packets both ways (verdict forward,
 * outer and inner addresses, protocol, length) and stops after --count; 8 spoofed datagrams
 * (unknown inner source, 8 UDP flows, so both queues) are traced with their reason, addresses,
 * ports and the queue the steering model gives each flow; on h1 a packet routed into the TUN that
 * no peer owns is traced as no_route with no outer header; a client that goes away ends its
 * session (the next one finds itself alone) while the human format prints one line per packet;
 * /metrics on h2 agrees with the status (workers included) and answers 404 elsewhere; after
 * SIGTERM the daemons exit 0 and leave nothing, the exporter's port included; a daemon whose
 * metrics.listen is taken fails with ERR_METRICS_LISTEN and undoes everything it had set up.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { IPIPD, ROOT, editedConfig, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectNothingLeft, have, startPair } from '../helpers/pair.js';
import { flowQueue } from '../helpers/steering-model.js';
import { integrationSkip } from '../helpers/skip.js';
import { records, trace } from '../helpers/trace.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';

const why = integrationSkip('trace tests', have('ping') ? null : "'ping' not installed");
const INJECT = join(ROOT, 'dist', 'test', 'fixtures', 'inject.js');
const METRICS = '127.0.0.1:9474';

describe.skipIf(why)('ipipd trace and /metrics between two hosts', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let d1: RunningDaemon;
  let d2: RunningDaemon;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    ({ h1, h2, d1, d2 } = await startPair(topo, (h) =>
      editedConfig(topo, h, 'trace', (c) => {
        if (h.name.endsWith('2')) {
          c.io = { queues: 2 };
          c.metrics = { listen: METRICS };
        }
      }),
    ));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('a ping, traced on h2 with --reason forward --count 4: its packets both ways, then the client ends', async () => {
    const A = h1.pods[0]!;
    const B = h2.pods[0]!;
    const t = trace(h2.socket, ['--json', '--reason', 'forward', '--count', '4']);
    await t.started;
    const ping = await topo.exec(A.ns, ['ping', '-c', '3', '-i', '0.2', '-W', '2', B.address], { timeoutMs: 15_000 });
    expect(ping.stdout).toMatch(/3 packets transmitted, 3 received/);
    await t.done;
    expect(t.code, t.lines.join('\n')).toBe(0);
    const got = records(t);
    expect(got).toHaveLength(4);
    for (const r of got) {
      expect(r.verdict).toBe('forward');
      expect(r.proto).toBe('icmp');
      expect(r.length).toBe(84);
      if (r.direction === 'receive') expect(r).toMatchObject({ outer: { src: '192.0.2.1', dst: '192.0.2.2' }, src: A.address, dst: B.address });
      else expect(r).toMatchObject({ outer: { src: '192.0.2.2', dst: '192.0.2.1' }, src: B.address, dst: A.address });
    }
    expect(new Set(got.map((r) => r.direction))).toEqual(new Set(['receive', 'send']));
  });

  test('8 spoofed datagrams (8 flows over both queues): each traced with its reason, addresses, ports and queue', async () => {
    const B = h2.pods[0]!;
    const t = trace(h2.socket, ['--json', '--reason', 'spoofed_source', '--count', '8']);
    await t.started;
    const inj = await topo.exec(h1.ns, [process.execPath, INJECT, '--outer-src', '192.0.2.1', '--outer-dst', '192.0.2.2', '--inner-src', '198.51.100.200', '--inner-dst', B.address, '--port', '7000', '--count', '8']);
    expect(inj.code, inj.stderr).toBe(0);
    await t.done;
    expect(t.code, t.lines.join('\n')).toBe(0);
    const got = records(t).sort((a, b) => a.sport! - b.sport!);
    expect(got.map((r) => r.sport)).toEqual([40000, 40001, 40002, 40003, 40004, 40005, 40006, 40007]);
    for (const r of got) {
      expect(r).toMatchObject({ direction: 'receive', verdict: 'spoofed_source', outer: { src: '192.0.2.1', dst: '192.0.2.2' }, src: '198.51.100.200', dst: B.address, proto: 'udp', dport: 7000 });
      expect(r.queue, `sport ${r.sport}`).toBe(flowQueue('198.51.100.200', B.address, r.sport!, 7000, 2));
    }
    // The worker thread's samples came back too.
    expect(new Set(got.map((r) => r.queue))).toEqual(new Set([0, 1]));
    expect((await status(h2)).drops.spoofed_source).toBe(8);
  });

  test('h1: a packet routed into the TUN that no peer owns is traced as no_route, with no outer header', async () => {
    const add = await topo.exec(h1.ns, ['ip', 'route', 'add', '203.0.113.200/32', 'dev', 'ipip0']);
    expect(add.code, add.stderr).toBe(0);
    const t = trace(h1.socket, ['--json', '--reason', 'no_route', '--count', '2']);
    await t.started;
    await topo.exec(h1.pods[0]!.ns, ['ping', '-c', '2', '-i', '0.2', '-W', '1', '203.0.113.200'], { timeoutMs: 10_000 });
    await t.done;
    await topo.exec(h1.ns, ['ip', 'route', 'del', '203.0.113.200/32', 'dev', 'ipip0']);
    const got = records(t);
    expect(got).toHaveLength(2);
    for (const r of got) expect(r).toMatchObject({ direction: 'send', verdict: 'no_route', outer: null, src: h1.pods[0]!.address, dst: '203.0.113.200', proto: 'icmp', queue: 0 });
  });

  test('a client that goes away ends its session; the human format prints a line per packet', async () => {
    const first = trace(h2.socket, ['--json']);
    await first.started;
    first.kill('SIGINT');
    await first.done;
    expect(first.code).toBe(0);
    expect(JSON.parse(first.lines[0]!)).toMatchObject({ tracing: { sessions: 1, queues: 2, ratePerQueue: 200 } });
    // The daemon noticed (its next heartbeat to the client failed): the next client is alone again.
    await new Promise((r) => setTimeout(r, 1500));
    const second = trace(h2.socket, ['--json', '--count', '1']);
    await second.started;
    const human = trace(h2.socket, ['--count', '2', '--reason', 'forward']);
    await human.started;
    const ping = await topo.exec(h1.pods[0]!.ns, ['ping', '-c', '2', '-i', '0.2', '-W', '2', h2.pods[0]!.address], { timeoutMs: 15_000 });
    expect(ping.code).toBe(0);
    await Promise.all([second.done, human.done]);
    expect(JSON.parse(second.lines[0]!)).toMatchObject({ tracing: { sessions: 1 } });
    expect(records(second)).toHaveLength(1);
    expect(human.code, human.lines.join('\n')).toBe(0);
    expect(human.lines).toHaveLength(2);
    for (const l of human.lines) expect(l).toMatch(/^\d\d:\d\d:\d\d\.\d{3} q[01] (send|receive) +forward +192\.0\.2\.\d > 192\.0\.2\.\d \| icmp [\d.]+ > [\d.]+ len 84$/);
  });

  test('/metrics on h2 agrees with the status, queue workers included; anything else is 404', async () => {
    const get = async (path: string): Promise<{ code: number; stdout: string }> => {
      const js = `fetch('http://${METRICS}${path}').then(async (r) => { process.stdout.write(String(r.status) + '\\n' + (await r.text())); })`;
      const r = await topo.exec(h2.ns, [process.execPath, '-e', js]);
      const [st, ...rest] = r.stdout.split('\n');
      return { code: Number(st), stdout: rest.join('\n') };
    };
    const m = await get('/metrics');
    const s = await status(h2);
    expect(m.code).toBe(200);
    const value = (name: string): number => Number(new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(m.stdout)?.[1]);
    expect(value('ipipd_up')).toBe(1);
    expect(value('ipipd_drops_total{reason="spoofed_source"}')).toBe(8);
    expect(value('ipipd_peer_rx_packets_total{peer="h1"}')).toBe(s.peers[0]!.rxPackets);
    expect(value('ipipd_rx_packets_total')).toBe(s.counters.rx_packets);
    expect(value('ipipd_queue_underlay_rx_packets_total{queue="1"}')).toBe(s.queues[1]!.underlayRxPackets);
    expect(value('ipipd_queue_underlay_rx_packets_total{queue="1"}')).toBeGreaterThan(0);
    expect(m.stdout).toMatch(/^nodejs_eventloop_lag_seconds /m);
    expect((await get('/')).code).toBe(404);
  });

  test('after SIGTERM both exit 0 and leave nothing behind, the metrics port included', async () => {
    expect(await stopDaemon(d1)).toBe(0);
    expect(await stopDaemon(d2)).toBe(0);
    await expectNothingLeft(topo, h1);
    await expectNothingLeft(topo, h2);
    const r = await topo.exec(h2.ns, [process.execPath, '-e', `fetch('http://${METRICS}/metrics').then(() => process.exit(0), () => process.exit(3))`]);
    expect(r.code).toBe(3);
  });

  test('metrics.listen on a port in use: ERR_METRICS_LISTEN, exit 1, and everything set up before is undone', async () => {
    // Something else of the test's own listens on h1's 127.0.0.1:9474.
    const other = topo.spawn(h1.ns, [process.execPath, '-e', `require('node:net').createServer().listen(9474, '127.0.0.1', () => console.log('listening'))`]);
    await new Promise<void>((resolve) => other.stdout!.on('data', () => resolve()));
    try {
      const cfg = editedConfig(topo, h1, 'metrics-taken', (c) => (c.metrics = { listen: METRICS }));
      const r = await topo.exec(h1.ns, [process.execPath, IPIPD, 'run', '--config', cfg], { timeoutMs: 30_000 });
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(`ipipd: ERR_METRICS_LISTEN: metrics.listen ${METRICS}: EADDRINUSE`);
      await expectNothingLeft(topo, h1);
    } finally {
      other.kill('SIGKILL');
    }
  });
});
