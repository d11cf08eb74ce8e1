/**
 * The real Linux kernel the interop test peers with, and the busybox its initrd runs, both from
 * Debian's packages and nothing else: `linux-image-amd64` resolved to the kernel package it
 * depends on (linux-image-6.1.0-NN-amd64), and `busybox-static`. They are fetched with
 * `apt-get download` (no installing: nothing on the system changes) and unpacked with `dpkg-deb`,
 * only the files the guest needs, into a cache directory that later runs reuse:
 *
 *   <cache>/<kernel package>_<version>/vmlinuz           the kernel
 *   <cache>/<kernel package>_<version>/vmlinux           the same, uncompressed: what qemu boots
 *   <cache>/<kernel package>_<version>/modules/<m>.ko    the GUEST_MODULES, uncompressed
 *   <cache>/<kernel package>_<version>/busybox           busybox-static's /bin/busybox
 *
 * The cache is `$IPIPD_KERNEL_PEER_CACHE`, else `<os tmpdir>/ipipd-kernel-peer` (never in the
 * repository). A directory appears there only complete (made under a temporary name, renamed).
 *
 * Where the host's package lists do not know the packages (a container image that deleted
 * /var/lib/apt/lists, lists too old for the mirror), apt is pointed at private lists under the
 * cache (`apt-get update -o Dir::State::Lists=...`), so the system's own apt state is untouched.
 *
 * Flow of this file: GUEST_MODULES and cacheRoot; the apt calls (aptOptions, resolveKernel);
 * unpack; vmlinuxOf and assetsIn; fetchKernel (download and unpack once); kernelPeerAssets, the one entry point, which
 * says why when the packages cannot be had; cachedAssets, its last resort.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The modules the guest loads, in this order (each needs only those before it). */
export const GUEST_MODULES = ['e1000', 'tunnel4', 'ip_tunnel', 'ipip', 'udp_tunnel', 'ip6_udp_tunnel', 'fou'] as const;

/** The meta-package whose dependency names Debian's current kernel. */
const KERNEL_META = 'linux-image-amd64';
const BUSYBOX = 'busybox-static';

/** What a booted kernel peer is made of (absolute paths inside the cache). */
export interface KernelPeerAssets {
  /** e.g. "linux-image-6.1.0-57-amd64". */
  kernelPackage: string;
  /** e.g. "6.1.192-3". */
  version: string;
  vmlinuz: string;
  /** The same kernel uncompressed (ELF, booted through PVH), or null where it cannot be made. */
  vmlinux: string | null;
  /** module name -> its uncompressed .ko. */
  modules: Record<(typeof GUEST_MODULES)[number], string>;
  busybox: string;
}

/** The directory the unpacked packages are kept in between runs. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.IPIPD_KERNEL_PEER_CACHE || join(tmpdir(), 'ipipd-kernel-peer');
}

/** apt's options for the system's lists (private = false) or the cache's own (private = true). */
function aptOptions(cache: string, privateLists: boolean): string[] {
  // Downloads land in a root-owned directory the _apt sandbox user cannot write to.
  const opts = ['-o', 'APT::Sandbox::User=root'];
  if (!privateLists) return opts;
  const lists = join(cache, 'apt', 'lists');
  const pkgcache = join(cache, 'apt', 'cache');
  mkdirSync(join(lists, 'partial'), { recursive: true });
  mkdirSync(join(pkgcache, 'archives', 'partial'), { recursive: true });
  return [...opts, '-o', `Dir::State::Lists=${lists}`, '-o', `Dir::Cache=${pkgcache}`];
}

