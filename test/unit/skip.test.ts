// The rule every integration skip goes through (test/helpers/skip.ts): a skip with a printed
// reason, or a failure naming it when IPIPD_REQUIRE_NETNS=1; and the safety net under the
// namespaces (tools/netns/safety-net.ts), run in a child that is then signalled.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ROOT } from '../../tools/netns/namespaces.js';
import { REQUIRE_NETNS, integrationSkip, skipOrFail, skipWithout } from '../helpers/skip.js';

/** What netnsMissing() says here: set by a test, so that integrationSkip's order is seen on any host. */
const netns = vi.hoisted(() => ({ missing: null as string | null }));
vi.mock('../../tools/netns/namespaces.js', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../tools/netns/namespaces.js')>()),
  netnsMissing: () => netns.missing,
}));

afterEach(() => {
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
});

describe('skipOrFail', () => {
  it('without a reason: null, nothing printed, whatever the environment says', () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    expect(skipOrFail('x tests', null, {})).toBeNull();
    expect(skipOrFail('x tests', undefined, { [REQUIRE_NETNS]: '1' })).toBeNull();
    expect(log).not.toHaveBeenCalled();
  });

  it('with a reason and the variable unset (or not "1"): the reason back, one line printed', () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    expect(skipOrFail('x tests', 'not root', {})).toBe('not root');
    expect(skipOrFail('x tests', 'not root', { [REQUIRE_NETNS]: '0' })).toBe('not root');
    expect(skipOrFail('x tests', 'not root', { [REQUIRE_NETNS]: 'yes' })).toBe('not root');
    expect(log.mock.calls).toEqual([['x tests skipped: not root'], ['x tests skipped: not root'], ['x tests skipped: not root']]);
  });

  it('with a reason and IPIPD_REQUIRE_NETNS=1: throws, naming what, why and the variable', () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    expect(() => skipOrFail('x tests', 'not root', { [REQUIRE_NETNS]: '1' })).toThrow(
      'x tests cannot run: not root (IPIPD_REQUIRE_NETNS=1 makes this a failure, not a skip)',
    );
    expect(log).not.toHaveBeenCalled();
  });
});

describe('skipWithout and integrationSkip read the process environment', () => {
  const fake = 'ipipd-no-such-tool-7f3a';

  it('a missing tool skips by default and fails with IPIPD_REQUIRE_NETNS=1', () => {
    vi.spyOn(console, 'log').mockImplementation(() => {});
    vi.stubEnv(REQUIRE_NETNS, '');
    expect(skipWithout('sh', fake)).toBe(`'${fake}' not installed`);
    expect(skipWithout('sh')).toBeNull();
    vi.stubEnv(REQUIRE_NETNS, '1');
    expect(() => skipWithout('sh', fake)).toThrow(`test needing sh and ${fake} cannot run: '${fake}' not installed`);
    expect(skipWithout('sh')).toBeNull();
  });

  it("integrationSkip: the file's own reason counts when namespaces are there, and fails the same way", () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    vi.stubEnv(REQUIRE_NETNS, '');
    netns.missing = null;
    expect(integrationSkip('x tests', 'no scapy')).toBe('no scapy');
    expect(integrationSkip('x tests')).toBeNull();
    // Namespaces unavailable: that is the reason given, before the file's own.
    netns.missing = 'not root (network namespaces need CAP_SYS_ADMIN)';
    expect(integrationSkip('x tests', 'no scapy')).toBe('not root (network namespaces need CAP_SYS_ADMIN)');
    expect(log.mock.calls).toEqual([['x tests skipped: no scapy'], ['x tests skipped: not root (network namespaces need CAP_SYS_ADMIN)']]);
    vi.stubEnv(REQUIRE_NETNS, '1');
    netns.missing = null;
    expect(() => integrationSkip('x tests', 'no scapy')).toThrow('x tests cannot run: no scapy (IPIPD_REQUIRE_NETNS=1 makes this a failure, not a skip)');
  });
});

describe('the safety net', () => {
  const net = join(ROOT, 'dist', 'tools', 'netns', 'safety-net.js');

  /** Runs a child that registers a clean-up writing `mark`, then does `then`; returns how it ended. */
  function child(then: string): { status: number | null; signal: NodeJS.Signals | null; cleaned: boolean } {
    const dir = mkdtempSync(join(tmpdir(), 'ipipd-net-'));
    const mark = join(dir, 'cleaned');
    const code = `
      const { onCleanup } = await import(${JSON.stringify(pathToFileURL(net).href)});
      const { writeFileSync } = await import('node:fs');
      onCleanup(() => writeFileSync(${JSON.stringify(mark)}, 'x'));
      ${then}`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { timeout: 10_000 });
    const cleaned = existsSync(mark);
    rmSync(dir, { recursive: true, force: true });
    return { status: r.status, signal: r.signal, cleaned };
  }

  it('runs the clean-up on a normal exit, an uncaught error and SIGTERM (then dies by the signal)', () => {
    expect(existsSync(net), `${net} is missing: run 'npm run build'`).toBe(true);
    expect(child('')).toEqual({ status: 0, signal: null, cleaned: true });
    expect(child("throw new Error('boom');")).toMatchObject({ status: 1, cleaned: true });
    expect(child("process.kill(process.pid, 'SIGTERM'); setTimeout(() => {}, 5000);")).toEqual({ status: null, signal: 'SIGTERM', cleaned: true });
  });
});
