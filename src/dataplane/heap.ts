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
 * in flight), and keeps the memory reducer from collecting after it: the heap is already as small
 * as it gets, and an idle daemon does not allocate. Later growth (control requests, a reload) is
 * collected by the ordinary allocation-driven GCs.
 *
 * How the reducer is kept off: V8 creates it when it sets up an isolate's heap, if
 * `--memory-reducer` is on then. The main thread's heap is set up before any JavaScript runs, so
 * `--no-memory-reducer` set here reaches only isolates made after it (queue workers); on the main
 * thread the reducer exists and, 8 s after our collection, started its reducing GCs anyway (two
 * per daemon, seen with `--trace-gc --trace-incremental-marking`: "Start (memory reducer)").
 * What it cannot do without is incremental marking: it starts a GC only if incremental marking
 * can start, which V8 checks against `--incremental-marking` each time. So that is turned off as
 * well: the reducer then only looks again every 8 s (a timer task that returns), and a full GC,
 * should control-path growth need one, is one atomic pause instead of marking steps spread over
 * the packets that arrive meanwhile (the heap is ~6-9 MiB: a few ms).
 *
 * Flow: `quietHeap` (flags once per process; the collection once per call, i.e. per thread).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | null = null;

/**
 * Keep V8's memory reducer from collecting, and run a full collection now, on this thread's heap. Returns
 * the collection's length in ms (for the start-up log). Call on the data-path thread before it
 * starts reading.
 */
export function quietHeap(): number {
  if (gc === null) {
    // V8 flags, not Node options, so not settable through NODE_OPTIONS. The first reaches the
    // isolates made from now on; the second stops the reducer the main thread's heap already has.
    setFlagsFromString('--no-memory-reducer');
    setFlagsFromString('--no-incremental-marking');
    // `gc` without starting node with --expose-gc: a new context created after the flag is set
    // has it as a global.
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  const t0 = performance.now();
  gc();
  return performance.now() - t0;
}
