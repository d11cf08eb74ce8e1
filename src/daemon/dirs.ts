/**
 * `mkdir -p` that always ends, for the directories of the control socket and the state file.
 *
 * Why not `mkdirSync(dir, { recursive: true })`: Node's (20.x) loops for ever, at 100% CPU and
 * inside one synchronous call, when mkdir(2) answers ENOENT about a directory whose parent
 * exists: under /proc (`control.socket: /proc/ipipd/ipipd.sock` hung a starting daemon with its
 * TUN already open, instead of failing with ERR_CONTROL_SOCKET). Here each missing component is
 * made once, from the root down, and the first error is the answer.
 */
import { mkdirSync, statSync } from 'node:fs';
import { resolve } from 'node:path';

/** Make `dir` and any missing parent (new ones get `mode`); throws the first failure (errno in `code`). */
export function makeDirs(dir: string, mode: number): void {
  let path = '';
  for (const part of resolve(dir).split('/').filter((p) => p !== '')) {
    path += `/${part}`;
    const st = statSync(path, { throwIfNoEntry: false });
    if (st?.isDirectory()) continue;
    if (st) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${path}'`), { code: 'ENOTDIR' });
    try {
      mkdirSync(path, { mode });
    } catch (err) {
      // Made meanwhile by someone else: as good as made here.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(path).isDirectory()) throw err;
    }
  }
}
