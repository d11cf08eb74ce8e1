/**
 * A notification socket of the test's own (test/fixtures/notify-listener.py, python3): what
 * systemd would receive from ipipd on $NOTIFY_SOCKET, as a list of datagrams.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from '../../tools/netns/namespaces.js';

export interface NotifyListener {
  /** Every datagram received so far, as text. */
  readonly received: string[];
  /** Resolves once a datagram containing `line` (e.g. "READY=1") arrived; rejects after `ms`. */
  waitFor(line: string, ms?: number): Promise<string>;
  close(): void;
}

export async function notifyListener(path: string): Promise<NotifyListener> {
  const child: ChildProcess = spawn('python3', [join(ROOT, 'test', 'fixtures', 'notify-listener.py'), path], { stdio: ['ignore', 'pipe', 'inherit'] });
  const received: string[] = [];
  let buf = '';
  let wake: () => void = () => {};
  const listening = new Promise<void>((resolve, reject) => {
    child.on('exit', (c) => reject(new Error(`notify listener exited (${c})`)));
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === 'listening') resolve();
        else received.push(JSON.parse(line) as string);
        wake();
      }
    });
  });
  await listening;
  return {
    received,
    waitFor: (line, ms = 15_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${line} within ${ms} ms; got ${JSON.stringify(received)}`)), ms);
        const check = (): void => {
          const hit = received.find((m) => m.split('\n').includes(line));
          if (hit !== undefined) {
            clearTimeout(timer);
            resolve(hit);
          } else wake = check;
        };
        check();
      }),
    close: () => child.kill('SIGKILL'),
  };
}
