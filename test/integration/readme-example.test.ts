/**
 * The README's hand-run example (the block after "`scripts/netns-setup.sh` builds this"), run as
 * a user pastes it into a shell at the repository's root: the same lines, read from README.md,
 * with its prefix `demo1` (and so `/tmp/demo1`) replaced by a per-run one. STYLE rule 16: the
 * namespaces are this run's, and `netns-setup.sh down` runs again after, whatever happened.
 *
 * What is checked: the block runs to its end with exit status 0; the ping gets its 3 replies; the
 * shell's `$!` is the daemon itself (its pid in `ipipd status --json`), as the README says, so
 * that a signal sent there reaches it; and after `down` no namespace, daemon or file of the run is
 * left, the daemons having exited 0 on the SIGTERM `down` sent (a daemon left running would hold
 * `wait` and fail the run's deadline).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { ROOT } from '../helpers/daemons.js';
import { integrationSkip } from '../helpers/skip.js';
import { have } from '../helpers/pair.js';

const why = integrationSkip('README example test', have('ping') ? null : "'ping' not installed");

/** The README's example block: its indented lines from the netns-setup.sh `up` to the first blank line. */
function readmeExample(readme: string): string[] {
  const lines = readme.split('\n');
  const start = lines.findIndex((l) => l.startsWith('    scripts/netns-setup.sh up --prefix demo1 '));
  if (start < 0) throw new Error('README.md: the example block (scripts/netns-setup.sh up --prefix demo1 ...) is not there');
  const block: string[] = [];
  for (let i = start; i < lines.length && lines[i]!.startsWith('    '); i++) block.push(lines[i]!.slice(4));
  return block;
}

const prefix = `rx${process.pid.toString(16).slice(-5)}`;
const out = `/tmp/${prefix}`;
const down = (): void => {
  spawnSync(join(ROOT, 'scripts', 'netns-setup.sh'), ['down', '--prefix', prefix, '--out', out], { stdio: 'ignore' });
};
afterAll(down);

describe.skipIf(why)("the README's hand-run example", () => {
  test('runs as written: ping answered, $! is the daemon, nothing left after down', () => {
    const block = readmeExample(readFileSync(join(ROOT, 'README.md'), 'utf8')).map((l) => l.replaceAll('demo1', prefix));
    expect(block[0]).toMatch(/^scripts\/netns-setup\.sh up /);
    expect(block.at(-1)).toMatch(/^scripts\/netns-setup\.sh down /);
    // One line of the test's own before `down`: what the shell holds as the last daemon's pid,
    // and what that daemon says its pid is. Then `wait` for both daemons' exit statuses.
    const probe = `echo "bang=$!"; echo '<<'; node bin/ipipd.js status --json --config ${out}/h2.yaml; echo '>>'`;
    const script = ['set -e', ...block.slice(0, -1), probe, block.at(-1)!, 'for j in $(jobs -p); do wait "$j" || echo "daemon $j exited $?"; done', 'echo "all done"'].join('\n');
    const r = spawnSync('bash', ['-c', script], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, killSignal: 'SIGKILL' });
    const all = `${r.stdout}\n${r.stderr}`;
    expect(r.status, all).toBe(0);
    expect(r.stdout).toMatch(/3 packets transmitted, 3 received/);
    expect(r.stdout).toMatch(/all done$/m);
    expect(r.stdout, all).not.toMatch(/^daemon \d+ exited/m);
    const bang = Number(/^bang=(\d+)$/m.exec(r.stdout)?.[1]);
    const json = r.stdout.slice(r.stdout.indexOf('<<\n') + 3, r.stdout.indexOf('>>\n'));
    expect((JSON.parse(json) as { pid: number }).pid).toBe(bang);
    // Nothing of the run is left.
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    expect(netns.split('\n').filter((l) => l.startsWith(`${prefix}-`))).toEqual([]);
    expect(existsSync(out)).toBe(false);
    expect(spawnSync('pgrep', ['-f', `${out}/h[12].yaml`]).status).toBe(1);
  });
});
