/**
 * `encap.mode: cross-subnet` with routes from config (issue 12, point 3; src/daemon/cross-subnet.ts,
 * src/daemon/plain-routes.ts), three real daemons over two underlay subnets:
 *
 *   P-h1 ul0 192.0.2.1/25 --+                                         +-- ul0 192.0.2.129/25 P-h3
 *                           +-- a0 192.0.2.126/25 [P-r] b0 192.0.2.254/25
 *   P-h2 ul0 192.0.2.2/25 --+
 *   (each host: one pod behind p1, its block routed by ipipd; netns-setup.sh --underlay router)
 *
 *   h1 and h2 (subnet a) take the subnet from the kernel (/25 on ul0); h3 names it (encap.subnet).
 *   1. Routes: h1 has `<h2 block> via 192.0.2.2 dev ul0 proto 77` (plain) and `<h3 block> dev
 *      ipip0 proto 77` (tunnel); status says so.
 *   2. Pings pod to pod, every pair both ways; a capture on h1's ul0 shows pod A <-> pod B as
 *      plain IPv4 (no protocol 4 at all between 192.0.2.1 and .2) and pod A <-> pod C as IPIP.
 *   3. A packet for h2's pod that still reaches h1's TUN (a route into it added by hand, as a
 *      stale one would be) is forwarded through the tunnel, and delivered.
 *   4. Reloads switch h1's mode to always (the plain route is replaced by the TUN route, traffic
 *      to h2 becomes IPIP) and back, pings going on.
 *   5. SIGKILL leaves h1's plain route behind; the next start removes it (crash recovery).
 *   6. After SIGTERM no route of ipipd's is left on any host.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { IPIPD, editedConfig, startDaemon, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectNothingLeft, pingBothWays } from '../helpers/pair.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';

const why = integrationSkip('cross-subnet tests');

describe.skipIf(why)('encap.mode: cross-subnet, routes from config, two underlay subnets', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let h3: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  let C: PodInfo;
  const configs = new Map<HostInfo, string>();
  const daemons: RunningDaemon[] = [];

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 3, underlay: 'router' });
    [h1, h2, h3] = [topo.host(1), topo.host(2), topo.host(3)];
    [A, B, C] = [h1.pods[0]!, h2.pods[0]!, h3.pods[0]!];
    for (const h of [h1, h2, h3]) {
      const file = editedConfig(topo, h, 'cross-subnet', (c) => {
        c.encap = { ...(c.encap ?? {}), mode: 'cross-subnet', ...(h === h3 ? { subnet: h3.underlaySubnet } : {}) };
      });
      configs.set(h, file);
      daemons.push(await startDaemon(topo, h, file));
    }
  });
  afterAll(async () => {
    for (const d of daemons) await stopDaemon(d).catch(() => undefined);
    await topo?.down();
  });

  async function ipipdRoutes(h: HostInfo): Promise<string[]> {
    const r = await topo.exec(h.ns, ['ip', 'route', 'show', 'table', 'all', 'proto', '77']);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim().split('\n').filter(Boolean).map((l) => l.trim()).sort();
  }

  test('same-subnet peers get a plain route via their endpoint, the other one the TUN', async () => {
    expect(h1.underlaySubnet).toBe(h2.underlaySubnet);
    expect(h3.underlaySubnet).not.toBe(h1.underlaySubnet);
    expect(await ipipdRoutes(h1)).toEqual([`${h2.block} via ${h2.underlay} dev ul0`, `${h3.block} dev ipip0 scope link`].sort());
    expect(await ipipdRoutes(h2)).toEqual([`${h1.block} via ${h1.underlay} dev ul0`, `${h3.block} dev ipip0 scope link`].sort());
    expect(await ipipdRoutes(h3)).toEqual([`${h1.block} dev ipip0 scope link`, `${h2.block} dev ipip0 scope link`].sort());
    const s1 = await status(h1);
    expect(s1.encap).toEqual({ mode: 'cross-subnet', subnet: h1.underlaySubnet, plainRoutes: [`${h2.block} via ${h2.underlay} dev ul0`], blackholes: [] });
    expect(s1.routesInstalled).toEqual([`${h3.block} dev ipip0`]);
    expect(Object.fromEntries(s1.peers.map((p) => [p.endpoint, p.path]))).toEqual({ [h2.underlay]: 'plain', [h3.underlay]: 'tunnel' });
    expect((await status(h3)).encap).toMatchObject({ mode: 'cross-subnet', subnet: h3.underlaySubnet, plainRoutes: [] });
    const text = await topo.exec(h1.ns, [process.execPath, IPIPD, 'status', '--socket', h1.socket]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(`  encap mode cross-subnet (underlay subnet ${h1.underlaySubnet}): plain routes ${h2.block} via ${h2.underlay} dev ul0; no blackhole\n`);
    expect(text.stdout).toMatch(new RegExp(`peer h2 ${h2.underlay.replace(/\./g, '\\.')} \\[[^\\]]+\\] \\(plain route, same underlay subnet\\)`));
    expect(text.stdout).not.toMatch(/peer h3 .*plain route/);
  });

  test('every pod pair pings both ways', async () => {
    await pingBothWays(topo, A, B);
    await pingBothWays(topo, A, C);
    await pingBothWays(topo, B, C);
  });

  /** Pings A -> `to` (3 each) while capturing on h1's ul0; returns tshark's rows "proto;src;dst". */
  async function captureOnH1(tag: string, to: PodInfo[]): Promise<string[]> {
    const pcap = join(topo.info.outDir, `h1-ul0-${tag}.pcap`);
    const cap = topo.spawn(h1.ns, ['tcpdump', '-i', 'ul0', '--immediate-mode', '-U', '-n', '-w', pcap, 'ip']);
    const capDone = new Promise<void>((r) => cap.on('exit', () => r()));
    await new Promise((r) => setTimeout(r, 500)); // tcpdump opens the interface
    for (const p of to) {
      const r = await topo.exec(A.ns, ['ping', '-c', '3', '-i', '0.2', '-W', '2', p.address], { timeoutMs: 15_000 });
      expect(r.stdout, `ping ${A.name} -> ${p.name}`).toMatch(/3 packets transmitted, 3 received/);
    }
    // Immediate mode hands tcpdump each packet at once; the pause covers its last write.
    await new Promise((r) => setTimeout(r, 300));
    cap.kill('SIGINT');
    await capDone;
    const r = spawnSync('tshark', ['-r', pcap, '-T', 'fields', '-E', 'separator=;', '-e', 'ip.proto', '-e', 'ip.src', '-e', 'ip.dst'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout.trim().split('\n').filter(Boolean);
  }

  test.skipIf(skipWithout('tcpdump', 'tshark', 'ping'))('a capture on h1: pod A <-> pod B plain IPv4, pod A <-> pod C IPIP', async () => {
    const rows = await captureOnH1('modes', [B, C]);
    // Echo request and reply each way: 3 + 3 plain ICMP (one IPv4 layer), 3 + 3 IPIP (two).
    expect(rows.filter((r) => r === `1;${A.address};${B.address}`)).toHaveLength(3);
    expect(rows.filter((r) => r === `1;${B.address};${A.address}`)).toHaveLength(3);
    expect(rows.filter((r) => r === `4,1;${h1.underlay},${A.address};${h3.underlay},${C.address}`)).toHaveLength(3);
    expect(rows.filter((r) => r === `4,1;${h3.underlay},${C.address};${h1.underlay},${A.address}`)).toHaveLength(3);
    // Not one IPIP packet between the two hosts of subnet a.
    expect(rows.filter((r) => r.startsWith('4') && r.includes(h2.underlay))).toEqual([]);
  });

  test.skipIf(skipWithout('tcpdump', 'tshark', 'ping'))("a packet for a plain-routed peer that still reaches the TUN goes through the tunnel, and arrives", async () => {
    const before = (await status(h1)).peers.find((p) => p.endpoint === h2.underlay)!.txPackets;
    const add = await topo.exec(h1.ns, ['ip', 'route', 'add', `${B.address}/32`, 'dev', 'ipip0']);
    expect(add.code, add.stderr).toBe(0);
    let rows: string[];
    try {
      rows = await captureOnH1('stale', [B]);
    } finally {
      await topo.exec(h1.ns, ['ip', 'route', 'del', `${B.address}/32`, 'dev', 'ipip0']);
    }
    // Requests leave as IPIP to h2 (which decapsulates them whatever its mode); h2's replies are plain.
    expect(rows.filter((r) => r === `4,1;${h1.underlay},${A.address};${h2.underlay},${B.address}`)).toHaveLength(3);
    expect(rows.filter((r) => r === `1;${B.address};${A.address}`)).toHaveLength(3);
    expect((await status(h1)).peers.find((p) => p.endpoint === h2.underlay)!.txPackets).toBe(before + 3);
  });

  test('reloads switch h1 to always and back: the route is replaced, pings go on', async () => {
    const file = configs.get(h1)!;
    const text = readFileSync(file, 'utf8');
    const reload = async (): Promise<string> => {
      const r = await topo.exec(h1.ns, [process.execPath, IPIPD, 'reload', '--config', file]);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      return r.stdout;
    };
    writeFileSync(file, text.replace('mode: cross-subnet', 'mode: always'));
    const out = await reload();
    // The README's format: "reloaded:", then each change on its own line, indented by two.
    expect(out).toMatch(/^reloaded:\n( {2}\S.*\n)+$/);
    expect(out).toContain(`add route ${h2.block} dev ipip0`);
    expect(out).toContain(`delete route ${h2.block} via ${h2.underlay} dev ul0`);
    expect(await ipipdRoutes(h1)).toEqual([`${h2.block} dev ipip0 scope link`, `${h3.block} dev ipip0 scope link`].sort());
    expect((await status(h1)).encap).toMatchObject({ mode: 'always', plainRoutes: [] });
    await pingBothWays(topo, A, B);
    writeFileSync(file, text);
    await reload();
    expect(await ipipdRoutes(h1)).toEqual([`${h2.block} via ${h2.underlay} dev ul0`, `${h3.block} dev ipip0 scope link`].sort());
    await pingBothWays(topo, A, B);
    await pingBothWays(topo, A, C);
  });

  test("SIGKILL leaves h1's plain route (it does not go with the TUN); the next start removes it, then installs its own", async () => {
    const d1 = daemons.shift()!;
    d1.child.kill('SIGKILL');
    await d1.exited;
    expect(await ipipdRoutes(h1)).toEqual([`${h2.block} via ${h2.underlay} dev ul0`]);
    const again = await startDaemon(topo, h1, configs.get(h1)!);
    daemons.unshift(again);
    expect(again.log()).toContain(`"route":"${h2.block} via ${h2.underlay}","msg":"removed a route it left"`);
    expect(await ipipdRoutes(h1)).toEqual([`${h2.block} via ${h2.underlay} dev ul0`, `${h3.block} dev ipip0 scope link`].sort());
    await pingBothWays(topo, A, B);
  });

  test('after SIGTERM no route of ipipd is left on any host', async () => {
    while (daemons.length) expect(await stopDaemon(daemons.shift()!)).toBe(0);
    for (const h of [h1, h2, h3]) {
      expect(await ipipdRoutes(h)).toEqual([]);
      await expectNothingLeft(topo, h);
    }
  });
});
