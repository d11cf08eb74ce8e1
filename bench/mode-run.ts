/**
 * One mode in one round of `npm run bench`: build a fresh topology with the mode's underlay MTU,
 * start the mode, check that pod B is routed through the mode's device (and pod A on the way
 * back), then measure: ping latency idle and under one TCP stream, iperf3 TCP with 1 and 4
 * streams, UDP 64 B (with the tunnel processes' CPU time) and UDP 1400 B, each checked against
 * the device counters around it; read the RSS, check ipipd's own counters, stop and tear down
 * (on every path: `finally`).
 *
 * Flow of this file: ModeRaw (what one mode yields); measureMode, the steps in that order, with
 * the helpers it calls below it: checkRoutes, latency, loadedLatency, bothDevices, around
 * (device counters around a test), tcpTest, udpTest, checkDaemonCounters and figuresOf.
 */
import { loadavg } from 'node:os';
import { type Background, sleep } from '../tools/netns/exec.js';
import type { HostInfo, PodInfo } from '../tools/netns/topology.js';
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
  pingLatency,
  routeGet,
  rssKiB,
  startIperfServer,
  udpPingLatency,
} from './measure.js';
import { type ActiveMode, MODES, type ModeName, POD_MTU, benchTopology } from './modes.js';
import type { Options } from './options.js';
import type { Figures } from './report.js';
import { type EndFootprint, endFootprint } from './footprint.js';

type Counters = Record<string, Record<string, number>>;

export interface ModeRaw {
  figures: Figures;
  underlayMtu: number;
  devices: Record<string, unknown>;
  facts: Record<string, unknown>;
  latency: PingResult;
  /** The same pings while one iperf3 TCP stream (started 1 s before them) runs from pod A to pod B. */
  loadedLatency: PingResult & { tcp: TcpResult };
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
  /** Each tunnel process's memory at the same moment, broken down (bench/footprint.ts). */
  footprint: EndFootprint[];
  daemonCounterDelta: Counters | null;
  /** 1-minute load average at the end of the mode (other work on the machine shows here). */
  loadavg1: number;
  warnings: string[];
}

/** What measureMode needs besides the mode: the options, the run's prefix and directory, the latency tool. */
export interface MeasureContext {
  opts: Options;
  prefix: string;
  tmpDir: string;
  /** Latency from traffic.js udp-ping instead of ping (ping is not installed). */
  udpPing: boolean;
  /** Says which step is running (the progress line). */
  step: (s: string) => void;
}

/** A mode up in its topology: where its traffic goes and through which devices. */
interface ModeRun extends MeasureContext {
  mode: ModeName;
  act: ActiveMode;
  h1: HostInfo;
  h2: HostInfo;
  podA: PodInfo;
  podB: PodInfo;
  /** The device on h1 that takes A->B packets, and the one on h2 that hands them to pod B. */
  dev1: string;
  dev2: string;
}

