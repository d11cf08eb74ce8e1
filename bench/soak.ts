/**
 * `npm run bench -- --soak [MINUTES]`: ipipd's memory over a long run under steady traffic (issue
 * 4's "daemon RSS <= 100 MB and flat over a 10-minute run").
 *
 * Flow: one two-host topology (pods at MTU 1480, underlay 1500, as the bench's ipipd mode), the
 * two daemons, a check that pod B is routed through ipip0; then, for MINUTES, two traffic loops
 * from pod A to pod B, each a chain of iperf3 clients of at most CHUNK_S seconds (so no client or
 * timeout has to last the whole run): TCP, 1 stream paced at TCP_RATE, and UDP with 64-byte
 * payloads at UDP_PPS. Meanwhile, every SAMPLE_S seconds, both daemons' VmRSS and VmHWM
 * (/proc/<pid>/status), CPU time and packet counters (`ipipd status --json`). At the end: per
 * daemon the RSS after the warm-up, at the end, the maximum, the peak (VmHWM) and the
 * least-squares slope over the samples after the warm-up; the packets forwarded; a table, a
 * verdict against the criteria (printed, never an exit status), results/soak-<timestamp>.json
 * and an SVG line chart of RSS over time.
 *
 * It fails (exit 1, partial JSON) only when the tunnel stops working: a daemon exits, the routes
 * do not go through ipip0, or iperf3 fails several chunks in a row.
 *
 * Flow of this file: runSoak, the steps in order, then the functions it calls in that order
 * (newResults, checkAndDescribe, trafficAndSamples with trafficLoop and takeSample, checkTraffic,
 * daemonMemory). The settings and the shapes of what is recorded: soak-settings.ts; the verdict
 * and the report: soak-report.ts.
 */
import { loadavg } from 'node:os';
import { sleep } from '../tools/netns/exec.js';
import type { HostInfo, PodInfo, Topology } from '../tools/netns/topology.js';
import { type TcpResult, type UdpResult, cpuTimes, iperfTcp, iperfUdp, linkInfo, memKiB, routeGet, startIperfServer } from './measure.js';
import { type ActiveMode, MODES, POD_MTU, benchTopology } from './modes.js';
import { slope } from './report.js';
import { soakReport, verdictOf } from './soak-report.js';
import {
  CHUNK_S,
  CRITERIA_TEXT,
  type Chunk,
  type DaemonMemory,
  MAX_FAILURES_IN_A_ROW,
  MAX_RSS_MIB,
  MAX_SLOPE_MIB_PER_MIN,
  SAMPLE_S,
  type Sample,
  type SoakIo,
  type SoakOptions,
  type SoakResults,
  TCP_PORT,
  TCP_RATE,
  TCP_RATE_TEXT,
  UDP_PAYLOAD,
  UDP_PORT,
  UDP_PPS,
  WARMUP_S,
} from './soak-settings.js';

/** Everything one soak needs while it runs: its options and output, the daemons, the pods and the clock. */
interface SoakRun {
  opts: SoakOptions;
  io: SoakIo;
  results: SoakResults;
  /** iperf3 -b for the UDP loop. */
  udpRate: string;
  durationS: number;
  step(s: string): void;
  write(): void;
  act: ActiveMode;
  h1: HostInfo;
  h2: HostInfo;
  podA: PodInfo;
  podB: PodInfo;
  /** Set when the soak ends (the loops start no new iperf3 run) and by the first failing loop. */
  state: { stopping: boolean; error: Error | null };
}

type Counters = Record<string, Record<string, number>> | null;

/**
 * The soak: topology, daemons, route check, idle memory, iperf3 servers; the traffic loops and
 * the samples until the end; the checks that the traffic went through the daemons; per-daemon
 * memory and the verdict; the report. Resolves with the exit status.
 */
