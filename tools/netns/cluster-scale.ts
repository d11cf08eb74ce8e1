/**
 * What one node of an N-node cluster costs ipipd (README, "A cluster with BIRD": a 1 000-node
 * deployment): one ipipd with `routes.source: kernel` on a host of a 2-host topology, given the
 * routes BIRD would install on such a node, N - 1 blocks (/26, Calico's default block size) each
 * `via` its own node address `dev ipip0 onlink`, so N - 1 peers. Measured, in order:
 *   1. all of them added at once (`ip -batch`, as when BIRD starts on a node of a running
 *      cluster): time until ipipd's status shows every one, ipipd's own apply time (its log),
 *      resident memory before and after;
 *   2. one more node's route (a node joins): time until it shows, and the apply;
 *   3. a reload with the routes learned (what `ipipd reload` asks on the control socket; the
 *      file is unchanged): the time until it answers;
 *   4. all deleted at once: time until no peer is left.
 * The blocks are in 10.0.0.0/10, the node addresses in 10.192.0.0/10, inside the namespace only
 * (the documentation ranges hold too few); no packet is sent to them.
 *
 *   node dist/tools/netns/cluster-scale.js [--nodes 1000]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parse, stringify } from 'yaml';
import { queryControl } from '../../src/daemon/control.js';
import { startIpipd } from './cluster.js';
import { must, waitFor } from './exec.js';
import { Topology } from './topology.js';

const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
/** The daemon's own apply times (ms) from its log, in order. */
const applyTimes = (log: string): number[] => [...log.matchAll(/"ms":(\d+)[^\n]*"msg":"applied"/g)].map((m) => Number(m[1]));

/** Node n's block (a /26 in 10.0.0.0/10) and address (in 10.192.0.0/10). */
const block = (n: number): string => `10.${n >> 10}.${(n >> 2) & 255}.${(n & 3) * 64}/26`;
const nodeAddr = (n: number): string => `10.${192 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
const route = (n: number): string => `${block(n)} via ${nodeAddr(n)} dev ipip0 onlink`;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { nodes: { type: 'string', default: '1000' } } });
  const nodes = Number(values.nodes);
  if (!Number.isInteger(nodes) || nodes < 2 || nodes > 60_000) throw new Error('--nodes must be 2..60000');
  const topo = await Topology.up({ hosts: 2, bgp: 'mesh' });
  try {
    const h1 = topo.host(1);
    const cfg = parse(readFileSync(h1.config, 'utf8'));
    cfg.underlay.allowed_endpoints = ['10.192.0.0/10'];
    cfg.log = { level: 'info', stats_interval: 0 };
    const file = join(topo.info.outDir, 'h1-scale.yaml');
    writeFileSync(file, stringify(cfg));
    const d = await startIpipd(topo, h1, file);
    const pid = d.child.pid!;
    const peers = async (): Promise<number> => (JSON.parse(await queryControl(h1.socket, { cmd: 'status' }, 30_000)) as { peers: unknown[] }).peers.length;
    const ipBatch = async (verb: string, ns: number[]): Promise<void> => {
      const f = join(topo.info.outDir, `scale-${verb}.batch`);
      writeFileSync(f, ns.map((n) => `route ${verb} ${route(n)}`).join('\n') + '\n');
      await must(['ip', '-n', h1.ns, '-batch', f], { timeoutMs: 60_000 });
    };
    const timed = async (what: () => Promise<void>, done: () => Promise<boolean>): Promise<number> => {
      const t0 = performance.now();
      await what();
      if (!(await waitFor(done, 120_000, 20))) throw new Error('not applied within 120 s');
      return Math.round(performance.now() - t0);
    };
    const others = Array.from({ length: nodes - 1 }, (_, n) => n);
    const rss0 = rssMiB(pid);
    const addMs = await timed(() => ipBatch('add', others), async () => (await peers()) === nodes - 1);
    const applyAdd = applyTimes(d.log());
    const rss1 = rssMiB(pid);
    const joinMs = await timed(() => ipBatch('add', [nodes - 1]), async () => (await peers()) === nodes);
    const applyJoin = applyTimes(d.log()).slice(applyAdd.length);
    const t0 = performance.now();
    await queryControl(h1.socket, { cmd: 'reload' }, 60_000); // what `ipipd reload` asks, without its Node start-up
    const reloadMs = Math.round(performance.now() - t0);
    const delMs = await timed(() => ipBatch('del', [...others, nodes - 1]), async () => (await peers()) === 0);
    const result = {
      nodes,
      routes: nodes - 1,
      untilLearnedMs: addMs,
      appliesForAdd: applyAdd.length,
      applyMsTotal: applyAdd.reduce((a, b) => a + b, 0),
      rssBeforeMiB: +rss0.toFixed(1),
      rssAfterMiB: +rss1.toFixed(1),
      kibPerRoute: +(((rss1 - rss0) * 1024) / (nodes - 1)).toFixed(2),
      joinUntilLearnedMs: joinMs,
      joinApplyMs: applyJoin.reduce((a, b) => a + b, 0),
      reloadMs,
      untilRemovedMs: delMs,
    };
    process.stdout.write(`ipipd on one node of a ${nodes}-node cluster (routes.source: kernel): ${JSON.stringify(result)}\n`);
  } finally {
    await topo.down();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`cluster-scale: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
