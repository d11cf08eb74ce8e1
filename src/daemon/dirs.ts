/**
 * The control socket's and the state file's file-system steps: `makeDirs`, a `mkdir -p` that
 * always ends, and `removeFile`, an unlink for which only "not there" means "already gone".
 *
 * Why `makeDirs` and not `mkdirSync(dir, { recursive: true })`: Node's (20.x) loops for ever, at
 * 100% CPU and inside one synchronous call, when mkdir(2) answers ENOENT about a directory whose
 * parent exists: under /proc (`control.socket: /proc/ipipd/ipipd.sock` hung a starting daemon
 * with its TUN already open, instead of failing with ERR_CONTROL_SOCKET). Here each missing
 * component is made once, from the root down, and the first error is the answer.
 */
import { mkdirSync, statSync, unlinkSync } from 'node:fs';
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

/**
 * Unlink `path`: true if it was removed, false if it was not there (ENOENT: already gone). Any
 * other failure (EACCES, EISDIR, EROFS, ...) is thrown (errno in `code`): it is not "gone".
 */
export function removeFile(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