export async function runSoak(opts: SoakOptions, io: SoakIo): Promise<number> {
  const durationS = opts.minutes * 60;
  const udpRate = `${(UDP_PPS * UDP_PAYLOAD * 8) / 1000}K`; // iperf3 -b counts payload bits
  const results = newResults(opts, udpRate);
  const write = (): void => opts.write(`${opts.base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  const trafficText = `iperf3 TCP 1 stream at ${TCP_RATE_TEXT} (-b ${TCP_RATE}) + UDP ${UDP_PAYLOAD} B at ${UDP_PPS / 1000} kpps (-b ${udpRate}), pod A -> pod B, clients restarted every ${CHUNK_S} s`;

  io.say(`bench: soak: ${opts.mode} for ${opts.minutes} min; ${trafficText}; namespaces ${opts.prefix}-*`);
  io.say(`bench: note: ${opts.machine.note as string}`);

  const step = (s: string): void => io.progress(`[soak] ${s}`);
  step(`topology (underlay MTU ${MODES.ipipd.underlayMtu}, pods ${POD_MTU})`);
  let topo: Topology | undefined;
  let act: ActiveMode | undefined;
  const servers: Array<{ stop(graceMs?: number): Promise<unknown> }> = [];
  const state: SoakRun['state'] = { stopping: false, error: null };
  try {
    topo = await benchTopology(opts.prefix, MODES.ipipd.underlayMtu);
    const [h1, h2] = topo.hosts;
    const { podA, podB } = topo;
    step('starting the two ipipd daemons');
    act = await MODES[opts.mode].start(topo, { prefix: opts.prefix, tmpDir: opts.tmpDir });
    const run: SoakRun = { opts, io, results, udpRate, durationS, step, write, act, h1, h2, podA, podB, state };
    const idle = await checkAndDescribe(run);

    servers.push(await startIperfServer(podB.ns, podB.address, TCP_PORT));
    servers.push(await startIperfServer(podB.ns, podB.address, UDP_PORT));

    const c0 = await act.counters();
    const cpu0 = act.pids.map(cpuTimes);
    await trafficAndSamples(run, c0);
    const c9 = await act.counters();
    const cpu9 = act.pids.map(cpuTimes);
    const why = act.dead();
    if (why) throw new Error(`soak: ${why}`);

    checkTraffic(run, c0, c9);
    results.daemons = daemonMemory(run, idle, c0, c9, cpu0, cpu9);
    results.verdict = verdictOf(results.daemons);
    results.loadavgAtEnd = loadavg().map((x) => Math.round(x * 100) / 100);

    step('stopping');
    for (const s of servers.splice(0)) await s.stop(3000);
    results.warnings.push(...(await act.stop()));
    act = undefined;
    await topo.down();
    topo = undefined;
  } catch (e) {
    state.stopping = true;
    io.clearProgress();
    results.error = (e as Error).message;
    results.finishedAt = new Date().toISOString();
    write();
    process.stderr.write(`bench: soak FAILED: ${(e as Error).message}\nbench: partial results in ${opts.base}.json\n`);
    return 1;
  } finally {
    for (const s of servers) await s.stop(2000);
    if (act) await act.stop();
    if (topo) await topo.down();
  }
  io.clearProgress();
  results.finishedAt = new Date().toISOString();
  write();
  soakReport(opts, io, results, trafficText, durationS);
  return 0;
}

function newResults(opts: SoakOptions, udpRate: string): SoakResults {
  return {
    schema: 'ipipd-soak/1',
    startedAt: opts.started.toISOString(),
    finishedAt: null,
    argv: opts.argv,
    minutes: opts.minutes,
    mode: opts.mode,
    settings: {
      sampleEverySeconds: SAMPLE_S,
      warmupSeconds: WARMUP_S,
      chunkSeconds: CHUNK_S,
      tcp: { streams: 1, rate: TCP_RATE, port: TCP_PORT },
      udp: { payloadBytes: UDP_PAYLOAD, packetsPerSecond: UDP_PPS, iperfRate: udpRate, port: UDP_PORT },
      podMtu: POD_MTU,
      underlayMtu: MODES.ipipd.underlayMtu,
    },
    machine: opts.machine,
    devices: {},
    facts: {},
    idle: null,
    samples: [],
    chunks: [],
    traffic: null,
    daemons: [],
    criteria: { maxSlopeMiBPerMin: MAX_SLOPE_MIB_PER_MIN, maxRssMiB: MAX_RSS_MIB, text: CRITERIA_TEXT },
    verdict: null,
    loadavgAtEnd: null,
    warnings: [],
    error: null,
  };
}

/** Checks that pod B is routed through the daemons' devices, records them, and returns the daemons' idle memory. */
async function checkAndDescribe(run: SoakRun): Promise<Array<{ rss: number; hwm: number }>> {
  const { h1, h2, podA, podB, act, results } = run;
  const [dev1, dev2] = act.devs;
  const there = await routeGet(h1.ns, podB.address);
  const back = await routeGet(h2.ns, podA.address);
  if (there.dev !== dev1 || back.dev !== dev2) {
    throw new Error(`soak: routes do not go through ${dev1}/${dev2}: h1 -> ${podB.address} dev ${there.dev}, h2 -> ${podA.address} dev ${back.dev}`);
  }
  results.devices = {
    h1: { dev: dev1, ...(await linkInfo(h1.ns, dev1)) },
    h2: { dev: dev2, ...(await linkInfo(h2.ns, dev2)) },
  };
  results.facts = act.facts;
  const idle = act.pids.map(memKiB);
  results.idle = { rssKiB: idle.map((m) => m.rss), hwmKiB: idle.map((m) => m.hwm) };
  return idle;
}

/** Two independent chains of iperf3 clients until the deadline, sampled every SAMPLE_S; rejects with the first loop's error. */
async function trafficAndSamples(run: SoakRun, c0: Counters): Promise<void> {
  const { results, act, state } = run;
  const hosts = [run.h1.name, run.h2.name];
  const t0 = Date.now();
  const deadline = t0 + run.durationS * 1000;
  const since = (): number => Math.round((Date.now() - t0) / 100) / 10;
  const traffic = Promise.all([trafficLoop(run, 'tcp', deadline, since), trafficLoop(run, 'udp', deadline, since)]);
  // Whichever loop fails first ends the soak (the other stops at its chunk's end).
  traffic.catch((e: Error) => {
    state.error = e;
    state.stopping = true;
  });

  for (let k = 0; k * SAMPLE_S <= run.durationS; k++) {
    const due = t0 + k * SAMPLE_S * 1000;
    while (Date.now() < due) {
      if (state.error) break;
      await sleep(Math.min(500, due - Date.now()));
    }
    if (state.error) break;
    const why = act.dead();
    if (why) throw new Error(`soak: ${why}`);
    const s = await takeSample(act, hosts, since());
    results.samples.push(s);
    const mib = s.rssKiB.map((x) => (x / 1024).toFixed(1)).join(' / ');
    const encap = s.txPackets.map((x, i) => x - (c0?.[hosts[i]]?.tx_packets ?? 0)).join(' / ');
    run.step(`${(s.t / 60).toFixed(1)} of ${run.opts.minutes} min: RSS ${mib} MiB, packets encapsulated ${encap} (h1 / h2)`);
    if (k % 6 === 0) run.write();
  }
  state.stopping = true;
  await traffic; // throws the loops' error, if any
}

/** One chain of iperf3 clients of at most CHUNK_S seconds each, until the deadline or the soak stops. */
async function trafficLoop(run: SoakRun, kind: 'tcp' | 'udp', deadline: number, since: () => number): Promise<void> {
  const { results, state, podA, podB } = run;
  let failures = 0;
  while (!state.stopping) {
    const left = Math.floor((deadline - Date.now()) / 1000);
    if (left < 2) return;
    const seconds = Math.min(CHUNK_S, left);
    const chunk: Chunk = { kind, start: since(), end: 0, seconds };
    results.chunks.push(chunk);
    try {
      chunk.result =
        kind === 'tcp'
          ? await iperfTcp(podA.ns, podB.address, 1, seconds, TCP_RATE, TCP_PORT)
          : await iperfUdp(podA.ns, podB.address, UDP_PAYLOAD, seconds, run.udpRate, UDP_PORT);
      failures = 0;
    } catch (e) {
      chunk.error = (e as Error).message;
      if (state.stopping) return; // killed by the teardown after another failure
      results.warnings.push(`${kind} chunk at ${chunk.start} s: ${chunk.error}`);
      run.io.say(`bench: soak: warning: ${kind} chunk at ${chunk.start} s: ${chunk.error}`);
      const why = run.act.dead();
      if (why) throw new Error(`soak: ${why}`);
      if (++failures >= MAX_FAILURES_IN_A_ROW) throw new Error(`soak: ${failures} ${kind} iperf3 runs in a row failed; last: ${chunk.error}`);
      await sleep(1000);
    } finally {
      chunk.end = since();
    }
  }
}

async function takeSample(act: ActiveMode, hosts: string[], t: number): Promise<Sample> {
  const mem = act.pids.map(memKiB);
  const cpu = act.pids.map(cpuTimes);
  const c = await act.counters();
  return {
    t,
    rssKiB: mem.map((m) => m.rss),
    hwmKiB: mem.map((m) => m.hwm),
    cpuUs: cpu.map((x) => Math.round(x.user + x.sys)),
    txPackets: hosts.map((h) => c?.[h]?.tx_packets ?? 0),
    rxPackets: hosts.map((h) => c?.[h]?.rx_packets ?? 0),
  };
}

const counterDelta = (c0: Counters, c9: Counters, h: string, k: string): number => (c9?.[h]?.[k] ?? 0) - (c0?.[h]?.[k] ?? 0);

/** Traffic totals into the results, and the check that the traffic went through the daemons. */
function checkTraffic(run: SoakRun, c0: Counters, c9: Counters): void {
  const { results, h1, h2 } = run;
  const ok = results.chunks.filter((c) => c.result);
  const tcpChunks = ok.filter((c) => c.kind === 'tcp').map((c) => c.result as TcpResult);
  const udpChunks = ok.filter((c) => c.kind === 'udp').map((c) => c.result as UdpResult);
  const sum = <T>(xs: T[], f: (x: T) => number): number => xs.reduce((acc, x) => acc + f(x), 0);
  const tcpBytes = sum(tcpChunks, (r) => r.bytes);
  const tcpSeconds = sum(tcpChunks, (r) => r.seconds);
  const udpDelivered = sum(udpChunks, (r) => r.delivered);
  const udpSent = sum(udpChunks, (r) => r.sent);
  const udpSeconds = sum(udpChunks, (r) => r.seconds);
  results.traffic = {
    tcp: { chunks: tcpChunks.length, bytes: tcpBytes, seconds: tcpSeconds, avgMbps: tcpSeconds > 0 ? (tcpBytes * 8) / tcpSeconds / 1e6 : 0, retransmits: sum(tcpChunks, (r) => r.retransmits) },
    udp: { chunks: udpChunks.length, sent: udpSent, delivered: udpDelivered, lost: sum(udpChunks, (r) => r.lost), seconds: udpSeconds, avgPps: udpSeconds > 0 ? udpDelivered / udpSeconds : 0 },
    failedChunks: results.chunks.length - ok.length,
  };
  const delta = (h: string, k: string): number => counterDelta(c0, c9, h, k);
  const need = udpDelivered + Math.floor(tcpBytes / 1500);
  if (delta(h1.name, 'tx_packets') < need || delta(h2.name, 'rx_packets') < need) {
    throw new Error(
      `soak: ipipd counters did not move with the traffic: h1 tx_packets +${delta(h1.name, 'tx_packets')}, h2 rx_packets +${delta(h2.name, 'rx_packets')}, ` +
        `expected at least ${need} (UDP delivered + TCP bytes / 1500)`,
    );
  }
}

/** Per daemon: start, end, max, peak, slope, packets and CPU over the run. */
function daemonMemory(
  run: SoakRun,
  idle: Array<{ rss: number; hwm: number }>,
  c0: Counters,
  c9: Counters,
  cpu0: Array<{ user: number; sys: number }>,
  cpu9: Array<{ user: number; sys: number }>,
): DaemonMemory[] {
  const { results } = run;
  const after = results.samples.filter((s) => s.t >= WARMUP_S);
  const last = results.samples[results.samples.length - 1];
  return [run.h1.name, run.h2.name].map((host, i) => {
    const ys = after.map((s) => s.rssKiB[i] / 1024);
    const xs = after.map((s) => s.t / 60);
    return {
      host,
      pid: run.act.pids[i],
      idleMiB: idle[i].rss / 1024,
      startMiB: ys.length > 0 ? ys[0] : null,
      endMiB: last.rssKiB[i] / 1024,
      maxMiB: Math.max(...results.samples.map((s) => s.rssKiB[i])) / 1024,
      peakMiB: last.hwmKiB[i] / 1024,
      slopeMiBPerMin: slope(xs, ys),
      samplesAfterWarmup: ys.length,
      encapsulated: counterDelta(c0, c9, host, 'tx_packets'),
      decapsulated: counterDelta(c0, c9, host, 'rx_packets'),
      cpuSeconds: (cpu9[i].user + cpu9[i].sys - cpu0[i].user - cpu0[i].sys) / 1e6,
    };
  });
}
