/**
 * Structured logs (pino): JSON lines on stderr, one child logger per subsystem
 * (`{ subsystem: 'tun' | 'nexthop' | 'dataplane' | 'queues' | 'stats' }`). Nothing on the data path logs per
 * packet: drops are counters, and the dataplane logs rate-limited summaries (STYLE rule 10).
 * stdout is left to command output (`ipipd check`, `ipipd status`).
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export function createLogger(level: LevelWithSilent, name = 'ipipd'): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    // Synchronous writes to fd 2: a log line written just before exit is never lost.
    pino.destination({ dest: 2, sync: true }),
  );
}
