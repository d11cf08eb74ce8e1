/**
 * Child fixtures (test/fixtures/*-child.ts) run against the native addon in a bare namespace of
 * their own, for native.test.ts, steering.test.ts and native-packet.test.ts: the namespace comes
 * from tools/netns (per-run unique name, deleted right after the child and by the safety net on
 * every other exit path), the child runs with a hard timeout, and its JSON report is checked.
 *
 * Flow of this file: the report every child prints; runFixtureInNetns; expectCleanRun.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { type RunResult, inNs, run } from '../../tools/netns/exec.js';
import { createNetns, deleteNetns } from '../../tools/netns/namespaces.js';

const ADDON = fileURLToPath(new URL('../../build/Release/ipipd_native.node', import.meta.url));

export type ChildResult = RunResult;

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
    // SIGKILLed after `timeoutMs`, so that a hang fails rather than stalls.
    child = await run(inNs(ns, [process.execPath, fixture, ns, ...args]), { timeoutMs });
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
