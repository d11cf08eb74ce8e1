/**
 * For the fault tests (test/integration/faults*.test.ts): start `ipipd run` with a command line
 * or stderr of the test's choosing, wait for traffic to resume and time it, and collect the
 * recovery times measured into one table printed at the end of the file (docs/reliability.md,
 * "Faults", quotes it).
 */
import type { SpawnOptions } from 'node:child_process';
import { IPIPD, status, type RunningDaemon } from './daemons.js';
import { sleep } from '../../tools/netns/exec.js';
import type { HostInfo, PodInfo, Topology } from '../../tools/netns/topology.js';

/** One ping from `from` to `to` (one second to answer); true if it came back. */
export async function pingOnce(topo: Topology, from: PodInfo, to: PodInfo): Promise<boolean> {
  const r = await topo.exec(from.ns, ['ping', '-n', '-c', '1', '-W', '1', to.address], { timeoutMs: 5000 });
  return r.code === 0;
}

/** Ping every 100 ms until one answers; resolves with the milliseconds from `since` to that answer. */
export async function untilTraffic(topo: Topology, from: PodInfo, to: PodInfo, since: number, withinMs = 30_000): Promise<number> {
  for (;;) {
    if (await pingOnce(topo, from, to)) return Date.now() - since;
    if (Date.now() - since > withinMs) throw new Error(`no traffic ${from.name} -> ${to.name} within ${withinMs} ms`);
    await sleep(100);
  }
}

/**
 * `argv` run in the host's namespace as an ipipd daemon (`prefix`, e.g. capsh, then
 * `node bin/ipipd.js run --config FILE`); stderr collected unless `opts.stdio` says otherwise.
 * Waits until the control socket answers `up` or the process ends.
 */
export async function spawnDaemon(
  topo: Topology,
  host: HostInfo,
  config: string,
  opts: SpawnOptions & { prefix?: string[] } = {},
): Promise<RunningDaemon & { up: boolean }> {
  const { prefix = [], ...spawnOpts } = opts;
  const child = topo.spawn(host.ns, [...prefix, 'node', IPIPD, 'run', '--config', config], spawnOpts);
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  let code: number | null | undefined;
  const exited = new Promise<number | null>((res) => child.on('exit', (c, sig) => res((code = c ?? (sig ? -1 : null)))));
  for (let i = 0; i < 150 && code === undefined; i++) {
    try {
      if ((await status(host)).state === 'up') return { host, child, log: () => log, exited, up: true };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  if (code === undefined) child.kill('SIGKILL');
  return { host, child, log: () => log, exited, up: false };
}

/** `p`, or an error after `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Recovery times measured, by fault, printed as one table by `printFigures`. */
export const figures = new Map<string, string>();

export function printFigures(title: string): void {
  if (figures.size === 0) return;
  const rows = [...figures].map(([k, v]) => `| ${k} | ${v} |`);
  process.stdout.write(`\n${title}\n| fault | measured |\n|---|---|\n${rows.join('\n')}\n`);
}
