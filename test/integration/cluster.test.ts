/**
 * A cluster as Calico builds one, with ipipd where tunl0 is: BIRD on every host speaks BGP and
 * puts the other hosts' blocks into the kernel as "<block> via <host> dev ipip0 onlink", and
 * ipipd (routes.source: kernel) learns its peers from those routes (README, "A cluster with
 * BIRD"). Topologies from scripts/netns-setup.sh --bgp with a per-run prefix, torn down on every
 * exit path:
 *
 *   P-h1 .. P-h9 (ipipd + BIRD each, one pod each) --ul0-- P-sw br0 [-- P-rr 192.0.2.250, BIRD as route reflector]
 *   router: P-h1 P-h2 on 192.0.2.0/25 --a0 [P-r] b0-- P-h3 P-h4 on 192.0.2.128/25 (cross-subnet)
 *
 * Behaviour only: every pair of pods pings, with a full mesh and with a route reflector; a host
 * joining and a block withdrawn (and announced again) converge, with traffic checked before and
 * after each change. The convergence times are logged, never asserted.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BGP_SCRIPT, Cluster } from '../../tools/netns/cluster.js';
import { expectedView, failedPairs, observedView, pingPairs, podPairs, waitConverged } from '../../tools/netns/cluster-checks.js';
import { ROOT, listNamespaces } from '../../tools/netns/namespaces.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';

const why = integrationSkip('[cluster.test]') ?? skipWithout('bird', 'birdc', 'ping');

/** True if `pid` runs (a zombie counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Every pair of pods among the members pings (up to 3 tries each). */
async function expectAllPairs(c: Cluster, what: string): Promise<void> {
  const results = await pingPairs(podPairs(c.members));
  expect(failedPairs(results), `${what}: pairs that did not ping`).toBe('none');
}

/** Tears the cluster down and checks nothing is left: namespaces, BIRDs. */
async function downAndCheck(c: Cluster): Promise<void> {
  const pids = c.birdPids;
  await c.down();
  expect(listNamespaces(c.topo.prefix)).toEqual([]);
  expect(pids.filter(alive)).toEqual([]);
}

