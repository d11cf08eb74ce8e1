/**
 * systemd readiness from a real daemon (src/daemon/notify.ts wired in src/daemon/cli.ts): with
 * $NOTIFY_SOCKET pointing at a listener of the test's own, `ipipd run` sends READY=1 only once
 * it forwards (routes in, control socket answering "up"), WATCHDOG=1 when $WATCHDOG_USEC asks
 * for it, RELOADING=1 (with MONOTONIC_USEC) and then READY=1 again around a reload that SIGHUP
 * applies, and STOPPING=1 when SIGTERM starts the shutdown.
 *
 *   pod h1p1 -- h1 [ipipd, NOTIFY_SOCKET=<test dir>/notify.sock] == ul0 == [ipipd] h2 -- pod h2p1
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { queryControl } from '../../src/daemon/control.js';
import { IPIPD, startDaemon, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { notifyListener, type NotifyListener } from '../helpers/notify-listener.js';
import { pingBothWays } from '../helpers/pair.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';

const why = integrationSkip('systemd notify test', skipWithout('python3'));

describe.skipIf(why)('ipipd run under a notification socket', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let d2: RunningDaemon | undefined;
  let l: NotifyListener | undefined;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    [h1, h2] = [topo.host(1), topo.host(2)];
    d2 = await startDaemon(topo, h2);
  });
  afterAll(async () => {
    l?.close();
    if (d2) await stopDaemon(d2).catch(() => undefined);
    await topo?.down();
  });

  test('READY=1 once it forwards, WATCHDOG=1, RELOADING=1 then READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM', async () => {
    const sock = join(topo.info.outDir, 'notify.sock');
    l = await notifyListener(sock);
    const child = topo.spawn(h1.ns, [process.execPath, IPIPD, 'run', '--config', h1.config], {
      env: { ...process.env, NOTIFY_SOCKET: sock, WATCHDOG_USEC: '2000000' },
    });
    let log = '';
    child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
    const readyMsg = await l.waitFor('READY=1', 30_000).catch((e: Error) => { throw new Error(`${e.message}\n${log}`); });
    // At READY=1 the control socket already answers "up", and the routes are in.
    expect(JSON.parse(await queryControl(h1.socket)).state).toBe('up');
    const routes = await topo.exec(h1.ns, ['ip', 'route', 'show', h2.block]);
    expect(routes.stdout).toContain('dev ipip0');
    expect(readyMsg.split('\n')).toContain(`MAINPID=${JSON.parse(await queryControl(h1.socket)).pid}`);
    expect(l.received[0]).toBe(readyMsg); // nothing before it
    await l.waitFor('WATCHDOG=1');
    await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
    // A reload that changes something (the ICMP limits): RELOADING=1 before, READY=1 after.
    const before = l.received.length;
    appendFileSync(h1.config, 'icmp:\n  rate: 500\n  burst: 20\n');
    child.kill('SIGHUP');
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && !l.received.slice(before).some((m) => m.split('\n').includes('READY=1'))) await new Promise((r) => setTimeout(r, 50));
    const after = l.received.slice(before).filter((m) => !m.split('\n').includes('WATCHDOG=1'));
    expect(after.length, `${JSON.stringify(l.received)}\n${log}`).toBeGreaterThanOrEqual(2);
    expect(after[0]!.split('\n')).toContain('RELOADING=1');
    expect(after[0]).toMatch(/MONOTONIC_USEC=\d+/);
    expect(after[1]!.split('\n')).toContain('READY=1');
    expect(log).toContain('SIGHUP: reloaded');
    await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
    child.kill('SIGTERM');
    await l.waitFor('STOPPING=1');
    expect(await exited).toBe(0);
  });
});
