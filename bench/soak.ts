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
 */
import { loadavg } from 'node:os';
import { sleep } from '../tools/netns/exec.js';
import type { Topology } from '../tools/netns/topology.js';
import { type TcpResult, type UdpResult, cpuTimes, iperfTcp, iperfUdp, linkInfo, memKiB, routeGet, startIperfServer } from './measure.js';
import { type ActiveMode, type IpipdModeName, MODES, POD_MTU, benchTopology } from './modes.js';
import { sig3, slope } from './report.js';
import { soakChart } from './svg.js';

/** Seconds between samples. */
export const SAMPLE_S = 10;
/** Samples before this many seconds of traffic are shown but left out of start and slope. */
export const WARMUP_S = 30;
/** Longest single iperf3 client run. */
export const CHUNK_S = 60;
/** TCP: one stream at this rate (iperf3 -b). */
export const TCP_RATE = '500M';
const TCP_RATE_TEXT = '500 Mb/s';
/** UDP: 64-byte payloads (92-byte inner packets) at this many datagrams per second. */
export const UDP_PAYLOAD = 64;
export const UDP_PPS = 10_000;
/** The criteria of "flat", issue 4. */
export const MAX_SLOPE_MIB_PER_MIN = 0.5;
export const MAX_RSS_MIB = 100;

const TCP_PORT = 5201;
const UDP_PORT = 5202;
/** iperf3 failures in a row (in one loop) that end the soak. */
const MAX_FAILURES_IN_A_ROW = 3;

export interface SoakIo {
  progress(msg: string): void;
  say(msg: string): void;
  clearProgress(): void;
}

export interface Sample {
  /** Seconds since the traffic started. */
  t: number;
  /** Per daemon, h1 then h2, KiB. */
  rssKiB: number[];
  hwmKiB: number[];
  /** utime + stime, µs. */
  cpuUs: number[];
  /** ipipd counters: packets encapsulated (tx) and decapsulated (rx) so far. */
  txPackets: number[];
  rxPackets: number[];
}

export interface DaemonMemory {
  host: string;
  pid: number;
  /** RSS before any traffic, MiB. */
  idleMiB: number;
  /** The first sample at or after the warm-up, the last, the largest of all samples. */
  startMiB: number | null;
  endMiB: number;
  maxMiB: number;
  /** VmHWM at the end: the peak RSS, between samples too. */
  peakMiB: number;
  /** Least-squares slope of RSS over the samples after the warm-up, MiB per minute. */
  slopeMiBPerMin: number | null;
  samplesAfterWarmup: number;
  /** Counter deltas over the run. */
  encapsulated: number;
  decapsulated: number;
  cpuSeconds: number;
}

interface Chunk {
  kind: 'tcp' | 'udp';
  /** Seconds since the traffic started. */
  start: number;
  end: number;
  seconds: number;
  result?: TcpResult | UdpResult;
  error?: string;
}

interface SoakResults {
  schema: 'ipipd-soak/1';
  startedAt: string;
  finishedAt: string | null;
  argv: string[];
  minutes: number;
  mode: string;
  settings: Record<string, unknown>;
  machine: Record<string, unknown>;
  devices: Record<string, unknown>;
  facts: Record<string, unknown>;
  idle: { rssKiB: number[]; hwmKiB: number[] } | null;
  samples: Sample[];
  chunks: Chunk[];
  traffic: Record<string, unknown> | null;
  daemons: DaemonMemory[];
  criteria: { maxSlopeMiBPerMin: number; maxRssMiB: number; text: string };
  verdict: { flat: boolean; text: string } | null;
  loadavgAtEnd: number[] | null;
  warnings: string[];
  error: string | null;
}

const CRITERIA_TEXT =
  `flat = least-squares slope of VmRSS after the ${WARMUP_S} s warm-up < ${MAX_SLOPE_MIB_PER_MIN} MiB/min ` +
  `and max (peak VmHWM) <= ${MAX_RSS_MIB} MiB, for each daemon (issue 4: "daemon RSS <= 100 MB and flat over a 10-minute run")`;

export interface SoakOptions {
  minutes: number;
  /** The daemon soaked: ipipd as configured, with io.queues 2, or with underlay.send: packet. */
  mode: IpipdModeName;
  prefix: string;
  tmpDir: string;
  /** results/soak-<timestamp> without the extension. */
  base: string;
  started: Date;
  argv: string[];
  machine: Record<string, unknown>;
  write(path: string, data: string): void;
}

