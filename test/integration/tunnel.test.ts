/**
 * Two hosts, two ipipd daemons, real packets (STYLE rule 16). The topology comes from
 * scripts/netns-setup.sh with a per-run prefix and is torn down on every exit path:
 *
 *   P-h1p1 pod A                P-h1 host A                          P-h2 host B                P-h2p1 pod B
 *   198.51.100.10 --- p1 [ipip0 198.51.100.0/32] ul0 192.0.2.1 ==== 192.0.2.2 ul0 [ipip0 203.0.113.0/32] p1 --- 203.0.113.10
 *                          ipipd (h1.yaml)              IPIP (proto 4)            ipipd (h2.yaml)
 *
 * What is checked: a fresh pair has counted nothing and put nothing on the underlay while
 * starting (the JIT warm-up sends its synthetic packets nowhere); routes/address/MTU installed;
 * ping and a multi-megabyte TCP transfer both ways with the bytes checked; a capture of the
 * underlay decodes as IP-in-IP with correct checksums; hand-built IPIP packets from an unknown
 * outer source, with a spoofed inner source, or with a broken inner header are dropped, counted
 * under their reason and not delivered (with a control packet that is delivered); after SIGTERM
 * nothing the daemons added is left.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ROOT, editedConfig, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectFreshPair, expectNothingLeft, pingBothWays, startPair, tcpTransfer, type StartedPair } from '../helpers/pair.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';

const why = integrationSkip('integration tests');

const INJECT = join(ROOT, 'dist', 'test', 'fixtures', 'inject.js');

// Both data paths: the plain one (a packet per read and write) and offload mode (the default).
describe.skipIf(why).each([{ offload: false }, { offload: true }])('ipipd between two hosts (io.offload: $offload)', ({ offload }) => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let d1: RunningDaemon;
  let d2: RunningDaemon;
  // The underlay's packet counts just before the daemons start and just after both are up, and
  // their first status reports: for the test that starting sends and counts nothing.
  let started: StartedPair;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    ({ h1, h2, d1, d2 } = started = await startPair(topo, (h) => editedConfig(topo, h, `offload-${offload}`, (c) => (c.io = { offload }))));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('a freshly started pair has counted nothing, and starting it put nothing on the underlay', () => {
    // Both daemons ran their JIT warm-up (tens of thousands of synthetic packets through the
    // real data path) before they came up: none of it may show, here or on the wire.
    expectFreshPair(started, (s) => {
      for (const p of s.peers) {
        expect(p).toMatchObject({ txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, reachable: true, unreachableReason: null, lastRxSecondsAgo: null, pmtuLearnedSecondsAgo: null });
        expect(p.mtu).toBe(p.baseMtu);
      }
    });
  });

  test('the TUN has its address, MTU (underlay 1500 - 20) and one route per peer prefix', async () => {
    const link = await topo.exec(h1.ns, ['ip', '-j', 'link', 'show', 'ipip0']);
    const l = JSON.parse(link.stdout)[0];
    expect(l.mtu).toBe(1480);
    expect(l.flags).toContain('UP');
    const addr = await topo.exec(h1.ns, ['ip', '-j', 'addr', 'show', 'dev', 'ipip0']);
    const a = JSON.parse(addr.stdout)[0].addr_info.filter((x: { family: string }) => x.family === 'inet');
    expect(a.map((x: { local: string; prefixlen: number }) => `${x.local}/${x.prefixlen}`)).toEqual(['198.51.100.0/32']);
    const routes = await topo.exec(h1.ns, ['ip', '-j', 'route', 'show', 'dev', 'ipip0']);
    expect(JSON.parse(routes.stdout).map((r: { dst: string }) => r.dst)).toEqual(['203.0.113.0/25']);
    const s = await status(h1);
    expect(s.state).toBe('up');
    expect(s.tun).toMatchObject({ name: 'ipip0', mtu: 1480, address: '198.51.100.0/32' });
    expect(s.peers).toEqual([expect.objectContaining({ name: 'h2', endpoint: '192.0.2.2', prefixes: ['203.0.113.0/25'] })]);
  });

  test('ping from pod A to pod B and back', async () => {
    await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
    const s1 = await status(h1);
    expect(s1.peers[0]!.txPackets).toBeGreaterThanOrEqual(6);
    expect(s1.peers[0]!.rxPackets).toBeGreaterThanOrEqual(6);
  });

  test('a multi-megabyte TCP transfer each way arrives byte for byte', async () => {
    const bytes = 8 * 1024 * 1024;
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    for (const [from, to, seed] of [[a, b, 11], [b, a, 12]] as const) await tcpTransfer(topo, from, to, bytes, seed, 60);
    const s2 = await status(h2);
    expect(s2.counters.rx_bytes).toBeGreaterThan(bytes);
    expect(s2.counters.tx_bytes).toBeGreaterThan(bytes);
    expect(s2.drops.socket_write_error).toBe(0);
    expect(s2.drops.tun_write_error).toBe(0);
  });

  test.skipIf(skipWithout('tcpdump', 'tshark'))('the underlay carries IP-in-IP with correct checksums (capture decoded)', async () => {
    const pcap = join(topo.info.outDir, 'ul0.pcap');
    const cap = topo.spawn(h2.ns, ['tcpdump', '-i', 'ul0', '-U', '-n', '-c', '6', '-w', pcap, 'ip proto 4']);
    const capDone = new Promise<void>((r) => cap.on('exit', () => r()));
    await new Promise((r) => setTimeout(r, 500)); // tcpdump opens the interface
    const b = h2.pods[0]!;
    const echo = await topo.serve(b.ns, ['udp-echo', '--bind', b.address, '--port', '7']);
    await topo.traffic(h1.pods[0]!.ns, ['udp-ping', '--to', b.address, '--port', '7', '--count', '3', '--interval-ms', '50']);
    await echo.stop();
    await Promise.race([capDone, new Promise((r) => setTimeout(r, 5000))]);
    cap.kill('SIGTERM');
    expect(existsSync(pcap)).toBe(true);
    const r = spawnSync('tshark', ['-r', pcap, '-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-T', 'fields', '-E', 'separator=;', '-e', 'ip.proto', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'ip.checksum.status', '-e', 'udp.checksum.status'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => l.split(';'));
    expect(rows.length).toBe(6);
    for (const [proto, src, dst, cks, udpCks] of rows) {
      // Two IPv4 layers per frame: outer protocol 4, inner UDP; both IP checksums and the inner
      // UDP checksum verified good (1).
      expect(proto).toBe('4,17');
      expect(['192.0.2.1,198.51.100.10', '192.0.2.2,203.0.113.10']).toContain(src);
      expect(['192.0.2.2,203.0.113.10', '192.0.2.1,198.51.100.10']).toContain(dst);
      expect(cks).toBe('1,1');
      expect(udpCks).toBe('1');
    }
  });

  describe('packets no honest peer sends', () => {
    const inject = async (args: string[]): Promise<void> => {
      const r = await topo.exec(h1.ns, [process.execPath, INJECT, '--outer-dst', '192.0.2.2', '--inner-dst', h2.pods[0]!.address, '--port', '7000', '--count', '5', ...args]);
      expect(r.code, r.stderr + r.stdout).toBe(0);
    };
    /** Inject into h2 and return what ipipd on h2 counted and what pod B's socket received. */
    const attempt = async (args: string[]): Promise<{ drops: Record<string, number>; delivered: number; rx: number }> => {
      const b = h2.pods[0]!;
      const echo = await topo.serve(b.ns, ['udp-echo', '--bind', b.address, '--port', '7000']);
      const before = await status(h2);
      await inject(args);
      await new Promise((r) => setTimeout(r, 300));
      const after = await status(h2);
      const got = await echo.stop();
      const drops: Record<string, number> = {};
      for (const k of Object.keys(after.drops)) {
        const d = after.drops[k]! - before.drops[k]!;
        if (d) drops[k] = d;
      }
      return { drops, delivered: Number(got.json?.datagrams ?? NaN), rx: after.counters.rx_packets! - before.counters.rx_packets! };
    };

    test('control: a well-formed packet from the peer is delivered', async () => {
      const r = await attempt(['--outer-src', '192.0.2.1', '--inner-src', h1.pods[0]!.address]);
      expect(r.drops).toEqual({});
      expect(r.delivered).toBe(5);
      // The 5 injected packets, plus pod A's ICMP port unreachables for the 5 echoes pod B sent
      // back (nothing listens on pod A's port): all legitimate, all delivered.
      expect(r.rx).toBe(10);
    });

    test('an unknown outer source (CVE-2020-10136) is dropped and counted', async () => {
      // 192.0.2.1 sends, but writes 192.0.2.99 as the outer source (IP_HDRINCL).
      const r = await attempt(['--outer-src', '192.0.2.99', '--inner-src', h1.pods[0]!.address]);
      expect(r.drops).toEqual({ unknown_peer: 5 });
      expect(r.rx).toBe(0);
      expect(r.delivered).toBe(0);
    });

    test("an inner source outside the peer's prefixes is dropped and counted", async () => {
      const r = await attempt(['--outer-src', '192.0.2.1', '--inner-src', '198.51.100.200']);
      expect(r.drops).toEqual({ spoofed_source: 5 });
      expect(r.delivered).toBe(0);
    });

    test('an inner header with a bad checksum is dropped and counted', async () => {
      const r = await attempt(['--outer-src', '192.0.2.1', '--inner-src', h1.pods[0]!.address, '--bad-inner-checksum']);
      expect(r.drops).toEqual({ inner_bad_checksum: 5 });
      expect(r.delivered).toBe(0);
    });
  });

  test('after SIGTERM, no device, address, route or socket the daemons added is left', async () => {
    for (const d of [d1, d2]) {
      expect(await stopDaemon(d)).toBe(0);
      await expectNothingLeft(topo, d.host);
      const log = d.log();
      expect(log).toMatch(/"msg":"closed: final counters"/);
      const final = JSON.parse(log.split('\n').find((l) => l.includes('closed: final counters'))!);
      expect(final.counters.tx_packets).toBeGreaterThan(0);
    }
    // The namespaces are still there (the test's own teardown removes them); only ipipd's
    // additions are gone. The config files are untouched.
    expect(readFileSync(h1.config, 'utf8')).toContain('ipip0');
  });
});
