/**
 * Minimal network-namespace helper for the tests that run a child fixture against the native
 * addon (test/integration/native.test.ts, steering.test.ts; the shared, fuller helper is
 * test/helpers/topology.ts, whose runCommand this reuses). Creates a namespace with a per-run
 * unique name, runs a command inside it with a hard timeout, and deletes it: right after the
 * command, and from a process 'exit' trap in case that never comes.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { runCommand, type ExecResult } from './topology.js';

const ADDON = fileURLToPath(new URL('../../build/Release/ipipd_native.node', import.meta.url));

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

/** What every child fixture reports besides its steps' findings (test/fixtures/child-harness.ts). */
export interface ChildReport {
  /** Set when the child found itself outside the namespace it was meant for, and did nothing. */
  fatal?: string;
  /** The steps that threw (and `cleanup`), with the error and its stack. */
  failures: Record<string, string>;
}

/**
 * Run the built child fixture `fixture` (dist/test/fixtures/*.js) as `node <fixture> <ns>
 * ...args` in a fresh namespace `<prefix>-<pid>-<random>`, SIGKILLed after `timeoutMs`; the
 * namespace is deleted again whatever happens. Returns how the child ended and the JSON report
 * it printed as its last line of stdout (throws, with all its output, when there is none).
 */
export async function runFixtureInNetns<R extends ChildReport>(fixture: string, prefix: string, args: string[], timeoutMs: number): Promise<{ child: ChildResult; report: R }> {
  if (!existsSync(ADDON)) throw new Error(`${ADDON} is missing: run \`npx node-gyp rebuild\``);
  if (!existsSync(fixture)) throw new Error(`${fixture} is missing: run \`npm run build\``);
  let ns: string | undefined;
  let child: ChildResult;
  try {
    ns = createNetns(prefix);
    child = await runInNetns(ns, [process.execPath, fixture, ns, ...args], timeoutMs);
  } finally {
    deleteNetns(ns);
  }
  const line = child.stdout.trim().split('\n').pop() ?? '';
  try {
    return { child, report: JSON.parse(line) as R };
  } catch {
    throw new Error(`fixture printed no report (code ${child.code}, signal ${child.signal}):\n${child.stdout}\n${child.stderr}`);
  }
}

/** The child ran every step in its namespace, none of them threw, and it exited 0 by itself (no timeout, no signal). */
export function expectCleanRun(child: ChildResult, report: ChildReport): void {
  expect(report.fatal).toBeUndefined();
  expect(report.failures).toEqual({});
  expect(child.timedOut).toBe(false);
  expect(child.signal).toBeNull();
  expect(child.code).toBe(0);
}
