/**
 * The memory a running ipipd holds, and the one V8 setting that keeps it small: first
 * `limitYoungGeneration` (bin/ipipd.js calls it before anything else is loaded), then
 * `memoryFigures`, what `ipipd status` reports under `memory` and the bench prints per mode.
 *
 * Where the memory goes (docs/performance.md, "Footprint: what a node pays"): about 40 MiB of an
 * idle ipipd are pages of the node binary itself (file-backed, shared with every other node
 * process on the host and reclaimable), the rest is private: the V8 heap, the queues' slabs
 * (src/dataplane/slabs.ts; touched only as far as traffic fills them) and malloc.
 */
import { readFileSync } from 'node:fs';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';

/**
 * Keep V8's young generation at its starting size (two 1 MiB semi-spaces) instead of letting it
 * grow to 2 x 8 MiB. Loading the control path's modules makes V8 grow it at start-up (much of
 * what is allocated then survives), and the grown semi-spaces stay resident for the process's
 * life: 10 MiB of RSS measured. The data path keeps little across a batch, so each of the more
 * frequent scavenges has little to copy: `npm run bench:hotpath` ran ~605 scavenges instead of 82
 * in the same CPU time, within the noise (docs/performance.md, "Footprint: what a node pays").
 *
 * Set at run time on purpose: V8 reads this flag whenever it considers growing the young
 * generation, whereas `--max-semi-space-size` is read only when the heap is set up, so it would
 * need a node command line of its own (ipipd is started as `ipipd ...` and `node bin/ipipd.js ...`).
 * V8 flags are per process, but V8 puts this one back to its default when it sets up a worker
 * thread's isolate (measured on node 20: a worker, and the main thread after it, grew to 32 MiB
 * again), so every worker entry sets it again first (src/daemon/young-generation.ts).
 */
export function limitYoungGeneration(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
}

/**
 * A queue worker's young generation capped at the main thread's (two 1 MiB semi-spaces; V8 sizes
 * the young generation as three semi-spaces, counting the new large-object space): node starts a
 * worker's at two 2 MiB semi-spaces, and `limitYoungGeneration` only stops growth. A hard cap of
 * the isolate, set when it is created (`Worker` `resourceLimits`), so nothing can reset it.
 */
export const WORKER_HEAP_LIMITS = { maxYoungGenerationSizeMb: 3 } as const;

/**
 * glibc malloc arenas the process may use (mallopt M_ARENA_MAX, set by the daemon at start): by
 * default each thread that mallocs under contention gets an arena of its own, up to 8 per core,
 * and each keeps what it freed. ipipd's threads (V8's helpers, queue workers) malloc little and
 * never per packet, so two are plenty: 3 to 6 MiB less RSS measured with MALLOC_ARENA_MAX.
 */
export const MALLOC_ARENAS = 2;

/**
 * `MALLOC_ARENAS` as early as `ipipd run` can: before the config thread (src/daemon/config-thread.ts)
 * and anything else that starts a thread. V8's own helper threads start with node, before any
 * JavaScript. A native addon that does not load is left to be reported where the data path
 * loads (ERR_NATIVE_LOAD, after the config is validated): nothing is tuned then.
 */
export async function tuneMallocEarly(): Promise<void> {
  let n: typeof import('../tun/native.js').native;
  try {
    ({ native: n } = await import('../tun/native.js'));
  } catch {
    return;
  }
  n.limitMallocArenas(MALLOC_ARENAS);
}

/** What `settleMemory` needs of the native binding (src/tun/native.ts). */
export interface MemoryReleases {
  trimMemory(): boolean;
  releaseHeap(): void;
}

/**
 * Hands memory a change used and no longer needs back to the kernel: malloc's free pages always
 * (cheap), and, when this thread's V8 heap has grown past twice `heapAtUp` (its reserved size
 * once up: a reload of 100 000 prefixes parses and builds ~100 MiB), a full collection that
 * returns the emptied heap pages at once; otherwise V8 keeps them reserved for its next growth
 * and RSS stays near the peak. The collection stalls this thread (queue 0) for tens of ms, which
 * is why small heaps are left alone: a reload that size already took seconds. True if it collected.
 */
export function settleMemory(n: MemoryReleases, heapAtUp: number): boolean {
  const grown = getHeapStatistics().total_heap_size > 2 * heapAtUp;
  if (grown) n.releaseHeap();
  n.trimMemory();
  return grown;
}

/** This thread's V8 heap, reserved bytes: what `settleMemory` compares with. */
export function heapReserved(): number {
  return getHeapStatistics().total_heap_size;
}

/** What this process holds, in KiB (`ipipd status` `memory`). */
export interface MemoryFigures {
  /** Resident set (VmRSS): what `ps` and the bench call RSS. All threads, queue workers included. */
  rssKiB: number;
  /** Its private part (RssAnon): heaps, slabs, malloc, stacks. */
  anonKiB: number;
  /** Its file-backed part (RssFile): the node binary and shared libraries, shared with other processes. */
  fileKiB: number;
  /** The most resident at once since start (VmHWM). */
  peakKiB: number;
  /** This thread's V8 heap (queue 0 and the control path; each queue worker has its own): used and reserved. */
  heapUsedKiB: number;
  heapTotalKiB: number;
  /** Memory outside the V8 heap owned by this thread's JavaScript objects: Buffers (slabs) and script sources. */
  externalKiB: number;
  /** Of which ArrayBuffers (Buffers, typed arrays): the slabs, reserved whole, resident as far as traffic filled them. */
  arrayBuffersKiB: number;
}

/** `/proc/self/status` fields, in KiB (0 if the kernel does not report one). */
function procStatus(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

export function memoryFigures(): MemoryFigures {
  const status = readFileSync('/proc/self/status', 'utf8');
  const heap = getHeapStatistics();
  const mem = process.memoryUsage();
  const kib = (bytes: number): number => Math.round(bytes / 1024);
  return {
    rssKiB: procStatus(status, 'VmRSS'),
    anonKiB: procStatus(status, 'RssAnon'),
    fileKiB: procStatus(status, 'RssFile'),
    peakKiB: procStatus(status, 'VmHWM'),
    heapUsedKiB: kib(heap.used_heap_size),
    heapTotalKiB: kib(heap.total_heap_size),
    externalKiB: kib(mem.external),
    arrayBuffersKiB: kib(mem.arrayBuffers),
  };
}
