/**
 * FIFOs standing in for a TUN queue's fd and a raw socket in the unit tests that run a real
 * Dataplane (test/unit/warmup.test.ts, queues.test.ts, dataplane-gro.test.ts). Each FIFO is
 * opened read-write and non-blocking, so that it opens at once and reads never block.
 *
 *   const fifos = new Fifos('ipipd-x-');
 *   beforeAll(() => fifos.setUp());         // the directory they live in
 *   afterEach(() => fifos.closeAll());      // every fd opened so far
 *   afterAll(() => fifos.remove());         // the directory
 *   const fd = fifos.fifo();
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants as fsConstants, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export class Fifos {
  private dir: string | undefined;
  private n = 0;
  private readonly open: number[] = [];

  /** `prefix`: the start of the temporary directory's name. */
  constructor(private readonly prefix: string) {}

  /** Make the temporary directory the FIFOs are created in. */
  setUp(): void {
    this.dir = mkdtempSync(join(tmpdir(), this.prefix));
  }

  /** A fresh FIFO (named `name`, else `fifo-<n>`), opened read-write and non-blocking. */
  fifo(name = `fifo-${++this.n}`): number {
    if (this.dir === undefined) throw new Error(`Fifos(${this.prefix}): fifo() before setUp()`);
    const path = join(this.dir, name);
    execFileSync('mkfifo', [path]);
    const fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
    this.open.push(fd);
    return fd;
  }

  /** Close every FIFO opened so far, the last one first. */
  closeAll(): void {
    while (this.open.length > 0) closeSync(this.open.pop()!);
  }

  /** Remove the directory and the FIFOs in it (idempotent; nothing if setUp never ran). */
  remove(): void {
    if (this.dir !== undefined) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The bytes waiting in a non-blocking FIFO (one read), or 'EAGAIN' when there are none. */
export function drain(fd: number): string | Buffer {
  const b = Buffer.alloc(70000);
  try {
    return b.subarray(0, readSync(fd, b, 0, b.length, null));
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}
