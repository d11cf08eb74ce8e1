/**
 * Least privilege (issue 13, point 4): `ipipd run` as user nobody holding only CAP_NET_ADMIN and
 * CAP_NET_RAW (setpriv, as the README says), with two queues (a worker thread inherits the
 * capabilities of the thread that starts it), forwards both ways and removes what it created.
 *
 *   pod h1p1 -- h1 [ipipd as nobody + 2 caps] == ul0 == [ipipd as root] h2 -- pod h2p1
 *
 * What it needs beyond the capabilities, and why it works: /dev/net/tun is mode 0666 (TUNSETIFF
 * wants CAP_NET_ADMIN); the net.* sysctls let a CAP_NET_ADMIN holder write as root would
 * (net/sysctl_net.c, net_ctl_permissions); the control socket and the state file go into a
 * directory the user may write (systemd's RuntimeDirectory=ipipd gives it /run/ipipd).
 */
import type { ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse, stringify } from 'yaml';
import { queryControl } from '../../src/daemon/control.js';
import { IPIPD, startDaemon, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectNothingLeft, pingBothWays } from '../helpers/pair.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';

const why = integrationSkip('least-privilege test', skipWithout('setpriv'));
const NOBODY = 65534;

/** The command line the README gives: nobody, only these two capabilities, ambient so they survive exec. */
const SETPRIV = [
  'setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups',
  '--inh-caps=-all,+net_admin,+net_raw', '--ambient-caps=-all,+net_admin,+net_raw', '--bounding-set=-all,+net_admin,+net_raw',
];

describe.skipIf(why)('ipipd run as nobody with CAP_NET_ADMIN and CAP_NET_RAW only', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let d2: RunningDaemon | undefined;
  let child: ChildProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'ipipd-nobody-'));

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    [h1, h2] = [topo.host(1), topo.host(2)];
    d2 = await startDaemon(topo, h2);
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    if (d2) await stopDaemon(d2).catch(() => undefined);
    await topo?.down();
    rmSync(dir, { recursive: true, force: true });
  });

  test('comes up, holds nothing more, forwards both ways, and cleans up on SIGTERM', async () => {
    chownSync(dir, NOBODY, NOBODY);
    const socket = join(dir, 'ipipd.sock');
    const cfg = parse(readFileSync(h1.config, 'utf8'));
    cfg.control = { socket };
    cfg.io = { ...cfg.io, queues: 2 };
    const file = join(dir, 'h1.yaml');
    writeFileSync(file, stringify(cfg), { mode: 0o644 });

    child = topo.spawn(h1.ns, [...SETPRIV, process.execPath, IPIPD, 'run', '--config', file]);
    let log = '';
    child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((res) => child!.on('exit', (c) => res(c)));
    let pid = 0;
    for (let i = 0; i < 150 && pid === 0; i++) {
      try {
        const s = JSON.parse(await queryControl(socket));
        if (s.state === 'up') pid = s.pid;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
      if (child.exitCode !== null) break;
    }
    expect(pid, log).not.toBe(0);

    // Really nobody, and really only the two capabilities (CAP_NET_ADMIN 12, CAP_NET_RAW 13).
    const st = readFileSync(`/proc/${pid}/status`, 'utf8');
    expect(st).toMatch(new RegExp(`^Uid:\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}$`, 'm'));
    expect(BigInt('0x' + /^CapEff:\s+([0-9a-f]+)$/m.exec(st)![1]!)).toBe((1n << 12n) | (1n << 13n));
    expect(log).not.toMatch(/"level":"(warn|error)"/); // nothing it needed was refused

    await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    child = undefined;
    expect(existsSync(socket)).toBe(false);
    await expectNothingLeft(topo, h1);
  });
});
