/**
 * The bench's hold on the system: every process it starts, every topology it builds, every file
 * it leaves in /var/run, and the one place that undoes them all.
 *
 * Flow of this file: the cleanup registry and its safety net (synchronous, for 'exit' and
 * signals); running a command to completion (`run`) or in the background (`start`), always
 * tracked; `Topology`, a thin wrapper around `scripts/netns-setup.sh` (up, down) that reads the
 * topology.json the script writes.
 *
 * Rules kept here (the bench's hard network rules): namespaces are only ever made by
 * netns-setup.sh under this run's prefix, and every exit path (normal return, thrown error,
 * SIGINT/SIGTERM/SIGHUP, process 'exit') kills what was started and runs `down` for every
 * topology still up.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type RunOptions, type RunResult, runCommand } from './exec.js';

/** The repository root (this file runs as dist/bench/harness.js). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const SETUP_SCRIPT = join(ROOT, 'scripts', 'netns-setup.sh');

// ---------------------------------------------------------------------------------------------
// Cleanup registry and safety net

const children = new Set<ChildProcess>();
const liveTopologies = new Set<Topology>();
const extraCleanups = new Set<() => void>();
let netInstalled = false;
let onSignalHook: (sig: NodeJS.Signals) => void = () => {};

/** Everything still alive is killed and torn down, synchronously. Safe to call twice. */
export function cleanupSync(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  children.clear();
  for (const t of liveTopologies) t.downSync();
  for (const f of extraCleanups) {
    try {
      f();
    } catch {
      // best effort: the next one still runs
    }
  }
  extraCleanups.clear();
}

/**
 * Installs the 'exit' and signal handlers (once). `onSignal` runs first on a signal (e.g. to
 * clear the progress line and say what is happening); the process then exits 128 + signo.
 */
export function installSafetyNet(onSignal: (sig: NodeJS.Signals) => void = () => {}): void {
  onSignalHook = onSignal;
  if (netInstalled) return;
  netInstalled = true;
  process.on('exit', cleanupSync);
  const codes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
  for (const sig of Object.keys(codes) as Array<keyof typeof codes>) {
    process.on(sig, () => {
      onSignalHook(sig);
      cleanupSync();
      process.exit(codes[sig]);
    });
  }
}

/** Registers a synchronous cleanup step; returns the function that unregisters it. */
export function onCleanup(f: () => void): () => void {
  extraCleanups.add(f);
  return () => extraCleanups.delete(f);
}

// ---------------------------------------------------------------------------------------------
// Processes

export type { RunOptions, RunResult };

/** Runs argv to completion and collects its output; never rejects for a non-zero exit. */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runCommand(argv[0], argv.slice(1), opts, children);
}

/** Like run(), but throws with the command's stderr unless it exits 0. */
export async function must(argv: string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(argv, opts);
  if (r.code !== 0) {
    const why = r.timedOut ? 'timed out' : `exit ${r.code ?? r.signal}`;
    throw new Error(`${argv.join(' ')}: ${why}: ${(r.stderr || r.stdout).trim().slice(-2000)}`);
  }
  return r.stdout;
}

/** argv inside namespace `ns`. `ip netns exec` execs argv, so a spawned child's pid is argv's. */
export function inNs(ns: string, argv: string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...argv];
}

/** A long-running tracked process; its output is kept (the last 64 KiB). */
export interface Background {
  child: ChildProcess;
  pid: number;
  output(): string;
  /** Settles when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, SIGKILL after `graceMs`; resolves with how it ended. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }>;
}

export function start(argv: string[], env?: NodeJS.ProcessEnv): Background {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  track(child);
  let out = '';
  const keep = (d: string): void => {
    out += d;
    if (out.length > 65536) out = out.slice(-65536);
  };
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  child.on('error', (e) => keep(`${e.message}\n`));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('close', (code, signal) => r({ code, signal })),
  );
  return {
    child,
    pid: child.pid ?? -1,
    output: () => out,
    exited,
    stop: async (graceMs = 10_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return { ...(await exited), killed: false };
      child.kill('SIGTERM');
      let killed = false;
      const timer = setTimeout(() => {
        killed = true;
        child.kill('SIGKILL');
      }, graceMs);
      const r = await exited;
      clearTimeout(timer);
      return { ...r, killed };
    },
  };
}

function track(child: ChildProcess): void {
  children.add(child);
  child.on('close', () => children.delete(child));
  child.on('error', () => children.delete(child));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Topology (the subset of netns-setup.sh's topology.json the bench reads)

export interface PodInfo {
  name: string;
  ns: string;
  address: string;
}

export interface HostInfo {
  name: string;
  ns: string;
  /** ul0's address. */
  underlay: string;
  /** The host's pod block, e.g. "198.51.100.0/25". */
  block: string;
  /** Generated ipipd config and its control socket. */
  config: string;
  socket: string;
  pods: PodInfo[];
}

