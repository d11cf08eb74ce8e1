/**
 * Crash recovery (issue 13, point 3; src/daemon/recovery.ts), with real daemons:
 *
 *   pod h1p1 -- h1 [ipipd, ipip0] == ul0 (direct) == [ipipd, ipip0] h2 -- pod h2p1
 *
 *   1. SIGKILL h1's daemon: its control socket and state file stay behind; the next start with
 *      the same config removes them, logs what it removed, and forwards again.
 *   2. A daemon that died while its TUN outlived it (a persistent TUN with a route of ipipd's
 *      protocol, recorded in a state file of a dead pid): both are removed, and it starts.
 *   3. A same-named device ipipd did not create (no state file, or one naming another ifindex):
 *      refused with ERR_TUN_EXISTS, the device and its route untouched.
 *   4. A second daemon with the same config while the first is alive: ERR_ALREADY_RUNNING, the
 *      first one undisturbed (still answers, same routes).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { IPIPD, startDaemon, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { pingBothWays } from '../helpers/pair.js';
import { integrationSkip } from '../helpers/skip.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';
import { RTPROT_IPIPD, processStart } from '../../src/daemon/recovery.js';

const why = integrationSkip('crash recovery tests');

function run(ns: string, config: string): { code: number | null; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, IPIPD, 'run', '--config', config], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stderr: r.stderr };
}

describe.skipIf(why)('crash recovery', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let d2: RunningDaemon | undefined;
  const stateFile = (h: HostInfo): string => h.socket.replace(/(\.sock)?$/, '.state');

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    [h1, h2] = [topo.host(1), topo.host(2)];
    d2 = await startDaemon(topo, h2);
  });
  afterAll(async () => {
    if (d2) await stopDaemon(d2).catch(() => undefined);
    await topo?.down();
  });

  async function ip(...args: string[]): Promise<string> {
    const r = await topo.exec(h1.ns, ['ip', ...args]);
    expect(r.code, `ip ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r.stdout;
  }

  test('SIGKILL, then a restart with the same config: it removes what was left, logs it, and forwards', async () => {
    const d1 = await startDaemon(topo, h1);
    const state = JSON.parse(readFileSync(stateFile(h1), 'utf8'));
    expect(state).toMatchObject({ tun: 'ipip0', routes: [h2.block] });
    expect(await ip('route', 'show', 'proto', String(RTPROT_IPIPD))).toContain(`${h2.block} dev ipip0`);
    d1.child.kill('SIGKILL');
    await d1.exited;
    expect(existsSync(h1.socket)).toBe(true); // left behind
    expect(existsSync(stateFile(h1))).toBe(true);
    const again = await startDaemon(topo, h1);
    try {
      expect(again.log()).toMatch(/a previous ipipd died without cleaning up/);
      expect(again.log()).toMatch(/removed its control socket/);
      await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
    } finally {
      expect(await stopDaemon(again)).toBe(0);
    }
    expect(existsSync(stateFile(h1))).toBe(false);
    expect(existsSync(h1.socket)).toBe(false);
  });

  test("a TUN that outlived its dead daemon, and that daemon's routes, are removed", async () => {
    await ip('tuntap', 'add', 'ipip0', 'mode', 'tun');
    await ip('link', 'set', 'ipip0', 'up');
    await ip('route', 'add', h2.block, 'dev', 'ipip0', 'proto', String(RTPROT_IPIPD));
    const ifindex = Number(/^(\d+):/.exec(await ip('-o', 'link', 'show', 'ipip0'))![1]);
    // A pid that is certainly not running: a child that has exited.
    const dead = spawnSync('true').pid;
    writeFileSync(stateFile(h1), JSON.stringify({ pid: dead, tun: 'ipip0', ifindex, table: 254, routes: [h2.block], socket: h1.socket, startedAt: '' }));
    const d1 = await startDaemon(topo, h1);
    try {
      expect(d1.log()).toMatch(/removed a route it left/);
      expect(d1.log()).toMatch(/removed the TUN it left/);
      expect((await status(h1)).state).toBe('up');
      await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
    } finally {
      expect(await stopDaemon(d1)).toBe(0);
    }
    expect(await ip('-o', 'link')).not.toMatch(/ ipip0:/);
  });

  test.each([
    ['no state file', false],
    ['a state file naming another ifindex', true],
  ])('a same-named device ipipd did not create (%s): ERR_TUN_EXISTS, untouched', async (_name, withState) => {
    await ip('tuntap', 'add', 'ipip0', 'mode', 'tun');
    try {
      await ip('link', 'set', 'ipip0', 'up');
      await ip('route', 'add', h2.block, 'dev', 'ipip0', 'proto', String(RTPROT_IPIPD));
      const ifindex = Number(/^(\d+):/.exec(await ip('-o', 'link', 'show', 'ipip0'))![1]);
      if (withState) {
        const dead = spawnSync('true').pid;
        writeFileSync(stateFile(h1), JSON.stringify({ pid: dead, tun: 'ipip0', ifindex: ifindex + 1000, table: 254, routes: [], socket: false, startedAt: '' }));
      }
      const before = [await ip('-o', 'link', 'show', 'ipip0'), await ip('route', 'show', 'dev', 'ipip0')];
      const r = run(h1.ns, h1.config);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/ERR_TUN_EXISTS: a device named ipip0 already exists/);
      expect([await ip('-o', 'link', 'show', 'ipip0'), await ip('route', 'show', 'dev', 'ipip0')]).toEqual(before);
    } finally {
      await ip('link', 'del', 'ipip0');
    }
  });

  test('a state file whose pid the kernel reused (another start time) is a dead daemon\'s', async () => {
    const other = topo.spawn(h1.ns, ['sleep', '60']);
    try {
      const pid = other.pid!; // a live process, but not the daemon that wrote the file
      expect(processStart(pid)).toBeGreaterThan(0);
      writeFileSync(stateFile(h1), JSON.stringify({ pid, pidStart: processStart(pid)! + 1, tun: 'ipip0', ifindex: 999_999, table: 254, routes: [], socket: h1.socket, startedAt: '' }));
      const d1 = await startDaemon(topo, h1);
      expect(d1.log()).toMatch(/a previous ipipd died without cleaning up/);
      expect(await stopDaemon(d1)).toBe(0);
    } finally {
      other.kill('SIGKILL');
    }
  });

  test('a second daemon while the first is alive: ERR_ALREADY_RUNNING, the first undisturbed', async () => {
    const d1 = await startDaemon(topo, h1);
    try {
      const routes = await ip('route', 'show', 'table', 'all');
      const links = await ip('-o', 'link');
      const r = run(h1.ns, h1.config);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/ERR_ALREADY_RUNNING: ipipd pid \d+ already runs TUN ipip0/);
      expect(r.stderr).toMatch(/start failed; nothing was set up/);
      expect(await ip('route', 'show', 'table', 'all')).toBe(routes);
      expect(await ip('-o', 'link')).toBe(links);
      expect((await status(h1)).state).toBe('up');
      expect(existsSync(stateFile(h1))).toBe(true);
      await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
    } finally {
      expect(await stopDaemon(d1)).toBe(0);
    }
  });
});
