/**
 * `npm run bench`: pod-to-pod throughput, packet rate, CPU per packet, latency and memory through
 * ipipd, compared with direct routing and, when installed, quicktun and wireguard-go, on
 * network namespaces built by scripts/netns-setup.sh (method and diagram: docs/performance.md).
 *
 * Flow: parse options; check prerequisites (root, iperf3, the modes' binaries; `--peers`
 * installs them with apt-get); collect machine facts; then, for every round and every mode in
 * it: build a fresh topology with that mode's underlay MTU, start the mode, check that pod B is
 * routed through the mode's device, run ping (latency), iperf3 TCP 1 and 4 streams, UDP 64 B
 * (with the tunnel processes' CPU time) and UDP 1400 B, read the RSS, check from the device (and
 * ipipd's own) counters that the packets went through the tunnel, stop and tear down. After each
 * round, ratios to direct routing of that round; at the end, the spread over rounds, the table,
 * results/bench-<timestamp>.json and a chart, results/bench-<timestamp>.svg.
 *
 * The bench measures; it asserts nothing about speed. It fails (exit 1, partial JSON written)
 * only when a mode does not carry traffic or a tool fails. Every exit path kills what it started
 * and deletes its namespaces (bench/harness.ts).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type Background, hasCommand, run, sleep } from '../tools/netns/exec.js';
import { ROOT, freshPrefix } from '../tools/netns/namespaces.js';
import { installSafetyNet, onCleanup } from '../tools/netns/safety-net.js';
import { TRAFFIC_JS } from '../tools/netns/topology.js';
import {
  type DevCounters,
  type PingResult,
  type TcpResult,
  type UdpResult,
  counterDelta,
  cpuTimes,
  devCounters,
  iperfTcp,
  iperfUdp,
  linkInfo,
  loadClockTicks,
  pingLatency,
  routeGet,
  rssKiB,
  startIperfServer,
  udpPingLatency,
} from './measure.js';
import { ALL_MODES, type ActiveMode, IPIPD_MODES, type IpipdModeName, MODES, type ModeName, POD_MTU, benchTopology, isIpipdMode } from './modes.js';
import { type Figures, type ModeSummary, type RoundEntry, FIGURES, ratiosTo, summarize, table } from './report.js';
import { runSoak } from './soak.js';
import { chart } from './svg.js';

const HELP = `Usage: npm run bench -- [options]      (root; run 'npm run build' first)

Measures pod-to-pod traffic through ipipd against direct routing (and quicktun and wireguard-go
when installed), interleaved over rounds: round 1 runs every mode, round 2 every mode again, ...
Each mode gets a fresh pair of hosts in network namespaces (scripts/netns-setup.sh, pods at MTU
${POD_MTU}). Figures: TCP 1 and 4 streams (Gb/s), UDP 64 B and 1400 B delivered packets/s at an
unlimited offered rate, tunnel CPU µs per packet, ping RTT p50/p99 and added to direct, tunnel
RSS; each also as a ratio to direct routing in the same round, with the spread over rounds.

Options:
  --quick            one short run: 2 rounds of 1 s tests (about a minute for 4 modes)
  --rounds N         rounds (default 3; --quick: 2)
  --duration S       seconds per iperf3 test (default 5; --quick: 1)
  --pings N          pings per latency measurement, 10 ms apart (default 200; --quick: 100)
  --modes LIST       comma-separated, from ${ALL_MODES.join(',')}
                     (default: all; those not installed are skipped unless named here)
  --peers            first install the peers and tools: apt-get install -y quicktun
                     wireguard-go wireguard-tools iperf3
  --out DIR          where to write bench-<timestamp>.json and .svg (default: results/)
  --soak [MINUTES]   instead of the comparison: ipipd's memory over MINUTES (default 10) of
                     steady traffic (iperf3 TCP at 500 Mb/s + UDP 64 B at 10 kpps) in one
                     topology; both daemons' VmRSS/VmHWM every 10 s; start (after 30 s of
                     warm-up), end, max, slope in MiB/min, packets forwarded, and a verdict
                     against issue 4 (slope < 0.5 MiB/min, max <= 100 MiB); writes
                     soak-<timestamp>.json and .svg. Takes only --out besides, and
                     --modes ipipd-2q (2 data-path queues) or ipipd-pkt (underlay.send:
                     packet) to soak that daemon instead.
  -h, --help         this text

Output: a progress line on stderr, the table on stdout, the JSON (raw per-round figures,
summary, machine facts) and the SVG chart of the ratios. Exit status: 0 done, 1 a mode carried
no traffic or a tool failed (partial JSON written), 2 bad usage or missing prerequisite.
`;

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  rounds: number;
  duration: number;
  pings: number;
  modes: ModeName[];
  modesExplicit: boolean;
  peers: boolean;
  quick: boolean;
  out: string;
  /** Minutes of the soak, or null for the comparison bench. */
  soak: number | null;
}

