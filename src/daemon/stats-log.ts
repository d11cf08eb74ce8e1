/**
 * The counter summary in the log (`log.stats_interval`, README "Configuration"): every so many
 * seconds, one `counters` line with every counter and the drop reasons that are not zero, and
 * only when something changed since the last line.
 *
 * Why a module of its own, and why so little: the timer fires on queue 0's thread, the one that
 * also forwards packets, and whatever it does synchronously holds up the batches that arrive
 * meanwhile (issue 15: no periodic work on a data-path thread that stalls a batch for more than a
 * few tens of microseconds). It used to build the whole status report for this: a record per
 * peer, the routes outside the TUN, the memory figures read from /proc, then JSON of it all to
 * compare, 0.7 ms on a busy machine with two peers and more with each peer. It now reads only
 * what it logs: the queues' counters and drops, added up (`CounterSource`), compared with the
 * last line's in place.
 *
 * Flow: `start` (the timer), each tick `source.sums()` -> changed? -> one log line; `stop`.
 */
import { COUNTER_NAMES, nameFigures } from '../dataplane/figures.js';
import { VERDICT_NAMES } from '../ipip/verdict.js';
import type { Logger } from './logger.js';

/** Every queue's counters and drops, added up, indexed as COUNTER_NAMES / VERDICT_NAMES. */
export interface CounterSums {
  counters: Float64Array;
  drops: Float64Array;
  /** Counters kept outside the queues (the TUN's own tx_dropped, the log's write errors). */
  extra: Record<string, number>;
}

/** Where the sums come from (the daemon); null while it is not up (nothing is logged then). */
export interface CounterSource {
  sums(): CounterSums | null | Promise<CounterSums | null>;
}

/** `o` without its zero entries. */
export function nonZero(o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== 0));
}

export class StatsLog {
  private timer: NodeJS.Timeout | undefined;
  private readonly last = { counters: new Float64Array(COUNTER_NAMES.length), drops: new Float64Array(VERDICT_NAMES.length), extra: new Map<string, number>() };
  private logged = false;
  private busy = false;

  /** `everySeconds` > 0: how often to look. */
  constructor(
    private readonly everySeconds: number,
    private readonly source: CounterSource,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.everySeconds * 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look: a line if the sums changed since the last line (or there was none yet). */
  async tick(): Promise<void> {
    // A worker that is slow to answer must not make ticks pile up.
    if (this.busy) return;
    this.busy = true;
    try {
      const s = await this.source.sums();
      if (s === null || !this.changed(s) || this.timer === undefined) return;
      const named = nameFigures(s.counters, s.drops);
      this.log.info({ subsystem: 'stats', counters: { ...named.counters, ...s.extra }, drops: nonZero(named.drops) }, 'counters');
    } finally {
      this.busy = false;
    }
  }

  /** Whether `s` differs from the last line's figures; if so, they become the last line's. */
  private changed(s: CounterSums): boolean {
    const { last } = this;
    let same = this.logged && sameValues(last.counters, s.counters) && sameValues(last.drops, s.drops);
    if (same) for (const [k, v] of Object.entries(s.extra)) if (last.extra.get(k) !== v) same = false;
    if (same) return false;
    last.counters.set(s.counters);
    last.drops.set(s.drops);
    for (const [k, v] of Object.entries(s.extra)) last.extra.set(k, v);
    this.logged = true;
    return true;
  }
}

function sameValues(a: Float64Array, b: Float64Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
