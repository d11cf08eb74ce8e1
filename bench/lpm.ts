/**
 * Micro-benchmark for the longest-prefix-match table (src/routing/table.ts).
 *
 * Flow: for 10, 1 000 and 100 000 random prefixes, build a PrefixTable (timed; at 100 000 also
 * the memory it holds), precompute probe addresses into an Int32Array (half inside a random
 * prefix, half uniform over the address space, so both hits and misses), warm up, then time
 * several rounds of lookups and print the median ns/lookup with the spread. A linear scan over
 * all prefixes is timed beside it at 10 and 1 000 prefixes as the baseline (at 100 000 it would
 * take minutes). GC events during the timed rounds are counted: lookups are meant to allocate
 * nothing, so the count should be 0.
 *
 * Prefixes are drawn inside 64 random /8 blocks, lengths uniform 8..32, so that uniform probes
 * outside those blocks miss. Everything comes from a seeded PRNG: runs are comparable.
 *
 * Run: npm run build && npm run bench:lpm   (about 10-15 s)
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { maskOf } from '../src/routing/prefix.js';
import { PrefixTable, type PrefixEntry } from '../src/routing/table.js';

const SEED = 0x1badb002;
const PROBES = 1 << 16;
const WARMUP_MS = 300;
const ROUNDS = 7;
const ROUND_MS = 150;

/** mulberry32: small seeded PRNG returning int32s. */
function mulberry32(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) | 0;
  };
}

/** The value a route would carry: stands in for a peer. */
interface Peer {
  readonly id: number;
}

/** The baseline: every prefix in typed arrays, scanned in full, longest match kept. */
class LinearScan<T> {
  private readonly addrs: Int32Array;
  private readonly masks: Int32Array;
  private readonly lens: Int32Array;
  private readonly values: T[];

  constructor(entries: Array<PrefixEntry<T>>) {
    this.addrs = Int32Array.from(entries, (e) => e.addr);
    this.masks = Int32Array.from(entries, (e) => maskOf(e.len));
    this.lens = Int32Array.from(entries, (e) => e.len);
    this.values = entries.map((e) => e.value);
  }

  lookup(addr: number): T | undefined {
    const { addrs, masks, lens } = this;
    let best = -1;
    let bestLen = -1;
    for (let i = 0; i < addrs.length; i++) {
      if (((addr ^ addrs[i]) & masks[i]) === 0 && lens[i] > bestLen) {
        best = i;
        bestLen = lens[i];
      }
    }
    return best < 0 ? undefined : this.values[best];
  }
}

function randomEntries(rand: () => number, count: number): Array<PrefixEntry<Peer>> {
  const blocks = Array.from({ length: 64 }, () => rand() & 0xff000000);
  const seen = new Set<number>();
  const out: Array<PrefixEntry<Peer>> = [];
  while (out.length < count) {
    const len = 8 + ((rand() >>> 0) % 25);
    const block = blocks[(rand() >>> 0) % blocks.length];
    const addr = (block | (rand() & 0x00ffffff)) & maskOf(len);
    const key = (addr >>> 0) * 33 + len;
    if (seen.has(key)) continue; // the short lengths saturate: redraw
    seen.add(key);
    out.push({ addr, len, value: { id: out.length } });
  }
  return out;
}

function randomProbes(rand: () => number, entries: Array<PrefixEntry<Peer>>): Int32Array {
  const probes = new Int32Array(PROBES);
  for (let i = 0; i < PROBES; i++) {
    if ((i & 1) === 0) {
      probes[i] = rand();
    } else {
      const e = entries[(rand() >>> 0) % entries.length];
      probes[i] = e.addr | (rand() & ~maskOf(e.len));
    }
  }
  return probes;
}

// One loop per structure, so that each call site sees a single class.
function passTable(t: PrefixTable<Peer>, probes: Int32Array): number {
  let hits = 0;
  for (let i = 0; i < probes.length; i++) if (t.lookup(probes[i]) !== undefined) hits++;
  return hits;
}

function passLinear(t: LinearScan<Peer>, probes: Int32Array): number {
  let hits = 0;
  for (let i = 0; i < probes.length; i++) if (t.lookup(probes[i]) !== undefined) hits++;
  return hits;
}

