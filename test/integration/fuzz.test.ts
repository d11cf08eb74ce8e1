// `npm run fuzz` with a small count, as CI runs it (the full million per face: docs/reliability.md):
//
//   pod A -- P-h1 [ipipd] ==== underlay ==== [ipipd] P-h2 -- pod B      (tools/fuzz/run.ts)
//
// 5000 hostile packets at each face (TUN, underlay from the peer, underlay from strangers) with a
// TCP transfer alongside: the harness exits 0 only if both daemons stay up and exit 0, every
// transfer arrives intact and every packet is accounted for; the table says so, face by face;
// and nothing is left behind (no namespace with its prefix). Bad options exit 2, --help 0.

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, freshPrefix, listNamespaces } from '../../tools/netns/namespaces.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';

const FUZZ = join(ROOT, 'dist', 'tools', 'fuzz', 'run.js');
const why = integrationSkip('[fuzz.test]') ?? skipWithout('tc', 'iptables', 'ethtool');

function fuzz(args: string[]) {
  return spawnSync(process.execPath, [FUZZ, ...args], { encoding: 'utf8', timeout: 300_000 });
}

/** The table's row `name`: its values, one per face. */
function row(out: string, name: string): string[] {
  const line = out.split('\n').find((l) => l.startsWith(name));
  expect(line, `row ${name} in:\n${out}`).toBeDefined();
  return line!.slice(name.length).trim().split(/\s+/);
}

describe('npm run fuzz', () => {
  it('--help prints the usage and exits 0; a bad option exits 2', () => {
    const help = fuzz(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: npm run fuzz');
    expect(help.stdout).toContain('--count N');
    const bad = fuzz(['--count', 'lots']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--count must be a positive integer');
  });

  it.skipIf(why !== null)('5000 packets a face: daemons alive, transfers intact, every packet accounted for, nothing left', () => {
    const prefix = freshPrefix('f');
    const r = fuzz(['--count', '5000', '--seed', '7', '--transfer', '2M', '--prefix', prefix]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('fuzz: ok (seed 7)');
    expect(r.stdout.split('\n')[0]!.trim().split(/\s+/)).toEqual(['tun', 'peer', 'stranger']);
    expect(row(r.stdout, 'injected')).toEqual(['5000', '5000', '5000']);
    expect(row(r.stdout, 'unaccounted (must be 0)')).toEqual(['0', '0', '0']);
    expect(row(r.stdout, 'transfer SHA-256')).toEqual(['ok', 'ok', 'ok']);
    // Hostile packets were dropped, for the reasons the faces call for, and some valid ones forwarded.
    expect(Number(row(r.stdout, 'drop: not_ipv4')[0])).toBeGreaterThan(0);
    expect(Number(row(r.stdout, 'drop: inner_bad_checksum')[1])).toBeGreaterThan(0);
    expect(Number(row(r.stdout, 'drop: unknown_peer')[2])).toBeGreaterThan(0);
    expect(Number(row(r.stdout, 'kernel: ip_header_errors')[1])).toBeGreaterThan(0);
    for (const f of row(r.stdout, 'forwarded')) expect(Number(f)).toBeGreaterThan(0);
    expect(listNamespaces(prefix)).toEqual([]);
  });
});
