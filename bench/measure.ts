/**
 * The measurements, each one function that returns numbers or throws with what went wrong:
 * iperf3 (server in pod B, TCP and UDP clients in pod A), ping latency, a process's CPU time and
 * RSS from /proc, a device's packet counters, and the route a host picks for a destination.
 *
 * Nothing here judges speed: a result is only rejected when it shows that no traffic flowed
 * (iperf3 error, zero packets delivered, no reply to any ping).
 */
import { readFileSync } from 'node:fs';
import { type Background, inNs, must, run, start, waitFor } from '../tools/netns/exec.js';

// ---------------------------------------------------------------------------------------------
// iperf3

export const IPERF_PORT = 5201;

/** `iperf3 -s` bound to pod B's address (one test at a time per port); resolves once it listens. */
export async function startIperfServer(ns: string, address: string, port = IPERF_PORT): Promise<Background> {
  const srv = start(inNs(ns, ['iperf3', '-s', '--forceflush', '-B', address, '-p', String(port)]));
  const ok = await waitFor(() => srv.output().includes('Server listening') || srv.child.exitCode !== null, 10_000);
  if (!ok || srv.child.exitCode !== null) {
    await srv.stop(1000);
    throw new Error(`iperf3 -s in ${ns} did not start: ${srv.output().trim()}`);
  }
  return srv;
}

export interface TcpResult {
  gbps: number;
  /** Payload bytes the server received. */
  bytes: number;
  /** Retransmitted segments (sender side). */
  retransmits: number;
  seconds: number;
}

export interface UdpResult {
  /** Datagrams the client sent. */
  sent: number;
  /** Receiver's view: packets it expected (highest sequence) and those missing. */
  packets: number;
  lost: number;
  delivered: number;
  seconds: number;
  /** delivered / seconds. */
  pps: number;
}

async function iperfClient(ns: string, to: string, args: string[], durationS: number, port = IPERF_PORT): Promise<any> {
  const argv = inNs(ns, ['iperf3', '-c', to, '-p', String(port), '-t', String(durationS), '-J', '--connect-timeout', '5000', ...args]);
  const r = await run(argv, { timeoutMs: (durationS + 30) * 1000 });
  let json: any = null;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    // reported below
  }
  if (r.timedOut) throw new Error(`iperf3 ${args.join(' ')} timed out after ${durationS + 30} s`);
  if (json === null) throw new Error(`iperf3 ${args.join(' ')}: no JSON (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(-500)}`);
  if (json.error) throw new Error(`iperf3 ${args.join(' ')}: ${json.error}`);
  if (r.code !== 0) throw new Error(`iperf3 ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim().slice(-500)}`);
  return json;
}

/**
 * `iperf3 -c -P streams`, unlimited unless `rate` (iperf3's -b, e.g. "500M", per stream) is given;
 * `port` selects the server (the soak runs a TCP and a UDP client at once, one server each).
 */
export async function iperfTcp(ns: string, to: string, streams: number, durationS: number, rate?: string, port = IPERF_PORT): Promise<TcpResult> {
  const args = ['-P', String(streams), ...(rate === undefined ? [] : ['-b', rate])];
  const j = await iperfClient(ns, to, args, durationS, port);
  const rx = j.end?.sum_received;
  const gbps = Number(rx?.bits_per_second) / 1e9;
  if (!(gbps > 0)) throw new Error(`iperf3 TCP ${streams} stream(s): nothing received`);
  return { gbps, bytes: Number(rx.bytes), retransmits: Number(j.end?.sum_sent?.retransmits ?? 0), seconds: Number(rx.seconds) };
}

/**
 * `iperf3 -c -u -l payload` at an unlimited offered rate (`-b 0`) unless `rate` is given, with
 * `streams` flows (-P, each its own source port; the figures are their sum).
 */