interface Timing {
  median: number;
  min: number;
  max: number;
  hits: number;
  gcs: number;
}

let gcEvents = 0;
new PerformanceObserver((list) => {
  gcEvents += list.getEntries().length;
}).observe({ entryTypes: ['gc'] });

/** Lets queued PerformanceObserver callbacks run. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

/** Times `pass` over the probes: warm-up, then ROUNDS rounds of about ROUND_MS each. */
async function time(pass: () => number): Promise<Timing> {
  let passes = 0;
  const warmStart = performance.now();
  do {
    pass();
    passes++;
  } while (performance.now() - warmStart < WARMUP_MS);
  const perRound = Math.max(1, Math.round((passes * ROUND_MS) / WARMUP_MS));
  await settle();
  const gcBefore = gcEvents;
  const ns: number[] = [];
  let hits = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let p = 0; p < perRound; p++) hits += pass();
    const t1 = process.hrtime.bigint();
    ns.push(Number(t1 - t0) / (perRound * PROBES));
  }
  await settle();
  ns.sort((a, b) => a - b);
  return {
    median: ns[ns.length >> 1],
    min: ns[0],
    max: ns[ns.length - 1],
    hits: hits / (ROUNDS * perRound * PROBES),
    gcs: gcEvents - gcBefore,
  };
}

/** gc() without needing --expose-gc on the command line (the npm script runs plain node). */
function getGc(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

const MB = 1024 * 1024;
const pad = (s: string, n: number) => s.padStart(n);
const fmtNs = (t: Timing) =>
  `${t.median.toFixed(1)} [${t.min.toFixed(1)}..${t.max.toFixed(1)}]`;
const fmtRate = (t: Timing) => `${(1e3 / t.median).toFixed(1)} M/s`;

function row(size: number, name: string, t: Timing): void {
  console.log(
    `${pad(String(size), 8)}  ${name.padEnd(12)} ${pad(fmtNs(t), 24)} ${pad(fmtRate(t), 11)}` +
      ` ${pad(`${(t.hits * 100).toFixed(0)}%`, 5)} ${pad(String(t.gcs), 4)}`,
  );
}

async function main(): Promise<void> {
  const gc = getGc();
  console.log(
    `LPM micro-benchmark: node ${process.version}, seed 0x${SEED.toString(16)}, ${PROBES} probes per pass ` +
      `(half uniform, half in-prefix), ${ROUNDS} rounds of ~${ROUND_MS} ms after ${WARMUP_MS} ms warm-up`,
  );
  console.log(
    `${pad('prefixes', 8)}  ${'structure'.padEnd(12)} ${pad('ns/lookup median [min..max]', 24)}` +
      ` ${pad('lookups/s', 11)} ${pad('hits', 5)} ${pad('GCs', 4)}`,
  );

  const builds: string[] = [];
  for (const size of [10, 1_000, 100_000]) {
    const rand = mulberry32(SEED + size);
    const entries = randomEntries(rand, size);
    const probes = randomProbes(rand, entries);

    gc?.();
    const before = process.memoryUsage();
    const b0 = process.hrtime.bigint();
    const table = PrefixTable.build(entries);
    const buildMs = Number(process.hrtime.bigint() - b0) / 1e6;
    gc?.();
    const after = process.memoryUsage();
    let build = `build ${pad(String(size), 6)} prefixes: ${buildMs.toFixed(2)} ms`;
    if (size === 100_000) {
      // Large typed arrays keep their bytes outside the JS heap, so report both counters.
      const heap = (after.heapUsed - before.heapUsed) / MB;
      const buffers = (after.arrayBuffers - before.arrayBuffers) / MB;
      build +=
        `; heapUsed +${heap.toFixed(2)} MB, arrayBuffers +${buffers.toFixed(2)} MB` +
        ` = ${(((heap + buffers) * MB) / size).toFixed(0)} bytes/prefix` +
        (gc ? '' : ' (no gc(): figures include garbage)');
    }
    builds.push(build);

    row(size, 'PrefixTable', await time(() => passTable(table, probes)));
    if (size <= 1_000) {
      const linear = new LinearScan(entries);
      row(size, 'linear scan', await time(() => passLinear(linear, probes)));
    }
  }
  for (const line of builds) console.log(line);
}

await main();