function apt(cmd: string, argv: string[], cwd?: string): { ok: boolean; out: string } {
  const r = spawnSync(cmd, argv, { cwd, encoding: 'utf8', timeout: 300_000 });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

/** The kernel package linux-image-amd64 depends on and its candidate version, or null. */
function resolveKernel(opts: string[]): { pkg: string; version: string } | null {
  const deps = apt('apt-cache', [...opts, 'depends', KERNEL_META]);
  const pkg = /Depends: (linux-image-[0-9][^\s]*-amd64)\b/.exec(deps.out)?.[1];
  if (!deps.ok || pkg === undefined) return null;
  const policy = apt('apt-cache', [...opts, 'policy', pkg]);
  const version = /Candidate: (\S+)/.exec(policy.out)?.[1];
  return version === undefined || version === '(none)' ? null : { pkg, version };
}

/**
 * Unpacks from the kernel's .deb only vmlinuz and the GUEST_MODULES (`dpkg-deb --fsys-tarfile`
 * into tar: the 400 MB of everything else never touch the disk), decompressing a module shipped
 * as .ko.xz or .ko.zst, and busybox from busybox-static, into `dir`.
 */
function unpack(kernelDeb: string, busyboxDeb: string, dir: string): void {
  const raw = join(dir, 'raw');
  mkdirSync(raw, { recursive: true });
  const patterns = ['./boot/vmlinuz-*', ...GUEST_MODULES.map((m) => `./lib/modules/*/${m}.ko*`)];
  const extract = 'deb=$1 dir=$2; shift 2; dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --wildcards "$@"';
  execFileSync('sh', ['-c', extract, 'sh', kernelDeb, raw, ...patterns], { stdio: ['ignore', 'ignore', 'pipe'] });
  execFileSync('dpkg-deb', ['-x', busyboxDeb, join(dir, 'bb')], { stdio: ['ignore', 'ignore', 'pipe'] });
  renameSync(join(dir, 'bb', 'bin', 'busybox'), join(dir, 'busybox'));
  const boot = join(raw, 'boot');
  renameSync(join(boot, readdirSync(boot).find((f) => f.startsWith('vmlinuz-'))!), join(dir, 'vmlinuz'));
  mkdirSync(join(dir, 'modules'));
  const found = execFileSync('find', [join(raw, 'lib', 'modules'), '-name', '*.ko*'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const m of GUEST_MODULES) {
    const ko = found.find((f) => new RegExp(`/${m}\\.ko(\\.(xz|zst))?$`).test(f));
    if (ko === undefined) throw new Error(`${kernelDeb} has no ${m}.ko`);
    const out = join(dir, 'modules', `${m}.ko`);
    if (ko.endsWith('.ko')) renameSync(ko, out);
    else execFileSync('sh', ['-c', `${ko.endsWith('.xz') ? 'xz' : 'zstd'} -dc "$1" > "$2"`, 'sh', ko, out]);
  }
  rmSync(raw, { recursive: true, force: true });
  rmSync(join(dir, 'bb'), { recursive: true, force: true });
}

/**
 * `dir`/vmlinux, the kernel as a plain ELF file, made from `dir`/vmlinuz on first use: qemu
 * boots it straight through its PVH entry point, so the guest does not spend seconds of
 * emulated CPU decompressing itself (on this 2-core machine under load: about 2 s from qemu's
 * start to the kernel instead of 7-11 s). The bzImage's payload is where its setup header says
 * (boot protocol: setup_sects at 0x1f1, payload_offset at 0x248, payload_length at 0x24c); Debian
 * compresses it with xz. Null, and vmlinuz is booted instead, where that fails (no `xz`, another
 * compression, not an ELF).
 */
function vmlinuxOf(dir: string): string | null {
  const out = join(dir, 'vmlinux');
  if (existsSync(out)) return out;
  const bz = readFileSync(join(dir, 'vmlinuz'));
  if (bz.length < 0x250 || bz.toString('latin1', 0x202, 0x206) !== 'HdrS') return null;
  const start = ((bz[0x1f1] || 4) + 1) * 512 + bz.readUInt32LE(0x248);
  const payload = bz.subarray(start, start + bz.readUInt32LE(0x24c));
  if (!payload.subarray(0, 6).equals(Buffer.from('fd377a585a00', 'hex'))) return null;
  // --single-stream: the kernel's build appends the uncompressed size after the xz stream.
  const r = spawnSync('xz', ['-dc', '--single-stream'], { input: payload, maxBuffer: 512 << 20 });
  if (r.status !== 0 || r.stdout.subarray(0, 4).toString('latin1') !== '\x7fELF') return null;
  writeFileSync(`${out}.${process.pid}`, r.stdout);
  renameSync(`${out}.${process.pid}`, out);
  return out;
}

function assetsIn(dir: string, pkg: string, version: string): KernelPeerAssets {
  const modules = Object.fromEntries(GUEST_MODULES.map((m) => [m, join(dir, 'modules', `${m}.ko`)])) as KernelPeerAssets['modules'];
  return { kernelPackage: pkg, version, vmlinuz: join(dir, 'vmlinuz'), vmlinux: vmlinuxOf(dir), modules, busybox: join(dir, 'busybox') };
}

/**
 * The unpacked `kernel` in the cache, fetched with apt options `opts` first if it is not there
 * yet; or, as a string, why apt-get download failed.
 */
function fetchKernel(opts: string[], kernel: { pkg: string; version: string }, cache: string): KernelPeerAssets | string {
  const dir = join(cache, `${kernel.pkg}_${kernel.version}`);
  if (existsSync(join(dir, 'busybox'))) return assetsIn(dir, kernel.pkg, kernel.version);
  const work = mkdtempSync(join(cache, 'fetch-'));
  try {
    const r = apt('apt-get', [...opts, 'download', kernel.pkg, BUSYBOX], work);
    if (!r.ok) return `apt-get download ${kernel.pkg} ${BUSYBOX} failed: ${r.out.trim().split('\n').slice(-3).join(' / ')}`;
    const debs = readdirSync(work);
    const deb = (prefix: string): string => join(work, debs.find((f) => f.startsWith(`${prefix}_`))!);
    const staging = join(work, 'unpacked');
    unpack(deb(kernel.pkg), deb(BUSYBOX), staging);
    try {
      renameSync(staging, dir);
    } catch (e) {
      // Another run unpacked the same version meanwhile: use theirs.
      if (!existsSync(join(dir, 'busybox'))) throw e;
    }
    return assetsIn(dir, kernel.pkg, kernel.version);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The kernel peer's files, from the cache or fetched and unpacked into it; or, as a string, why
 * the packages cannot be had here (no apt, the mirror unreachable, no such package). Errors
 * other than "cannot be had" (a .deb without a module the guest needs) are thrown.
 *
 * apt is asked with the system's lists, then with the private lists of an earlier run, then
 * with private lists fetched now (apt-get update): the network only when the first two fail.
 * Where none works, the newest kernel already in the cache is used.
 */
export function kernelPeerAssets(env: NodeJS.ProcessEnv = process.env): KernelPeerAssets | string {
  if (spawnSync('apt-get', ['--version']).error || spawnSync('dpkg-deb', ['--version']).error) return "no apt-get/dpkg-deb (not Debian): Debian's kernel package cannot be had";
  const cache = cacheRoot(env);
  mkdirSync(cache, { recursive: true });
  const privateLists = aptOptions(cache, true);
  let update = '';
  const refreshed = (): string[] => {
    const up = apt('apt-get', [...privateLists, 'update']);
    // apt-get update exits 0 even when every source failed: its last lines say what happened.
    update = ` (apt-get update into ${cache}: exit ${up.ok ? 0 : 'non-zero'}: ${up.out.trim().split('\n').slice(-2).join(' / ')})`;
    return privateLists;
  };
  let why = '';
  for (const attempt of [() => aptOptions(cache, false), () => privateLists, refreshed]) {
    const opts = attempt();
    const kernel = resolveKernel(opts);
    const got = kernel === null ? `${KERNEL_META} cannot be resolved by apt-cache${update}` : fetchKernel(opts, kernel, cache);
    if (typeof got !== 'string') return got;
    why = got;
  }
  return cachedAssets(cache) ?? why;
}

/** The newest complete unpacked kernel in the cache (for a run that cannot reach apt), or null. */
function cachedAssets(cache: string): KernelPeerAssets | null {
  const dirs = readdirSync(cache)
    .filter((d) => /^linux-image-.*_.+$/.test(d) && existsSync(join(cache, d, 'busybox')))
    .sort();
  const last = dirs.at(-1);
  if (last === undefined) return null;
  const [pkg, version] = last.split('_') as [string, string];
  return assetsIn(join(cache, last), pkg, version);
}
