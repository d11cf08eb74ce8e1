/**
 * The bench's memory breakdown (issue 15): what each tunnel process holds at the end of a mode,
 * beside the RSS column of the main table. Flow: `endFootprint` reads one process (its
 * /proc/<pid>/status, plus what ipipd says of its own heap in `ipipd status` `memory`), then
 * `footprintTable` prints, per mode, the median over the rounds of the larger end's figures.
 *
 * RSS = private (RssAnon: heaps, buffers, malloc, stacks; what this process alone costs) +
 * file-backed (RssFile: the executable and libraries; for ipipd about 40 MiB of /usr/bin/node,
 * shared with every node process on the host and reclaimable by the kernel).
 */
import { readFileSync } from 'node:fs';
import type { MemoryFigures } from '../src/daemon/footprint.js';
import type { ModeName } from './modes.js';
import type { ModeRaw } from './mode-run.js';

/** One tunnel process at the end of a mode, in KiB; the heap figures only where ipipd reports them. */
export interface EndFootprint {
  rssKiB: number;
  anonKiB: number;
  fileKiB: number;
  /** ipipd's main thread's V8 heap (queue 0 and the control path), used and reserved. */
  heapUsedKiB: number | null;
  heapTotalKiB: number | null;
  /** ipipd's main thread's ArrayBuffers: its slabs as reserved (resident only where traffic filled them). */
  arrayBuffersKiB: number | null;
}

/** `pid`'s figures from /proc, with the heap figures of `own` (ipipd's status `memory`) if given. */
export function endFootprint(pid: number, own: MemoryFigures | null | undefined): EndFootprint {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return {
    rssKiB: kib('VmRSS'),
    anonKiB: kib('RssAnon'),
    fileKiB: kib('RssFile'),
    heapUsedKiB: own?.heapUsedKiB ?? null,
    heapTotalKiB: own?.heapTotalKiB ?? null,
    arrayBuffersKiB: own?.arrayBuffersKiB ?? null,
  };
}

const COLUMNS: { label: string; of: (e: EndFootprint) => number | null }[] = [
  { label: 'RSS', of: (e) => e.rssKiB },
  { label: 'private', of: (e) => e.anonKiB },
  { label: 'file-backed', of: (e) => e.fileKiB },
  { label: 'V8 heap used', of: (e) => e.heapUsedKiB },
  { label: 'V8 heap reserved', of: (e) => e.heapTotalKiB },
  { label: 'buffers reserved', of: (e) => e.arrayBuffersKiB },
];

function median(v: number[]): number | null {
  if (v.length === 0) return null;
  const s = [...v].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * The footprint table, MiB: per mode (rows) the median over rounds of the larger end's value per
 * column; '-' where the mode has no tunnel process or does not report the figure.
 */
export function footprintTable(rounds: Array<Partial<Record<ModeName, { raw: Partial<ModeRaw> }>>>, modes: ModeName[]): string {
  const rows = modes.map((m) => {
    const ends = rounds.map((r) => r[m]?.raw.footprint).filter((f): f is EndFootprint[] => Array.isArray(f) && f.length > 0);
    return [
      m,
      ...COLUMNS.map((c) => {
        const perRound = ends.map((f) => f.map(c.of)).filter((v): v is number[] => v.every((x) => x !== null)).map((v) => Math.max(...v));
        const x = median(perRound);
        return x === null ? '-' : (x / 1024).toFixed(1);
      }),
    ];
  });
  const head = ['MiB, end of mode', ...COLUMNS.map((c) => c.label)];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(width[i]!) : c.padStart(width[i]!))).join('  ');
  return [
    'footprint: the larger end, median over rounds (private = RssAnon, file-backed = RssFile: the node binary, shared; V8 heap and buffers: ipipd main thread)',
    line(head),
    ...rows.map(line),
  ].join('\n');
}
