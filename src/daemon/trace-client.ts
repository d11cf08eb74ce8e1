/**
 * `ipipd trace`, the client side (src/daemon/trace.ts is the daemon's): send the `trace` request
 * on the control socket and print what comes back, one line per packet (`formatTraceLine`) or,
 * with `--json`, the daemon's JSON lines as they are; stop after `count` packets, when the daemon
 * ends the stream (shutdown), or on SIGINT/SIGTERM (closing the connection is what tells the
 * daemon to stop sampling).
 */
import { createConnection } from 'node:net';
import type { ControlRequest } from './control.js';
import { ERRORS, IpipdError, errnoName, type ErrorCode } from './errors.js';
import type { TraceLine } from './trace.js';

/** One packet for humans: `time q0 send forward 192.0.2.1>192.0.2.2 | icmp 203.0.113.1 > 203.0.113.129 len 84`. */
export function formatTraceLine(t: TraceLine): string {
  const outer = t.outer ? `${t.outer.src} > ${t.outer.dst}` : '-';
  const port = (p: number | null): string => (p === null ? '' : `:${p}`);
  const inner = t.src === null ? 'not IPv4' : `${t.proto} ${t.src}${port(t.sport)} > ${t.dst}${port(t.dport)}`;
  return `${t.time.slice(11, 23)} q${t.queue} ${t.direction.padEnd(7)} ${t.verdict.padEnd(18)} ${outer} | ${inner} len ${t.length}`;
}

/**
 * Trace through the daemon on `socket` with `request` (`{cmd: 'trace', ...}`); `count` packets
 * at most (0: until interrupted). `out` and `err` take whole lines. Resolves when the trace ends.
 */
export function runTrace(socket: string, request: ControlRequest, count: number, json: boolean, out: (l: string) => void, err: (l: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let seen = 0;
    let first = true;
    const sock = createConnection(socket);
    const stop = (): void => {
      sock.destroy();
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const done = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    };
    sock.on('connect', () => sock.write(JSON.stringify(request) + '\n'));
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === '') continue;
        let v: Record<string, unknown>;
        try {
          v = JSON.parse(line) as Record<string, unknown>;
        } catch {
          done();
          sock.destroy();
          return reject(new IpipdError('ERR_STATUS_UNREACHABLE', `the answer on ${socket} is not JSON: ${JSON.stringify(line.slice(0, 80))}`));
        }
        if (first && typeof v.error === 'string') {
          done();
          sock.destroy();
          const code = typeof v.code === 'string' && Object.hasOwn(ERRORS, v.code) ? (v.code as ErrorCode) : 'ERR_CONTROL_REQUEST';
          return reject(new IpipdError(code, v.error));
        }
        first = false;
        if (Object.keys(v).length === 0) continue; // the daemon's heartbeat (src/daemon/trace.ts)
        if (json) out(line);
        else if (v.tracing) {
          const t = v.tracing as { queues: number; ratePerQueue: number };
          err(`tracing ${t.queues} queue${t.queues === 1 ? '' : 's'}, at most ${t.ratePerQueue} packets/s each; Ctrl-C to stop`);
        } else if (typeof v.skipped === 'number') err(`(${v.skipped} more not shown: rate bound)`);
        else out(formatTraceLine(v as unknown as TraceLine));
        if (v.verdict !== undefined && count > 0 && ++seen >= count) {
          done();
          return stop();
        }
      }
    });
    sock.on('close', () => {
      done();
      resolve();
    });
    sock.on('error', (e) => {
      done();
      reject(new IpipdError('ERR_STATUS_UNREACHABLE', `no ipipd answers on ${socket} (${errnoName(e) ?? e})`, { cause: e }));
    });
  });
}