export async function iperfUdp(ns: string, to: string, payload: number, durationS: number, rate = '0', port = IPERF_PORT, streams = 1): Promise<UdpResult> {
  const j = await iperfClient(ns, to, ['-u', '-b', rate, '-l', String(payload), ...(streams > 1 ? ['-P', String(streams)] : [])], durationS, port);
  // sum_received is the server's report (iperf3 >= 3.?); older versions put it in sum.
  const rx = j.end?.sum_received ?? j.end?.sum;
  const packets = Number(rx?.packets);
  const lost = Number(rx?.lost_packets);
  const seconds = Number(rx?.seconds);
  const delivered = packets - lost;
  if (!Number.isFinite(delivered) || !(seconds > 0)) throw new Error(`iperf3 UDP -l ${payload}: no receiver report in the JSON`);
  if (delivered <= 0) throw new Error(`iperf3 UDP -l ${payload}: 0 packets delivered (${packets} expected, ${lost} lost)`);
  const sent = Number(j.end?.sum_sent?.packets ?? j.end?.sum?.packets ?? packets);
  return { sent, packets, lost, delivered, seconds, pps: delivered / seconds };
}

// ---------------------------------------------------------------------------------------------
// Latency

export interface PingResult {
  tool: 'ping' | 'traffic.js udp-ping';
  sent: number;
  received: number;
  p50Us: number;
  /** null if the tool gave no p99 (a traffic.js older than its p90/p99). */
  p99Us: number | null;
  /** Nearest-rank p99.9 (with fewer than 1000 replies, the largest); null from traffic.js, which gives none. */
  p999Us: number | null;
}

/**
 * Nearest-rank percentile of an ascending array. The rank is rounded to 1e-9 first: 99.9 / 100 x
 * 1000 is 999.0000000000001 in floating point, whose ceiling would be one rank too far.
 */
export function percentile(sorted: number[], p: number): number {
  const rank = Math.ceil(Math.round((p / 100) * sorted.length * 1e9) / 1e9);
  const i = Math.min(sorted.length - 1, Math.max(0, rank - 1));
  return sorted[i];
}

/** `ping -i 0.01 -c N` from pod A to pod B, per-line times -> p50/p99 in µs. */
export async function pingLatency(ns: string, to: string, count: number): Promise<PingResult> {
  const r = await run(inNs(ns, ['ping', '-n', '-i', '0.01', '-c', String(count), '-W', '1', to]), {
    timeoutMs: (count * 0.01 + 15) * 1000,
  });
  const times = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]) * 1000).sort((a, b) => a - b);
  if (times.length === 0) throw new Error(`ping ${to} from ${ns}: no reply (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(-300)}`);
  return { tool: 'ping', sent: count, received: times.length, p50Us: percentile(times, 50), p99Us: percentile(times, 99), p999Us: percentile(times, 99.9) };
}

/**
 * Fallback without `ping`: the repository's traffic.js (udp-echo in pod B, udp-ping in pod A),
 * whose rttMs has min/avg/max and the nearest-rank p50/p90/p99 (as `percentile` here) in ms.
 */
export async function udpPingLatency(
  trafficJs: string,
  nsA: string,
  nsB: string,
  to: string,
  count: number,
): Promise<PingResult> {
  const port = 7007;
  const seconds = Math.ceil(count * 0.01) + 30; // traffic.js's own hard limit (its default is 30 s)
  const echo = start(inNs(nsB, [process.execPath, trafficJs, 'udp-echo', '--bind', to, '--port', String(port), '--timeout', String(seconds + 30)]));
  try {
    await waitFor(() => echo.output().includes('listening') || echo.child.exitCode !== null, 10_000);
    const out = await must(
      inNs(nsA, [process.execPath, trafficJs, 'udp-ping', '--to', to, '--port', String(port), '--count', String(count), '--interval-ms', '10', '--timeout', String(seconds)]),
      { timeoutMs: (seconds + 10) * 1000 },
    );
    const line = out.trim().split('\n').pop() ?? '{}';
    const j = JSON.parse(line) as { sent: number; received: number; rttMs: { p50: number; p99?: number } | null };
    if (!j.received || !j.rttMs) throw new Error(`udp-ping ${to}: no reply`);
    const p99Us = typeof j.rttMs.p99 === 'number' ? j.rttMs.p99 * 1000 : null;
    return { tool: 'traffic.js udp-ping', sent: j.sent, received: j.received, p50Us: j.rttMs.p50 * 1000, p99Us, p999Us: null };
  } finally {
    await echo.stop(2000);
  }
}

