/**
 * What the bench needs from the machine and says about it: `--peers` installs the peers and
 * tools with apt-get (installPeers); machineFacts collects what goes into the JSON beside the
 * figures (cores, CPU, kernel, node, memory, load, clock ticks, iperf3, ipipd's commit), with
 * the note that the cores are shared by everything measured.
 */
import { cpus, loadavg, release, totalmem } from 'node:os';
import { hasCommand, run } from '../tools/netns/exec.js';
import { ROOT } from '../tools/netns/namespaces.js';
import { loadClockTicks } from './measure.js';
import { progress } from './progress.js';

export async function installPeers(): Promise<void> {
  const pkgs = ['quicktun', 'wireguard-go', 'wireguard-tools', 'iperf3'];
  progress(`--peers: apt-get install -y ${pkgs.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = await run(['apt-get', 'install', '-y', ...pkgs], { env, timeoutMs: 600_000 });
  if (r.code !== 0) {
    progress('--peers: apt-get update (the package lists may be stale)');
    await run(['apt-get', 'update'], { env, timeoutMs: 600_000 });
    r = await run(['apt-get', 'install', '-y', ...pkgs], { env, timeoutMs: 600_000 });
  }
  if (r.code !== 0) throw new Error(`apt-get install -y ${pkgs.join(' ')} failed:\n${r.stderr.trim().slice(-1500)}`);
}

async function firstLine(argv: string[]): Promise<string | null> {
  const r = await run(argv, { timeoutMs: 10_000 });
  if (r.code !== 0 && r.stdout.trim() === '') return null;
  return (r.stdout || r.stderr).trim().split('\n')[0] ?? null;
}

export async function machineFacts(): Promise<Record<string, unknown>> {
  const nproc = Number((await firstLine(['nproc'])) ?? cpus().length);
  const commit = await firstLine(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = (await run(['git', '-C', ROOT, 'status', '--porcelain', '--untracked-files=no'])).stdout.trim() !== '';
  return {
    nproc,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    kernel: release(),
    node: process.version,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    loadavgAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
    clockTicksPerSecond: await loadClockTicks(),
    iperf3: await firstLine(['iperf3', '--version']),
    ping: hasCommand('ping'),
    ipipdCommit: commit ? `${commit}${dirty ? ' (with uncommitted changes)' : ''}` : null,
    note: coreNote(nproc),
  };
}

function coreNote(nproc: number): string {
  return (
    `${nproc} CPU core${nproc === 1 ? '' : 's'} shared by both tunnel ends, the traffic generator (iperf3 client and ` +
    `server) and the kernel's packet processing: every figure measures the whole machine, not the tunnel alone.`
  );
}
