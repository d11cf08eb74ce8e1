/**
 * src/daemon/dirs.ts: `makeDirs` makes missing directories from the root down with the mode
 * given, accepts existing ones, and fails with the errno where a component cannot be made:
 * a file in the way (ENOTDIR), and under /proc, where mkdir(2) says ENOENT of a directory whose
 * parent exists (Node's recursive mkdirSync loops for ever there; the call runs in a child with
 * a timeout, so that a regression fails this test instead of hanging the run).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, test } from 'vitest';
import { makeDirs } from '../../src/daemon/dirs.js';

const DIRS = fileURLToPath(new URL('../../dist/src/daemon/dirs.js', import.meta.url));
const base = mkdtempSync(join(tmpdir(), 'ipipd-dirs-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('makeDirs', () => {
  test('makes every missing level with the mode given, and is a no-op when they exist', () => {
    const dir = join(base, 'a', 'b', 'c');
    makeDirs(dir, 0o750);
    for (const d of [join(base, 'a'), join(base, 'a', 'b'), dir]) expect(statSync(d).mode & 0o777, d).toBe(0o750 & ~process.umask());
    makeDirs(dir, 0o700);
    expect(statSync(dir).isDirectory()).toBe(true);
  });

  test('a file in the way: ENOTDIR, naming it', () => {
    writeFileSync(join(base, 'file'), '');
    expect(() => makeDirs(join(base, 'file', 'sub'), 0o755)).toThrow(expect.objectContaining({ code: 'ENOTDIR', message: expect.stringContaining(join(base, 'file')) }));
  });

  test('under /proc: ENOENT at once (the built module, in a child with a 20 s timeout)', async () => {
    const code = `
      import { makeDirs } from ${JSON.stringify(DIRS)};
      try { makeDirs('/proc/ipipd-test-${process.pid}/sub', 0o755); console.log('made'); }
      catch (err) { console.log(err.code); }
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
    expect(stdout.trim()).toBe('ENOENT');
  });
});
