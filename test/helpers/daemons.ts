/**
 * Start and stop real `ipipd run` processes inside a Topology's host namespaces, and read their
 * status over the control socket. Used by the integration tests.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { queryControl } from '../../src/daemon/control.js';
import type { StatusReport } from '../../src/daemon/daemon.js';
import { ROOT } from '../../tools/netns/namespaces.js';
import type { HostInfo, Topology } from '../../tools/netns/topology.js';

export { ROOT };
export const IPIPD = resolve(ROOT, 'bin', 'ipipd.js');

export interface RunningDaemon {
  host: HostInfo;
  child: ChildProcess;
  /** Everything the daemon wrote to stderr (its JSON log). */
  log(): string;
  /** Settles with the exit code when the process ends. */
  exited: Promise<number | null>;
}

/**
 * Write a copy of a host's generated config, changed by `edit` on the parsed YAML, as
 * `<outDir>/<host>-<name>.yaml`, and return its path. The generated file itself is not touched.
 */
// The parsed YAML is untyped on purpose: tests write what the schema must then accept or refuse.
export function editedConfig(topo: Topology, host: HostInfo, name: string, edit: (cfg: any) => void): string {
  const cfg = parse(readFileSync(host.config, 'utf8'));
  edit(cfg);
  const file = join(topo.info.outDir, `${host.name}-${name}.yaml`);
  writeFileSync(file, stringify(cfg));
  return file;
}

export async function status(host: HostInfo): Promise<StatusReport> {
  return JSON.parse(await queryControl(host.socket)) as StatusReport;
}

/** Start ipipd on a host and wait until its control socket answers (or it dies). */
export async function startDaemon(topo: Topology, host: HostInfo, config = host.config): Promise<RunningDaemon> {
  const child = topo.spawn(host.ns, ['node', IPIPD, 'run', '--config', config]);
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  let code: number | null | undefined;
  const exited = new Promise<number | null>((res) => child.on('exit', (c) => res((code = c))));
  for (let i = 0; i < 150; i++) {
    if (code !== undefined) throw new Error(`ipipd on ${host.name} exited with ${code} during start-up:\n${log}`);
    try {
      const s = await status(host);
      if (s.state === 'up') return { host, child, log: () => log, exited };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`ipipd on ${host.name} did not come up:\n${log}`);
}

/** SIGTERM and wait for a clean exit; returns the exit code. */
export async function stopDaemon(d: RunningDaemon): Promise<number | null> {
  d.child.kill('SIGTERM');
  const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 15_000).unref());
  const r = await Promise.race([d.exited, timeout]);
  if (r === 'timeout') {
    d.child.kill('SIGKILL');
    throw new Error(`ipipd on ${d.host.name} did not exit within 15 s of SIGTERM:\n${d.log()}`);
  }
  return r;
}
