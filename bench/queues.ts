/**
 * `npm run bench:queues`: what a second data-path queue (config io.queues) does on this machine,
 * and the figures that say what it would do on one with more cores (issue 4: "a multi-queue TUN
 * with a worker thread per queue: say what it gives on 2 cores, and what it should give on
 * more").
 *
 * Flow: for each round, for ipipd with 1 queue and with 2 (interleaved), a fresh two-host
 * topology (as the bench's ipipd modes) and, from pod A to pod B, two multi-flow tests (a single
 * flow always stays on one queue): TCP with 4 streams, and UDP with 64-byte payloads from 4
 * streams of one client (4 flows, unlimited rate). Around each test it reads every thread's CPU time
 * of both daemons (/proc/<pid>/task/<tid>/stat) and the machine's busy time (/proc/stat), so the
 * output says how the work split over the threads of each end, how busy the 2 cores were, and
 * the CPU time per packet.
 *
 * Reading it: a queue gives an end more than one core's worth of forwarding only if that core,
 * not the machine, was the limit. The machine's busy share says which: near 100% of all cores,
 * a second thread can only take time from the other end and the traffic generator.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Background, sleep } from '../tools/netns/exec.js';
import { ROOT, freshPrefix } from '../tools/netns/namespaces.js';
import { installSafetyNet } from '../tools/netns/safety-net.js';
import { iperfTcp, iperfUdp, loadClockTicks, startIperfServer, statCpu } from './measure.js';
import { type ActiveMode, MODES, benchTopology } from './modes.js';

const UDP_FLOWS = 4;
const BASE_PORT = 5201;

interface ThreadCpu {
  tid: number;
  comm: string;
  /** utime + stime, seconds. */
  cpuS: number;
}

function threadTimes(pid: number): ThreadCpu[] {
  const out: ThreadCpu[] = [];
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const { user, sys } = statCpu(stat);
      out.push({ tid: Number(t), comm, cpuS: (user + sys) / 1e6 });
    } catch {
      // the thread ended between readdir and read
    }
  }
  return out;
}

