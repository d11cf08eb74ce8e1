/**
 * The `ipipd` command as the CLI tests run it: a process (inside a namespace when `ns` is given),
 * its exit status and output; and the smallest valid config they start from.
 */
import { spawnSync } from 'node:child_process';
import { IPIPD } from './daemons.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `ipipd args...` (in namespace `ns` if given; `bin` another copy of bin/ipipd.js) and wait for it. */
export function ipipd(args: string[], ns?: string, bin = IPIPD): CliResult {
  const argv = ns ? ['ip', 'netns', 'exec', ns, process.execPath, bin, ...args] : [process.execPath, bin, ...args];
  // SIGKILL at the timeout: a daemon stuck in a synchronous call never runs its SIGTERM handler.
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A valid config: one peer, a TUN address; documentation addresses only. */
export const GOOD = `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers: [{ name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }]
`;
