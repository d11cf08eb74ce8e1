/**
 * The kernel peer's initrd: a gzipped cpio ("newc", the format the kernel unpacks into its
 * rootfs) holding busybox-static, the guest's modules, the host's own `ip` (busybox's `ip` knows
 * no `fou`) with the libraries `ldd` lists for it, and tools/kernel-peer/init.sh as /init.
 *
 * Flow of this file: the cpio writer (newc headers, then CpioArchive's entries); hostBinary,
 * which gathers a host program and its libraries; buildInitrd.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { posix } from 'node:path';
import { gzipSync } from 'node:zlib';
import { ROOT } from '../netns/namespaces.js';
import type { KernelPeerAssets } from './packages.js';

/** The guest's init script (the serial-console command loop). */
export const INIT_SCRIPT = posix.join(ROOT, 'tools', 'kernel-peer', 'init.sh');

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

/** A newc cpio archive built in memory: directories, files, symlinks and device nodes. */
class CpioArchive {
  private readonly parts: Buffer[] = [];
  private readonly dirs = new Set<string>();
  private ino = 1;

  private entry(name: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0]): void {
    const fields = [this.ino++, mode, 0, 0, mode & S_IFDIR ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], name.length + 1, 0];
    const header = `070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}${name}\0`;
    this.parts.push(Buffer.from(header + '\0'.repeat(pad4(header.length)), 'latin1'), data, Buffer.alloc(pad4(data.length)));
  }

  /** `path` and every directory above it (mode 755), once each. */
  dir(path: string): void {
    const parent = posix.dirname(path);
    if (parent !== '.' && parent !== '/' && parent !== path) this.dir(parent);
    const name = path.replace(/^\/+/, '');
    if (name === '' || this.dirs.has(name)) return;
    this.dirs.add(name);
    this.entry(name, S_IFDIR | 0o755, Buffer.alloc(0));
  }

  file(path: string, data: Buffer, perm = 0o755): void {
    this.dir(posix.dirname(path));
    this.entry(path.replace(/^\/+/, ''), S_IFREG | perm, data);
  }

  symlink(path: string, target: string): void {
    this.dir(posix.dirname(path));
    this.entry(path.replace(/^\/+/, ''), S_IFLNK | 0o777, Buffer.from(target));
  }

  charDevice(path: string, major: number, minor: number): void {
    this.dir(posix.dirname(path));
    this.entry(path.replace(/^\/+/, ''), S_IFCHR | 0o600, Buffer.alloc(0), [major, minor]);
  }

  /** The archive with its trailer. */
  bytes(): Buffer {
    this.entry('TRAILER!!!', 0, Buffer.alloc(0));
    return Buffer.concat(this.parts);
  }
}

/**
 * The host program `cmd` (found on the PATH) and every library `ldd` lists for it, including
 * the dynamic loader, as [path in the guest, contents]: each at the path ldd names, so the
 * loader finds them where the binary was built to look.
 */
function hostBinary(cmd: string): Array<[string, Buffer]> {
  const bin = execFileSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { encoding: 'utf8' }).trim();
  const ldd = execFileSync('ldd', [bin], { encoding: 'utf8' });
  const libs = [...ldd.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1]!);
  return [[`/usr/sbin/${cmd}`, readFileSync(realpathSync(bin))], ...libs.map((l): [string, Buffer] => [l, readFileSync(realpathSync(l))])];
}

/**
 * Writes the initrd to `out` (gzip level 1: the kernel unpacks it in a blink either way) and
 * returns `out`. Inside: /init, /bin/busybox (init.sh installs its applets), /lib/modules/<m>.ko,
 * /usr/sbin/ip and its libraries, /dev/console (the kernel opens it for init before anything
 * mounts devtmpfs).
 */
export function buildInitrd(assets: KernelPeerAssets, out: string): string {
  const cpio = new CpioArchive();
  cpio.charDevice('/dev/console', 5, 1);
  for (const d of ['/proc', '/sys', '/tmp', '/sbin', '/usr/bin']) cpio.dir(d);
  cpio.file('/init', readFileSync(INIT_SCRIPT));
  cpio.file('/bin/busybox', readFileSync(assets.busybox));
  cpio.symlink('/bin/sh', 'busybox');
  for (const [name, ko] of Object.entries(assets.modules)) cpio.file(`/lib/modules/${name}.ko`, readFileSync(ko), 0o644);
  for (const [path, data] of hostBinary('ip')) cpio.file(path, data);
  writeFileSync(out, gzipSync(cpio.bytes(), { level: 1 }));
  return out;
}
