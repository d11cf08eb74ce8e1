/**
 * Live reload (README "Live changes") with real daemons, `io.queues` 1 and 2. Topology from
 * tools/netns with a per-run prefix, torn down on every exit path (STYLE rule 16):
 *
 *   P-h1p1 pod A            P-h1 host A                          P-h2 host B            P-h2p1 pod B
 *   198.51.100.10 --- [ipip0] ul0 192.0.2.1 ===== IPIP =====> 192.0.2.2 ul0 [ipip0] --- 203.0.113.10
 *                      ipipd (reloaded 10 times + refused ones)         ipipd
 *
 * A paced TCP transfer from pod A to pod B runs while h1's daemon is reloaded ten times (other
 * peers and prefixes added and removed, the ICMP limits changed), once with an invalid config
 * (exit 2, the errors `ipipd check` gives, nothing changed) and once with a key that needs a
 * restart, and `reload --config` naming another file is refused; it arrives whole (SHA-256)
 * on its one connection. Before each reload, `ipipd check --diff` prints what the reload then reports having done. The peer that stays keeps its counters;
 * the routes of the added peers come and go; after SIGTERM nothing is left.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse, stringify } from 'yaml';
import { IPIPD, editedConfig, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectNothingLeft, startPair } from '../helpers/pair.js';
import { expectedSha256 } from '../fixtures/payload.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';
import { integrationSkip } from '../helpers/skip.js';

const why = integrationSkip('reload tests', null);

/** h1's config for reload step `k`: extra peer k (and k-1 gone), an extra prefix on odd steps. */
function variant(base: any, k: number): any {
  const c = structuredClone(base);
  c.peers.push({ name: `extra${k}`, endpoint: `192.0.2.${100 + k}`, prefixes: [`198.51.100.${128 + 8 * (k % 8)}/29`] });
  if (k % 2 === 1) c.peers[0].prefixes.push('203.0.113.192/28');
  c.icmp = { rate: 1000 + k, burst: 50 };
  return c;
}

