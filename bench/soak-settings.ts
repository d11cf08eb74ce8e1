/**
 * What a soak (`npm run bench -- --soak`, soak.ts) is set to do and what it records: the traffic
 * and sampling settings, the criteria of "flat", and the shapes of the samples, the per-daemon
 * memory figures and the JSON it writes.
 */
import type { TcpResult, UdpResult } from './measure.js';
import type { IpipdModeName } from './modes.js';

/** Seconds between samples. */
export const SAMPLE_S = 10;
/** Samples before this many seconds of traffic are shown but left out of start and slope. */
export const WARMUP_S = 30;
/** Longest single iperf3 client run. */
export const CHUNK_S = 60;
/** TCP: one stream at this rate (iperf3 -b). */
export const TCP_RATE = '500M';
export const TCP_RATE_TEXT = '500 Mb/s';
/** UDP: 64-byte payloads (92-byte inner packets) at this many datagrams per second. */
export const UDP_PAYLOAD = 64;
export const UDP_PPS = 10_000;
/** The criteria of "flat", issue 4. */
export const MAX_SLOPE_MIB_PER_MIN = 0.5;
export const MAX_RSS_MIB = 100;

export const TCP_PORT = 5201;
export const UDP_PORT = 5202;
/** iperf3 failures in a row (in one loop) that end the soak. */
export const MAX_FAILURES_IN_A_ROW = 3;

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

export interface Chunk {
  kind: 'tcp' | 'udp';
  /** Seconds since the traffic started. */
  start: number;
  end: number;
  seconds: number;
  result?: TcpResult | UdpResult;
  error?: string;
}

export interface SoakResults {
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

export const CRITERIA_TEXT =
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
