/**
 * What the bench reports: the figure list (one place for keys, labels, units and which way is
 * better), ratios to direct routing within a round, the spread over rounds, and the text table.
 *
 * Raw figures are stored in base units (Gb/s, packets/s, µs, MiB); `scale` and `unit` are for
 * display only.
 */
import type { ModeName } from './modes.js';

export interface Figures {
  tcp1Gbps: number | null;
  tcp4Gbps: number | null;
  udp64Pps: number | null;
  udp1400Pps: number | null;
  /** Tunnel processes' CPU µs per packet: (Δutime+Δstime of both ends) / (2 × delivered), UDP 64 B. */
  cpuUsPerPacket: number | null;
  rttP50Us: number | null;
  rttP99Us: number | null;
  /** RTT minus direct routing's in the same round. */
  addedP50Us: number | null;
  addedP99Us: number | null;
  /** The tail over the same pings (nearest rank), and its added part. */
  rttP999Us: number | null;
  addedP999Us: number | null;
  /** The same pings while one iperf3 TCP stream runs from pod A to pod B through the same path. */
  loadRttP50Us: number | null;
  loadRttP99Us: number | null;
  loadRttP999Us: number | null;
  /** Loaded RTT minus direct routing's loaded RTT in the same round. */
  loadAddedP50Us: number | null;
  loadAddedP99Us: number | null;
  loadAddedP999Us: number | null;
  /** Max VmRSS of the two tunnel processes at the end of the mode. */
  rssMiB: number | null;
}

export type FigureKey = keyof Figures;

export interface FigureDef {
  key: FigureKey;
  label: string;
  /** Short label for the chart. */
  short: string;
  unit: string;
  /** Display value = raw × scale. */
  scale: number;
  better: 'higher' | 'lower';
  /** Whether a ratio to direct routing means something (direct has a value). */
  ratio: boolean;
  /** Also shown as a ratio to quicktun's in the same round (the latency targets of issue 15 are set against it). */
  vsQuicktun?: boolean;
  /**
   * Also shown as a ratio to node-floor's in the same round: what ipipd adds idle over the least a
   * Node data path does (bench/floor.ts). Idle only: the floor has no offloads, so under load it
   * is no reference.
   */
  vsFloor?: boolean;
}

export const FIGURES: readonly FigureDef[] = [
  { key: 'tcp1Gbps', label: 'TCP, 1 stream', short: 'TCP 1 stream', unit: 'Gb/s', scale: 1, better: 'higher', ratio: true },
  { key: 'tcp4Gbps', label: 'TCP, 4 streams', short: 'TCP 4 streams', unit: 'Gb/s', scale: 1, better: 'higher', ratio: true },
  { key: 'udp64Pps', label: 'UDP 64 B, delivered', short: 'UDP 64 B pps', unit: 'kpps', scale: 1e-3, better: 'higher', ratio: true },
  { key: 'udp1400Pps', label: 'UDP 1400 B, delivered', short: 'UDP 1400 B pps', unit: 'kpps', scale: 1e-3, better: 'higher', ratio: true },
  { key: 'cpuUsPerPacket', label: 'tunnel CPU per packet (UDP 64 B)', short: 'CPU/packet', unit: 'µs', scale: 1, better: 'lower', ratio: false },
  { key: 'rttP50Us', label: 'ping RTT p50', short: 'RTT p50', unit: 'µs', scale: 1, better: 'lower', ratio: true },
  { key: 'rttP99Us', label: 'ping RTT p99', short: 'RTT p99', unit: 'µs', scale: 1, better: 'lower', ratio: true },
  { key: 'addedP50Us', label: 'added RTT p50 (minus direct)', short: '+RTT p50', unit: 'µs', scale: 1, better: 'lower', ratio: false, vsQuicktun: true, vsFloor: true },
  { key: 'addedP99Us', label: 'added RTT p99 (minus direct)', short: '+RTT p99', unit: 'µs', scale: 1, better: 'lower', ratio: false, vsQuicktun: true, vsFloor: true },
  { key: 'rttP999Us', label: 'ping RTT p99.9', short: 'RTT p99.9', unit: 'µs', scale: 1, better: 'lower', ratio: false },
  { key: 'addedP999Us', label: 'added RTT p99.9 (minus direct)', short: '+RTT p99.9', unit: 'µs', scale: 1, better: 'lower', ratio: false, vsQuicktun: true, vsFloor: true },
  { key: 'loadRttP50Us', label: 'ping RTT p50 under 1 TCP stream', short: 'loaded RTT p50', unit: 'µs', scale: 1, better: 'lower', ratio: false },
  { key: 'loadRttP99Us', label: 'ping RTT p99 under 1 TCP stream', short: 'loaded RTT p99', unit: 'µs', scale: 1, better: 'lower', ratio: false },
  { key: 'loadRttP999Us', label: 'ping RTT p99.9 under 1 TCP stream', short: 'loaded RTT p99.9', unit: 'µs', scale: 1, better: 'lower', ratio: false },
  { key: 'loadAddedP50Us', label: 'added RTT p50 under load (minus direct)', short: '+loaded p50', unit: 'µs', scale: 1, better: 'lower', ratio: false, vsQuicktun: true },
  { key: 'loadAddedP99Us', label: 'added RTT p99 under load (minus direct)', short: '+loaded p99', unit: 'µs', scale: 1, better: 'lower', ratio: false, vsQuicktun: true },
  { key: 'loadAddedP999Us', label: 'added RTT p99.9 under load (minus direct)', short: '+loaded p99.9', unit: 'µs', scale: 1, better: 'lower', ratio: false, vsQuicktun: true },
  { key: 'rssMiB', label: 'tunnel RSS, max of both ends', short: 'RSS', unit: 'MiB', scale: 1, better: 'lower', ratio: false },
];