// ---------------------------------------------------------------------------------------------
// /proc

/** USER_HZ, the unit of utime/stime in /proc/<pid>/stat: 100 on Linux unless getconf says otherwise. */
let clkTck = 100;

export async function loadClockTicks(): Promise<number> {
  const r = await run(['getconf', 'CLK_TCK']);
  const v = Number(r.stdout.trim());
  clkTck = r.code === 0 && v > 0 ? v : 100;
  return clkTck;
}

/** utime and stime of the whole process (all threads), in µs. */
export function cpuTimes(pid: number): { user: number; sys: number } {
  return statCpu(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** utime and stime, in µs, from the text of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat. */
export function statCpu(stat: string): { user: number; sys: number } {
  // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: (Number(rest[11]) * 1e6) / clkTck, sys: (Number(rest[12]) * 1e6) / clkTck };
}

/** VmRSS in KiB. */
export function rssKiB(pid: number): number {
  return memKiB(pid).rss;
}

/** VmRSS (resident now) and VmHWM (the peak resident size since the process started), in KiB. */
export function memKiB(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
  const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
  if (!rss || !hwm) throw new Error(`no VmRSS/VmHWM for pid ${pid}`);
  return { rss: Number(rss[1]), hwm: Number(hwm[1]) };
}

// ---------------------------------------------------------------------------------------------
// Devices and routes

export interface DevCounters {
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  rxDropped: number;
  txDropped: number;
}

/** A device's packet counters, read inside its namespace. */
export async function devCounters(ns: string, dev: string): Promise<DevCounters> {
  const out = await must(['ip', '-n', ns, '-j', '-s', 'link', 'show', 'dev', dev]);
  const [link] = JSON.parse(out) as Array<{ stats64?: { rx: Record<string, number>; tx: Record<string, number> } }>;
  const s = link?.stats64;
  if (!s) throw new Error(`no counters for ${dev} in ${ns}`);
  return {
    rxPackets: s.rx.packets,
    txPackets: s.tx.packets,
    rxBytes: s.rx.bytes,
    txBytes: s.tx.bytes,
    rxDropped: s.rx.dropped,
    txDropped: s.tx.dropped,
  };
}

export function counterDelta(a: DevCounters, b: DevCounters): DevCounters {
  return {
    rxPackets: b.rxPackets - a.rxPackets,
    txPackets: b.txPackets - a.txPackets,
    rxBytes: b.rxBytes - a.rxBytes,
    txBytes: b.txBytes - a.txBytes,
    rxDropped: b.rxDropped - a.rxDropped,
    txDropped: b.txDropped - a.txDropped,
  };
}

export interface LinkInfo {
  mtu: number;
  qlen: number | null;
}

export async function linkInfo(ns: string, dev: string): Promise<LinkInfo> {
  const out = await must(['ip', '-n', ns, '-j', 'link', 'show', 'dev', dev]);
  const [link] = JSON.parse(out) as Array<{ mtu: number; txqlen?: number }>;
  return { mtu: link.mtu, qlen: link.txqlen ?? null };
}

/** The device (and gateway) `ns` routes `to` through: `ip route get`. */
export async function routeGet(ns: string, to: string): Promise<{ dev: string; gateway: string | null }> {
  const out = await must(['ip', '-n', ns, '-j', 'route', 'get', to]);
  const [r] = JSON.parse(out) as Array<{ dev: string; gateway?: string }>;
  return { dev: r.dev, gateway: r.gateway ?? null };
}
