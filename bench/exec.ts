/**
 * Run a command to completion and collect its output: the one child-process runner shared by
 * the bench (bench/harness.ts) and the tests' topology helper (test/helpers/topology.ts). No
 * side effects at import time.
 */
import { type ChildProcess, spawn } from 'node:child_process';

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
 * spawn error (which lands in stderr). While it runs, the child is in `track` if given.
 */
export function runCommand(cmd: string, argv: string[], opts: RunOptions = {}, track?: Set<ChildProcess>): Promise<RunResult> {
  return new Promise((resolveRun) => {
    const child = spawn(cmd, argv, { stdio: 'pipe', env: opts.env ?? process.env });
    track?.add(child);
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
      track?.delete(child);
      resolveRun({ code, signal, stdout, stderr, timedOut });
    });
    child.stdin.on('error', () => {}); // EPIPE if it exits before reading
    child.stdin.end(opts.input ?? '');
  });
}
