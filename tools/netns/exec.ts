/**
 * Running commands, in the root namespace or inside one (`inNs`), for the bench and the tests:
 * the one child-process runner they share. Every process started here is tracked by the safety
 * net (safety-net.ts), which SIGKILLs it if the run ends first. No side effects at import time.
 *
 * Flow of this file: `runCommand` (to completion, output collected, hard timeout) and its
 * shorthands `run` and `must`; `start` (in the background, output kept); `inNs`; `hasCommand`;
 * `sleep` and `waitFor`.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { trackChild } from './safety-net.js';

export interface RunOptions {
  /** SIGKILL after this long (default 30 s). */
  timeoutMs?: number;
  /** Written to stdin, which is then closed. */
  input?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Runs `cmd argv...` with a hard timeout (SIGKILL); never rejects, for a non-zero exit or a
 * spawn error (which lands in stderr). While it runs, the child is in `track` if given, else in
 * the safety net's own set.
 */
export function runCommand(cmd: string, argv: string[], opts: RunOptions = {}, track?: Set<ChildProcess>): Promise<RunResult> {
  return new Promise((resolveRun) => {
    const child = spawn(cmd, argv, { stdio: 'pipe', env: opts.env ?? process.env });
    trackChild(child, track);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.on('error', (e) => {
      stderr += `${e.message}\n`;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolveRun({ code, signal, stdout, stderr, timedOut });
    });
    child.stdin.on('error', () => {}); // EPIPE if it exits before reading
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs argv to completion and collects its output; never rejects for a non-zero exit. */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runCommand(argv[0], argv.slice(1), opts);
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
  trackChild(child);
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

/** argv inside namespace `ns`. `ip netns exec` execs argv, so a spawned child's pid is argv's. */
export function inNs(ns: string, argv: string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...argv];
}

/** Whether `cmd` is on the PATH. */
export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status === 0;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until `probe` resolves true, polling every `everyMs`; false on timeout. */
export async function waitFor(probe: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(everyMs);
  }
}
