/**
 * Faults as tests (issue 14): each one is made to happen to a running pair of daemons, and each
 * test asserts that traffic resumes (or that the documented exit happens) and that nothing is
 * left behind; the recovery times are measured and printed as one table at the end (they are
 * reported, never asserted: docs/reliability.md, "Faults").
 *
 *   P-h1p1 pod A                P-h1 host A                          P-h2 host B                P-h2p1 pod B
 *   198.51.100.10 --- p1 [ipip0 198.51.100.0/32] ul0 192.0.2.1 ==== 192.0.2.2 ul0 [ipip0 203.0.113.0/32] p1 --- 203.0.113.10
 *                          ipipd (h1.yaml)              IPIP (proto 4)            ipipd (h2.yaml)
 *
 * The faults: the TUN deleted from outside; stderr on a full disk (/dev/full); SIGKILL, then a
 * restart; the peer restarted; the underlay link down and up; the control socket's directory
 * read-only. Packet-level faults (outer options, a full TUN queue, missing capabilities) are in
 * faults-packets.test.ts.
 */
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { editedConfig, startDaemon, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectNothingLeft } from '../helpers/pair.js';
import { figures, pingOnce, printFigures, spawnDaemon, untilTraffic, within } from '../helpers/faults.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';
import { sleep } from '../../tools/netns/exec.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';

const why = integrationSkip('fault tests', skipWithout('ping', 'unshare'));

