/**
 * The control socket's protocol (src/daemon/control.ts) against a server of the test's own on a
 * socket in a temporary directory (no privileges needed): one JSON request line, one JSON
 * answer; nothing sent means status; unknown commands, bad JSON and failing handlers answer
 * `{"error","code"}`, which `askDaemon` turns back into the IpipdError; a streaming handler
 * answers JSON lines until the client hangs up; a second server on a live path is refused.
 * Then what goes wrong around the socket file and the server: a failed chmod and a server error
 * are logged and it goes on; of the unlinks, only ENOENT ("already gone") is taken quietly. The
 * chmod and unlink failures are the test's own (node:fs wrapped below): root passes every check
 * that would make them fail for real.
 */
import { linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { ControlServer, STREAMING, askDaemon, queryControl, type ControlConnection, type ControlHandler } from '../../src/daemon/control.js';
import { IpipdError } from '../../src/daemon/errors.js';
import { createLogger } from '../../src/daemon/logger.js';
import { recordingLogger } from '../helpers/hop-kernel.js';

/** chmodSync / unlinkSync on `path` fail with errno `code` while set (the rest of node:fs is real). */
const fsFault = vi.hoisted(() => ({ chmod: null as { path: string; code: string } | null, unlink: null as { path: string; code: string } | null }));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const check = (f: { path: string; code: string } | null, syscall: string, path: unknown): void => {
    if (f !== null && f.path === path) throw Object.assign(new Error(`${f.code}: ${syscall} '${f.path}'`), { code: f.code, syscall, path });
  };
  const chmodSync: typeof fs.chmodSync = (path, mode) => {
    check(fsFault.chmod, 'chmod', path);
    fs.chmodSync(path, mode);
  };
  const unlinkSync: typeof fs.unlinkSync = (path) => {
    check(fsFault.unlink, 'unlink', path);
    fs.unlinkSync(path);
  };
  return { ...fs, chmodSync, unlinkSync, default: { ...fs, chmodSync, unlinkSync } };
});

const silent = createLogger('silent');
const dir = mkdtempSync(join(tmpdir(), 'ipipd-control-'));
const path = join(dir, 'sub', 'ctl.sock');
let server: ControlServer;
let streamClosed: Promise<void>;
let markStreamClosed: () => void;

const handlers: Record<string, ControlHandler> = {
  status: () => ({ state: 'up', n: 1 }),
  echo: (req) => ({ got: req }),
  fail: () => {
    throw new IpipdError('ERR_CONFIG_INVALID', 'peers[0].endpoint: bad');
  },
  crash: () => {
    throw new Error('boom');
  },
  ticks: (_req, conn: ControlConnection) => {
    let i = 0;
    const timer = setInterval(() => conn.send({ tick: i++ }), 5);
    conn.onClose(() => {
      clearInterval(timer);
      markStreamClosed();
    });
    return STREAMING;
  },
};

/** Raw client: write `bytes` (then half-close if `end`), collect everything until the server closes. */
function raw(bytes: string, end = true): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = createConnection(path, () => (end ? s.end(bytes) : s.write(bytes)));
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.on('error', reject);
  });
}

beforeAll(async () => {
  streamClosed = new Promise((r) => (markStreamClosed = r));
  server = await ControlServer.listen(path, handlers, silent);
});

afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('control socket protocol', () => {
  test('the socket is created with its directory, mode 0600', () => {
    expect(statSync(path).isSocket()).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  test('queryControl without a request asks for the status; the answer is pretty JSON and a newline', async () => {
    const text = await queryControl(path);
    expect(text).toBe(JSON.stringify({ state: 'up', n: 1 }, null, 2) + '\n');
  });

  test('a client that sends nothing and half-closes gets the status', async () => {
    expect(JSON.parse(await raw(''))).toEqual({ state: 'up', n: 1 });
  });

  test('a request is dispatched by cmd, with its arguments', async () => {
    const { value } = await askDaemon(path, { cmd: 'echo', x: [1, 'a'] });
    expect(value).toEqual({ got: { cmd: 'echo', x: [1, 'a'] } });
  });

  test('the request line is read up to its newline, without waiting for the half-close', async () => {
    expect(JSON.parse(await raw('{"cmd":"echo","y":2}\n', false))).toEqual({ got: { cmd: 'echo', y: 2 } });
  });

  test('unknown command: ERR_CONTROL_REQUEST naming the commands the daemon knows', async () => {
    const answer = JSON.parse(await raw('{"cmd":"nope"}\n')) as { error: string; code: string };
    expect(answer.code).toBe('ERR_CONTROL_REQUEST');
    expect(answer.error).toContain('unknown command "nope"');
    expect(answer.error).toContain('status, echo');
    await expect(askDaemon(path, { cmd: 'nope' })).rejects.toMatchObject({ code: 'ERR_CONTROL_REQUEST', exitCode: 2 });
  });

  test.each([
    ['not JSON', 'hello\n', 'not JSON'],
    ['an array', '[1]\n', 'JSON object'],
    ['no cmd', '{"x":1}\n', 'string "cmd"'],
    ['a numeric cmd', '{"cmd":1}\n', 'string "cmd"'],
  ])('a request that is %s is refused with ERR_CONTROL_REQUEST', async (_what, bytes, message) => {
    const answer = JSON.parse(await raw(bytes)) as { error: string; code: string };
    expect(answer).toMatchObject({ code: 'ERR_CONTROL_REQUEST' });
    expect(answer.error).toContain(message);
  });

  test('a handler that throws an IpipdError: its code and message come back, askDaemon rethrows them', async () => {
    await expect(askDaemon(path, { cmd: 'fail' })).rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID', exitCode: 2, message: 'peers[0].endpoint: bad' });
  });

  test('a handler that throws anything else is answered, not fatal to the server', async () => {
    const answer = JSON.parse(await raw('{"cmd":"crash"}\n')) as { error: string; code: string };
    expect(answer).toEqual({ error: 'boom', code: 'ERR_CONTROL_REQUEST' });
    expect(JSON.parse(await queryControl(path))).toEqual({ state: 'up', n: 1 });
  });

  test('a streaming handler sends JSON lines until the client hangs up, then is told', async () => {
    const lines = await new Promise<string[]>((resolve, reject) => {
      let buf = '';
      const s = createConnection(path, () => s.write('{"cmd":"ticks"}\n'));
      s.on('data', (d) => {
        buf += d.toString('utf8');
        const got = buf.split('\n').filter((l) => l !== '');
        if (got.length >= 3) {
          s.destroy();
          resolve(got);
        }
      });
      s.on('error', reject);
    });
    expect(lines.slice(0, 3).map((l) => JSON.parse(l))).toEqual([{ tick: 0 }, { tick: 1 }, { tick: 2 }]);
    await streamClosed;
  });

  test('askDaemon on a path where nothing listens: ERR_STATUS_UNREACHABLE, exit 1', async () => {
    await expect(askDaemon(join(dir, 'none.sock'), { cmd: 'status' })).rejects.toMatchObject({ code: 'ERR_STATUS_UNREACHABLE', exitCode: 1 });
  });

  test('a regular file or a directory at the path is refused and left untouched (only a stale socket is replaced)', async () => {
    const file = join(dir, 'not-a-socket.yaml');
    writeFileSync(file, 'tun: {}\n');
    await expect(ControlServer.listen(file, handlers, silent)).rejects.toMatchObject({ code: 'ERR_CONTROL_SOCKET', message: `control socket ${file}: a regular file is there; ipipd replaces only a socket (left untouched)` });
    expect(readFileSync(file, 'utf8')).toBe('tun: {}\n');
    const sub = join(dir, 'a-dir');
    mkdirSync(sub);
    await expect(ControlServer.listen(sub, handlers, silent)).rejects.toMatchObject({ code: 'ERR_CONTROL_SOCKET', message: expect.stringContaining('a directory is there') });
    expect(statSync(sub).isDirectory()).toBe(true);
  });

  test('a second server on a path a live one answers on is refused with EADDRINUSE, and the first keeps answering', async () => {
    await expect(ControlServer.listen(path, handlers, silent)).rejects.toMatchObject({ code: 'ERR_CONTROL_SOCKET', message: expect.stringContaining('EADDRINUSE') });
    expect(JSON.parse(await queryControl(path))).toEqual({ state: 'up', n: 1 });
  });
});

describe('control socket failures: logged, or reported to the caller', () => {
  afterEach(() => {
    fsFault.chmod = fsFault.unlink = null;
  });

  test('a server error after it listens is logged (which socket, the errno) and it keeps answering', async () => {
    const p = join(dir, 'error.sock');
    const { log, lines } = recordingLogger();
    const s = await ControlServer.listen(p, handlers, log);
    try {
      // What libuv reports when accept(2) fails (EMFILE): an 'error' on the server, not fatal.
      (s as unknown as { server: Server }).server.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }));
      expect(lines).toEqual([{ level: 'warn', obj: { socket: p, code: 'EMFILE', err: 'accept EMFILE' }, msg: 'control socket: server error' }]);
      expect(JSON.parse(await queryControl(p))).toEqual({ state: 'up', n: 1 });
    } finally {
      await s.close();
    }
  });

  test('a failed chmod is logged with the path and errno; the socket still answers', async () => {
    const p = join(dir, 'chmod.sock');
    fsFault.chmod = { path: p, code: 'EROFS' };
    const { log, lines } = recordingLogger();
    const s = await ControlServer.listen(p, handlers, log);
    try {
      expect(lines).toEqual([{ level: 'warn', obj: { socket: p, code: 'EROFS' }, msg: 'control socket: chmod 0600 failed; it keeps the mode the umask gave it' }]);
      expect(JSON.parse(await queryControl(p))).toEqual({ state: 'up', n: 1 });
    } finally {
      await s.close();
    }
  });

  test('a stale socket that cannot be removed: ERR_CONTROL_SOCKET naming the errno', async () => {
    const p = join(dir, 'stale.sock');
    // A socket file nobody answers on, as a daemon killed with SIGKILL leaves it: a second name
    // for a listening socket's file outlives the close (libuv unlinks only the path it bound).
    const stale = createServer();
    await new Promise<void>((r) => stale.listen(join(dir, 'bound.sock'), r));
    linkSync(join(dir, 'bound.sock'), p);
    await new Promise((r) => stale.close(r));
    expect(statSync(p).isSocket()).toBe(true);
    fsFault.unlink = { path: p, code: 'EACCES' };
    await expect(ControlServer.listen(p, handlers, silent)).rejects.toMatchObject({
      code: 'ERR_CONTROL_SOCKET',
      message: `control socket ${p}: cannot remove the stale socket there (EACCES)`,
    });
    // The fault lifted: it is replaced as a stale socket should be.
    fsFault.unlink = null;
    const s = await ControlServer.listen(p, handlers, silent);
    expect(JSON.parse(await queryControl(p))).toEqual({ state: 'up', n: 1 });
    await s.close();
  });

  test('close: a socket file already gone is fine; one that cannot be removed rejects with its errno', async () => {
    const p = join(dir, 'close.sock');
    let s = await ControlServer.listen(p, handlers, silent);
    rmSync(p);
    await expect(s.close()).resolves.toBeUndefined();
    s = await ControlServer.listen(p, handlers, silent);
    fsFault.unlink = { path: p, code: 'EBUSY' };
    await expect(s.close()).rejects.toMatchObject({ code: 'EBUSY', syscall: 'unlink' });
  });
});
