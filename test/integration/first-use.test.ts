/**
 * What a new user tripped on (issue 13, point 6), each as the user meets it through the `ipipd`
 * command: usage errors without a stack trace, every config problem in one message, `check
 * --json` as written, union errors that say what is expected, ERR_NATIVE_LOAD's one fix, a
 * failed start that set nothing up saying so; and (point 5) two daemons with the same TUN name
 * in two network namespaces, on their default control sockets.
 *
 *   namespace h1 ── ul0 ─── ul0 ── namespace h2      (tools/netns, direct underlay)
 *   ipipd, tun ipip0               ipipd, tun ipip0   both on /run/ipipd/ipip0.<netns>.sock
 */
import { cpSync, existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GOOD, ipipd } from '../helpers/cli.js';
import { ROOT, editedConfig, startDaemon, stopDaemon } from '../helpers/daemons.js';
import { integrationSkip } from '../helpers/skip.js';
import { Topology } from '../../tools/netns/topology.js';

const dir = mkdtempSync(join(tmpdir(), 'ipipd-first-use-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));



function config(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

describe('what a new user hits (no privileges needed)', () => {
  test.each([
    ['status', [], /status needs --socket PATH or --config FILE/],
    ['run', [], /Missing required argument: config/],
    ['check', [], /Missing required argument: config/],
    ['status', ['--json'], /status needs --socket/],
    ['run', ['--config'], /Not enough arguments following: config/],
    ['status', ['--socket'], /Not enough arguments following: socket/],
    ['check', ['--config', 'x.yaml', '--bogus'], /Unknown argument: bogus/],
  ] as const)('ipipd %s %j: ERR_USAGE, exit 2, no stack trace', (cmd, args, re) => {
    const r = ipipd([cmd, ...args]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/^ipipd: ERR_USAGE: /);
    expect(r.stderr).toMatch(re);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stderr.match(/ipipd:/g)).toHaveLength(1);
  });

  test('schema and cross-field problems come in one message', () => {
    const f = config('both.yaml', `
tun: { name: "bad name!" }
underlay: { address: 192.0.2.1 }
peers:
  - { name: a, endpoint: 192.0.2.1, prefixes: [203.0.113.0/25] }
  - { name: b, endpoint: nowhere, prefixes: [198.51.100.0/24] }
  - { name: a, endpoint: 192.0.2.3, prefixes: [203.0.113.0/25] }
`);
    const r = ipipd(['check', '--config', f]);
    expect(r.code).toBe(2);
    const lines = r.stderr.split('\n').slice(1).map((l) => l.trim()).filter(Boolean);
    expect(r.stderr).toContain(`ERR_CONFIG_INVALID: ${f}: ${lines.length} problems`);
    for (const re of [
      /^tun\.name: a Linux interface name/, // schema
      /^peers\[1\]\.endpoint: not an IPv4 address/, // schema
      /^peers\[0\]\.endpoint: endpoint 192\.0\.2\.1 is this host's own underlay\.address/, // across fields
      /^peers\[2\]\.name: duplicate peer name "a"/, // across fields
      /^peers\[2\]\.prefixes\[0\]: prefix 203\.0\.113\.0\/25 is already given at peers\[0\]\.prefixes\[0\]/,
    ]) {
      expect(lines.some((l) => re.test(l)), `${re} in\n${lines.join('\n')}`).toBe(true);
    }
  });

  test('check --json prints addresses and prefixes as a user writes them', () => {
    const r = ipipd(['check', '--config', config('good.yaml', GOOD), '--json']);
    expect(r.code).toBe(0);
    const c = JSON.parse(r.stdout);
    expect(c.underlay.address).toBe('192.0.2.1');
    expect(c.tun.address).toBe('198.51.100.0/32');
    expect(c.peers[0].endpoint).toBe('192.0.2.2');
    expect(c.peers[0].prefixes).toEqual(['203.0.113.0/25']);
    expect(r.stdout).not.toMatch(/"(value|addr|len)":/); // no int32 form anywhere
  });

  test.each([
    ['control: { socket: true }', /^ {2}control\.socket: expected a socket path, or false to disable it; got true$/m],
    ['encap: { tos: af41 }', /^ {2}encap\.tos: expected inherit, or a DSCP byte .* \(AF41 is 136, EF is 184\); got "af41"$/m],
    ['encap: { ttl: forever }', /^ {2}encap\.ttl: expected a TTL from 1 to 255, or inherit; got "forever"$/m],
  ])('%s says what is expected, not "Invalid input"', (extra, re) => {
    const r = ipipd(['check', '--config', config('union.yaml', GOOD + extra + '\n')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(re);
    expect(r.stderr).not.toMatch(/Invalid input/);
  });

  test('ERR_NATIVE_LOAD: "ipipd:" once, and the README\'s fix', () => {
    // A copy of the package without build/: the addon is not there.
    const pkg = join(dir, 'pkg');
    cpSync(join(ROOT, 'dist'), join(pkg, 'dist'), { recursive: true });
    cpSync(join(ROOT, 'bin'), join(pkg, 'bin'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(pkg, 'node_modules'));
    expect(existsSync(join(pkg, 'build'))).toBe(false);
    const r = ipipd(['run', '--config', config('native.yaml', GOOD)], undefined, join(pkg, 'bin', 'ipipd.js'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ipipd: ERR_NATIVE_LOAD: cannot load the data path: cannot load the native addon .*ipipd_native\.node/);
    expect(r.stderr.match(/ipipd:/g)).toHaveLength(1);
    expect(r.stderr).toContain('run `npm ci` (needs g++, make, python3)');
  });
});

const why = integrationSkip('first-use integration tests');

describe.skipIf(why)('ipipd run in namespaces', () => {
  let topo: Topology;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
  });
  afterAll(async () => {
    await topo?.down();
  });

  test('a start that set nothing up does not say it is undoing anything', () => {
    const h1 = topo.host(1);
    const f = join(topo.info.outDir, 'wrong-underlay.yaml');
    writeFileSync(f, GOOD.replace('192.0.2.1 }', '192.0.2.77 }') + `control: { socket: ${join(topo.info.outDir, 'x.sock')} }\n`);
    const r = ipipd(['run', '--config', f], h1.ns);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ERR_UNDERLAY_ADDRESS/);
    expect(r.stderr).toMatch(/start failed; nothing was set up/);
    expect(r.stderr).not.toMatch(/undoing/);
  });

  test('two namespaces, the same TUN name, default control sockets: each status finds its own daemon', async () => {
    const hosts = [topo.host(1), topo.host(2)];
    const files = hosts.map((h) =>
      editedConfig(topo, h, 'default-socket', (cfg) => {
        cfg.tun.name = 'ipip0';
        delete cfg.control;
      }),
    );
    const sockets = hosts.map((h, i) => {
      const r = ipipd(['check', '--config', files[i]!, '--json'], h.ns);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).control.socket as string;
    });
    expect(sockets[0]).toMatch(/^\/run\/ipipd\/ipip0\.\d+\.sock$/);
    expect(sockets[1]).toMatch(/^\/run\/ipipd\/ipip0\.\d+\.sock$/);
    expect(sockets[0]).not.toBe(sockets[1]);
    // startDaemon polls host.socket: point it at the default path.
    const daemons = [];
    try {
      for (let i = 0; i < 2; i++) daemons.push(await startDaemon(topo, { ...hosts[i]!, socket: sockets[i]! }, files[i]));
      for (let i = 0; i < 2; i++) {
        const r = ipipd(['status', '--config', files[i]!, '--json'], hosts[i]!.ns);
        expect(r.code, r.stderr).toBe(0);
        const s = JSON.parse(r.stdout);
        expect(s.underlay.address).toBe(hosts[i]!.underlay);
      }
    } finally {
      for (const d of daemons) await stopDaemon(d);
    }
    for (const s of sockets) expect(existsSync(s)).toBe(false);
  });
});