const SOAK_DEFAULT_MINUTES = 10;

class UsageError extends Error {}

function parseOptions(argv: string[]): Options | null {
  // `--soak` takes an optional number: give parseArgs the default when none follows.
  argv = argv.flatMap((a, i) => (a === '--soak' && !/^\d/.test(argv[i + 1] ?? '') ? [a, String(SOAK_DEFAULT_MINUTES)] : [a]));
  let values;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: 'boolean' },
        rounds: { type: 'string' },
        duration: { type: 'string' },
        pings: { type: 'string' },
        modes: { type: 'string' },
        peers: { type: 'boolean' },
        out: { type: 'string' },
        soak: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return null;
  const quick = values.quick ?? false;
  const int = (name: string, raw: string | undefined, dflt: number, min: number, max: number): number => {
    if (raw === undefined) return dflt;
    const v = Number(raw);
    if (!/^\d+$/.test(raw) || v < min || v > max) throw new UsageError(`--${name} must be an integer ${min}..${max}, got '${raw}'`);
    return v;
  };
  let modes = [...ALL_MODES];
  if (values.modes !== undefined) {
    const list = values.modes.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = list.filter((m) => !(ALL_MODES as readonly string[]).includes(m));
    if (bad.length > 0 || list.length === 0) throw new UsageError(`--modes: unknown mode '${bad.join(',')}' (known: ${ALL_MODES.join(',')})`);
    modes = [...new Set(list)] as ModeName[];
  }
  let soak: number | null = null;
  if (values.soak !== undefined) {
    soak = int('soak', values.soak, SOAK_DEFAULT_MINUTES, 1, 1440);
    const others = (['quick', 'rounds', 'duration', 'pings', 'peers'] as const).filter((k) => values[k] !== undefined);
    if (others.length > 0) throw new UsageError(`--soak takes only --out and --modes, not ${others.map((k) => `--${k}`).join(', ')}`);
    if (values.modes !== undefined && !(modes.length === 1 && isIpipdMode(modes[0]!))) {
      throw new UsageError(`--soak --modes: one of ${IPIPD_MODES.join(', ')}, not '${values.modes}'`);
    }
  }
  return {
    soak,
    quick,
    rounds: int('rounds', values.rounds, quick ? 2 : 3, 1, 100),
    duration: int('duration', values.duration, quick ? 1 : 5, 1, 3600),
    pings: int('pings', values.pings, quick ? 100 : 200, 5, 100_000),
    modes,
    modesExplicit: values.modes !== undefined,
    peers: values.peers ?? false,
    out: resolve(values.out ?? join(ROOT, 'results')),
  };
}

// ---------------------------------------------------------------------------------------------
// Progress: one line on stderr, rewritten in place on a terminal, one line per step otherwise.

const tty = process.stderr.isTTY === true;
const t0 = Date.now();
let progressShown = false;

function progress(msg: string): void {
  const line = `[${((Date.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${msg}`;
  if (tty) {
    process.stderr.write(`\r\x1b[K${line.slice(0, (process.stderr.columns ?? 120) - 1)}`);
    progressShown = true;
  } else {
    process.stderr.write(`${line}\n`);
  }
}

function clearProgress(): void {
  if (tty && progressShown) process.stderr.write('\r\x1b[K');
  progressShown = false;
}

