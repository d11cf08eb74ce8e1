/**
 * The control socket: a Unix stream socket (mode 0600) on which the daemon answers requests.
 * Protocol: the client sends one request, a JSON object on one line (`{"cmd":"status"}`); the
 * daemon answers with one JSON document and closes the connection, or, for a streaming command,
 * with JSON lines until either side closes. A client that sends nothing and just half-closes
 * gets the status (what `ipipd status` of earlier versions did). An unknown command, a request
 * that is not a JSON object, or a handler that fails is answered `{"error": ..., "code": ...}`.
 *
 * Flow, in the order of this file: `queryControl` (the one-shot client), `readRequest` (the
 * server's side of the framing), `ControlServer` (listen, dispatch to the handler of `cmd`,
 * close). Start-up refuses to take over a socket another live daemon answers on (EADDRINUSE),
 * and removes a stale one left by a daemon that died without cleaning up.
 */
import { chmodSync, lstatSync, readlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { makeDirs, removeFile } from './dirs.js';
import { ERRORS, IpipdError, errnoName, type ErrorCode } from './errors.js';
import type { Logger } from './logger.js';

/** Where control sockets go by default (systemd's RuntimeDirectory=ipipd). */
export const RUN_DIR = '/run/ipipd';

/**
 * The network namespace this process runs in, as its inode number (`ip netns exec` and
 * containers share /run but not the namespace), or undefined where /proc does not say.
 */
export function netnsId(): string | undefined {
  try {
    return /^net:\[(\d+)\]$/.exec(readlinkSync('/proc/self/ns/net'))?.[1];
  } catch {
    return undefined;
  }
}

/**
 * The default control socket of the TUN `tun`: /run/ipipd/<tun>.<netns>.sock. Two daemons in two
 * network namespaces may both call their TUN ipip0, and /run is usually shared between them;
 * the namespace's inode keeps their sockets apart, and `ipipd status --config` run in the same
 * namespace finds the same path.
 */
export function defaultControlSocket(tun: string): string {
  const ns = netnsId();
  return ns === undefined ? `${RUN_DIR}/${tun}.sock` : `${RUN_DIR}/${tun}.${ns}.sock`;
}

/** A request: the command, and whatever arguments it takes. */
export interface ControlRequest {
  cmd: string;
  [arg: string]: unknown;
}

/** How long the daemon waits for a connection's first bytes. */
const REQUEST_TIMEOUT_MS = 5000;

/** The longest request line the daemon reads; a longer one is refused. */
export const MAX_REQUEST = 1 << 20;

/**
 * A request's connection, for streaming handlers: `send` writes one JSON line, `end` closes;
 * `closed` is true once the client hung up, and `onClose` is called when it does.
 */
export interface ControlConnection {
  send(value: unknown): void;
  end(): void;
  readonly closed: boolean;
  onClose(cb: () => void): void;
}

/**
 * Answers one command. Returns the answer (sent as one JSON document, then the connection is
 * closed), or `STREAMING` after taking the connection over through `conn`. Throws an
 * IpipdError to answer `{"error", "code"}`.
 */
export type ControlHandler = (req: ControlRequest, conn: ControlConnection) => unknown | Promise<unknown>;

/** What a streaming handler returns: it answers through the connection itself. */
export const STREAMING = Symbol('streaming');

/** Connect, send `request` (default: status), read the whole answer; rejects with the errno name in `code`. */
export function queryControl(path: string, request: ControlRequest = { cmd: 'status' }, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = createConnection(path);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(Object.assign(new Error(`${path}: no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    sock.on('connect', () => sock.end(JSON.stringify(request) + '\n'));
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

/**
 * Send `request` to the daemon on `path` and parse its answer; for the CLI. Rejects with
 * ERR_STATUS_UNREACHABLE when nothing answers there, and with the daemon's own code when it
 * answers `{"error", "code"}`.
 */
export async function askDaemon(path: string, request: ControlRequest, timeoutMs = 3000): Promise<{ text: string; value: unknown }> {
  let text: string;
  try {
    text = await queryControl(path, request, timeoutMs);
  } catch (err) {
    throw new IpipdError('ERR_STATUS_UNREACHABLE', `no ipipd answers on ${path} (${errnoName(err) ?? err})`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new IpipdError('ERR_STATUS_UNREACHABLE', `the answer on ${path} is not JSON: ${JSON.stringify(text.slice(0, 80))}`, { cause: err });
  }
  const e = value as { error?: unknown; code?: unknown } | null;
  if (e !== null && typeof e === 'object' && typeof e.error === 'string') {
    const code = typeof e.code === 'string' && Object.hasOwn(ERRORS, e.code) ? (e.code as ErrorCode) : 'ERR_CONTROL_REQUEST';
    throw new IpipdError(code, e.error);
  }
  return { text, value };
}

async function isLive(path: string): Promise<boolean> {
  try {
    await queryControl(path, { cmd: 'status' }, 1000);
    return true;
  } catch {
    return false;
  }
}

/**
 * The request on `conn`: its first line, parsed. Nothing before the client half-closes means
 * status. Rejects with ERR_CONTROL_REQUEST for a line that is too long or not a JSON object
 * with a string `cmd`.
 */
function readRequest(conn: Socket): Promise<ControlRequest> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const done = (line: string): void => {
      conn.setTimeout(0);
      conn.removeAllListeners('data');
      conn.removeAllListeners('end');
      if (line.trim() === '') return resolve({ cmd: 'status' });
      let req: unknown;
      try {
        req = JSON.parse(line);
      } catch {
        return reject(new IpipdError('ERR_CONTROL_REQUEST', 'the request is not JSON'));
      }
      if (typeof req !== 'object' || req === null || Array.isArray(req) || typeof (req as { cmd?: unknown }).cmd !== 'string') {
        return reject(new IpipdError('ERR_CONTROL_REQUEST', 'the request must be a JSON object with a string "cmd"'));
      }
      resolve(req as ControlRequest);
    };
    conn.setEncoding('utf8');
    conn.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) done(buf.slice(0, nl));
      else if (buf.length > MAX_REQUEST) done('\u0000'); // not JSON: refused below
    });
    conn.on('end', () => done(buf));
  });
}

/** The connection as a streaming handler sees it. */
function connection(conn: Socket): ControlConnection {
  let closed = false;
  const closers: (() => void)[] = [];
  conn.on('close', () => {
    closed = true;
    for (const cb of closers.splice(0)) cb();
  });
  return {
    send: (value) => {
      if (!closed) conn.write(JSON.stringify(value) + '\n');
    },
    end: () => conn.end(),
    get closed() {
      return closed;
    },
    onClose: (cb) => (closed ? cb() : closers.push(cb)),
  };
}

function errorAnswer(err: unknown): string {
  const code = err instanceof IpipdError ? err.code : 'ERR_CONTROL_REQUEST';
  return JSON.stringify({ error: err instanceof Error ? err.message : String(err), code }) + '\n';
}

/** Read the request on `conn`, run its handler, answer. */
async function serve(conn: Socket, handlers: Readonly<Record<string, ControlHandler>>): Promise<void> {
  let body: string;
  try {
    const req = await readRequest(conn);
    const handler = Object.hasOwn(handlers, req.cmd) ? handlers[req.cmd] : undefined;
    if (handler === undefined) {
      throw new IpipdError('ERR_CONTROL_REQUEST', `unknown command ${JSON.stringify(req.cmd)}; this daemon answers ${Object.keys(handlers).join(', ')}`);
    }
    const answer = await handler(req, connection(conn));
    if (answer === STREAMING) return;
    body = JSON.stringify(answer, null, 2) + '\n';
  } catch (err) {
    body = errorAnswer(err);
  }
  conn.end(body);
}

export class ControlServer {
  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  /**
   * Listen on `path` (mode 0600, directory created 0755 if missing), answering with `handlers` by
   * command. What goes wrong once it listens (a failed chmod, a server error) is logged to `log`.
   */
  static async listen(path: string, handlers: Readonly<Record<string, ControlHandler>>, log: Logger): Promise<ControlServer> {
    try {
      makeDirs(dirname(path), 0o755);
    } catch (err) {
      throw new IpipdError('ERR_CONTROL_SOCKET', `control socket ${path}: cannot create its directory (${errnoName(err) ?? err})`, { cause: err });
    }
    if (await isLive(path)) {
      throw new IpipdError('ERR_CONTROL_SOCKET', `control socket ${path}: EADDRINUSE, another ipipd answers there`);
    }
    // A stale socket of a daemon that died is removed; anything else at the path (a config file
    // named by mistake, a directory) is the user's, and left alone.
    const there = lstatSync(path, { throwIfNoEntry: false });
    if (there && !there.isSocket()) {
      const what = there.isDirectory() ? 'a directory' : there.isFile() ? 'a regular file' : 'something other than a socket';
      throw new IpipdError('ERR_CONTROL_SOCKET', `control socket ${path}: ${what} is there; ipipd replaces only a socket (left untouched)`);
    }
    if (there) {
      try {
        removeFile(path); // gone meanwhile is as good
      } catch (err) {
        // It would only fail the listen below as EADDRINUSE.
        throw new IpipdError('ERR_CONTROL_SOCKET', `control socket ${path}: cannot remove the stale socket there (${errnoName(err) ?? err})`, { cause: err });
      }
    }
    // Half-open: a client may half-close after its request (or with none) and still read the answer.
    const server = createServer({ allowHalfOpen: true }, (conn) => {
      conn.on('error', () => {}); // a client that hangs up early is not our problem
      // A client that neither sends a request nor half-closes is not waited for forever.
      conn.setTimeout(REQUEST_TIMEOUT_MS, () => {
        if (!conn.readableEnded && conn.bytesRead === 0) conn.destroy();
      });
      void serve(conn, handlers);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(new IpipdError('ERR_CONTROL_SOCKET', `control socket ${path}: ${errnoName(err) ?? err}`, { cause: err })),
      );
      server.listen(path, () => resolve());
    });
    // A server error now (EMFILE on accept) fails no request already served and must not end
    // the data path: logged, and the server goes on.
    server.on('error', (err) => log.warn({ socket: path, code: errnoName(err), err: err.message }, 'control socket: server error'));
    try {
      chmodSync(path, 0o600);
    } catch (err) {
      // The socket is already there; a failed chmod leaves root's default umask, not fatal.
      log.warn({ socket: path, code: errnoName(err) ?? String(err) }, 'control socket: chmod 0600 failed; it keeps the mode the umask gave it');
    }
    return new ControlServer(server, path);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Already gone is fine (libuv unlinks a listening socket's path when it closes it); any
    // other failure is the caller's to report (a failed cleanup step).
    removeFile(this.path);
  }
}
