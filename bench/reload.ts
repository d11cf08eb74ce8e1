/**
 * `npm run bench:reload`: what live changes cost (docs/performance.md, "Live changes"), with a
 * real daemon in a namespace topology from tools/netns (torn down on every exit path):
 *   1. a reload from 1 peer to 100 peers x 1000 prefixes (100 000 prefixes; `routes.install:
 *      false`, so the figure is ipipd's own work, not the kernel's), and back;
 *   2. 10 000 routes `via <gateway> dev ipip0 onlink` added with one `ip -batch` under
 *      `routes.source: kernel`, and deleted again.
 * Each: the wall time until the daemon reports it applied (the reload's answer; for kernel
 * routes, the status showing every prefix), the daemon's own apply time (its log line), the
 * number of applies, and the daemon's resident memory before and after. The 100 000 prefixes are
 * /26s (the routes /24s) in 10.0.0.0/8 (the documentation ranges hold too few); no packet is sent to them.
 *
 *   node dist/bench/reload.js [--queues 1|2] [--json]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parse, stringify } from 'yaml';
import { queryControl } from '../src/daemon/control.js';
import type { StatusReport } from '../src/daemon/status.js';
import { sleep } from '../tools/netns/exec.js';
import { ROOT } from '../tools/netns/namespaces.js';
import { Topology, type HostInfo } from '../tools/netns/topology.js';

const IPIPD = resolve(ROOT, 'bin', 'ipipd.js');

interface Daemon {
  pid: number;
  log: () => string;
  stop: () => Promise<void>;
}

async function startDaemon(topo: Topology, h: HostInfo, config: string): Promise<Daemon> {
  const child = topo.spawn(h.ns, ['node', IPIPD, 'run', '--config', config]);
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  for (let i = 0; i < 200; i++) {
    try {
      if ((JSON.parse(await queryControl(h.socket)) as StatusReport).state === 'up') break;
    } catch {
      // not yet
    }
    if (child.exitCode !== null) throw new Error(`ipipd exited: ${log}`);
    await sleep(100);
  }
  return {
    pid: child.pid!,
    log: () => log,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const status = async (h: HostInfo): Promise<StatusReport> => JSON.parse(await queryControl(h.socket, { cmd: 'status' }, 30_000)) as StatusReport;
/** The daemon's own apply times (ms) from its log, in order. */
const applyTimes = (log: string): number[] => [...log.matchAll(/"ms":(\d+)[^\n]*"msg":"applied"/g)].map((m) => Number(m[1]));

function bigPeers(h2: HostInfo): unknown[] {
  const peers: unknown[] = [{ name: 'h2', endpoint: h2.underlay, prefixes: [h2.block] }];
  for (let p = 0; p < 100; p++) {
    const prefixes: string[] = [];
    for (let q = 0; q < 1000; q++) {
      const n = p * 1000 + q;
      prefixes.push(`10.${n >> 10}.${(n >> 2) & 255}.${(n & 3) * 64}/26`);
    }
    peers.push({ name: `p${p}`, endpoint: `192.0.2.${100 + p}`, prefixes });
  }
  return peers;
}

async function reloadBench(topo: Topology, queues: number): Promise<Record<string, number>> {
  const [h1, h2] = [topo.host(1), topo.host(2)];
  const base = parse(readFileSync(h1.config, 'utf8'));
  base.io = { queues };
  base.routes = { install: false };
  base.log = { level: 'info', stats_interval: 0 };
  const file = join(topo.info.outDir, 'h1-bench-reload.yaml');
  writeFileSync(file, stringify(base));
  const d = await startDaemon(topo, h1, file);
  try {
    const rss0 = rssMiB(d.pid);
    writeFileSync(file, stringify({ ...base, peers: bigPeers(h2) }));
    let t0 = performance.now();
    const up = await topo.exec(h1.ns, [process.execPath, IPIPD, 'reload', '--socket', h1.socket, '--json'], { timeoutMs: 120_000 });
    const upMs = performance.now() - t0;
    if (up.code !== 0) throw new Error(`reload: ${up.stderr}`);
    const rss1 = rssMiB(d.pid);
    const prefixes = (await status(h1)).peers.reduce((n, p) => n + p.prefixes.length, 0);
    writeFileSync(file, stringify(base));
    t0 = performance.now();
    const down = await topo.exec(h1.ns, [process.execPath, IPIPD, 'reload', '--socket', h1.socket], { timeoutMs: 120_000 });
    const downMs = performance.now() - t0;
    if (down.code !== 0) throw new Error(`reload back: ${down.stderr}`);
    const [applyUp, applyDown] = applyTimes(d.log());
    return { queues, prefixes, reloadUpMs: Math.round(upMs), applyUpMs: applyUp ?? -1, reloadDownMs: Math.round(downMs), applyDownMs: applyDown ?? -1, rssBeforeMiB: Math.round(rss0), rssAfterMiB: Math.round(rss1), rssAfterBackMiB: Math.round(rssMiB(d.pid)) };
  } finally {
    await d.stop();
  }
}

