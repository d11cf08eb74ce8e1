/**
 * Random 16-bit numbers from /dev/urandom: the per-peer starts of the outer IPv4 IDs (RFC 6864
 * §4.1: IDs do not repeat across restarts; src/dataplane/queue.ts `queueIds`, and a reload's new
 * peers). Read with one `readSync` instead of node:crypto's `randomInt`, because loading
 * node:crypto for a few numbers at start costs each isolate that does it (the main thread and
 * every queue worker) its module code for the process's life (docs/performance.md, "Footprint:
 * what a node pays", "Second pass").
 */
import { closeSync, openSync, readSync } from 'node:fs';

/** `n` numbers, each uniform in 0..65535 (as `randomInt(0x10000)`). */
export function random16(n: number): number[] {
  const buf = Buffer.alloc(2 * n);
  if (n > 0) {
    const fd = openSync('/dev/urandom', 'r');
    try {
      // /dev/urandom never returns short for reads this small; the loop is for the contract.
      for (let off = 0; off < buf.length; ) off += readSync(fd, buf, off, buf.length - off, null);
    } finally {
      closeSync(fd);
    }
  }
  return Array.from({ length: n }, (_, i) => buf.readUInt16BE(2 * i));
}
