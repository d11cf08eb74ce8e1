/**
 * src/dataplane/heap.ts: `quietHeap` collects the garbage on this thread's heap before the data
 * path starts, can run again, and keeps V8's memory reducer from collecting afterwards, also on
 * the main thread, whose heap (and reducer) exists before any JavaScript runs. The last is seen
 * from outside: two child processes, one collecting through `quietHeap` (the built module,
 * dist/src/dataplane/heap.js: `npm run build`) and one through a plain `gc()`, each idle for
 * 10 s afterwards with V8 tracing incremental marking; the reducer starts 8 s after a full GC.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { getHeapStatistics } from 'node:v8';
import { describe, expect, it } from 'vitest';
import { quietHeap } from '../../src/dataplane/heap.js';

const HEAP = fileURLToPath(new URL('../../dist/src/dataplane/heap.js', import.meta.url));

/** A child that grows its old generation, collects (`quietHeap` or a plain gc), then idles 10 s. */
function child(collect: 'quietHeap' | 'gc'): string {
  return `
    import { setFlagsFromString } from 'node:v8';
    import { runInNewContext } from 'node:vm';
    import { quietHeap } from ${JSON.stringify(HEAP)};
    let keep = Array.from({ length: 4000 }, (_, i) => ({ i, s: 'x' + i, a: new Array(64).fill(i) }));
    keep.length = 0;
    keep = null;
    if (${JSON.stringify(collect)} === 'quietHeap') quietHeap();
    else { setFlagsFromString('--expose-gc'); runInNewContext('gc')(); }
    console.log('collected');
    const tick = setInterval(() => {}, 20);
    setTimeout(() => clearInterval(tick), 10_000);
  `;
}

/** Runs `child(collect)` with V8's GC tracing; its stdout (rejects if it fails or outlasts 30 s). */
async function traced(collect: 'quietHeap' | 'gc'): Promise<string> {
  const args = ['--trace-gc', '--trace-incremental-marking', '--input-type=module', '-e', child(collect)];
  return (await promisify(execFile)(process.execPath, args, { encoding: 'utf8', timeout: 30_000 })).stdout;
}

/** The lines V8 writes for the reducer's GC: its marking start, and the collection itself. */
const REDUCER = /\(memory reducer\)|Mark-Compact \(reduce\)/;

describe('quietHeap', () => {
  it('collects garbage the thread left behind: the used heap shrinks by most of it', () => {
    quietHeap();
    const base = getHeapStatistics().used_heap_size;
    let keep: number[][] | null = Array.from({ length: 2000 }, (_, i) => Array.from({ length: 1000 }, (_, j) => i + j + 0.5));
    const grown = getHeapStatistics().used_heap_size;
    expect(grown - base).toBeGreaterThan(8 << 20); // 2 M doubles: >= 16 MiB unless already collected
    keep = null;
    const t0 = performance.now();
    const ms = quietHeap();
    const call = performance.now() - t0;
    expect(keep).toBeNull();
    // It times the collection, a part of this call (no bound on how fast: that is not its contract).
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(ms).toBeLessThanOrEqual(call);
    expect(getHeapStatistics().used_heap_size - base).toBeLessThan((grown - base) / 4);
  });

  it('leaves no `gc` global behind in the caller’s context', () => {
    quietHeap();
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined();
  });

  it('keeps the memory reducer from collecting after it, on the main thread too (a plain gc() does not)', async () => {
    const [quiet, plain] = await Promise.all([traced('quietHeap'), traced('gc')]);
    // Both children got as far as the collection and then idled past the reducer's 8 s delay.
    expect(quiet).toContain('collected');
    expect(plain).toContain('collected');
    // The control: after a plain full GC, the reducer does start its reducing GC.
    expect(plain).toMatch(REDUCER);
    const after = quiet.slice(quiet.indexOf('collected'));
    expect(after).not.toMatch(REDUCER);
    expect(after).not.toMatch(/Mark-Compact|Start marking/);
  }, 30_000);
});