export async function measureMode(mode: ModeName, ctx: MeasureContext): Promise<ModeRaw> {
  const spec = MODES[mode];
  ctx.step(`topology (underlay MTU ${spec.underlayMtu}, pods ${POD_MTU})`);
  const topo = await benchTopology(ctx.prefix, spec.underlayMtu);
  let active: ActiveMode | undefined;
  let server: Background | undefined;
  try {
    ctx.step('starting');
    const act = (active = await spec.start(topo, { prefix: ctx.prefix, tmpDir: ctx.tmpDir }));
    const [h1, h2] = topo.hosts;
    const [dev1, dev2] = act.devs;
    const m: ModeRun = { ...ctx, mode, act, h1, h2, podA: topo.podA, podB: topo.podB, dev1, dev2 };
    await checkRoutes(m);
    const devices = {
      h1: { dev: dev1, ...(await linkInfo(h1.ns, dev1)) },
      h2: { dev: dev2, ...(await linkInfo(h2.ns, dev2)) },
      underlayMtu: spec.underlayMtu,
      podMtu: POD_MTU,
    };
    const counters0 = await act.counters();
    const dev0 = await bothDevices(m);

    ctx.step('warm-up ping');
    await latency(m, 5);
    ctx.step(`latency (${ctx.opts.pings} pings, 10 ms apart)`);
    const rtt = await latency(m, ctx.opts.pings);

    server = await startIperfServer(m.podB.ns, m.podB.address);
    const loaded = await loadedLatency(m);
    const tcp1 = await tcpTest(m, 1);
    const tcp4 = await tcpTest(m, 4);
    const udp64 = await udpTest(m, 64, true);
    const udp1400 = await udpTest(m, 1400, false);

    const rss = act.pids.length > 0 ? act.pids.map(rssKiB) : null;
    const own = (await act.memory?.()) ?? [];
    const footprint = act.pids.map((pid, i) => endFootprint(pid, own[i]));
    const why = act.dead();
    if (why) throw new Error(`${mode}: ${why}`);

    const dev9 = await bothDevices(m);
    const daemonCounterDelta = checkDaemonCounters(m, counters0, await act.counters(), udp64.delivered + udp1400.delivered);
    const total = [counterDelta(dev0[0], dev9[0]), counterDelta(dev0[1], dev9[1])];
    const figures = figuresOf(tcp1, tcp4, udp64, udp1400, rtt, loaded, rss);

    ctx.step('stopping');
    server.stop(3000).catch(() => {});
    await server.exited;
    server = undefined;
    const warnings = await act.stop();
    active = undefined;
    return {
      figures,
      underlayMtu: spec.underlayMtu,
      devices: { ...devices, countersOverTheMode: { h1: total[0], h2: total[1] } },
      facts: act.facts,
      latency: rtt,
      loadedLatency: loaded,
      tcp1,
      tcp4,
      udp64,
      udp1400,
      rssKiB: rss,
      footprint,
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

/** Is pod B really behind this mode's device (and pod A on the way back)? */
async function checkRoutes(m: ModeRun): Promise<void> {
  const there = await routeGet(m.h1.ns, m.podB.address);
  const back = await routeGet(m.h2.ns, m.podA.address);
  if (there.dev !== m.dev1 || back.dev !== m.dev2 || (m.mode === 'direct' && there.gateway !== m.h2.underlay)) {
    throw new Error(
      `${m.mode}: routes do not go through ${m.dev1}/${m.dev2}: h1 -> ${m.podB.address} dev ${there.dev}, h2 -> ${m.podA.address} dev ${back.dev}`,
    );
  }
}

function latency(m: ModeRun, count: number): Promise<PingResult> {
  return m.udpPing ? udpPingLatency(TRAFFIC_JS, m.podA.ns, m.podB.ns, m.podB.address, count) : pingLatency(m.podA.ns, m.podB.address, count);
}

/**
 * Latency under load: one iperf3 TCP stream from pod A to pod B through the mode, and after 1 s
 * (slow start over) the pings, which the stream outlasts by a second. The pings share every
 * queue with the stream (TUN, sockets, veths): this is the round trip an RPC sees next to a bulk
 * transfer. The iperf3 server must be up.
 */
async function loadedLatency(m: ModeRun): Promise<ModeRaw['loadedLatency']> {
  m.step(`latency under 1 TCP stream (${m.opts.pings} pings, 10 ms apart)`);
  const seconds = Math.ceil(m.opts.pings * 0.01) + 3;
  const stream = iperfTcp(m.podA.ns, m.podB.address, 1, seconds);
  // If the stream fails early, the pings' wait must not leave its rejection unhandled.
  stream.catch(() => {});
  await sleep(1000);
  const rtt = await latency(m, m.opts.pings);
  const tcp = await stream;
  await sleep(200);
  return { ...rtt, tcp };
}

async function bothDevices(m: ModeRun): Promise<DevCounters[]> {
  return [await devCounters(m.h1.ns, m.dev1), await devCounters(m.h2.ns, m.dev2)];
}

/** Device counters around a test: what left h1 through dev1 and entered h2 through dev2. */
async function around<T>(m: ModeRun, test: () => Promise<T>): Promise<{ r: T; delta: DevCounters[] }> {
  const before = await bothDevices(m);
  const r = await test();
  const after = await bothDevices(m);
  return { r, delta: [counterDelta(before[0], after[0]), counterDelta(before[1], after[1])] };
}

function notThrough(m: ModeRun, what: string, got: string): Error {
  return new Error(`${m.mode}: ${what}, but only ${got}: the traffic did not go through ${m.dev1} (h1) and ${m.dev2} (h2)`);
}

async function tcpTest(m: ModeRun, streams: number): Promise<TcpResult & { devDelta: DevCounters[] }> {
  m.step(`tcp ${streams} stream${streams > 1 ? 's' : ''} (${m.opts.duration} s)`);
  const { r, delta } = await around(m, () => iperfTcp(m.podA.ns, m.podB.address, streams, m.opts.duration));
  // Bytes, not packets: TSO/GRO may merge segments into fewer, larger packets on a device.
  if (delta[0].txBytes < r.bytes || delta[1].rxBytes < r.bytes) {
    throw notThrough(m, `TCP ${streams}: ${r.bytes} bytes received`, `${delta[0].txBytes} bytes left h1 and ${delta[1].rxBytes} entered h2`);
  }
  await sleep(200);
  return { ...r, devDelta: delta };
}

/** UDP at an unlimited rate: device counters (and the tunnel processes' CPU, with `withCpu`) around it. */
async function udpTest(m: ModeRun, payload: number, withCpu: boolean): Promise<ModeRaw['udp64']> {
  m.step(`udp ${payload} B, unlimited rate (${m.opts.duration} s)${withCpu ? ' + tunnel CPU' : ''}`);
  const sumCpu = (): { user: number; sys: number } =>
    m.act.pids.map(cpuTimes).reduce((a, b) => ({ user: a.user + b.user, sys: a.sys + b.sys }), { user: 0, sys: 0 });
  let cpu0 = { user: 0, sys: 0 };
  let cpu1 = { user: 0, sys: 0 };
  const { r, delta: devDelta } = await around(m, async () => {
    cpu0 = sumCpu();
    const res = await iperfUdp(m.podA.ns, m.podB.address, payload, m.opts.duration);
    cpu1 = sumCpu();
    return res;
  });
  // Every delivered datagram left h1 through dev1 and reached h2 through dev2. h2's side in
  // payload bytes, not packets: UDP GRO may merge datagrams into fewer, larger packets there.
  const payloadBytes = r.delivered * payload;
  if (devDelta[0].txPackets < r.delivered || devDelta[1].rxBytes < payloadBytes) {
    throw notThrough(
      m,
      `UDP ${payload} B: ${r.delivered} datagrams (${payloadBytes} payload bytes) delivered`,
      `${devDelta[0].txPackets} left h1 and ${devDelta[1].rxBytes} bytes entered h2`,
    );
  }
  const has = withCpu && m.act.pids.length > 0;
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
}

/**
 * ipipd's own view, where the mode has counters: it encapsulated on h1 and decapsulated on h2 at
 * least the `delivered` datagrams. Returns the counters' change over the mode (drops that did
 * not move left out), or null.
 */
function checkDaemonCounters(m: ModeRun, a: Counters | null, b: Counters | null, delivered: number): Counters | null {
  if (!a || !b) return null;
  const delta: Counters = {};
  for (const h of Object.keys(b)) {
    delta[h] = {};
    for (const [k, v] of Object.entries(b[h])) {
      const d = v - (a[h]?.[k] ?? 0);
      if (d !== 0 || !k.startsWith('drop_')) delta[h][k] = d;
    }
  }
  const sent = delta.h1?.tx_packets ?? 0;
  const got = delta.h2?.rx_packets ?? 0;
  if (sent < delivered || got < delivered) {
    throw new Error(`${m.mode}: ipipd counters did not move with the traffic: h1 tx_packets +${sent}, h2 rx_packets +${got}, ${delivered} UDP datagrams delivered`);
  }
  return delta;
}

function figuresOf(
  tcp1: TcpResult,
  tcp4: TcpResult,
  udp64: ModeRaw['udp64'],
  udp1400: UdpResult,
  rtt: PingResult,
  loaded: PingResult,
  rss: number[] | null,
): Figures {
  return {
    tcp1Gbps: tcp1.gbps,
    tcp4Gbps: tcp4.gbps,
    udp64Pps: udp64.pps,
    udp1400Pps: udp1400.pps,
    cpuUsPerPacket: udp64.cpuUs === null ? null : udp64.cpuUs / (2 * udp64.delivered),
    rttP50Us: rtt.p50Us,
    rttP99Us: rtt.p99Us,
    addedP50Us: null,
    addedP99Us: null,
    rttP999Us: rtt.p999Us,
    addedP999Us: null,
    loadRttP50Us: loaded.p50Us,
    loadRttP99Us: loaded.p99Us,
    loadRttP999Us: loaded.p999Us,
    loadAddedP50Us: null,
    loadAddedP99Us: null,
    loadAddedP999Us: null,
    rssMiB: rss ? Math.max(...rss) / 1024 : null,
  };
}