function say(msg: string): void {
  clearProgress();
  process.stderr.write(`${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// Prerequisites and machine facts

async function installPeers(): Promise<void> {
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

async function machineFacts(): Promise<Record<string, unknown>> {
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

// ---------------------------------------------------------------------------------------------
// One mode in one round

interface ModeRaw {
  figures: Figures;
  underlayMtu: number;
  devices: Record<string, unknown>;
  facts: Record<string, unknown>;
  latency: PingResult;
  tcp1: TcpResult & { devDelta: DevCounters[] };
  tcp4: TcpResult & { devDelta: DevCounters[] };
  /**
   * cpuUs: the tunnel processes' CPU time over the test; cpuUsPerCarriedPacket divides it by the
   * packets the tunnel actually handled instead of 2 x delivered: datagrams lost after the
   * tunnel (pod B's socket buffer) cost the daemons too. Handled = h1's device tx (each read and
   * encapsulated) + h2's device rx, or the datagrams delivered if more: with UDP GRO, h2's device
   * counts one packet per super-packet written.
   */
  udp64: UdpResult & {
    cpuUs: number | null;
    cpuUserUs: number | null;
    cpuSysUs: number | null;
    cpuUsPerCarriedPacket: number | null;
    devDelta: DevCounters[];
  };
  udp1400: UdpResult & { devDelta: DevCounters[] };
  rssKiB: number[] | null;
  daemonCounterDelta: Record<string, Record<string, number>> | null;
  /** 1-minute load average at the end of the mode (other work on the machine shows here). */
  loadavg1: number;
  warnings: string[];
}

function diffCounters(
  a: Record<string, Record<string, number>>,
  b: Record<string, Record<string, number>>,
): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const h of Object.keys(b)) {
    out[h] = {};
    for (const [k, v] of Object.entries(b[h])) {
      const d = v - (a[h]?.[k] ?? 0);
      if (d !== 0 || !k.startsWith('drop_')) out[h][k] = d;
    }
  }
  return out;
}

async function measureMode(mode: ModeName, opts: Options, prefix: string, tmpDir: string, step: (s: string) => void): Promise<ModeRaw> {
  const spec = MODES[mode];
  step(`topology (underlay MTU ${spec.underlayMtu}, pods ${POD_MTU})`);
  const topo = await benchTopology(prefix, spec.underlayMtu);
  let active: ActiveMode | undefined;
  let server: Background | undefined;
  const warnings: string[] = [];
  try {
    const [h1, h2] = topo.hosts;
    const { podA, podB } = topo;
    step('starting');
    const act = await spec.start(topo, { prefix, tmpDir });
    active = act;
    const facts = act.facts;
    const [dev1, dev2] = act.devs;

    // Is pod B really behind this mode's device (and pod A on the way back)?
    const there = await routeGet(h1.ns, podB.address);
    const back = await routeGet(h2.ns, podA.address);
    if (there.dev !== dev1 || back.dev !== dev2 || (mode === 'direct' && there.gateway !== h2.underlay)) {
      throw new Error(`${mode}: routes do not go through ${dev1}/${dev2}: h1 -> ${podB.address} dev ${there.dev}, h2 -> ${podA.address} dev ${back.dev}`);
    }
    const devices = {
      h1: { dev: dev1, ...(await linkInfo(h1.ns, dev1)) },
      h2: { dev: dev2, ...(await linkInfo(h2.ns, dev2)) },
      underlayMtu: spec.underlayMtu,
      podMtu: POD_MTU,
    };
    const counters0 = await act.counters();
    const dev0 = [await devCounters(h1.ns, dev1), await devCounters(h2.ns, dev2)];

    step('warm-up ping');
    await pingOrUdp(podA.ns, podB.ns, podB.address, 5);
    step(`latency (${opts.pings} pings, 10 ms apart)`);
    const latency = await pingOrUdp(podA.ns, podB.ns, podB.address, opts.pings);

    // Device counters around a test: what left h1 through dev1 and entered h2 through dev2.
    const around = async <T>(test: () => Promise<T>): Promise<{ r: T; delta: DevCounters[] }> => {
      const before = [await devCounters(h1.ns, dev1), await devCounters(h2.ns, dev2)];
      const r = await test();
      const after = [await devCounters(h1.ns, dev1), await devCounters(h2.ns, dev2)];
      return { r, delta: [counterDelta(before[0], after[0]), counterDelta(before[1], after[1])] };
    };
    const notThrough = (what: string, got: string): Error =>
      new Error(`${mode}: ${what}, but only ${got}: the traffic did not go through ${dev1} (h1) and ${dev2} (h2)`);

    server = await startIperfServer(podB.ns, podB.address);
    const tcp = async (streams: number): Promise<TcpResult & { devDelta: DevCounters[] }> => {
      step(`tcp ${streams} stream${streams > 1 ? 's' : ''} (${opts.duration} s)`);
      const { r, delta } = await around(() => iperfTcp(podA.ns, podB.address, streams, opts.duration));
      // Bytes, not packets: TSO/GRO may merge segments into fewer, larger packets on a device.
      if (delta[0].txBytes < r.bytes || delta[1].rxBytes < r.bytes) {
        throw notThrough(`TCP ${streams}: ${r.bytes} bytes received`, `${delta[0].txBytes} bytes left h1 and ${delta[1].rxBytes} entered h2`);
      }
      await sleep(200);
      return { ...r, devDelta: delta };
    };
    const tcp1 = await tcp(1);
    const tcp4 = await tcp(4);

    // UDP: device counters (and CPU, for 64 B) around each test.
    const udp = async (payload: number, withCpu: boolean) => {
      step(`udp ${payload} B, unlimited rate (${opts.duration} s)${withCpu ? ' + tunnel CPU' : ''}`);
      const sumCpu = (): { user: number; sys: number } =>
        act.pids.map(cpuTimes).reduce((a, b) => ({ user: a.user + b.user, sys: a.sys + b.sys }), { user: 0, sys: 0 });
      let cpu0 = { user: 0, sys: 0 };
      let cpu1 = { user: 0, sys: 0 };
      const { r, delta: devDelta } = await around(async () => {
        cpu0 = sumCpu();
        const res = await iperfUdp(podA.ns, podB.address, payload, opts.duration);
        cpu1 = sumCpu();
        return res;
      });
      // Every delivered datagram left h1 through dev1 and reached h2 through dev2. h2's side in
      // payload bytes, not packets: UDP GRO may merge datagrams into fewer, larger packets there.
      const payloadBytes = r.delivered * payload;
      if (devDelta[0].txPackets < r.delivered || devDelta[1].rxBytes < payloadBytes) {
        throw notThrough(
          `UDP ${payload} B: ${r.delivered} datagrams (${payloadBytes} payload bytes) delivered`,
          `${devDelta[0].txPackets} left h1 and ${devDelta[1].rxBytes} bytes entered h2`,
        );
      }
      const has = withCpu && act.pids.length > 0;
      const user = has ? cpu1.user - cpu0.user : null;
      const sys = has ? cpu1.sys - cpu0.sys : null;
      const cpu = user === null || sys === null ? null : user + sys;
      await sleep(200);
      const carried = devDelta[0].txPackets + Math.max(devDelta[1].rxPackets, r.delivered);
      return {
        ...r,
        cpuUs: cpu,
        cpuUserUs: user,
        cpuSysUs: sys,
        cpuUsPerCarriedPacket: cpu === null || carried === 0 ? null : cpu / carried,
        devDelta,
      };
    };
    const udp64 = await udp(64, true);
    const udp1400 = await udp(1400, false);

    const rss = act.pids.length > 0 ? act.pids.map(rssKiB) : null;
    const why = act.dead();
    if (why) throw new Error(`${mode}: ${why}`);

    const dev9 = [await devCounters(h1.ns, dev1), await devCounters(h2.ns, dev2)];
    const counters9 = await act.counters();
    const daemonCounterDelta = counters0 && counters9 ? diffCounters(counters0, counters9) : null;
    if (daemonCounterDelta) {
      // ipipd's own view: it encapsulated on h1 and decapsulated on h2 at least what was delivered.
      const sent = daemonCounterDelta.h1?.tx_packets ?? 0;
      const got = daemonCounterDelta.h2?.rx_packets ?? 0;
      const need = udp64.delivered + udp1400.delivered;
      if (sent < need || got < need) {
        throw new Error(`${mode}: ipipd counters did not move with the traffic: h1 tx_packets +${sent}, h2 rx_packets +${got}, ${need} UDP datagrams delivered`);
      }
    }
    const total = [counterDelta(dev0[0], dev9[0]), counterDelta(dev0[1], dev9[1])];

    const figures: Figures = {
      tcp1Gbps: tcp1.gbps,
      tcp4Gbps: tcp4.gbps,
      udp64Pps: udp64.pps,
      udp1400Pps: udp1400.pps,
      cpuUsPerPacket: udp64.cpuUs === null ? null : udp64.cpuUs / (2 * udp64.delivered),
      rttP50Us: latency.p50Us,
      rttP99Us: latency.p99Us,
      addedP50Us: null,
      addedP99Us: null,
      rssMiB: rss ? Math.max(...rss) / 1024 : null,
    };
    step('stopping');
    server.stop(3000).catch(() => {});
    await server.exited;
    server = undefined;
    warnings.push(...(await act.stop()));
    active = undefined;
    return {
      figures,
      underlayMtu: spec.underlayMtu,
      devices: { ...devices, countersOverTheMode: { h1: total[0], h2: total[1] } },
      facts,
      latency,
      tcp1,
      tcp4,
      udp64,
      udp1400,
      rssKiB: rss,
      daemonCounterDelta,
      loadavg1: Math.round(loadavg()[0] * 100) / 100,
      warnings,
    };
  } finally {
    if (server) await server.stop(2000);
    if (active) await active.stop();
    await topo.down();
  }
}

let useUdpPing = false;

async function pingOrUdp(nsA: string, nsB: string, to: string, count: number): Promise<PingResult> {
  return useUdpPing ? udpPingLatency(TRAFFIC_JS, nsA, nsB, to, count) : pingLatency(nsA, to, count);
}

// ---------------------------------------------------------------------------------------------

interface Results {
  schema: 'ipipd-bench/1';
  startedAt: string;
  finishedAt: string | null;
  argv: string[];
  options: Omit<Options, 'modesExplicit' | 'soak'>;
  machine: Record<string, unknown>;
  modeFacts: Record<string, Record<string, unknown>>;
  skipped: Array<{ mode: ModeName; reason: string }>;
  figures: typeof FIGURES;
  rounds: Array<Record<string, RoundEntry & { raw: Omit<ModeRaw, 'figures'> }>>;
  summary: Record<string, ModeSummary>;
  warnings: string[];
  error: string | null;
}

async function soak(opts: Options, minutes: number): Promise<number> {
  const mode = opts.modesExplicit ? (opts.modes[0] as IpipdModeName) : 'ipipd';
  const why = MODES[mode].missing();
  if (why) {
    process.stderr.write(`bench: ipipd: ${why}\n`);
    return 2;
  }
  const prefix = freshPrefix('b');
  const tmpDir = mkdtempSync(join(tmpdir(), 'ipipd-bench-'));
  onCleanup(() => rmSync(tmpDir, { recursive: true, force: true }));
  const started = new Date();
  try {
    return await runSoak(
      {
        minutes,
        mode,
        prefix,
        tmpDir,
        base: join(opts.out, `soak-${stamp(started)}`),
        started,
        argv: process.argv.slice(2),
        machine: await machineFacts(),
        write: (path, data) => {
          mkdirSync(opts.out, { recursive: true });
          writeFileSync(path, data);
        },
      },
      { progress, say, clearProgress },
    );
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
}

function stamp(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

async function main(): Promise<number> {
  let opts: Options | null;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\nTry 'npm run bench -- --help'.\n`);
    return 2;
  }
  if (opts === null) {
    process.stdout.write(HELP);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: must run as root (network namespaces, TUN devices, raw sockets)\n');
    return 2;
  }
  installSafetyNet((sig) => say(`bench: ${sig}: stopping, killing what was started, deleting the namespaces`));

  if (opts.peers) await installPeers();
  if (!hasCommand('iperf3')) {
    process.stderr.write("bench: iperf3 is not installed: apt-get install -y iperf3 (or run with --peers)\n");
    return 2;
  }
  if (opts.soak !== null) return soak(opts, opts.soak);
  if (!hasCommand('ping')) {
    if (!existsSync(TRAFFIC_JS)) {
      process.stderr.write(`bench: neither ping nor ${TRAFFIC_JS}: apt-get install -y iputils-ping, or npm run build\n`);
      return 2;
    }
    useUdpPing = true;
    say(
      'bench: ping is not installed: latency from traffic.js udp-ping (UDP echo between two node processes, p50 and p99; ' +
        'apt-get install -y iputils-ping for ICMP ping)',
    );
  }
  const skipped: Results['skipped'] = [];
  const modes: ModeName[] = [];
  for (const m of opts.modes) {
    const why = MODES[m].missing();
    if (why === null) modes.push(m);
    else if (opts.modesExplicit) {
      process.stderr.write(`bench: mode ${m}: ${why}\n`);
      return 2;
    } else skipped.push({ mode: m, reason: why });
  }
  for (const s of skipped) say(`bench: skipping ${s.mode}: ${s.reason}`);
  if (!modes.includes('direct')) say('bench: direct routing is not among the modes: ratios and added latency will be n/a');

  const prefix = freshPrefix('b');
  const tmpDir = mkdtempSync(join(tmpdir(), 'ipipd-bench-'));
  onCleanup(() => rmSync(tmpDir, { recursive: true, force: true })); // wireguard keys live here
  const started = new Date();
  const machine = await machineFacts();
  const results: Results = {
    schema: 'ipipd-bench/1',
    startedAt: started.toISOString(),
    finishedAt: null,
    argv: process.argv.slice(2),
    options: { rounds: opts.rounds, duration: opts.duration, pings: opts.pings, modes, peers: opts.peers, quick: opts.quick, out: opts.out },
    machine,
    modeFacts: {},
    skipped,
    figures: FIGURES,
    rounds: [],
    summary: {},
    warnings: [],
    error: null,
  };
  const base = join(opts.out, `bench-${stamp(started)}`);
  const write = (): void => {
    mkdirSync(opts!.out, { recursive: true });
    writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  };

  say(`bench: ${modes.join(', ')}; ${opts.rounds} round${opts.rounds > 1 ? 's' : ''}, ${opts.duration} s per iperf3 test; namespaces ${prefix}-*`);
  say(`bench: note: ${machine.note as string}`);
  try {
    for (let r = 1; r <= opts.rounds; r++) {
      const round: Results['rounds'][number] = {};
      results.rounds.push(round);
      for (const m of modes) {
        const step = (s: string): void => progress(`[round ${r}/${opts!.rounds}] ${m}: ${s}...`);
        const raw = await measureMode(m, opts, prefix, tmpDir, step);
        for (const w of raw.warnings) {
          say(`bench: warning: round ${r} ${m}: ${w}`);
          results.warnings.push(`round ${r} ${m}: ${w}`);
        }
        const { figures, ...rest } = raw;
        round[m] = { figures, ratios: {}, raw: rest };
      }
      // Ratios and added latency against this round's direct routing.
      const direct = round.direct?.figures;
      for (const m of modes) {
        const e = round[m];
        if (direct && m !== 'direct') {
          e.figures.addedP50Us = e.figures.rttP50Us !== null && direct.rttP50Us !== null ? e.figures.rttP50Us - direct.rttP50Us : null;
          e.figures.addedP99Us = e.figures.rttP99Us !== null && direct.rttP99Us !== null ? e.figures.rttP99Us - direct.rttP99Us : null;
        } else if (m === 'direct') {
          e.figures.addedP50Us = 0;
          e.figures.addedP99Us = e.figures.rttP99Us === null ? null : 0;
        }
        e.ratios = ratiosTo(direct, e.figures);
      }
      write();
    }
  } catch (e) {
    clearProgress();
    results.error = (e as Error).message;
    results.finishedAt = new Date().toISOString();
    write();
    process.stderr.write(`bench: FAILED: ${(e as Error).message}\nbench: partial results in ${base}.json\n`);
    return 1;
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
  clearProgress();

  for (const m of modes) {
    const f = results.rounds[0]?.[m]?.raw.facts;
    const dev = results.rounds[0]?.[m]?.raw.devices;
    results.modeFacts[m] = { ...(f ?? {}), devices: dev };
  }
  results.summary = summarize(
    results.rounds.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, { figures: v.figures, ratios: v.ratios }]))),
    modes,
  );
  results.finishedAt = new Date().toISOString();
  write();

  const when = started.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const heading = [
    `ipipd bench, ${when}: ${opts.rounds} round${opts.rounds > 1 ? 's' : ''} x ${modes.length} modes, ${opts.duration} s per iperf3 test, ${opts.pings} pings`,
    `machine: ${machine.nproc as number} cores (${machine.cpuModel as string}), kernel ${machine.kernel as string}, node ${machine.node as string}, ipipd ${machine.ipipdCommit as string}`,
    `note: ${machine.note as string}`,
    `cells: median (min..max) over the rounds; "× direct": ratio to direct routing in the same round`,
  ];
  const svg = chart({
    title: 'ipipd bench: pod-to-pod figures as a ratio to direct routing',
    subtitle: [
      `${when} · ${opts.rounds} rounds × ${opts.duration} s per test · bars: median, whiskers: min..max over rounds · pods MTU ${POD_MTU}`,
    ],
    footer: [
      `${machine.nproc as number} cores (${machine.cpuModel as string}), kernel ${machine.kernel as string}, node ${machine.node as string}, ipipd ${machine.ipipdCommit as string}`,
      `${machine.note as string}`,
    ],
    modes,
    summary: results.summary,
  });
  writeFileSync(`${base}.svg`, svg);

  process.stdout.write(`\n${heading.join('\n')}\n\n${table(results.summary, modes)}\n\n`);
  if (skipped.length > 0) process.stdout.write(`skipped: ${skipped.map((s) => `${s.mode} (${s.reason})`).join('; ')}\n`);
  process.stdout.write(`results: ${base}.json\nchart:   ${base}.svg\n`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    clearProgress();
    process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
