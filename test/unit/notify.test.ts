/**
 * The systemd notification protocol (src/daemon/notify.ts, the addon's notifyDatagram) against
 * a Unix datagram listener of the test's own (python3), on a path and on an abstract name.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { notify, ready, reloading, startWatchdog, stopping } from '../../src/daemon/notify.js';
import { native } from '../../src/tun/native.js';
import { notifyListener } from '../helpers/notify-listener.js';
import { skipOrFail } from '../helpers/skip.js';
import { hasCommand } from '../../tools/netns/exec.js';

const dir = mkdtempSync(join(tmpdir(), 'ipipd-notify-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const why = skipOrFail('notify tests', hasCommand('python3') ? null : "'python3' not installed");

describe.skipIf(why)('sd_notify', () => {
  test.each([
    ['a path', join(dir, 'notify.sock')],
    ['an abstract name', `@ipipd-test-${process.pid}-${Date.now()}`],
  ])('on %s: READY=1 (with STATUS and MAINPID), RELOADING=1 with MONOTONIC_USEC, STOPPING=1, in order', async (_what, path) => {
    const l = await notifyListener(path);
    try {
      const env = { NOTIFY_SOCKET: path };
      expect(ready('up: ipip0', env)).toBe(true);
      const before = process.hrtime.bigint() / 1000n;
      expect(reloading(env)).toBe(true);
      const after = process.hrtime.bigint() / 1000n;
      expect(stopping(env)).toBe(true);
      await l.waitFor('STOPPING=1');
      expect(l.received).toHaveLength(3);
      expect(l.received[0]!.split('\n')).toEqual(['READY=1', 'STATUS=up: ipip0', `MAINPID=${process.pid}`]);
      const [r, m] = l.received[1]!.split('\n');
      expect(r).toBe('RELOADING=1');
      const usec = BigInt(/^MONOTONIC_USEC=(\d+)$/.exec(m!)![1]!);
      expect(usec >= before && usec <= after).toBe(true); // CLOCK_MONOTONIC, as systemd reads it
      expect(l.received[2]).toBe('STOPPING=1');
    } finally {
      l.close();
    }
  });

  test.each([
    ['WATCHDOG_USEC is unset', 'no-usec.sock', {}],
    ['WATCHDOG_PID is another process', 'other-pid.sock', { WATCHDOG_USEC: '40000', WATCHDOG_PID: String(process.pid + 1) }],
  ])('no watchdog when %s: nothing is sent', async (_what, name, more) => {
    // A socket of its own: exactly what this case sends arrives there.
    const path = join(dir, name);
    const l = await notifyListener(path);
    try {
      const stop = startWatchdog({ NOTIFY_SOCKET: path, ...more });
      // A WATCHDOG=1 would be sent at once, before this marker: datagrams from one socket keep their order.
      ready('marker', { NOTIFY_SOCKET: path });
      await l.waitFor('READY=1');
      stop();
      expect(l.received).toEqual([`READY=1\nSTATUS=marker\nMAINPID=${process.pid}`]);
    } finally {
      l.close();
    }
  });

  test('WATCHDOG=1 at once and then every half of WATCHDOG_USEC, only until stopped', async () => {
    const path = join(dir, 'watchdog.sock');
    const l = await notifyListener(path);
    try {
      const stop = startWatchdog({ NOTIFY_SOCKET: path, WATCHDOG_USEC: '40000', WATCHDOG_PID: String(process.pid) });
      await l.waitFor('WATCHDOG=1');
      // Count by arrivals, not by time: three more come, then stop() ends them.
      while (l.received.length < 4) await new Promise((r) => setTimeout(r, 10));
      stop();
      expect(l.received.every((m) => m === 'WATCHDOG=1')).toBe(true);
      ready('x', { NOTIFY_SOCKET: path });
      await l.waitFor('READY=1');
      const n = l.received.length;
      await new Promise((r) => setTimeout(r, 100)); // five periods: nothing more after stop()
      expect(l.received.length).toBe(n);
    } finally {
      l.close();
    }
  });

  test('without NOTIFY_SOCKET nothing is sent; a socket nobody listens on is not an error for the daemon', () => {
    expect(notify('READY=1', {})).toBe(false);
    const errors: Error[] = [];
    expect(notify('READY=1', { NOTIFY_SOCKET: join(dir, 'nobody.sock') }, (e) => errors.push(e))).toBe(false);
    expect(errors[0]).toMatchObject({ code: 'ENOENT', syscall: 'sendto' });
    expect(() => native.notifyDatagram('relative', 'x')).toThrow(RangeError);
  });
});
