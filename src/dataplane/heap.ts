/**
 * The V8 heap of a data-path thread, made quiet before the thread starts reading (issue 15,
 * docs/performance.md "Latency: where the tail comes from").
 *
 * Why: start-up and the JIT warm-up (warmup.ts) grow the heap by a few MiB; a few seconds after
 * the allocation stops, V8's memory reducer notices and runs full, compacting collections on
 * this thread ("Mark-Compact (reduce)" in `--trace-gc`) to give the memory back. Measured on
 * the bench topology: two of them per daemon 8-9 s after start, each a 3-28 ms pause plus
 * incremental marking steps of up to 25 ms, and every ping in flight then waited for them (the
 * 15-45 ms outliers of a 1000-ping run). The data path itself makes no garbage to speak of (no
 * scavenge during 1000 pings; one in 5 s of a TCP stream), so nothing else needs a full GC.
 *
 * `quietHeap` does that collection once, on purpose, before the Readers start (so no packet is
 * in flight), and turns the memory reducer off for the process: the heap is already as small as
 * it gets, and an idle daemon does not allocate. Later growth (control requests, a reload) is
 * collected by the ordinary allocation-driven GCs.
 *
 * Flow: `quietHeap` (flags once per process; the collection once per call, i.e. per thread).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | null = null;

/**
 * Turn V8's memory reducer off and run a full collection now, on this thread's heap. Returns
 * the collection's length in ms (for the start-up log). Call on the data-path thread before it
 * starts reading.
 */
export function quietHeap(): number {
  if (gc === null) {
    // A V8 flag, not a Node option, so not settable through NODE_OPTIONS; read when V8 decides
    // whether to start the reducer, so setting it at run time takes effect.
    setFlagsFromString('--no-memory-reducer');
    // `gc` without starting node with --expose-gc: a new context created after the flag is set
    // has it as a global.
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  const t0 = performance.now();
  gc();
  return performance.now() - t0;
}