/** Busy and total jiffies of all CPUs (/proc/stat's first line; idle and iowait are not busy). */
function machineTimes(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

interface TestResult {
  test: string;
  /** Gb/s for TCP, delivered kpps for UDP. */
  rate: number;
  unit: string;
  packets: number;
  machineBusy: number;
  /** Per end (h1, h2): its threads' CPU seconds over the test, busiest first (threads under 1% of the end's total left out). */
  ends: { host: string; totalS: number; threads: { comm: string; cpuS: number; share: number }[] }[];
  cpuUsPerPacket: number;
}

async function measure(name: string, act: ActiveMode, run: () => Promise<{ rate: number; unit: string; packets: number }>): Promise<TestResult> {
  const t0 = act.pids.map(threadTimes);
  const m0 = machineTimes();
  const r = await run();
  const m1 = machineTimes();
  const t1 = act.pids.map(threadTimes);
  const ends = act.pids.map((_, i) => {
    const before = new Map(t0[i]!.map((t) => [t.tid, t.cpuS]));
    const threads = t1[i]!.map((t) => ({ comm: t.comm, cpuS: t.cpuS - (before.get(t.tid) ?? 0) }));
    const totalS = threads.reduce((a, t) => a + t.cpuS, 0);
    return {
      host: `h${i + 1}`,
      totalS,
      threads: threads
        .filter((t) => totalS > 0 && t.cpuS / totalS >= 0.01)
        .sort((a, b) => b.cpuS - a.cpuS)
        .map((t) => ({ ...t, share: t.cpuS / totalS })),
    };
  });
  const cpuS = ends.reduce((a, e) => a + e.totalS, 0);
  return {
    test: name,
    ...r,
    machineBusy: (m1.busy - m0.busy) / (m1.total - m0.total),
    ends,
    // Both ends together, per packet and direction (one encapsulation or one decapsulation).
    cpuUsPerPacket: (cpuS * 1e6) / (2 * r.packets),
  };
}

async function oneMode(mode: 'ipipd' | 'ipipd-2q', prefix: string, tmpDir: string, duration: number, say: (s: string) => void): Promise<TestResult[]> {
  const spec = MODES[mode];
  const topo = await benchTopology(prefix, spec.underlayMtu);
  const servers: Background[] = [];
  let act: ActiveMode | undefined;
  try {
    act = await spec.start(topo, { prefix, tmpDir });
    const { podA, podB } = topo;
    servers.push(await startIperfServer(podB.ns, podB.address, BASE_PORT));
    const a = act;
    say(`${mode}: tcp 4 streams`);
    const tcp = await measure('TCP 4 streams', a, async () => {
      const r = await iperfTcp(podA.ns, podB.address, 4, duration);
      // Full-sized segments: bytes / 1428 (MSS at MTU 1480 with timestamps) is the packet count.
      return { rate: r.gbps, unit: 'Gb/s', packets: r.bytes / 1428 };
    });
    await sleep(300);
    say(`${mode}: udp 64 B, ${UDP_FLOWS} flows`);
    const udp = await measure(`UDP 64 B, ${UDP_FLOWS} flows`, a, async () => {
      const r = await iperfUdp(podA.ns, podB.address, 64, duration, '0', BASE_PORT, UDP_FLOWS);
      return { rate: r.pps / 1000, unit: 'kpps', packets: r.delivered };
    });
    const why = act.dead();
    if (why) throw new Error(`${mode}: ${why}`);
    return [tcp, udp];
  } finally {
    for (const s of servers) s.child.kill('SIGTERM');
    if (act) await act.stop();
    await topo.down();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string' }, duration: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write('Usage: npm run bench:queues -- [--rounds N (default 2)] [--duration S (default 5)]   (root; npm run build first)\n');
    return;
  }
  const rounds = Number(values.rounds ?? 2);
  const duration = Number(values.duration ?? 5);
  if (!(rounds >= 1 && rounds <= 10) || !(duration >= 1 && duration <= 60)) throw new Error('--rounds 1..10, --duration 1..60');
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  installSafetyNet();
  await loadClockTicks();
  const say = (s: string): void => void process.stderr.write(`[queues] ${s}\n`);
  const outDir = join(ROOT, 'results');
  mkdirSync(outDir, { recursive: true });
  const tmpDir = mkdtempSync(join(tmpdir(), 'ipipd-queues-'));
  const results: Record<string, TestResult[][]> = { ipipd: [], 'ipipd-2q': [] };
  for (let r = 0; r < rounds; r++) {
    for (const mode of r % 2 === 0 ? (['ipipd', 'ipipd-2q'] as const) : (['ipipd-2q', 'ipipd'] as const)) {
      const prefix = freshPrefix('q');
      say(`round ${r + 1}/${rounds}`);
      results[mode]!.push(await oneMode(mode, prefix, tmpDir, duration, say));
    }
  }
  const lines: string[] = [];
  lines.push(`ipipd queues: ${rounds} rounds x ${duration} s, medians; machine busy = share of all cores' time; thread shares per end`);
  for (const mode of ['ipipd', 'ipipd-2q'] as const) {
    const runs = results[mode]!;
    for (let t = 0; t < runs[0]!.length; t++) {
      const xs = runs.map((x) => x[t]!);
      const ends = [0, 1].map((e) => {
        const shares = xs.map((x) => x.ends[e]!.threads.slice(0, 3).map((th) => `${th.comm} ${(100 * th.share).toFixed(0)}%`).join(', '));
        return `h${e + 1} ${median(xs.map((x) => x.ends[e]!.totalS)).toFixed(2)} s CPU [${shares[0]}]`;
      });
      lines.push(
        `${mode.padEnd(9)} ${xs[0]!.test.padEnd(18)} ${median(xs.map((x) => x.rate)).toFixed(2).padStart(7)} ${xs[0]!.unit.padEnd(5)}` +
          `  machine busy ${(100 * median(xs.map((x) => x.machineBusy))).toFixed(0)}%  CPU/packet ${median(xs.map((x) => x.cpuUsPerPacket)).toFixed(2)} µs  ${ends.join('  ')}`,
      );
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
  rmSync(tmpDir, { recursive: true, force: true });
  const file = join(outDir, `queues-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}Z.json`);
  writeFileSync(file, JSON.stringify({ schema: 'ipipd-bench-queues/1', rounds, duration, results }, null, 2) + '\n');
  process.stdout.write(`results: ${file}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:queues: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
