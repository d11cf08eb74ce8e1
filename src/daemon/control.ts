/**
 * The control socket: a Unix stream socket on which the daemon answers every connection with
 * one JSON document (its status and counters) and closes it. `ipipd status` is the client.
 * Read-only by design: nothing sent to the socket changes the daemon.
 *
 * Start-up refuses to take over a socket another live daemon answers on (EADDRINUSE), and
 * removes a stale one left by a daemon that died without cleaning up.
 */
import { mkdirSync, unlinkSync, chmodSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { dirname } from 'node:path';
import { IpipdError, errnoName } from './errors.js';

/** Connect and read the whole answer; rejects with the errno name in `code`. */
export function queryControl(path: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = createConnection(path);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(Object.assign(new Error(`${path}: no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    sock.on('data', (d) => chunks.push(d));
    sock.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function isLive(path: string): Promise<boolean> {
  try {
    await queryControl(path, 1000);
    return true;
  } catch {
    return false;
  }
}

export class ControlServer {
  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  /** Listen on `path` (mode 0600, directory created 0755 if missing). */
  static async listen(path: string, answer: () => unknown | Promise<unknown>): Promise<ControlServer> {
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    } catch (err) {
      throw new IpipdError('ERR_CONTROL_SOCKET', `control socket ${path}: cannot create its directory (${errnoName(err) ?? err})`, { cause: err });
    }
    if (await isLive(path)) {
      throw new IpipdError('ERR_CONTROL_SOCKET', `control socket ${path}: EADDRINUSE, another ipipd answers there`);
    }
    try {
      unlinkSync(path); // stale socket of a daemon that died
    } catch {
      // nothing there: the usual case
    }
    const server = createServer((conn) => {
      conn.on('error', () => {}); // a client that hangs up early is not our problem
      void (async () => {
        let body: string;
        try {
          body = JSON.stringify(await answer(), null, 2) + '\n';
        } catch (err) {
          body = JSON.stringify({ error: String(err) }) + '\n';
        }
        conn.end(body);
      })();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(new IpipdError('ERR_CONTROL_SOCKET', `control socket ${path}: ${errnoName(err) ?? err}`, { cause: err })),
      );
      server.listen(path, () => resolve());
    });
    server.on('error', () => {});
    try {
      chmodSync(path, 0o600);
    } catch {
      // the socket is already there; a failed chmod leaves root's default umask, not fatal
    }
    return new ControlServer(server, path);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}
