/**
 * The cluster demo (`npm run demo -- --hosts 8 --bgp mesh`, `npm run demo:cluster`; scripts/demo.sh
 * runs this when given --hosts or --bgp): N hosts with one pod each, ipipd and BIRD on each as
 * Calico runs tunl0 and BIRD; every pod pings every other; host N+1 joins; one host withdraws its
 * block and announces it again; after each change the time until every host's kernel table and
 * ipipd agree is printed, and traffic is checked. Everything is removed at the end, on failure
 * and on Ctrl-C (the safety net of tools/netns).
 *
 * Flow of this file: options; main (the steps, in order); the printing helpers.
 */
import { existsSync } from 'node:fs';
import { Cluster, IPIPD_BIN } from './cluster.js';
import { failedPairs, pingPairs, podPairs, waitConverged } from './cluster-checks.js';
import { run } from './exec.js';
import { freshPrefix, listNamespaces } from './namespaces.js';
import type { BgpMode, Underlay } from './topology.js';

const USAGE = `Usage: npm run demo -- --hosts N --bgp mesh|rr [--underlay switch|router]
       npm run demo:cluster          (the same as --hosts 8 --bgp mesh)

N hosts (2..31) with one pod each, ipipd (routes.source: kernel) and BIRD on every host: a full
iBGP mesh, or one route reflector. Every pod pings every other; host N+1 joins; one host
withdraws its pod block and announces it again; after each change it prints how long until
every kernel table and every ipipd showed it, and checks traffic. Everything is removed at the
end. Needs root, bird2 (birdc), ping and a built tree (scripts/install-deps.sh, npm ci).

Options:
  --hosts N             hosts in the cluster at the start (default 8); one more joins
  --bgp mesh|rr         full mesh (default) or one route reflector (a namespace of its own on
                        the switch; the router itself on the router underlay)
  --underlay KIND       switch (default: one subnet, every peer through the tunnel) or router
                        (two subnets: Calico's cross-subnet mode, same-subnet peers by plain routes)
  -h, --help            this text`;

interface Options {
  hosts: number;
  bgp: BgpMode;
  underlay: Underlay;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { hosts: 8, bgp: 'mesh', underlay: 'switch' };
  for (let i = 0; i < argv.length; i++) {
    const [a, v] = [argv[i], argv[i + 1]];
    if (a === '-h' || a === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (a === '--hosts' && v !== undefined && /^\d+$/.test(v) && +v >= 2 && +v <= 31) o.hosts = +v;
    else if (a === '--bgp' && (v === 'mesh' || v === 'rr')) o.bgp = v;
    else if (a === '--underlay' && (v === 'switch' || v === 'router')) o.underlay = v;
    else {
      console.error(`demo: bad option ${a}${v === undefined ? '' : ` ${v}`}\n${USAGE}`);
      process.exit(2);
    }
    i++;
  }
  return o;
}

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const step = (s: string): void => console.log(`\n${color ? '\x1b[1m' : ''}== ${s}${color ? '\x1b[0m' : ''}`);
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

/** Pings every pair among the members; prints and returns how many answered. */
async function pingAll(c: Cluster, what: string): Promise<void> {
  const results = await pingPairs(podPairs(c.members));
  const ok = results.filter((r) => r.ok).length;
  console.log(`${what}: ${ok}/${results.length} pod pairs answered a ping`);
  if (ok !== results.length) throw new Error(`pairs that did not ping: ${failedPairs(results)}`);
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const times: [string, number][] = [];
  step(`1. topology: ${o.hosts + 1} hosts (h${o.hosts + 1} joins later), one pod each, underlay ${o.underlay}, BGP ${o.bgp === 'mesh' ? 'full mesh' : 'route reflector'}`);
  const c = await Cluster.up({ hosts: o.hosts + 1, members: o.hosts, bgp: o.bgp, underlay: o.underlay, prefix: freshPrefix('k') });
  try {
    console.log(`prefix ${c.topo.prefix}, files in ${c.topo.info.outDir}; ipip mode ${c.ipipMode}`);
    step(`2. ipipd (routes.source: kernel) and then BIRD on h1..h${o.hosts}`);
    const started = Date.now();
    times.push(['initial', await waitConverged(c, started)]);
    console.log(`every kernel table and every ipipd agree ${secs(times[0]![1])} after the last BIRD started; h1 has:`);
    const h1 = c.topo.host(1);
    console.log((await run(['ip', '-n', h1.ns, 'route', 'show', 'proto', 'bird'])).stdout.trimEnd());
    console.log((await run(['node', IPIPD_BIN, 'routes', '--socket', h1.socket])).stdout.trimEnd());

    step('3. every pod pings every other pod');
    await pingAll(c, `${o.hosts} hosts`);

    step(`4. h${o.hosts + 1} joins: its ipipd and BIRD start, then ${o.bgp === 'mesh' ? 'every BIRD' : 'the route reflector'} takes the new config (birdc configure)`);
    let t0 = Date.now();
    const { host, birdAt } = await c.join();
    const joined = await waitConverged(c, t0);
    times.push([`${host.name} joins (from its BIRD's start)`, joined - (birdAt - t0)]);
    console.log(`converged ${secs(joined)} after the join began (${secs(birdAt - t0)} of it starting ipipd and BIRD), ${secs(joined - (birdAt - t0))} after its BIRD started`);
    await pingAll(c, `${o.hosts + 1} hosts`);

    const w = c.topo.host(Math.min(3, o.hosts));
    step(`5. ${w.name} withdraws its block ${w.block} (birdc disable own_block)`);
    t0 = Date.now();
    await c.withdraw(w.name);
    times.push([`${w.name} withdraws`, await waitConverged(c, t0)]);
    console.log(`gone from every kernel table and ipipd in ${secs(times.at(-1)![1])}`);
    const pairs = podPairs(c.members);
    const touching = pairs.filter((p) => p.fromHost === w.name || p.toHost === w.name);
    const others = await pingPairs(pairs.filter((p) => !touching.includes(p)));
    const cut = await pingPairs(touching, 1);
    console.log(`${others.filter((r) => r.ok).length}/${others.length} pairs without ${w.name} answered; ${cut.filter((r) => !r.ok).length}/${cut.length} pairs with ${w.name} unreachable, as they should be`);
    if (failedPairs(others) !== 'none' || failedPairs(cut, false) !== 'none') throw new Error(`unexpected: ${failedPairs(others)} / ${failedPairs(cut, false)}`);

    step(`6. ${w.name} announces its block again (birdc enable own_block)`);
    t0 = Date.now();
    await c.announce(w.name);
    times.push([`${w.name} announces again`, await waitConverged(c, t0)]);
    console.log(`back in every kernel table and ipipd in ${secs(times.at(-1)![1])}`);
    await pingAll(c, `${o.hosts + 1} hosts`);

    step('7. convergence: from the change until every kernel table and every ipipd showed it');
    for (const [what, ms] of times) console.log(`  ${what.padEnd(36)} ${secs(ms)}`);
  } finally {
    step('8. stop ipipd and BIRD everywhere (by pid), delete the namespaces');
    const pids = c.birdPids;
    await c.down();
    const left = [...listNamespaces(c.topo.prefix), ...pids.filter((p) => existsSync(`/proc/${p}`)).map((p) => `BIRD pid ${p}`)];
    if (left.length > 0) throw new Error(`left behind: ${left.join(' ')}`);
    console.log(`stopped ${pids.length} BIRDs and ${c.members.length} ipipds, deleted the namespaces; nothing is left`);
  }
  step('done');
}

main().catch((e: unknown) => {
  console.error(`demo: failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