describe.skipIf(why)('faults: noticed, survived, nothing left behind', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let a: PodInfo;
  let b: PodInfo;
  /** Daemons a test started and has not stopped itself (a failed assertion): stopped after it. */
  const running = new Set<RunningDaemon>();

  const start = async (h: HostInfo, config = h.config): Promise<RunningDaemon> => {
    const d = await startDaemon(topo, h, config);
    running.add(d);
    return d;
  };
  const stop = async (d: RunningDaemon): Promise<number | null> => {
    running.delete(d);
    return stopDaemon(d);
  };
  /** SIGTERM each, expect exit 0, then nothing left on their hosts. */
  const stopAll = async (...ds: RunningDaemon[]): Promise<void> => {
    for (const d of ds) expect(await stop(d), `ipipd on ${d.host.name}`).toBe(0);
    for (const d of ds) await expectNothingLeft(topo, d.host);
  };
  const ended = async (d: RunningDaemon, ms = 15_000): Promise<number | null> => {
    const code = await within(d.exited, ms, `ipipd on ${d.host.name} to exit`);
    running.delete(d);
    return code;
  };

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    h2 = topo.host(2);
    a = h1.pods[0]!;
    b = h2.pods[0]!;
  });

  afterEach(async () => {
    for (const d of running) {
      d.child.kill('SIGKILL');
      await d.exited;
    }
    running.clear();
  });

  afterAll(async () => {
    printFigures('Faults: recovery times measured (test/integration/faults.test.ts)');
    await topo?.down();
  });

  test.each([{ queues: 1 }, { queues: 2 }])('TUN deleted (io.queues: $queues): noticed, clean shutdown, exit 1 with ERR_TUN_GONE; a restart brings traffic back', async ({ queues }) => {
    const cfg = queues === 1 ? h1.config : editedConfig(topo, h1, `queues-${queues}`, (c) => (c.io = { ...c.io, queues }));
    const d1 = await start(h1, cfg);
    const d2 = await start(h2);
    expect(await pingOnce(topo, a, b)).toBe(true);
    const t0 = Date.now();
    await topo.exec(h1.ns, ['ip', 'link', 'del', 'ipip0']);
    // It shuts down on its own; a SIGTERM during that shutdown must not turn it into a success.
    for (let i = 0; i < 100 && !d1.log().includes('the TUN is gone'); i++) await sleep(20);
    const noticedMs = Date.now() - t0;
    expect(d1.log()).toContain('the TUN is gone');
    d1.child.kill('SIGTERM');
    const code = await ended(d1);
    const exitMs = Date.now() - t0;
    expect(code).toBe(1);
    const log = d1.log();
    expect(log).toMatch(/ipipd: ERR_TUN_GONE: rtnetlink: device ipip0 \(ifindex \d+\) was deleted; its routes \(203\.0\.113\.0\/25 dev ipip0\)/);
    const final = JSON.parse(log.split('\n').find((l) => l.includes('closed: final counters'))!) as { failure: { code: string; routesLost: string[] } };
    expect(final.failure).toMatchObject({ code: 'ERR_TUN_GONE', routesLost: ['203.0.113.0/25 dev ipip0'] });
    expect(log, 'the undo steps of what went with the device are not tried').not.toContain('cleanup step failed');
    await expectNothingLeft(topo, h1);
    // What a supervisor does: start it again.
    const t1 = Date.now();
    const again = await start(h1, cfg);
    const resumeMs = await untilTraffic(topo, a, b, t1);
    figures.set(`TUN deleted (\`ip link del ipip0\`), io.queues ${queues}`, `noticed ${noticedMs} ms after the delete, exit 1 ${exitMs} ms after; restarted, traffic back ${resumeMs} ms after the restart began (${Date.now() - t0} ms after the delete)`);
    await stopAll(again, d2);
  });

  test('stderr at /dev/full: log lines counted as log_write_errors, the tunnel runs, shutdown removes everything', async () => {
    const full = openSync('/dev/full', 'w');
    let d1: RunningDaemon & { up: boolean };
    try {
      d1 = await spawnDaemon(topo, h1, h1.config, { stdio: ['ignore', 'pipe', full] });
    } finally {
      closeSync(full);
    }
    running.add(d1);
    expect(d1.up, 'ipipd came up with stderr at /dev/full').toBe(true);
    const d2 = await start(h2);
    const t0 = Date.now();
    const resumeMs = await untilTraffic(topo, a, b, t0);
    const s = await status(h1);
    expect(s.state).toBe('up');
    expect(s.counters.log_write_errors).toBeGreaterThan(0);
    expect(s.lastErrors.log).toBe('ENOSPC');
    expect(s.peers[0]!.rxPackets).toBeGreaterThan(0);
    figures.set('stderr at /dev/full', `never down: ${s.counters.log_write_errors} log lines lost (ENOSPC) by the time it was up, first ping answered after ${resumeMs} ms`);
    await stopAll(d1, d2);
  });

  test('stderr a pipe nobody reads any more (EPIPE): counted, the tunnel runs, shutdown removes everything', async () => {
    const d1 = await start(h1);
    const d2 = await start(h2);
    d1.child.stderr!.destroy();
    d1.child.kill('SIGUSR1'); // logs the counters: a line that now fails
    let s = await status(h1);
    for (let i = 0; i < 50 && !s.counters.log_write_errors; i++) {
      await sleep(50);
      s = await status(h1);
    }
    expect(s.counters.log_write_errors).toBeGreaterThan(0);
    expect(s.lastErrors.log).toBe('EPIPE');
    expect(s.state).toBe('up');
    expect(await pingOnce(topo, a, b)).toBe(true);
    await stopAll(d1, d2);
  });

  test('SIGKILL, then a restart: what the next start finds, and traffic back', async () => {
    const d1 = await start(h1);
    const d2 = await start(h2);
    expect(await pingOnce(topo, a, b)).toBe(true);
    d1.child.kill('SIGKILL');
    await ended(d1);
    const t0 = Date.now();
    // The kernel closed the dead daemon's fds: the TUN, with its address and routes, goes with
    // them. Only the control-socket file stays (nothing can unlink it after a SIGKILL).
    const link = await topo.exec(h1.ns, ['ip', 'link', 'show', 'ipip0']);
    const routes = await topo.exec(h1.ns, ['ip', 'route', 'show', 'table', 'all']);
    const leftSocket = existsSync(h1.socket);
    const stateFile = h1.socket.replace(/\.sock$/, '.state');
    const leftState = existsSync(stateFile);
    expect(leftSocket, 'the dead daemon left its control-socket file').toBe(true);
    expect(leftState, 'the dead daemon left its state file (crash recovery reads it)').toBe(true);
    // README "Crash recovery": the next start reads the state file, finds its pid dead, removes
    // what it left (here the socket file) and creates the TUN afresh.
    const t1 = Date.now();
    const again = await start(h1);
    const resumeMs = await untilTraffic(topo, a, b, t1);
    figures.set('SIGKILL, then restart', `left behind: ${link.code === 0 ? 'the TUN, ' : ''}${/ipip0/.test(routes.stdout) ? 'routes, ' : ''}${leftSocket ? 'the control-socket file, ' : ''}${leftState ? 'the state file' : ''}; restarted ${t1 - t0} ms after the kill, traffic back ${resumeMs} ms after the restart began`);
    expect(link.code, 'the TUN went with the dead process').not.toBe(0);
    expect(routes.stdout).not.toMatch(/ipip0/);
    expect(again.log()).toContain('a previous ipipd died without cleaning up');
    expect(again.log()).toContain('removed its control socket');
    await stopAll(again, d2);
  });

  test('the peer restarted: traffic resumes without touching this side', async () => {
    const d1 = await start(h1);
    let d2 = await start(h2);
    expect(await pingOnce(topo, a, b)).toBe(true);
    expect(await stop(d2)).toBe(0);
    await expectNothingLeft(topo, h2);
    expect(await pingOnce(topo, a, b)).toBe(false);
    const t0 = Date.now();
    d2 = await start(h2);
    const upMs = Date.now() - t0;
    const resumeMs = await untilTraffic(topo, a, b, t0);
    const s = await status(h1);
    expect(s.state).toBe('up');
    expect(s.peers[0]!.reachable).toBe(true);
    figures.set('peer restarted', `peer up ${upMs} ms after its start began, traffic back ${resumeMs} ms after it`);
    await stopAll(d1, d2);
  });

  test('the underlay link down for 2 s and up again: the daemon stays up, traffic resumes', async () => {
    const d1 = await start(h1);
    const d2 = await start(h2);
    expect(await pingOnce(topo, a, b)).toBe(true);
    await topo.exec(h1.ns, ['ip', 'link', 'set', 'ul0', 'down']);
    expect(await pingOnce(topo, a, b)).toBe(false);
    await sleep(1000);
    expect((await status(h1)).state).toBe('up');
    await topo.exec(h1.ns, ['ip', 'link', 'set', 'ul0', 'up']);
    const t0 = Date.now();
    const resumeMs = await untilTraffic(topo, a, b, t0);
    const s = await status(h1);
    expect(s.state).toBe('up');
    figures.set('underlay link down 2 s, then up', `daemon stayed up; traffic back ${resumeMs} ms after the link came up (socket_write_error ${s.drops.socket_write_error} while down)`);
    await stopAll(d1, d2);
  });

  test("the control socket's directory read-only: exit 1 with ERR_STATE_FILE, everything undone", async () => {
    // A read-only tmpfs in a mount namespace of the daemon's own (root writes through mode bits).
    const dir = join(topo.info.outDir, 'ro-control');
    mkdirSync(dir, { recursive: true });
    const sock = join(dir, 'ipipd.sock');
    const cfg = editedConfig(topo, h1, 'ro-control', (c) => (c.control = { socket: sock }));
    const t0 = Date.now();
    const d1 = await spawnDaemon(topo, h1, cfg, { prefix: ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', dir] });
    running.add(d1);
    expect(d1.up).toBe(false);
    const code = await ended(d1);
    expect(code).toBe(1);
    // The state file beside the socket is the first thing written there (start-up step 2).
    expect(d1.log()).toMatch(/ipipd: ERR_STATE_FILE: cannot write the state file .*ipipd\.state: EROFS/);
    figures.set("control socket's directory read-only", `exit 1 (ERR_STATE_FILE, EROFS) ${Date.now() - t0} ms after the start, everything undone`);
    await expectNothingLeft(topo, h1);
    expect(existsSync(sock)).toBe(false);
  });
});
