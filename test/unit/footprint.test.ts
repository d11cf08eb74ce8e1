/**
 * What keeps ipipd's memory down (src/daemon/footprint.ts), checked on the V8 and glibc the
 * daemon runs on, in child processes (test/fixtures/footprint-child.ts, from dist/ after
 * `npm run build`): the young generation stays at its starting size once limited (in worker
 * threads too, which reset the limit), a large heap left behind by a change is handed back, and
 * the figures `ipipd status` reports add up. Plus the bench's footprint table
 * (bench/footprint.ts) on made-up rounds.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import { footprintTable, type EndFootprint } from '../../bench/footprint.js';
import { MALLOC_ARENAS, memoryFigures, settleMemory } from '../../src/daemon/footprint.js';

const CHILD = fileURLToPath(new URL('../../dist/test/fixtures/footprint-child.js', import.meta.url));
const MiB = 1024 * 1024;

function child(args: string[]): Record<string, unknown> {
  const out = execFileSync(process.execPath, [CHILD, ...args], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
}

describe('the young generation', () => {
  it('grows past 2 MiB under a load with many survivors, unless limitYoungGeneration came first', () => {
    const grown = child(['young']);
    const limited = child(['young', 'limit']);
    expect(grown.kept).toBe(limited.kept);
    expect(grown.youngBytes as number).toBeGreaterThan(4 * MiB);
    expect(limited.youngBytes as number).toBeLessThanOrEqual(2 * MiB);
  });
});

describe('the young generation in worker threads', () => {
  it('V8 resets the limit when a worker starts; a worker entry that imports young-generation.js first keeps it, in the worker and in the main thread', () => {
    const reset = child(['worker']);
    const fixed = child(['worker', 'fixed']);
    expect(reset.workerYoung as number).toBeGreaterThan(8 * MiB);
    expect(reset.mainYoung as number).toBeGreaterThan(8 * MiB);
    // A worker's young generation starts at 2 x 2 MiB on node 20, the main thread's at 2 x 1 MiB.
    expect(fixed.workerYoung as number).toBeLessThanOrEqual(4 * MiB);
    expect(fixed.mainYoung as number).toBeLessThanOrEqual(2 * MiB);
  });
});

describe('settleMemory', () => {
  it('collects a heap grown past twice its size once up, and hands the pages back', () => {
    const r = child(['release']);
    const [atUp, before, after] = [r.atUp as number, r.before as number, r.after as number];
    expect(before).toBeGreaterThan(2 * atUp);
    expect(r.collected).toBe(true);
    expect(after).toBeLessThan(before - 32 * MiB);
    // Measured from what is reserved now, the heap is not grown: no second collection.
    expect(r.again).toBe(false);
  });

  it('trims malloc always, and collects only when the heap has grown', () => {
    const n = { trimMemory: vi.fn(() => true), releaseHeap: vi.fn() };
    expect(settleMemory(n, Number.MAX_SAFE_INTEGER)).toBe(false);
    expect(n.trimMemory).toHaveBeenCalledTimes(1);
    expect(n.releaseHeap).not.toHaveBeenCalled();
    expect(settleMemory(n, 1)).toBe(true);
    expect(n.trimMemory).toHaveBeenCalledTimes(2);
    expect(n.releaseHeap).toHaveBeenCalledTimes(1);
  });
});

describe('memoryFigures', () => {
  it('reports RSS as its private and file-backed parts, and a heap that holds what it uses', () => {
    const m = memoryFigures();
    expect(m.rssKiB).toBeGreaterThan(0);
    expect(m.anonKiB).toBeGreaterThan(0);
    expect(m.fileKiB).toBeGreaterThan(0);
    // RssShmem is the rest of VmRSS; a node process has next to none.
    expect(Math.abs(m.rssKiB - m.anonKiB - m.fileKiB)).toBeLessThan(1024);
    expect(m.peakKiB).toBeGreaterThanOrEqual(m.rssKiB);
    expect(m.heapUsedKiB).toBeLessThanOrEqual(m.heapTotalKiB);
    expect(m.arrayBuffersKiB).toBeLessThanOrEqual(m.externalKiB);
    expect(MALLOC_ARENAS).toBeGreaterThanOrEqual(1);
  });
});

describe('the bench footprint table', () => {
  const end = (rss: number, heap: number | null): EndFootprint => ({
    rssKiB: rss * 1024,
    anonKiB: (rss - 40) * 1024,
    fileKiB: 40 * 1024,
    heapUsedKiB: heap === null ? null : heap * 1024,
    heapTotalKiB: heap === null ? null : (heap + 2) * 1024,
    arrayBuffersKiB: heap === null ? null : 12 * 1024,
  });

  it('takes the larger end per round and the median over rounds; "-" where a figure is not reported', () => {
    const rounds = [
      { ipipd: { raw: { footprint: [end(70, 15), end(72, 14)] } }, quicktun: { raw: { footprint: [end(42, null), end(42, null)] } }, direct: { raw: { footprint: [] } } },
      { ipipd: { raw: { footprint: [end(74, 15), end(71, 16)] } }, quicktun: { raw: { footprint: [end(42, null), end(44, null)] } }, direct: { raw: { footprint: [] } } },
      { ipipd: { raw: { footprint: [end(60, 15), end(90, 15)] } }, quicktun: { raw: { footprint: [end(43, null), end(42, null)] } }, direct: { raw: { footprint: [] } } },
    ];
    const lines = footprintTable(rounds, ['direct', 'ipipd', 'quicktun']).split('\n');
    const cells = (mode: string): string[] => lines.find((l) => l.startsWith(mode))!.trim().split(/\s+/);
    // RSS per round: 72, 74, 90 -> 74; private 32, 34, 50 -> 34; heap used 15, 16, 15 -> 15.
    expect(cells('ipipd')).toEqual(['ipipd', '74.0', '34.0', '40.0', '15.0', '17.0', '12.0']);
    expect(cells('quicktun')).toEqual(['quicktun', '43.0', '3.0', '40.0', '-', '-', '-']);
    expect(cells('direct')).toEqual(['direct', '-', '-', '-', '-', '-', '-']);
  });
});
