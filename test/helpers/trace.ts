/**
 * `ipipd trace` as a child of a test, and its JSON records: for the integration tests that trace
 * a running daemon (trace.test.ts, kernel-routes.test.ts).
 */
import { spawn } from 'node:child_process';
import type { TraceLine } from '../../src/daemon/trace.js';
import { IPIPD } from './daemons.js';

export interface TraceRun {
  lines: string[];
  code: number | null;
  /** Resolves once the daemon's header line has arrived (the session is set up). */
  started: Promise<void>;
  done: Promise<void>;
  kill: (sig: NodeJS.Signals) => void;
}

/** `ipipd trace -s SOCKET ...args` as a child of the test (the control socket is a file: no namespace needed). */
export function trace(socket: string, args: string[]): TraceRun {
  const child = spawn(process.execPath, [IPIPD, 'trace', '-s', socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const run: TraceRun = { lines: [], code: null, started: Promise.resolve(), done: Promise.resolve(), kill: (s) => child.kill(s) };
  let out = '';
  let err = '';
  let markStarted: () => void = () => {};
  run.started = new Promise((r) => (markStarted = r));
  const check = (): void => {
    if (out.includes('"tracing"') || err.includes('tracing ')) markStarted();
  };
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    check();
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    check();
  });
  run.done = new Promise((resolve) =>
    child.on('exit', (code) => {
      run.code = code;
      run.lines = out.split('\n').filter((l) => l !== '');
      if (code !== 0) run.lines.push(`stderr: ${err}`);
      markStarted();
      resolve();
    }),
  );
  return run;
}

export const records = (r: TraceRun): TraceLine[] => r.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((v) => 'verdict' in v) as unknown as TraceLine[];