export type Ratios = Partial<Record<FigureKey, number | null>>;

/**
 * Each latency figure's "added" counterpart: the mode's value minus direct routing's in the same
 * round (run.ts fills them once the round's direct routing is measured).
 */
export const ADDED: ReadonlyArray<readonly [added: FigureKey, raw: FigureKey]> = [
  ['addedP50Us', 'rttP50Us'],
  ['addedP99Us', 'rttP99Us'],
  ['addedP999Us', 'rttP999Us'],
  ['loadAddedP50Us', 'loadRttP50Us'],
  ['loadAddedP99Us', 'loadRttP99Us'],
  ['loadAddedP999Us', 'loadRttP999Us'],
];

/** Sets the ADDED figures of `f` from direct routing's figures of the same round (undefined: none measured). */
export function setAdded(f: Figures, direct: Figures | undefined, isDirect: boolean): void {
  for (const [added, raw] of ADDED) {
    const v = f[raw];
    const base = direct?.[raw];
    if (isDirect) f[added] = v === null ? null : 0;
    else f[added] = v !== null && base !== null && base !== undefined ? v - base : null;
  }
}

/**
 * value / quicktun's value in the same round, for the `vsQuicktun` figures (the issue 15
 * targets: added RTT p50 <= 1.2x and p99 <= 1.5x quicktun's); null without quicktun or when
 * its value is not positive.
 */
export function ratiosToQuicktun(quicktun: Figures | undefined, f: Figures): Ratios {
  return ratiosOver(quicktun, f, (d) => d.vsQuicktun === true);
}

/** value / node-floor's value in the same round, for the `vsFloor` figures; null as `ratiosToQuicktun`. */
export function ratiosToFloor(floor: Figures | undefined, f: Figures): Ratios {
  return ratiosOver(floor, f, (d) => d.vsFloor === true);
}

/** value / direct's value in the same round, for the figures where that means something. */
export function ratiosTo(direct: Figures | undefined, f: Figures): Ratios {
  return ratiosOver(direct, f, (d) => d.ratio);
}

