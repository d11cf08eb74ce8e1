/**
 * A log that cannot be written never stops ipipd (src/daemon/logger.ts): a child process logs
 * with stderr on /dev/full (ENOSPC) or on a pipe nobody reads (EPIPE), and must neither throw
 * nor exit; it reports on stdout how many lines it lost and the last errno. The child runs the
 * built module (dist/src/daemon/logger.js: `npm run build`).
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { skipOrFail } from '../helpers/skip.js';

const LOGGER = fileURLToPath(new URL('../../dist/src/daemon/logger.js', import.meta.url));

/** Logs three lines (pino) and one CLI message, then prints {lost, last, alive}. */
const CHILD = `
const m = await import(${JSON.stringify(LOGGER)});
const log = m.createLogger('info');
log.info('one'); log.warn({ a: 1 }, 'two'); log.child({ subsystem: 'tun' }).error('three');
m.writeStderr('ipipd: ERR_TEST: a message\\n');
process.stdout.write(JSON.stringify({ lost: m.logWriteErrors(), last: m.lastLogWriteError(), alive: true }));
`;

/**
 * `pipe-closed`: fd 2 is the write end of a FIFO whose only reader was closed before the child
 * started (opened read-write first so that opening it does not block), so every write gets
 * EPIPE, deterministically (Node ignores SIGPIPE).
 */
const CLOSED_PIPE = 'd=$(mktemp -d) && mkfifo "$d/f" && exec 4<>"$d/f" 5>"$d/f" 4<&- && rm -r "$d" && exec "$0" --input-type=module -e "$1" 2>&5 5>&-';

function runChild(stderr: number | 'pipe-closed'): { status: number | null; out: { lost: number; last: string; alive: boolean } } {
  const r =
    stderr === 'pipe-closed'
      ? spawnSync('sh', ['-c', CLOSED_PIPE, process.execPath, CHILD], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' })
      : spawnSync(process.execPath, ['--input-type=module', '-e', CHILD], { stdio: ['ignore', 'pipe', stderr], encoding: 'utf8' });
  return { status: r.status, out: JSON.parse(r.stdout) };
}

describe.skipIf(skipOrFail('logger test', existsSync(LOGGER) ? null : `${LOGGER} is not built: npm run build`))('logger: failed writes to stderr are counted, never thrown', () => {
  test.skipIf(skipOrFail('/dev/full test', existsSync('/dev/full') ? null : 'no /dev/full'))('stderr on /dev/full: 4 lines lost, ENOSPC, the process carries on', () => {
    const full = openSync('/dev/full', 'w');
    try {
      const r = runChild(full);
      expect(r.status).toBe(0);
      expect(r.out).toEqual({ lost: 4, last: 'ENOSPC', alive: true });
    } finally {
      closeSync(full);
    }
  });

  test('stderr a pipe whose reader is gone: EPIPE, counted', () => {
    const r = runChild('pipe-closed');
    expect(r.status).toBe(0);
    expect(r.out.alive).toBe(true);
    expect(r.out.last).toBe('EPIPE');
    expect(r.out.lost).toBe(4);
  });
});
