/**
 * scripts/demo.sh as a user meets it: `--help` prints a usage text (no root needed); run with
 * its output going to a pipe (a log, CI), it prints no terminal escape sequences, and succeeds.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ROOT } from '../../tools/netns/namespaces.js';
import { integrationSkip } from '../helpers/skip.js';

const DEMO = join(ROOT, 'scripts', 'demo.sh');

describe('scripts/demo.sh', () => {
  test('--help prints its usage and options, exit 0; an unknown option is exit 2 with the usage', () => {
    const r = spawnSync('bash', [DEMO, '--help'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: npm run demo/);
    for (const o of ['--bytes N', '--keep-logs', '-h, --help']) expect(r.stdout).toContain(o);
    expect(r.stdout).not.toMatch(/set -Eeuo|^#/m); // not lines of the script
    const bad = spawnSync('bash', [DEMO, '--frobnicate'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/unknown option --frobnicate[\s\S]*Usage:/);
  });

  const why = integrationSkip('the demo');
  test.skipIf(why)('run into a pipe: succeeds, no ANSI escape sequences', () => {
    const r = spawnSync('bash', [DEMO, '--bytes', '262144'], { encoding: 'utf8', timeout: 180_000 });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/== done/);
    expect(r.stdout + r.stderr).not.toMatch(/\x1b/);
  }, 200_000);
});
