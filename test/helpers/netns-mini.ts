/**
 * Minimal network-namespace helper for test/integration/native.test.ts only (the shared, fuller
 * helper is test/helpers/topology.ts, whose runCommand this reuses). Creates a namespace with a per-run unique name, runs a
 * command inside it with a hard timeout, and deletes it: from afterAll, and from a process
 * 'exit' trap in case afterAll never runs.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { runCommand, type ExecResult } from './topology.js';

/** Why namespace tests cannot run here, or undefined if they can. */
export function netnsSkipReason(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not running as root';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return '`ip netns` does not work';
  }
  return undefined;
}

const live = new Set<string>();
let trapInstalled = false;

function deleteQuietly(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    // already gone
  }
  live.delete(name);
}

/** Create a namespace named `<prefix>-<pid>-<random>` and return its name. */
export function createNetns(prefix: string): string {
  if (!trapInstalled) {
    trapInstalled = true;
    process.on('exit', () => {
      for (const name of [...live]) deleteQuietly(name);
    });
  }
  const name = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name], { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(name);
  return name;
}

/** Delete a namespace made by createNetns (idempotent). */
export function deleteNetns(name: string | undefined): void {
  if (name !== undefined) deleteQuietly(name);
}

export type ChildResult = ExecResult;

/** Run `argv` inside namespace `ns`; SIGKILL it after `timeoutMs` so a hang fails, not stalls. */
export function runInNetns(ns: string, argv: string[], timeoutMs: number): Promise<ChildResult> {
  // `ip netns exec` execs the command, so the pid killed on timeout is the command itself.
  return runCommand('ip', ['netns', 'exec', ns, ...argv], { timeoutMs });
}
