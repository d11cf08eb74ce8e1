/**
 * Network namespaces for the bench and the tests, below the topologies of topology.ts: where the
 * repository is, the one listing of namespaces by prefix, fresh per-run prefixes, whether this
 * machine can make namespaces at all, and bare namespaces (one empty namespace, for the tests
 * that run a child fixture against the native addon and build their own devices inside it).
 *
 * The module runs from source (the tests, under vitest) and from dist/tools/netns (the bench),
 * so ROOT is found by looking for package.json upwards, which is right from both places.
 *
 * Flow of this file: ROOT and SETUP_SCRIPT; listNamespaces and freshPrefix; netnsMissing;
 * createNetns and deleteNetns (registered with the safety net until deleted).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { register } from './safety-net.js';

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

/** The repository root (this file runs as tools/netns/*.ts under vitest, dist/tools/netns/*.js otherwise). */
export const ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));
export const SETUP_SCRIPT = join(ROOT, 'scripts', 'netns-setup.sh');

/** Namespaces named "<prefix>-...", or every namespace without a prefix. */
export function listNamespaces(prefix?: string): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return (r.stdout ?? '')
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n && (prefix === undefined || n.startsWith(`${prefix}-`)));
}

/**
 * `letter` + 5 hex digits, not yet used by any namespace: "t" for the tests' topologies, "b" and
 * "q" for the bench's, "x" for the tests that call netns-setup.sh themselves.
 */
export function freshPrefix(letter: string): string {
  const existing = listNamespaces();
  for (;;) {
    const prefix = `${letter}${randomBytes(3).toString('hex').slice(0, 5)}`;
    if (!existing.some((n) => n.startsWith(`${prefix}-`))) return prefix;
  }
}

let cachedMissing: string | null | undefined;

/**
 * Why namespaces cannot be made here (not Linux, not root, no /dev/net/tun, no iproute2 or bash,
 * `ip netns add` refused), or null when they can. Cached after the first call.
 */
export function netnsMissing(): string | null {
  if (cachedMissing !== undefined) return cachedMissing;
  cachedMissing = (() => {
    if (process.platform !== 'linux') return `not Linux (${process.platform})`;
    if (process.getuid?.() !== 0) return 'not root (network namespaces need CAP_SYS_ADMIN)';
    try {
      accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
    } catch {
      return 'no usable /dev/net/tun';
    }
    if (spawnSync('ip', ['-V']).error) return "iproute2 ('ip') not installed";
    if (spawnSync('bash', ['--version']).error) return 'bash not installed';
    const probe = `tq${randomBytes(3).toString('hex')}`;
    const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
    if (add.status !== 0) return `'ip netns add' fails: ${(add.stderr || String(add.error)).trim()}`;
    spawnSync('ip', ['netns', 'del', probe]);
    return null;
  })();
  return cachedMissing;
}

const bare = new Map<string, () => void>();

function deleteQuietly(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    // already gone
  }
  bare.get(name)?.();
  bare.delete(name);
}

/**
 * Creates an empty namespace named `<prefix>-<pid>-<random>` and returns its name. The safety
 * net deletes it if deleteNetns never comes.
 */
export function createNetns(prefix: string): string {
  const name = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name], { stdio: ['ignore', 'ignore', 'pipe'] });
  bare.set(name, register({ downSync: () => deleteQuietly(name) }));
  return name;
}

/** Deletes a namespace made by createNetns (idempotent; nothing for undefined). */
export function deleteNetns(name: string | undefined): void {
  if (name !== undefined) deleteQuietly(name);
}