/** f's value / base's value for the figures `which` picks; null where base has no positive value. */
function ratiosOver(base: Figures | undefined, f: Figures, which: (d: FigureDef) => boolean): Ratios {
  const out: Ratios = {};
  for (const d of FIGURES) {
    if (!which(d)) continue;
    const b = base?.[d.key];
    const v = f[d.key];
    out[d.key] = v !== null && b !== null && b !== undefined && b > 0 ? v / b : null;
  }
  return out;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** median, min, max of the non-null values; null if there is none. */
export function spread(values: Array<number | null | undefined>): Spread | null {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { median, min: v[0], max: v[v.length - 1], n: v.length };
}

/** Least-squares slope of ys over xs; null with fewer than 2 points or no spread in xs. */
export function slope(xs: number[], ys: number[]): number | null {
  const n = xs.length;
  if (n < 2) return null;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxx > 0 ? sxy / sxx : null;
}

export interface ModeSummary {
  values: Partial<Record<FigureKey, Spread | null>>;
  ratios: Partial<Record<FigureKey, Spread | null>>;
  /** The `vsQuicktun` figures as a ratio to quicktun's, over the rounds. */
  vsQuicktun?: Partial<Record<FigureKey, Spread | null>>;
  /** The `vsFloor` figures as a ratio to node-floor's, over the rounds. */
  vsFloor?: Partial<Record<FigureKey, Spread | null>>;
}

export interface RoundEntry {
  figures: Figures;
  ratios: Ratios;
  vsQuicktun?: Ratios;
  vsFloor?: Ratios;
}

export function summarize(rounds: Array<Partial<Record<ModeName, RoundEntry>>>, modes: ModeName[]): Record<string, ModeSummary> {
  const out: Record<string, ModeSummary> = {};
  for (const m of modes) {
    const entries = rounds.map((r) => r[m]).filter((e): e is RoundEntry => !!e);
    const s: ModeSummary = { values: {}, ratios: {} };
    for (const d of FIGURES) {
      s.values[d.key] = spread(entries.map((e) => e.figures[d.key]));
      if (d.ratio) s.ratios[d.key] = spread(entries.map((e) => e.ratios[d.key]));
      if (d.vsQuicktun) (s.vsQuicktun ??= {})[d.key] = spread(entries.map((e) => e.vsQuicktun?.[d.key]));
      if (d.vsFloor) (s.vsFloor ??= {})[d.key] = spread(entries.map((e) => e.vsFloor?.[d.key]));
    }
    out[m] = s;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Text

/** Three significant digits, no exponent for the magnitudes the bench sees. */
export function sig3(x: number): string {
  const a = Math.abs(x);
  if (a === 0) return '0';
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  if (a >= 0.01) return x.toFixed(3);
  return x.toPrecision(2);
}

function cell(s: Spread | null | undefined, scale: number, suffix = ''): string {
  if (!s) return 'n/a';
  const m = `${sig3(s.median * scale)}${suffix}`;
  if (s.n < 2 || s.min === s.max) return m;
  return `${m} (${sig3(s.min * scale)}..${sig3(s.max * scale)})`;
}

/**
 * The table: one column per mode, a row per figure (value), then "× direct" where a ratio means
 * something, "× quicktun" for the latency figures the targets compare with quicktun's (when
 * quicktun ran) and "× node-floor" for the idle ones (when node-floor ran). Cells: median
 * (min..max) over the rounds.
 */
export function table(summary: Record<string, ModeSummary>, modes: ModeName[]): string {
  const rows: string[][] = [['', ...modes]];
  for (const d of FIGURES) {
    rows.push([`${d.label}, ${d.unit}`, ...modes.map((m) => cell(summary[m]?.values[d.key], d.scale))]);
    if (d.ratio) {
      rows.push(['  × direct', ...modes.map((m) => cell(summary[m]?.ratios[d.key], 1, '×'))]);
    }
    if (d.vsQuicktun && modes.includes('quicktun')) {
      rows.push(['  × quicktun', ...modes.map((m) => (m === 'direct' ? '' : cell(summary[m]?.vsQuicktun?.[d.key], 1, '×')))]);
    }
    if (d.vsFloor && modes.includes('node-floor')) {
      rows.push(['  × node-floor', ...modes.map((m) => (m === 'direct' ? '' : cell(summary[m]?.vsFloor?.[d.key], 1, '×')))]);
    }
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => [...r[c]].length)));
  const pad = (s: string, w: number, left: boolean): string => {
    const n = w - [...s].length;
    return left ? s + ' '.repeat(n) : ' '.repeat(n) + s;
  };
  const lines = rows.map((r) => r.map((s, c) => pad(s, widths[c], c === 0)).join('   ').trimEnd());
  const rule = '-'.repeat(Math.max(...lines.map((l) => [...l].length)));
  return [lines[0], rule, ...lines.slice(1)].join('\n');
}
