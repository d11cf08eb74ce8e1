/**
 * Structured logs (pino): JSON lines on stderr, one child logger per subsystem
 * (`{ subsystem: 'tun' | 'nexthop' | 'dataplane' | 'queues' | 'stats' | 'link' }`). Nothing on the data path logs per
 * packet: drops are counters, and the dataplane logs rate-limited summaries (STYLE rule 10).
 * stdout is left to command output (`ipipd check`, `ipipd status`).
 *
 * A log that cannot be written never stops the tunnel: stderr on a full disk (`2>/dev/full`:
 * ENOSPC), a pipe whose reader went away (EPIPE) or any other write error drops the line and
 * counts it (`logWriteErrors`, in `ipipd status` as `log_write_errors`). Lines are written
 * synchronously to fd 2 (`stderrSink`), so one written just before exit is never lost.
 */
import { writeSync } from 'node:fs';
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';
import { isoTime } from './iso-time.js';

export type { Logger };

let writeErrors = 0;
let lastWriteError = '';

/** Log lines (or CLI messages) that could not be written to stderr since start. */
export function logWriteErrors(): number {
  return writeErrors;
}

/** The errno name of the last failed write to stderr ('' if none). */
export function lastLogWriteError(): string {
  return lastWriteError;
}

/** Count one failed write to stderr; `err` is the error it failed with. */
export function countLogWriteError(err: unknown): void {
  writeErrors++;
  const code = (err as { code?: unknown } | null)?.code;
  lastWriteError = typeof code === 'string' ? code : String(err);
}

/** How often a write that would block (stderr a full non-blocking pipe) is tried again. */
const EAGAIN_TRIES = 100;

/**
 * Write `text` to fd 2, whole, synchronously; on failure drop it and count it. Never throws.
 * For the CLI's own messages too (`ipipd: ERR_...`), which must not turn an exit status into
 * an exception.
 */
export function writeStderr(text: string): void {
  let buf = Buffer.from(text);
  for (let tries = 0; buf.length > 0; ) {
    try {
      buf = buf.subarray(writeSync(2, buf));
    } catch (err) {
      if ((err as { code?: unknown }).code === 'EAGAIN' && ++tries < EAGAIN_TRIES) continue;
      countLogWriteError(err);
      return;
    }
  }
}

/** pino's destination: every line through `writeStderr`. */
export const stderrSink: DestinationStream = { write: writeStderr };

export function createLogger(level: LevelWithSilent, name = 'ipipd'): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      // pino.stdTimeFunctions.isoTime, without toISOString's ICU set-up (src/daemon/iso-time.ts).
      timestamp: () => `,"time":"${isoTime(Date.now())}"`,
      formatters: { level: (label) => ({ level: label }) },
    },
    stderrSink,
  );
}
