/**
 * A real Linux kernel as a network peer: Debian's kernel (packages.ts) booted under
 * qemu-system-x86_64 (TCG: no KVM needed) inside a network namespace, its one NIC an e1000 on
 * a TAP in that namespace, its serial console the command channel init.sh serves:
 *
 *   namespace <ns>                                 qemu-system-x86_64 (pid tracked, killed by pid)
 *   +------------------------+                     +----------------------------------+
 *   | TAP <tap>              |=====================| eth0 (e1000)                     |
 *   | (the caller addresses  |   -netdev tap       | Debian's kernel, init.sh as PID 1|
 *   |  it and runs ipipd)    |                     | ttyS0 <-> qemu stdio <-> run()   |
 *   +------------------------+                     +----------------------------------+
 *
 *   const peer = await KernelPeer.boot({ ns, tap, assets, workDir });
 *   const r = await peer.run('ip -br link');         // { code, output }
 *   await peer.stop();
 *
 * Flow of this file: qemuArgv; KernelPeer.boot (spawn, wait for "@@READY"); run and its parser
 * of the console stream; stop (SIGKILL by pid, also from the safety net on any exit path).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { join } from 'node:path';
import { inNs } from '../netns/exec.js';
import { trackChild } from '../netns/safety-net.js';
import { buildInitrd } from './initrd.js';
import { GUEST_MODULES, type KernelPeerAssets } from './packages.js';

export interface BootOptions {
  /** The namespace qemu runs in; the TAP must already exist there. */
  ns: string;
  tap: string;
  assets: KernelPeerAssets;
  /** Where the initrd is written (a per-run directory). */
  workDir: string;
  /** Guest memory, MiB (default 256). */
  memoryMiB?: number;
  /** Milliseconds to wait for "@@READY" (default 90 s: TCG on a busy 2-core machine). */
  bootTimeoutMs?: number;
  /** More kernel command-line words. */
  append?: string[];
}

export interface GuestResult {
  code: number;
  output: string;
}

/** The MAC of the guest's e1000 (a locally administered address). */
export const GUEST_MAC = '52:54:00:4b:50:01';

function qemuArgv(o: BootOptions, initrd: string): string[] {
  // mitigations=off: the guest is a test peer, and under TCG every speculation barrier costs.
  const append = ['console=ttyS0', 'quiet', 'loglevel=1', 'panic=-1', 'mitigations=off', `kp.modules=${GUEST_MODULES.join(',')}`, ...(o.append ?? [])];
  return [
    'qemu-system-x86_64',
    ...['-accel', 'tcg', '-m', String(o.memoryMiB ?? 256), '-smp', '1'],
    ...['-nodefaults', '-no-user-config', '-no-reboot', '-display', 'none', '-monitor', 'none', '-serial', 'stdio'],
    ...['-kernel', o.assets.vmlinux ?? o.assets.vmlinuz, '-initrd', initrd, '-append', append.join(' ')],
    ...['-netdev', `tap,id=n0,ifname=${o.tap},script=no,downscript=no`, '-device', `e1000,netdev=n0,mac=${GUEST_MAC},romfile=`],
  ];
}

export class KernelPeer {
  /** Milliseconds from spawning qemu to "@@READY" (modules loaded, command loop up). */
  readonly bootMs: number;
  /** The guest's `uname -r`. */
  readonly release: string;
  private console = '';
  private serial = 0;
  private waiter: (() => void) | null = null;

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    bootMs: number,
    release: string,
    console: string,
  ) {
    this.bootMs = bootMs;
    this.release = release;
    this.console = console;
    child.stdout.on('data', (d: string) => this.take(d));
  }

  /** Builds the initrd, starts qemu in `o.ns` and waits for the guest's command loop. */
  static async boot(o: BootOptions): Promise<KernelPeer> {
    const initrd = buildInitrd(o.assets, join(o.workDir, 'initrd.gz'));
    const t0 = Date.now();
    const argv = inNs(o.ns, qemuArgv(o, initrd));
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'pipe' });
    trackChild(child);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    let out = '';
    let err = '';
    child.stderr.on('data', (d: string) => (err += d));
    const ready = await new Promise<RegExpExecArray | string>((resolve) => {
      const timer = setTimeout(() => resolve(`no @@READY within ${o.bootTimeoutMs ?? 90_000} ms`), o.bootTimeoutMs ?? 90_000);
      const onData = (d: string): void => {
        out += d.replace(/\r/g, '');
        const m = /@@READY (\S+)\n/.exec(out);
        if (m === null) return;
        clearTimeout(timer);
        child.stdout.off('data', onData);
        resolve(m);
      };
      child.stdout.on('data', onData);
      child.on('close', (code, signal) => resolve(`qemu exited (${code ?? signal})`));
    });
    if (typeof ready === 'string') {
      child.kill('SIGKILL');
      throw new Error(`kernel peer did not boot: ${ready}\nqemu stderr: ${err.trim()}\nconsole: ${out.slice(-3000)}`);
    }
    const failed = [...out.matchAll(/@@MODULE-FAILED (.*)/g)].map((m) => m[1]);
    if (failed.length > 0) {
      child.kill('SIGKILL');
      throw new Error(`kernel peer: modules did not load: ${failed.join('; ')}`);
    }
    return new KernelPeer(child, Date.now() - t0, ready[1]!, out.slice(ready.index + ready[0].length));
  }

  private take(d: string): void {
    this.console += d.replace(/\r/g, '');
    this.waiter?.();
  }

  /** qemu's pid (the test kills nothing else). */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /**
   * Runs `script` with the guest's sh and resolves with its exit status and output (stdout and
   * stderr together). Rejects if the guest does not answer within `timeoutMs` or qemu is gone.
   * One command at a time: the console is a single channel.
   */
  async run(script: string, timeoutMs = 60_000): Promise<GuestResult> {
    const id = `c${++this.serial}`;
    const done = new RegExp(`@@BEGIN ${id}\\n([\\s\\S]*?)@@END ${id} (\\d+)\\n`);
    const line = `${id} ${Buffer.from(script).toString('base64')}\n`;
    // The guest reads the console in canonical mode: a line longer than 4095 bytes is cut.
    if (line.length > 4000) throw new Error(`kernel peer: script too long for the console (${script.length} bytes)`);
    this.child.stdin.write(line);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = done.exec(this.console);
      if (m !== null) {
        this.console = this.console.slice(m.index + m[0].length);
        return { code: Number(m[2]), output: m[1]! };
      }
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`kernel peer: qemu exited while running: ${script}`);
      if (Date.now() > deadline) throw new Error(`kernel peer: no answer within ${timeoutMs} ms to: ${script}\nconsole: ${this.console.slice(-2000)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 250);
        this.waiter = () => {
          clearTimeout(t);
          r();
        };
      });
      this.waiter = null;
    }
  }

  /** Like run(), but throws unless the script exits 0; resolves with its output. */
  async must(script: string, timeoutMs?: number): Promise<string> {
    const r = await this.run(script, timeoutMs);
    if (r.code !== 0) throw new Error(`kernel peer: exit ${r.code}: ${script}\n${r.output}`);
    return r.output;
  }

  /** Kills qemu (SIGKILL, by its pid: the guest has nothing to save) and waits for it to go. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const gone = new Promise<void>((r) => this.child.once('close', () => r()));
    this.child.kill('SIGKILL');
    await gone;
  }
}
