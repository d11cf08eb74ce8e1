/**
 * The one way an integration test file, or one test in it, skips: with a reason, printed as one
 * line, or, when IPIPD_REQUIRE_NETNS=1 is set (as .ci/run does), as a failure that names the
 * reason, so that CI cannot pass with the tests that need root, namespaces or capture tools
 * silently skipped.
 *
 *   const why = integrationSkip('queue tests', have('tcpdump') ? null : "'tcpdump' not installed");
 *   describe.skipIf(why)('...', () => {
 *     test.skipIf(skipWithout('tcpdump', 'tshark'))('...', async () => { ... });
 *   });
 *
 * Flow of this file: skipOrFail (the rule itself); integrationSkip (namespaces first, then the
 * file's own reason); skipWithout (tools on the PATH).
 */
import { hasCommand } from '../../tools/netns/exec.js';
import { netnsMissing } from '../../tools/netns/namespaces.js';

/** The variable that turns every skip here into a failure (only the value "1" does). */
export const REQUIRE_NETNS = 'IPIPD_REQUIRE_NETNS';

/**
 * `reason` (when there is one) as a skip: one line "<what> skipped: <reason>" and the reason
 * back, for describe.skipIf / test.skipIf; null when there is none. With IPIPD_REQUIRE_NETNS=1
 * in `env` it throws instead, which fails the file (or the hook or test it runs in).
 */
export function skipOrFail(what: string, reason: string | null | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (reason === null || reason === undefined) return null;
  if (env[REQUIRE_NETNS] === '1') throw new Error(`${what} cannot run: ${reason} (${REQUIRE_NETNS}=1 makes this a failure, not a skip)`);
  console.log(`${what} skipped: ${reason}`);
  return reason;
}

/** Why `what` cannot run here: namespaces unavailable (netnsMissing) first, else `more`; see skipOrFail. */
export function integrationSkip(what: string, more: string | null = null): string | null {
  return skipOrFail(what, netnsMissing() ?? more);
}

/** Why a test that runs `cmds` cannot run here (those not on the PATH), or null; see skipOrFail. */
export function skipWithout(...cmds: string[]): string | null {
  const missing = cmds.filter((c) => !hasCommand(c));
  return skipOrFail(`test needing ${cmds.join(' and ')}`, missing.length > 0 ? `${missing.map((c) => `'${c}'`).join(', ')} not installed` : null);
}
