/**
 * The `ipipd` command as a user meets it: help, `check`, exit statuses, and start-up failures
 * that must leave the host exactly as it was (run inside namespaces this test creates).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GOOD, ipipd } from '../helpers/cli.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';
import { integrationSkip } from '../helpers/skip.js';

const dir = mkdtempSync(join(tmpdir(), 'ipipd-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));



describe('ipipd CLI (no privileges needed)', () => {
  test('--help lists the commands; each command has its own --help', () => {
    const r = ipipd(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['run', 'check', 'status']) expect(r.stdout).toMatch(new RegExp(`ipipd ${c}`));
    const run = ipipd(['run', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/--config/);
    expect(run.stdout).toMatch(/--log-level/);
    expect(ipipd(['status', '--help']).stdout).toMatch(/--socket/);
  });

  test('--version prints the package version', () => {
    const r = ipipd(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  test('no command, or an unknown one, is a usage error (exit 2)', () => {
    expect(ipipd([]).code).toBe(2);
    const r = ipipd(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ERR_USAGE/);
  });

  test('check: a valid config prints what it would do, exit 0', () => {
    const f = join(dir, 'good.yaml');
    writeFileSync(f, GOOD);
    const r = ipipd(['check', '--config', f]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${f}: ok`);
    expect(r.stdout).toMatch(/peer h2 endpoint 192\.0\.2\.2 prefixes 203\.0\.113\.0\/25/);
    const j = ipipd(['check', '--config', f, '--json']);
    expect(JSON.parse(j.stdout).underlay.address).toBe('192.0.2.1');
  });

  test('check: an invalid config names the file, each path and problem, exit 2', () => {
    const f = join(dir, 'bad.yaml');
    writeFileSync(f, GOOD.replace('192.0.2.2', '192.0.2.999').replace('203.0.113.0/25', '203.0.113.1/25'));
    const r = ipipd(['check', '--config', f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`ERR_CONFIG_INVALID: ${f}: 2 problems`);
    expect(r.stderr).toMatch(/peers\[0\]\.endpoint: not an IPv4 address/);
    expect(r.stderr).toMatch(/peers\[0\]\.prefixes\[0\]: host bits set/);
  });

  test('a missing file and broken YAML have their own codes', () => {
    expect(ipipd(['check', '--config', join(dir, 'nope.yaml')]).stderr).toMatch(/ERR_CONFIG_READ: .*nope\.yaml: cannot read \(ENOENT\)/);
    const f = join(dir, 'broken.yaml');
    writeFileSync(f, 'tun: [\n');
    const r = ipipd(['check', '--config', f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ERR_CONFIG_PARSE/);
  });

  test('status with nobody listening: ERR_STATUS_UNREACHABLE, exit 1', () => {
    const r = ipipd(['status', '--socket', join(dir, 'none.sock')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ERR_STATUS_UNREACHABLE/);
  });
});

const why = integrationSkip('integration tests');

describe.skipIf(why)('ipipd run: failures leave the host as it was', () => {
  let topo: Topology;
  let h1: HostInfo;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
  });
  afterAll(async () => {
    await topo?.down();
  });

  async function snapshot(): Promise<string> {
    const parts = await Promise.all([
      topo.exec(h1.ns, ['ip', '-o', 'link']),
      topo.exec(h1.ns, ['ip', '-o', 'addr']),
      topo.exec(h1.ns, ['ip', 'route', 'show', 'table', 'all']),
    ]);
    // Link statistics and ARP state change by themselves; names, addresses and routes must not.
    return parts.map((p) => p.stdout.replace(/\s+link\/\S+ \S+ brd \S+/g, '')).join('\n');
  }

  test('an invalid config exits 2 before touching anything', async () => {
    const before = await snapshot();
    const f = join(topo.info.outDir, 'bad.yaml');
    writeFileSync(f, GOOD.replace('ipip0', 'this-name-is-too-long'));
    const r = ipipd(['run', '--config', f], h1.ns);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ERR_CONFIG_INVALID: .*\n\s+tun\.name: /);
    expect(await snapshot()).toBe(before);
  });

  test('an underlay address this host does not have: ERR_UNDERLAY_ADDRESS, nothing created', async () => {
    const before = await snapshot();
    const f = join(topo.info.outDir, 'wrong-underlay.yaml');
    writeFileSync(f, GOOD.replace('192.0.2.1 }', '192.0.2.77 }') + `control: { socket: ${join(topo.info.outDir, 'x.sock')} }\n`);
    const r = ipipd(['run', '--config', f], h1.ns);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ERR_UNDERLAY_ADDRESS: underlay\.address 192\.0\.2\.77 is not configured/);
    expect(await snapshot()).toBe(before);
  });

  test('a route that already exists: ERR_ROUTE_ADD, and the TUN and its address are removed again', async () => {
    // Someone else routes one of the peer's prefixes already.
    const pre = await topo.exec(h1.ns, ['ip', 'route', 'add', '203.0.113.0/25', 'via', '192.0.2.2']);
    expect(pre.code, pre.stderr).toBe(0);
    try {
      const before = await snapshot();
      const r = ipipd(['run', '--config', h1.config], h1.ns);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/ERR_ROUTE_ADD: cannot add route 203\.0\.113\.0\/25 dev ipip0 \(peer h2\): EEXIST/);
      expect(await snapshot()).toBe(before);
    } finally {
      await topo.exec(h1.ns, ['ip', 'route', 'del', '203.0.113.0/25', 'via', '192.0.2.2']);
    }
  });

  test('a control socket whose directory cannot be made (under /proc): ERR_STATE_FILE, nothing left', async () => {
    // The state file, written beside the socket, is the first to need the directory. mkdir(2)
    // answers ENOENT under /proc although the parent exists (Node's recursive mkdir looped on
    // that for ever, with the TUN already open: src/daemon/dirs.ts).
    const sock = `/proc/ipipd-test-${process.pid}/x.sock`;
    const f = join(topo.info.outDir, 'proc-socket.yaml');
    writeFileSync(f, GOOD + `control: { socket: ${sock} }\n`);
    const before = await snapshot();
    const r = ipipd(['run', '--config', f], h1.ns);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`ERR_STATE_FILE: cannot write the state file ${sock.replace(/\.sock$/, '.state')}: ENOENT`);
    expect(await snapshot()).toBe(before);
  });

  test('a TUN name that is taken: ERR_TUN_EXISTS, the existing device untouched', async () => {
    const f = join(topo.info.outDir, 'taken.yaml');
    writeFileSync(f, GOOD.replace('name: ipip0', 'name: p1'));
    const before = await snapshot();
    const r = ipipd(['run', '--config', f], h1.ns);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ERR_TUN_EXISTS: a device named p1 already exists/);
    expect(await snapshot()).toBe(before);
  });
});