describe.skipIf(why).each([{ queues: 1 }, { queues: 2 }])('reload under traffic (io.queues: $queues)', ({ queues }) => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let d1: RunningDaemon;
  let d2: RunningDaemon;
  let file: string;
  let base: any;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    const config = (h: HostInfo): string => editedConfig(topo, h, `reload-q${queues}`, (c) => (c.io = { ...(c.io ?? {}), queues }));
    ({ h1, h2, d1, d2 } = await startPair(topo, config));
    file = config(h1);
    base = parse(readFileSync(file, 'utf8'));
  });

  afterAll(async () => {
    await topo?.down();
  });

  const ipipd = (...args: string[]) => topo.exec(h1.ns, [process.execPath, IPIPD, ...args], { timeoutMs: 30_000 });

  test('a TCP transfer runs through ten reloads, an invalid one and a refused one, and arrives whole on its connection', async () => {
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    const bytes = 32 << 20;
    const seed = 40 + queues;
    const sink = await topo.serve(b.ns, ['tcp-sink', '--bind', b.address, '--port', '0', '--timeout', '120']);
    const sending = topo.traffic(a.ns, ['tcp-send', '--to', b.address, '--port', String(sink.port), '--bytes', String(bytes), '--seed', String(seed), '--pace', String(3 << 19), '--timeout', '120'], { timeoutMs: 130_000 });
    await new Promise((r) => setTimeout(r, 500));
    const txBefore = (await status(h1)).peers[0]!.txPackets;
    expect(txBefore).toBeGreaterThan(0);
    for (let k = 1; k <= 10; k++) {
      writeFileSync(file, stringify(variant(base, k)));
      // What check --diff prints is what the reload then does.
      const diff = await ipipd('check', '--config', file, '--diff', '--socket', h1.socket, '--json');
      expect(diff.code, diff.stderr).toBe(0);
      const r = await ipipd('reload', '--config', file, '--json');
      expect(r.code, r.stderr).toBe(0);
      const planned = JSON.parse(diff.stdout);
      const done = JSON.parse(r.stdout);
      expect(planned.applied).toBe(false);
      expect(done.applied).toBe(true);
      expect(done.changes).toEqual(planned.changes);
      expect(done.changes).toContain(`add peer extra${k} endpoint 192.0.2.${100 + k} prefixes 198.51.100.${128 + 8 * (k % 8)}/29`);
      if (k > 1) expect(done.changes.some((l: string) => l.startsWith(`remove peer extra${k - 1} `))).toBe(true);
      expect(done.changes).toContain(k % 2 === 1 ? 'change peer h2: prefixes +203.0.113.192/28' : 'change peer h2: prefixes -203.0.113.192/28');
      const routes = await topo.exec(h1.ns, ['ip', 'route', 'show', 'dev', 'ipip0']);
      expect(routes.stdout).toContain(`198.51.100.${128 + 8 * (k % 8)}/29`);
      if (k > 1 && (k - 1) % 8 !== k % 8) expect(routes.stdout).not.toContain(`198.51.100.${128 + 8 * ((k - 1) % 8)}/29`);
      if (k === 5) {
        // An invalid config: exit 2, exactly what `ipipd check` says, nothing changed.
        const bad = stringify(variant(base, k)).replace('203.0.113.192/28', '203.0.113.193/28');
        writeFileSync(file, bad);
        const check = await ipipd('check', '--config', file);
        const refused = await ipipd('reload', '--config', file);
        expect(check.code).toBe(2);
        expect(refused.code).toBe(2);
        expect(refused.stderr).toBe(check.stderr);
        expect(refused.stderr).toMatch(/ERR_CONFIG_INVALID: .*host bits set/s);
        // A key that cannot change live: refused, named, nothing changed.
        const moved = variant(base, k);
        moved.tun.name = 'ipip9';
        moved.io.batch = 32;
        writeFileSync(file, stringify(moved));
        const restart = await ipipd('reload', '--socket', h1.socket);
        expect(restart.code).toBe(2);
        expect(restart.stderr).toMatch(/ERR_RELOAD_REFUSED: io\.batch, tun\.name cannot change while ipipd runs: restart/);
        // Another file, even one naming the same socket, is not the daemon's: refused.
        const other = file.replace(/\.yaml$/, '-other.yaml');
        writeFileSync(other, stringify(variant(base, k + 1)));
        const elsewhere = await ipipd('reload', '--config', other);
        expect(elsewhere.code).toBe(2);
        expect(elsewhere.stderr).toMatch(/ERR_RELOAD_REFUSED: .*-other\.yaml is not the file this daemon runs/);
        expect((await status(h1)).peers.map((p) => p.name)).toEqual(['h2', `extra${k}`]);
        writeFileSync(file, stringify(variant(base, k)));
      }
    }
    // The reloads all happened while the transfer was running.
    expect(sink.child.exitCode, 'the transfer ended before the last reload: pace it slower').toBeNull();
    const send = await sending;
    const got = await sink.result;
    expect(send.code, send.stderr).toBe(0);
    expect(got.code, got.stderr).toBe(0);
    expect(got.json).toMatchObject({ bytes, sha256: expectedSha256(bytes, seed) });
    const s = await status(h1);
    expect(s.live?.reloads).toBe(10);
    expect(s.peers.map((p) => p.name)).toEqual(['h2', 'extra10']);
    // The peer that stayed kept its counters across every reload.
    expect(s.peers[0]!.txPackets).toBeGreaterThan(txBefore);
    expect(s.peers[0]!.txPackets).toBe(s.counters.tx_packets);
    expect(s.drops.no_route ?? 0).toBe(0);
  });

  test('SIGHUP re-reads the file; after SIGTERM nothing is left, the added routes included', async () => {
    writeFileSync(file, stringify(base));
    d1.child.kill('SIGHUP');
    for (let i = 0; i < 50 && (await status(h1)).peers.length !== 1; i++) await new Promise((r) => setTimeout(r, 100));
    expect((await status(h1)).peers.map((p) => p.name)).toEqual(['h2']);
    // The swap shows in status before the daemon's log line about it reaches us through its pipe.
    for (let i = 0; i < 50 && !/SIGHUP: reloaded/.test(d1.log()); i++) await new Promise((r) => setTimeout(r, 100));
    expect(d1.log()).toMatch(/SIGHUP: reloaded/);
    // Each reload's "applied" line names its subsystem once (JSON with a key twice is not JSON a
    // log pipeline can trust).
    const applied = d1.log().split('\n').filter((l) => l.includes('"msg":"applied"'));
    expect(applied.length).toBeGreaterThan(0);
    for (const line of applied) expect(line.match(/"subsystem":/g), line).toHaveLength(1);
    expect(await stopDaemon(d1)).toBe(0);
    expect(await stopDaemon(d2)).toBe(0);
    await expectNothingLeft(topo, h1);
    await expectNothingLeft(topo, h2);
  });
});