export interface TopologyOptions {
  underlayMtu: number;
  podMtu: number;
}

/** One netns-setup.sh topology: two hosts with one pod each, direct veth underlay. */
export class Topology {
  private isDown = false;

  private constructor(
    readonly prefix: string,
    readonly outDir: string,
    readonly hosts: [HostInfo, HostInfo],
    readonly options: TopologyOptions,
  ) {}

  /** Builds P-h1, P-h1p1, P-h2, P-h2p1; rejects (leaving nothing) if the script fails. */
  static async up(prefix: string, opts: TopologyOptions): Promise<Topology> {
    const outDir = mkdtempSync(join(tmpdir(), `ipipd-bench-${prefix}-`));
    // Registered before the script runs: a signal during "up" still tears down.
    const placeholder = new Topology(prefix, outDir, [] as unknown as [HostInfo, HostInfo], opts);
    liveTopologies.add(placeholder);
    const args = ['up', '--prefix', prefix, '--hosts', '2', '--pods', '1', '--underlay', 'direct'];
    args.push('--underlay-mtu', String(opts.underlayMtu), '--pod-mtu', String(opts.podMtu), '--out', outDir);
    const r = await run(['bash', SETUP_SCRIPT, ...args], { timeoutMs: 60_000 });
    liveTopologies.delete(placeholder);
    if (r.code !== 0) {
      placeholder.downSync();
      throw new Error(`netns-setup.sh ${args.join(' ')} failed (${r.code ?? r.signal}):\n${r.stderr.trim()}`);
    }
    const info = JSON.parse(readFileSync(join(outDir, 'topology.json'), 'utf8')) as { hosts: HostInfo[] };
    const topo = new Topology(prefix, outDir, [info.hosts[0], info.hosts[1]], opts);
    liveTopologies.add(topo);
    return topo;
  }

  /** Pod A (client side) and pod B (server side). */
  get podA(): PodInfo {
    return this.hosts[0].pods[0];
  }
  get podB(): PodInfo {
    return this.hosts[1].pods[0];
  }

  /** Runs `down` (which also kills anything left inside the namespaces) and checks none is left. */
  async down(): Promise<void> {
    if (this.isDown) return;
    this.isDown = true;
    const r = await run(['bash', SETUP_SCRIPT, 'down', '--prefix', this.prefix, '--out', this.outDir], {
      timeoutMs: 60_000,
    });
    liveTopologies.delete(this);
    rmSync(this.outDir, { recursive: true, force: true });
    const left = listNamespaces(this.prefix);
    if (r.code !== 0 || left.length > 0) {
      throw new Error(`netns-setup.sh down --prefix ${this.prefix} failed (${r.code}): ${r.stderr.trim()} left: ${left.join(' ')}`);
    }
  }

  /** Last-resort teardown for exit and signal handlers. */
  downSync(): void {
    liveTopologies.delete(this);
    this.isDown = true;
    spawnSync('bash', [SETUP_SCRIPT, 'down', '--prefix', this.prefix], { stdio: 'ignore', timeout: 30_000 });
    rmSync(this.outDir, { recursive: true, force: true });
  }
}

/** Namespaces named "<prefix>-...". */
export function listNamespaces(prefix: string): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return (r.stdout ?? '')
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n && n.startsWith(`${prefix}-`));
}

/** Waits until `probe` resolves true, polling every `everyMs`; false on timeout. */
export async function waitFor(probe: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(everyMs);
  }
}

/** Whether `cmd` is on the PATH. */
export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status === 0;
}
