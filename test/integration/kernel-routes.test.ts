/**
 * `routes.source: kernel` with real daemons: peers from the routes other software installs into
 * the TUN (as BIRD does for Calico: `<block> via <node> dev <tun> onlink`). Topology from
 * tools/netns with a per-run prefix, torn down on every exit path (STYLE rule 16):
 *
 *   P-h1p1 pod A            P-h1 host A                          P-h2 host B            P-h2p1 pod B
 *   198.51.100.10 --- [ipip0] ul0 192.0.2.1 ===== IPIP =====> 192.0.2.2 ul0 [ipip0] --- 203.0.113.10
 *                      ipipd, routes.source: kernel,                    ipipd, peer h1 configured
 *                      no peers configured; `ip route add 203.0.113.0/26 via 192.0.2.2 dev ipip0 onlink`
 *
 * What is checked: the route makes 192.0.2.2 a peer owning 203.0.113.0/26, from the kernel's
 * event (no new dump), and traffic flows; `ipipd routes` shows it with source kernel; a route via a gateway
 * outside underlay.allowed_endpoints is refused (logged once, never a peer); a packet from the
 * kernel-learned peer with an inner source outside its prefix is dropped as spoofed_source;
 * `ipipd trace --peer kernel:<endpoint>` traces that peer's packets;
 * deleting the route removes the peer and traffic to the block is then counted as no_route;
 * after SIGTERM nothing is left.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { IPIPD, editedConfig, startDaemon, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectNothingLeft, have } from '../helpers/pair.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';
import { integrationSkip } from '../helpers/skip.js';
import { waitFor } from '../../tools/netns/exec.js';
import { records, trace } from '../helpers/trace.js';

const why = integrationSkip('kernel route tests', have('ping') ? null : "'ping' not installed");

describe.skipIf(why)('routes.source: kernel', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let d1: RunningDaemon;
  let d2: RunningDaemon;
  const block = '203.0.113.0/26';

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    h2 = topo.host(2);
    const c1 = editedConfig(topo, h1, 'kernel', (c) => {
      delete c.peers;
      c.routes = { source: 'kernel' };
      c.underlay.allowed_endpoints = [`${h2.underlay}/32`];
    });
    d1 = await startDaemon(topo, h1, c1);
    d2 = await startDaemon(topo, h2);
  });

  afterAll(async () => {
    await topo?.down();
  });

  const ping = (count = 3) => topo.exec(h1.pods[0]!.ns, ['ping', '-c', String(count), '-i', '0.2', '-W', '1', h2.pods[0]!.address], { timeoutMs: 20_000 });

  /**
   * Poll `ok` every 100 ms until it holds, for up to 30 s: a generous bound for a loaded CI
   * machine, not a speed check (that the change came from the kernel's event and not from a new
   * dump is asserted from the status's counters).
   */
  const eventually = (ok: () => Promise<boolean>): Promise<boolean> => waitFor(ok, 30_000, 100);

  test('with no route there is no peer', async () => {
    const s = await status(h1);
    expect(s.peers).toEqual([]);
    expect(s.live?.kernelRoutes).toMatchObject({ routes: 0, dumps: 1 });
  });

  test("a route via a gateway in allowed_endpoints becomes a peer on the kernel's event, and traffic flows", async () => {
    const add = await topo.exec(h1.ns, ['ip', 'route', 'add', block, 'via', h2.underlay, 'dev', 'ipip0', 'onlink']);
    expect(add.code, add.stderr).toBe(0);
    expect(await eventually(async () => (await status(h1)).peers.length === 1)).toBe(true);
    const s = await status(h1);
    expect(s.peers[0]).toMatchObject({ name: `kernel:${h2.underlay}`, endpoint: h2.underlay, prefixes: [block] });
    // Learned from the route event: still the one dump made at start.
    expect(s.live?.kernelRoutes).toMatchObject({ routes: 1, dumps: 1 });
    const r = await ping();
    expect(r.stdout).toMatch(/3 packets transmitted, 3 received/);
    const routes = await topo.exec(h1.ns, [process.execPath, IPIPD, 'routes', '--json', '--socket', h1.socket]);
    expect(routes.code, routes.stderr).toBe(0);
    const table = JSON.parse(routes.stdout).routes;
    expect(table).toHaveLength(1);
    expect(table[0]).toMatchObject({ prefix: block, peer: `kernel:${h2.underlay}`, endpoint: h2.underlay, source: 'kernel' });
    expect(table[0].txPackets).toBeGreaterThanOrEqual(3);
    // The status shows the change and the watch.
    const st = await topo.exec(h1.ns, [process.execPath, IPIPD, 'status', '--socket', h1.socket]);
    expect(st.stdout).toMatch(/live: 0 reload\(s\); last change \d+s ago \(kernel routes\): \+1 -0 ~0 peers, \+0 -0 routes; kernel routes 1 \(\d+ events, 1 dumps, 0 errors\)/);
    const text = await topo.exec(h1.ns, [process.execPath, IPIPD, 'routes', '--socket', h1.socket]);
    expect(text.stdout).toMatch(new RegExp(`^PREFIX +PEER +ENDPOINT +SOURCE +TX_PACKETS +RX_PACKETS\\n${block.replace('.', '\\.')} +kernel:`));
  });

  test('ipipd trace --peer takes the kernel-learned peer by its name and keeps its packets', async () => {
    const t = trace(h1.socket, ['--json', '--peer', `kernel:${h2.underlay}`, '--reason', 'forward', '--count', '2']);
    await t.started;
    const r = await ping(2);
    expect(r.stdout).toMatch(/2 packets transmitted, 2 received/);
    await t.done;
    expect(t.code, t.lines.join('\n')).toBe(0);
    const got = records(t);
    expect(got).toHaveLength(2);
    for (const x of got) expect([x.outer?.src, x.outer?.dst].sort()).toEqual([h1.underlay, h2.underlay].sort());
    // A name that is no peer now is refused, naming the ones there are.
    const bad = await topo.exec(h1.ns, [process.execPath, IPIPD, 'trace', '--socket', h1.socket, '--peer', 'kernel:192.0.2.99', '--count', '1']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`ERR_CONTROL_REQUEST`);
    expect(bad.stderr).toContain(`peers: kernel:${h2.underlay}`);
  });

  test('a route via a gateway outside allowed_endpoints is refused, logged once, never tunnelled', async () => {
    const other = '192.0.2.77';
    const add = await topo.exec(h1.ns, ['ip', 'route', 'add', '203.0.113.64/26', 'via', other, 'dev', 'ipip0', 'onlink']);
    expect(add.code, add.stderr).toBe(0);
    expect(await eventually(async () => d1.log().includes('kernel route refused'))).toBe(true);
    // Another event does not log it again.
    await topo.exec(h1.ns, ['ip', 'route', 'add', '203.0.113.128/26', 'via', h2.underlay, 'dev', 'ipip0', 'onlink']);
    expect(await eventually(async () => (await status(h1)).peers[0]?.prefixes.length === 2)).toBe(true);
    const s = await status(h1);
    expect(s.peers.map((p) => p.endpoint)).toEqual([h2.underlay]);
    expect(d1.log().match(/kernel route refused/g)).toHaveLength(1);
    expect(d1.log()).toContain(`203.0.113.64/26 via ${other}`);
    await topo.exec(h1.ns, ['ip', 'route', 'del', '203.0.113.64/26', 'via', other, 'dev', 'ipip0']);
    await topo.exec(h1.ns, ['ip', 'route', 'del', '203.0.113.128/26', 'via', h2.underlay, 'dev', 'ipip0']);
  });

  test("a packet from the kernel-learned peer with an inner source outside its prefix is dropped as spoofed_source", async () => {
    // 203.0.113.100 is h2's (inside its /25) but not inside the /26 h1 learned for 192.0.2.2.
    expect((await topo.exec(h2.ns, ['ip', 'addr', 'add', '203.0.113.100/32', 'dev', 'lo'])).code).toBe(0);
    const before = (await status(h1)).drops.spoofed_source!;
    await topo.exec(h2.ns, ['ping', '-c', '3', '-i', '0.2', '-W', '1', '-I', '203.0.113.100', h1.pods[0]!.address], { timeoutMs: 15_000 });
    const after = (await status(h1)).drops.spoofed_source!;
    expect(after - before).toBe(3);
  });

  test('deleting the route removes the peer; traffic to the block is then no_route', async () => {
    const del = await topo.exec(h1.ns, ['ip', 'route', 'del', block, 'via', h2.underlay, 'dev', 'ipip0']);
    expect(del.code, del.stderr).toBe(0);
    expect(await eventually(async () => (await status(h1)).peers.length === 0)).toBe(true);
    // Nothing routes the block into the TUN now: put a plain device route back, so packets do reach ipipd.
    expect((await topo.exec(h1.ns, ['ip', 'route', 'add', block, 'dev', 'ipip0'])).code).toBe(0);
    const before = (await status(h1)).drops.no_route!;
    const r = await ping();
    expect(r.stdout).toMatch(/3 packets transmitted, 0 received/);
    expect((await status(h1)).drops.no_route! - before).toBe(3);
    // A device route without a gateway made no peer.
    expect((await status(h1)).peers).toEqual([]);
    await topo.exec(h1.ns, ['ip', 'route', 'del', block, 'dev', 'ipip0']);
  });

  test('after SIGTERM nothing is left', async () => {
    expect(await stopDaemon(d1)).toBe(0);
    expect(await stopDaemon(d2)).toBe(0);
    await expectNothingLeft(topo, h1);
    await expectNothingLeft(topo, h2);
  });
});
