/**
 * Crash recovery's file handling (src/daemon/recovery.ts) in a temporary directory, with a kernel
 * that fails the test if recovery reaches it (the removals themselves: test/integration/
 * recovery.test.ts): a state file that cannot be read or is corrupt skips recovery with a
 * warning naming it and why, where a missing one is silent; of the unlinks, only ENOENT
 * ("already gone") is taken quietly. As root every permission check passes, so "cannot be
 * read" is a directory where the file should be (EISDIR).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, test } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { removeFile } from '../../src/daemon/dirs.js';
import { recover, statePath } from '../../src/daemon/recovery.js';
import type { Rtnl } from '../../src/tun/netlink.js';
import { recordingLogger } from '../helpers/hop-kernel.js';

const dir = mkdtempSync(join(tmpdir(), 'ipipd-recovery-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = parseConfig(`
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
control: { socket: ${join(dir, 'ipip0.sock')} }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
`);
const path = statePath(config);

/** The links and routes of no device: what recovery finds once the kernel deleted the dead daemon's TUN. */
const noTun = { links: async () => [], routes: async () => [] } as unknown as Rtnl;
/** A kernel recovery must not reach. */
const untouchable = new Proxy({} as Rtnl, {
  get: (_t, name) => () => {
    throw new Error(`recovery reached rtnl.${String(name)}`);
  },
});

/** A pid no process has (above pid_max's ceiling, 2^22). */
const DEAD_PID = 0x7fffffff;

beforeEach(() => {
  rmSync(path, { recursive: true, force: true });
});

describe('recover: the state file', () => {
  test('none there: nothing to recover, nothing logged', async () => {
    const { log, lines } = recordingLogger();
    await recover(config, untouchable, log);
    expect(lines).toEqual([]);
  });

  test('one that cannot be read: recovery skipped, and the warning names the file and the errno', async () => {
    mkdirSync(path);
    const { log, lines } = recordingLogger();
    await recover(config, untouchable, log);
    expect(lines).toEqual([{ level: 'warn', obj: { stateFile: path, code: 'EISDIR' }, msg: 'cannot read the state file: crash recovery skipped' }]);
  });

  test.each([
    ['not JSON', '{"pid": 12', /^not JSON: /],
    ['JSON without the fields', '{"pid": 12, "tun": "ipip0"}\n', /^no pid, ifindex and tun in it$/],
    ['JSON null', 'null', /^no pid, ifindex and tun in it$/],
  ])('one that is %s: recovery skipped, and the warning names the file and the problem', async (_what, text, problem) => {
    writeFileSync(path, text);
    const { log, lines } = recordingLogger();
    await recover(config, untouchable, log);
    expect(lines).toEqual([{ level: 'warn', obj: { stateFile: path, problem: expect.stringMatching(problem) }, msg: 'the state file is corrupt: crash recovery skipped' }]);
  });
});

describe('recover and removeFile: only ENOENT is "already gone"', () => {
  /** The state file of a dead daemon whose control socket was `socket`. */
  function deadDaemon(socket: string): void {
    writeFileSync(path, JSON.stringify({ pid: DEAD_PID, tun: 'ipip0', ifindex: 99, table: 254, routes: [], socket, startedAt: '2024-01-01T00:00:00.000Z' }));
  }

  test('its control socket already gone: the state file is removed, and that is all', async () => {
    deadDaemon(join(dir, 'gone.sock'));
    const { log, lines } = recordingLogger();
    await recover(config, noTun, log);
    expect(existsSync(path)).toBe(false);
    expect(lines.map((l) => l.msg)).toEqual(['a previous ipipd died without cleaning up: removing what it left']);
  });

  test('its control socket cannot be removed: recover rejects with the errno and keeps the state file for the next try', async () => {
    const socket = join(dir, 'a-directory.sock');
    mkdirSync(socket, { recursive: true });
    deadDaemon(socket);
    await expect(recover(config, noTun, recordingLogger().log)).rejects.toMatchObject({ code: 'ERR_CONTROL_SOCKET', message: `crash recovery: cannot remove ${socket}, the dead ipipd's control socket (EISDIR)`, cause: { code: 'EISDIR', syscall: 'unlink' } });
    expect(existsSync(path)).toBe(true);
  });

  test('removeFile (the state file\'s undo): a file already gone is fine; one that cannot be removed throws its errno', () => {
    expect(removeFile(join(dir, 'none.state'))).toBe(false);
    mkdirSync(path);
    expect(() => removeFile(path)).toThrow(expect.objectContaining({ code: 'EISDIR', syscall: 'unlink' }));
    rmSync(path, { recursive: true });
    writeFileSync(path, '{}');
    expect(removeFile(path)).toBe(true);
    expect(existsSync(path)).toBe(false);
  });
});
