/**
 * `routes.own_blocks` (issue 12, point 4; src/daemon/plain-routes.ts), with real daemons:
 *
 *   P-h1p1 pod A                P-h1 host A                          P-h2 host B                P-h2p1 pod B
 *   198.51.100.10 --- p1 [ipip0 198.51.100.0/32] ul0 192.0.2.1 ==== 192.0.2.2 ul0 [ipip0 203.0.113.0/32] p1 --- 203.0.113.10
 *                  own_blocks [198.51.100.0/25]                   IPIP
 *
 *   1. While h1's ipipd runs: `blackhole 198.51.100.0/25 proto 77` is h1's one blackhole route,
 *      an unassigned address in the block resolves to it, the pod's /32 still wins (pings go
 *      both ways); status lists it. After SIGTERM it is gone.
 *   2. A reload that drops the block deletes the route; one that adds it back installs it.
 *   3. SIGKILL leaves it behind (it does not go with the TUN); the next start removes it (crash
 *      recovery), logs it, and installs its own; SIGTERM then leaves nothing.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { IPIPD, editedConfig, startDaemon, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { pingBothWays } from '../helpers/pair.js';
import { integrationSkip } from '../helpers/skip.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';

const why = integrationSkip('own blocks tests');

describe.skipIf(why)('routes.own_blocks: a blackhole route for the node block', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let d2: RunningDaemon | undefined;
  let config: string;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    [h1, h2] = [topo.host(1), topo.host(2)];
    config = editedConfig(topo, h1, 'own-blocks', (c) => {
      c.routes = { ...(c.routes ?? {}), own_blocks: [h1.block] };
    });
    d2 = await startDaemon(topo, h2);
  });
  afterAll(async () => {
    if (d2) await stopDaemon(d2).catch(() => undefined);
    await topo?.down();
  });

  async function blackholes(): Promise<string> {
    const r = await topo.exec(h1.ns, ['ip', 'route', 'show', 'table', 'all', 'type', 'blackhole']);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim();
  }

  // An address of the block no pod has. The kernel answers a lookup that ends in a blackhole
  // with EINVAL, one that finds no route (these hosts have no default) with ENETUNREACH.
  async function lookupUnassigned(): Promise<string> {
    const r = await topo.exec(h1.ns, ['ip', 'route', 'get', h1.block.replace(/\.0\/25$/, '.100')]);
    return (r.stdout + r.stderr).trim();
  }

  test('installed while running, the pods still reached, gone after SIGTERM', async () => {
    expect(await blackholes()).toBe('');
    expect(await lookupUnassigned()).toBe('RTNETLINK answers: Network is unreachable');
    const d1 = await startDaemon(topo, h1, config);
    try {
      expect(await blackholes()).toBe(`blackhole ${h1.block} proto 77`);
      expect(await lookupUnassigned()).toBe('RTNETLINK answers: Invalid argument');
      // The pod's own /32 is more specific: traffic to it still flows, both ways.
      await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
      const s = await status(h1);
      expect(s.encap).toEqual({ mode: 'always', subnet: '192.0.2.0/24', plainRoutes: [], blackholes: [`blackhole ${h1.block}`] });
    } finally {
      expect(await stopDaemon(d1)).toBe(0);
    }
    expect(await blackholes()).toBe('');
    expect(await lookupUnassigned()).toBe('RTNETLINK answers: Network is unreachable');
  });

  test('a reload deletes a dropped block and installs an added one', async () => {
    const live = editedConfig(topo, h1, 'own-blocks-live', (c) => {
      c.routes = { ...(c.routes ?? {}), own_blocks: [h1.block] };
    });
    const d1 = await startDaemon(topo, h1, live);
    const reload = async (): Promise<void> => {
      const r = await topo.exec(h1.ns, [process.execPath, IPIPD, 'reload', '--config', live]);
      expect(r.code, r.stderr + r.stdout).toBe(0);
    };
    try {
      expect(await blackholes()).toBe(`blackhole ${h1.block} proto 77`);
      const text = readFileSync(live, 'utf8');
      writeFileSync(live, text.replace(/own_blocks:\n\s+- \S+\n/, 'own_blocks: []\n'));
      expect(readFileSync(live, 'utf8')).toContain('own_blocks: []');
      await reload();
      expect(await blackholes()).toBe('');
      expect((await status(h1)).encap?.blackholes).toEqual([]);
      writeFileSync(live, text);
      await reload();
      expect(await blackholes()).toBe(`blackhole ${h1.block} proto 77`);
    } finally {
      expect(await stopDaemon(d1)).toBe(0);
    }
    expect(await blackholes()).toBe('');
  });

  test('SIGKILL leaves the blackhole; the next start removes it (crash recovery) and SIGTERM leaves nothing', async () => {
    const d1 = await startDaemon(topo, h1, config);
    d1.child.kill('SIGKILL');
    await d1.exited;
    expect(await blackholes()).toBe(`blackhole ${h1.block} proto 77`); // it outlives the TUN
    const again = await startDaemon(topo, h1, config);
    try {
      expect(again.log()).toMatch(new RegExp(`removed a route it left.*blackhole ${h1.block.replace(/\./g, '\\.')}|blackhole ${h1.block.replace(/\./g, '\\.')}.*removed a route it left`));
      expect(await blackholes()).toBe(`blackhole ${h1.block} proto 77`); // its own, installed again
      await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
    } finally {
      expect(await stopDaemon(again)).toBe(0);
    }
    expect(await blackholes()).toBe('');
  });
});