describe.skipIf(why !== null)('cluster with BIRD', () => {
  describe('full mesh: 8 hosts, a 9th joins, a block withdrawn and announced again', () => {
    let c: Cluster;
    beforeAll(async () => {
      c = await Cluster.up({ hosts: 9, members: 8, bgp: 'mesh' });
      console.log(`[cluster.test] mesh of 8 converged ${await waitConverged(c)} ms after the last BIRD started`);
    }, 120_000);
    afterAll(async () => {
      if (c) await downAndCheck(c);
    }, 60_000);

    test('routes as Calico makes them: blackhole for its own block, the others via the TUN, onlink; ipipd learned them', async () => {
      const h1 = c.topo.host(1);
      const got = await observedView(c, h1);
      expect(got).toEqual(expectedView(c, h1));
      expect(got.kernel).toContain('blackhole 198.51.100.0/28');
      expect(got.kernel).toContain('198.51.100.16/28 via 192.0.2.2 dev ipip0 onlink');
      expect(got.ipipd).toHaveLength(7);
    });

    test('every pod pings every other pod (56 pairs)', async () => {
      await expectAllPairs(c, 'mesh of 8');
    });

    test('a 9th host joins: its BIRD and ipipd start, the others reconfigure, nothing restarts', async () => {
      const before = c.birdPids;
      const t0 = Date.now();
      const { host: h9, birdAt } = await c.join();
      const ms = await waitConverged(c, t0);
      console.log(`[cluster.test] mesh: h9 joined, converged ${ms} ms after the join began, ${ms - (birdAt - t0)} ms after its BIRD started`);
      expect(c.birdPids.slice(0, 8)).toEqual(before);
      expect(before.every(alive)).toBe(true);
      expect((await observedView(c, c.topo.host(1))).ipipd).toContain(`${h9.block} -> ${h9.underlay}`);
      await expectAllPairs(c, 'mesh of 9');
    });

    test('h3 withdraws its block: nobody routes to it, the rest still ping; announced again, all ping', async () => {
      const t0 = Date.now();
      await c.withdraw('h3');
      console.log(`[cluster.test] mesh: h3's block withdrawn, converged in ${await waitConverged(c, t0)} ms`);
      const pairs = podPairs(c.members);
      const touching = pairs.filter((p) => p.fromHost === 'h3' || p.toHost === 'h3');
      const rest = pairs.filter((p) => !touching.includes(p));
      expect(failedPairs(await pingPairs(rest)), 'pairs without h3 that did not ping').toBe('none');
      // One try each: these must fail, and a retry would only make the test slower.
      expect(failedPairs(await pingPairs(touching, 1), false), 'pairs with h3 that still pinged').toBe('none');

      const t1 = Date.now();
      await c.announce('h3');
      console.log(`[cluster.test] mesh: h3's block announced again, converged in ${await waitConverged(c, t1)} ms`);
      await expectAllPairs(c, 'mesh of 9 after h3 announced again');
    });
  });

  describe('route reflector: 8 hosts, a 9th joins', () => {
    let c: Cluster;
    beforeAll(async () => {
      c = await Cluster.up({ hosts: 9, members: 8, bgp: 'rr' });
      console.log(`[cluster.test] 8 hosts with a route reflector converged ${await waitConverged(c)} ms after the last BIRD started`);
    }, 120_000);
    afterAll(async () => {
      if (c) await downAndCheck(c);
    }, 60_000);

    test('every pod pings every other pod (56 pairs); the next hop is the host, not the reflector', async () => {
      expect((await observedView(c, c.topo.host(2))).kernel).toContain('198.51.100.0/28 via 192.0.2.1 dev ipip0 onlink');
      await expectAllPairs(c, 'rr, 8 hosts');
    });

    test('a 9th host joins: only the reflector reconfigures', async () => {
      const t0 = Date.now();
      const { birdAt } = await c.join();
      const ms = await waitConverged(c, t0);
      console.log(`[cluster.test] rr: h9 joined, converged ${ms} ms after the join began, ${ms - (birdAt - t0)} ms after its BIRD started`);
      await expectAllPairs(c, 'rr, 9 hosts');
    });
  });

  test('netns-setup.sh refuses bad --bgp requests before touching anything (exit 2)', () => {
    const setup = (args: string[]): ReturnType<typeof spawnSync> =>
      spawnSync('bash', [join(ROOT, 'scripts', 'netns-setup.sh'), 'up', '--prefix', 'xbgpbad', ...args], { encoding: 'utf8' });
    const cases: [string[], RegExp][] = [
      [['--bgp', 'ospf'], /--bgp must be mesh or rr/],
      [['--bgp', 'rr', '--underlay', 'direct'], /--bgp rr needs --underlay switch or router/],
      [['--bgp-members', '2'], /need --bgp/],
      [['--hosts', '3', '--bgp', 'mesh', '--bgp-members', '4'], /--bgp-members must be 2\.\.3/],
      [['--bgp', 'mesh', '--ipip-mode', 'sometimes'], /--ipip-mode must be always or cross-subnet/],
    ];
    for (const [args, message] of cases) {
      const r = setup(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(String(r.stderr)).toMatch(message);
    }
    expect(listNamespaces('xbgpbad')).toEqual([]);
  });

  test('the cluster demo (scripts/demo.sh --hosts 3 --bgp rr) into a pipe: succeeds, prints the convergence times, no escapes', () => {
    const r = spawnSync('bash', [join(ROOT, 'scripts', 'demo.sh'), '--hosts', '3', '--bgp', 'rr'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/3 hosts: 6\/6 pod pairs answered a ping/);
    expect(r.stdout).toMatch(/4 hosts: 12\/12 pod pairs answered a ping/);
    expect(r.stdout).toMatch(/h3 withdraws +\d+\.\d\d s/);
    expect(r.stdout).toMatch(/nothing is left\n[\s\S]*== done/);
    expect(r.stdout + r.stderr).not.toMatch(/\x1b/);
  }, 130_000);

  test('cross-subnet (router underlay, 4 hosts, mesh): same-subnet blocks by a plain route, the others through ipipd', async () => {
    const c = await Cluster.up({ hosts: 4, bgp: 'mesh', underlay: 'router' });
    try {
      expect(c.ipipMode).toBe('cross-subnet');
      await waitConverged(c);
      const [h1, h2, h3] = [c.topo.host(1), c.topo.host(2), c.topo.host(3)];
      const v1 = await observedView(c, h1);
      expect(v1.kernel).toContain(`${h2.block} via ${h2.underlay} dev ul0`);
      expect(v1.kernel).toContain(`${h3.block} via ${h3.underlay} dev ipip0 onlink`);
      expect(v1.ipipd).toEqual([`${c.topo.host(3).block} -> ${h3.underlay}`, `${c.topo.host(4).block} -> ${c.topo.host(4).underlay}`].sort());
      await expectAllPairs(c, 'cross-subnet');
      // Traffic to h3 went through ipipd; to h2 it did not (h2 is no peer of h1's ipipd at all).
      const r1 = await c.ipipdRoutes(h1);
      expect(r1.find((r) => r.prefix === h3.block)?.txPackets).toBeGreaterThan(0);
      expect(r1.find((r) => r.prefix === h2.block)).toBeUndefined();
    } finally {
      await downAndCheck(c);
    }
  }, 120_000);
});

describe('examples/bird', () => {
  // The example files are exactly what scripts/netns-bgp.sh renders from the templates for a
  // 3-host cluster on a switch (h1 of a full mesh; the route reflector), so the README can cite them.
  const env = (bgp: string): string =>
    [
      'HOSTS=3',
      'POOLS="198.51.100.0/24 203.0.113.0/24"',
      'OUT_DIR=/var/log/bird',
      `BGP=${bgp}`,
      'IPIP_MODE=always',
      'RR_ADDRESS=192.0.2.250',
      'RR_DEVS="ul0"',
      ...[1, 2, 3].flatMap((i) => [`H${i}_UNDERLAY=192.0.2.${i}`, `H${i}_UNDERLAY_DEV=ul0`, `H${i}_UNDERLAY_SUBNET=192.0.2.0/24`]),
      'H1_BLOCK=198.51.100.0/25',
      'H2_BLOCK=203.0.113.0/25',
      'H3_BLOCK=198.51.100.128/25',
    ].join('\n');

  test.each([
    ['mesh', 'h1.bird.conf', 'host.conf'],
    ['rr', 'rr.bird.conf', 'rr.conf'],
  ])('--bgp %s: %s is examples/bird/%s', (bgp, rendered, example) => {
    const dir = mkdtempSync(join(tmpdir(), 'ipipd-bird-'));
    try {
      writeFileSync(join(dir, 'topology.env'), `${env(bgp)}\n`);
      const r = spawnSync('bash', [BGP_SCRIPT, 'render', '--out', dir], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(join(dir, rendered));
      expect(readFileSync(join(dir, rendered), 'utf8')).toBe(readFileSync(join(ROOT, 'examples', 'bird', example), 'utf8'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test.skipIf(skipWithout('bird'))('BIRD parses both examples (bird -p)', () => {
    for (const f of ['host.conf', 'rr.conf']) {
      const r = spawnSync('bird', ['-p', '-c', join(ROOT, 'examples', 'bird', f)], { encoding: 'utf8' });
      expect(r.status, `${f}: ${r.stderr}`).toBe(0);
    }
  });

  test('render refuses a directory without a --bgp topology, and a bad --members', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ipipd-bird-'));
    try {
      expect(spawnSync('bash', [BGP_SCRIPT, 'render', '--out', dir], { encoding: 'utf8' }).status).toBe(2);
      writeFileSync(join(dir, 'topology.env'), `${env('mesh')}\n`);
      const r = spawnSync('bash', [BGP_SCRIPT, 'render', '--out', dir, '--members', '4'], { encoding: 'utf8' });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/--members must be 1\.\.3/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