export async function runSoak(opts: SoakOptions, io: SoakIo): Promise<number> {
  const durationS = opts.minutes * 60;
  const udpRate = `${(UDP_PPS * UDP_PAYLOAD * 8) / 1000}K`; // iperf3 -b counts payload bits
  const results: SoakResults = {
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
  const write = (): void => opts.write(`${opts.base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  const when = opts.started.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const trafficText = `iperf3 TCP 1 stream at ${TCP_RATE_TEXT} (-b ${TCP_RATE}) + UDP ${UDP_PAYLOAD} B at ${UDP_PPS / 1000} kpps (-b ${udpRate}), pod A -> pod B, clients restarted every ${CHUNK_S} s`;

  io.say(`bench: soak: ${opts.mode} for ${opts.minutes} min; ${trafficText}; namespaces ${opts.prefix}-*`);
  io.say(`bench: note: ${opts.machine.note as string}`);

  const step = (s: string): void => io.progress(`[soak] ${s}`);
  step(`topology (underlay MTU ${MODES.ipipd.underlayMtu}, pods ${POD_MTU})`);
  let topo: Topology | undefined;
  let act: ActiveMode | undefined;
  const servers: Array<{ stop(graceMs?: number): Promise<unknown> }> = [];
  /** Set when the soak ends (the loops start no new iperf3 run) and by the first failing loop. */
  const state: { stopping: boolean; error: Error | null } = { stopping: false, error: null };
  try {
    topo = await benchTopology(opts.prefix, MODES.ipipd.underlayMtu);
    const [h1, h2] = topo.hosts;
    const { podA, podB } = topo;
    step('starting the two ipipd daemons');
    act = await MODES[opts.mode].start(topo, { prefix: opts.prefix, tmpDir: opts.tmpDir });
    const a = act;
    const [dev1, dev2] = a.devs;
    const there = await routeGet(h1.ns, podB.address);
    const back = await routeGet(h2.ns, podA.address);
    if (there.dev !== dev1 || back.dev !== dev2) {
      throw new Error(`soak: routes do not go through ${dev1}/${dev2}: h1 -> ${podB.address} dev ${there.dev}, h2 -> ${podA.address} dev ${back.dev}`);
    }
    results.devices = {
      h1: { dev: dev1, ...(await linkInfo(h1.ns, dev1)) },
      h2: { dev: dev2, ...(await linkInfo(h2.ns, dev2)) },
    };
    results.facts = a.facts;
    const hosts = [h1.name, h2.name];
    const idle = a.pids.map(memKiB);
    results.idle = { rssKiB: idle.map((m) => m.rss), hwmKiB: idle.map((m) => m.hwm) };

    servers.push(await startIperfServer(podB.ns, podB.address, TCP_PORT));
    servers.push(await startIperfServer(podB.ns, podB.address, UDP_PORT));

    const c0 = await a.counters();
    const cpu0 = a.pids.map(cpuTimes);
    // Traffic: two independent chains of iperf3 clients until the deadline.
    const t0 = Date.now();
    const deadline = t0 + durationS * 1000;
    const since = (): number => Math.round((Date.now() - t0) / 100) / 10;
    const loop = async (kind: 'tcp' | 'udp'): Promise<void> => {
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
              : await iperfUdp(podA.ns, podB.address, UDP_PAYLOAD, seconds, udpRate, UDP_PORT);
          failures = 0;
        } catch (e) {
          chunk.error = (e as Error).message;
          if (state.stopping) return; // killed by the teardown after another failure
          results.warnings.push(`${kind} chunk at ${chunk.start} s: ${chunk.error}`);
          io.say(`bench: soak: warning: ${kind} chunk at ${chunk.start} s: ${chunk.error}`);
          const why = a.dead();
          if (why) throw new Error(`soak: ${why}`);
          if (++failures >= MAX_FAILURES_IN_A_ROW) throw new Error(`soak: ${failures} ${kind} iperf3 runs in a row failed; last: ${chunk.error}`);
          await sleep(1000);
        } finally {
          chunk.end = since();
        }
      }
    };
    const traffic = Promise.all([loop('tcp'), loop('udp')]);
    // Whichever loop fails first ends the soak (the other stops at its chunk's end).
    traffic.catch((e: Error) => {
      state.error = e;
      state.stopping = true;
    });

    const takeSample = async (): Promise<Sample> => {
      const t = since();
      const mem = a.pids.map(memKiB);
      const cpu = a.pids.map(cpuTimes);
      const c = await a.counters();
      return {
        t,
        rssKiB: mem.map((m) => m.rss),
        hwmKiB: mem.map((m) => m.hwm),
        cpuUs: cpu.map((x) => Math.round(x.user + x.sys)),
        txPackets: hosts.map((h) => c?.[h]?.tx_packets ?? 0),
        rxPackets: hosts.map((h) => c?.[h]?.rx_packets ?? 0),
      };
    };
    for (let k = 0; k * SAMPLE_S <= durationS; k++) {
      const due = t0 + k * SAMPLE_S * 1000;
      while (Date.now() < due) {
        if (state.error) break;
        await sleep(Math.min(500, due - Date.now()));
      }
      if (state.error) break;
      const why = a.dead();
      if (why) throw new Error(`soak: ${why}`);
      const s = await takeSample();
      results.samples.push(s);
      const mib = s.rssKiB.map((x) => (x / 1024).toFixed(1)).join(' / ');
      const encap = s.txPackets.map((x, i) => x - (c0?.[hosts[i]]?.tx_packets ?? 0)).join(' / ');
      step(`${(s.t / 60).toFixed(1)} of ${opts.minutes} min: RSS ${mib} MiB, packets encapsulated ${encap} (h1 / h2)`);
      if (k % 6 === 0) write();
    }
    state.stopping = true;
    await traffic; // throws the loops' error, if any

    const c9 = await a.counters();
    const cpu9 = a.pids.map(cpuTimes);
    const why = a.dead();
    if (why) throw new Error(`soak: ${why}`);

    // Traffic totals, and the check that it went through the daemons.
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
    const delta = (h: string, k: string): number => (c9?.[h]?.[k] ?? 0) - (c0?.[h]?.[k] ?? 0);
    const need = udpDelivered + Math.floor(tcpBytes / 1500);
    if (delta(h1.name, 'tx_packets') < need || delta(h2.name, 'rx_packets') < need) {
      throw new Error(
        `soak: ipipd counters did not move with the traffic: h1 tx_packets +${delta(h1.name, 'tx_packets')}, h2 rx_packets +${delta(h2.name, 'rx_packets')}, ` +
          `expected at least ${need} (UDP delivered + TCP bytes / 1500)`,
      );
    }

    // Per daemon: start, end, max, peak, slope.
    const after = results.samples.filter((s) => s.t >= WARMUP_S);
    const last = results.samples[results.samples.length - 1];
    results.daemons = hosts.map((host, i) => {
      const ys = after.map((s) => s.rssKiB[i] / 1024);
      const xs = after.map((s) => s.t / 60);
      return {
        host,
        pid: a.pids[i],
        idleMiB: idle[i].rss / 1024,
        startMiB: ys.length > 0 ? ys[0] : null,
        endMiB: last.rssKiB[i] / 1024,
        maxMiB: Math.max(...results.samples.map((s) => s.rssKiB[i])) / 1024,
        peakMiB: last.hwmKiB[i] / 1024,
        slopeMiBPerMin: slope(xs, ys),
        samplesAfterWarmup: ys.length,
        encapsulated: delta(host, 'tx_packets'),
        decapsulated: delta(host, 'rx_packets'),
        cpuSeconds: (cpu9[i].user + cpu9[i].sys - cpu0[i].user - cpu0[i].sys) / 1e6,
      };
    });
    const flatOf = (d: DaemonMemory): boolean => d.slopeMiBPerMin !== null && d.slopeMiBPerMin < MAX_SLOPE_MIB_PER_MIN && d.peakMiB <= MAX_RSS_MIB;
    const flat = results.daemons.every(flatOf);
    const per = results.daemons
      .map((d) => `${d.host} slope ${fmtSlope(d.slopeMiBPerMin)} MiB/min, max ${d.peakMiB.toFixed(1)} MiB`)
      .join('; ');
    const noSlope = results.daemons.some((d) => d.slopeMiBPerMin === null);
    results.verdict = {
      flat,
      text: noSlope ? `n/a: fewer than 2 samples after the warm-up (run longer) (${per})` : `${flat ? 'FLAT' : 'NOT FLAT'} (${per})`,
    };
    results.loadavgAtEnd = loadavg().map((x) => Math.round(x * 100) / 100);

    step('stopping');
    for (const s of servers.splice(0)) await s.stop(3000);
    results.warnings.push(...(await a.stop()));
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

  const m = opts.machine;
  const heading = [
    `${opts.mode} soak, ${when}: ${opts.minutes} min of traffic through the tunnel, both daemons' memory sampled every ${SAMPLE_S} s`,
    `machine: ${m.nproc as number} cores (${m.cpuModel as string}), kernel ${m.kernel as string}, node ${m.node as string}, ipipd ${m.ipipdCommit as string}`,
    `traffic: ${trafficText}`,
    `start: first sample after the ${WARMUP_S} s warm-up; max: largest sampled VmRSS; peak: VmHWM at the end; slope: least squares over the samples after the warm-up`,
  ];
  const tr = results.traffic as { tcp: { bytes: number; avgMbps: number; retransmits: number; chunks: number }; udp: { sent: number; delivered: number; avgPps: number; chunks: number }; failedChunks: number };
  const lines = [
    ...heading,
    '',
    soakTable(results.daemons),
    '',
    `forwarded: ${results.daemons.map((d) => `${d.host} encapsulated ${d.encapsulated} and decapsulated ${d.decapsulated} packets`).join('; ')} (ipipd status --json)`,
    `delivered: TCP ${(tr.tcp.bytes / 1e9).toFixed(2)} GB at ${sig3(tr.tcp.avgMbps)} Mb/s (${tr.tcp.retransmits} retransmits); ` +
      `UDP ${tr.udp.delivered} of ${tr.udp.sent} datagrams at ${sig3(tr.udp.avgPps / 1000)} kpps; ` +
      `iperf3 runs: ${tr.tcp.chunks} TCP, ${tr.udp.chunks} UDP, ${tr.failedChunks} failed`,
    `criteria: ${CRITERIA_TEXT}`,
    `verdict: ${results.verdict?.text ?? 'n/a'}`,
  ];
  opts.write(
    `${opts.base}.svg`,
    soakChart({
      title: `${opts.mode} soak: daemon RSS over ${opts.minutes} min of traffic`,
      subtitle: [`${when} · ${trafficText}`],
      footer: [
        `criteria: ${CRITERIA_TEXT}`,
        `verdict: ${results.verdict?.text ?? 'n/a'}`,
        `${m.nproc as number} cores (${m.cpuModel as string}), kernel ${m.kernel as string}, node ${m.node as string}, ipipd ${m.ipipdCommit as string}`,
      ],
      hosts: results.daemons.map((d) => d.host),
      samples: results.samples,
      warmupS: WARMUP_S,
      durationS,
      limitMiB: MAX_RSS_MIB,
    }),
  );
  for (const w of results.warnings) io.say(`bench: soak: warning: ${w}`);
  process.stdout.write(`\n${lines.join('\n')}\n\nresults: ${opts.base}.json\nchart:   ${opts.base}.svg\n`);
  return 0;
}

function fmtSlope(v: number | null): string {
  if (v === null) return 'n/a';
  return `${v >= 0 ? '+' : '-'}${Math.abs(v).toFixed(3)}`;
}

/** The text table: one row per daemon. */
export function soakTable(daemons: DaemonMemory[]): string {
  const head = ['daemon', 'idle MiB', 'start MiB', 'end MiB', 'max MiB', 'peak MiB', 'slope MiB/min', 'samples', 'encap pkts', 'decap pkts', 'CPU s'];
  const rows = daemons.map((d) => [
    `ipipd ${d.host.replace(/^.*-/, '')}`,
    d.idleMiB.toFixed(1),
    d.startMiB === null ? 'n/a' : d.startMiB.toFixed(1),
    d.endMiB.toFixed(1),
    d.maxMiB.toFixed(1),
    d.peakMiB.toFixed(1),
    fmtSlope(d.slopeMiBPerMin),
    String(d.samplesAfterWarmup),
    String(d.encapsulated),
    String(d.decapsulated),
    d.cpuSeconds.toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [fmt(head), '-'.repeat(fmt(head).length), ...rows.map(fmt)].join('\n');
}