async function kernelBench(topo: Topology, queues: number): Promise<Record<string, number>> {
  const [h1] = [topo.host(1)];
  const cfg = parse(readFileSync(h1.config, 'utf8'));
  delete cfg.peers;
  cfg.io = { queues };
  cfg.routes = { source: 'kernel' };
  cfg.underlay.allowed_endpoints = ['192.0.2.0/24'];
  cfg.log = { level: 'info', stats_interval: 0 };
  const file = join(topo.info.outDir, 'h1-bench-kernel.yaml');
  writeFileSync(file, stringify(cfg));
  const d = await startDaemon(topo, h1, file);
  const routes = Array.from({ length: 10_000 }, (_, n) => `10.${n >> 8}.${n & 255}.0/24 via 192.0.2.${100 + (n % 100)} dev ipip0 onlink`);
  const batch = (verb: string): string => {
    const f = join(topo.info.outDir, `routes-${verb}.batch`);
    writeFileSync(f, routes.map((r) => `route ${verb} ${r}`).join('\n') + '\n');
    return f;
  };
  const until = async (ok: (s: StatusReport) => boolean): Promise<void> => {
    for (let i = 0; i < 600 && !ok(await status(h1)); i++) await sleep(50);
  };
  try {
    const rss0 = rssMiB(d.pid);
    let t0 = performance.now();
    const add = await topo.exec(h1.ns, ['ip', '-batch', batch('add')], { timeoutMs: 60_000 });
    const ipMs = performance.now() - t0;
    if (add.code !== 0) throw new Error(`ip -batch add: ${add.stderr}`);
    await until((s) => s.peers.reduce((n, p) => n + p.prefixes.length, 0) === 10_000);
    const addMs = performance.now() - t0;
    const rss1 = rssMiB(d.pid);
    const appliesAdd = applyTimes(d.log());
    t0 = performance.now();
    const del = await topo.exec(h1.ns, ['ip', '-batch', batch('del')], { timeoutMs: 60_000 });
    if (del.code !== 0) throw new Error(`ip -batch del: ${del.stderr}`);
    await until((s) => s.peers.length === 0);
    const delMs = performance.now() - t0;
    const applies = applyTimes(d.log());
    const s = await status(h1);
    return {
      queues,
      routes: 10_000,
      ipBatchMs: Math.round(ipMs),
      untilAppliedMs: Math.round(addMs),
      appliesForAdd: appliesAdd.length,
      applyMsTotal: appliesAdd.reduce((a, b) => a + b, 0),
      untilRemovedMs: Math.round(delMs),
      appliesForDel: applies.length - appliesAdd.length,
      watchErrors: s.live?.kernelRoutes?.errors ?? -1,
      dumps: s.live?.kernelRoutes?.dumps ?? -1,
      rssBeforeMiB: Math.round(rss0),
      rssAfterMiB: Math.round(rss1),
    };
  } finally {
    await d.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { queues: { type: 'string', default: '1' }, json: { type: 'boolean', default: false } } });
  const queues = Number(values.queues);
  const topo = await Topology.up({ hosts: 2 });
  try {
    const reload = await reloadBench(topo, queues);
    const kernel = await kernelBench(topo, queues);
    if (values.json) process.stdout.write(JSON.stringify({ reload, kernel }) + '\n');
    else {
      process.stdout.write(`reload to 100 000 prefixes (io.queues ${queues}): ${JSON.stringify(reload)}\n`);
      process.stdout.write(`10 000 kernel routes at once (io.queues ${queues}): ${JSON.stringify(kernel)}\n`);
    }
  } finally {
    await topo.down();
  }
}

main().catch((err) => {
  process.stderr.write(`bench:reload: ${err instanceof Error ? (err.stack ?? err.message) : err}\n`);
  process.exit(1);
});
