/**
 * The counter summary (src/daemon/stats-log.ts): a line when the sums changed (or for the first
 * time), none when they did not, none while the daemon is not up, none after stop; only the
 * non-zero drops; the counters kept outside the queues beside the others.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { addFigures, COUNTER_NAMES } from '../../src/dataplane/figures.js';
import type { Logger } from '../../src/daemon/logger.js';
import { StatsLog, type CounterSums } from '../../src/daemon/stats-log.js';
import { VERDICT_NAMES } from '../../src/ipip/verdict.js';

const TX = COUNTER_NAMES.indexOf('tx_packets');
const SPOOFED = VERDICT_NAMES.indexOf('spoofed_source');

function fixture(): { lines: Array<{ obj: Record<string, unknown>; msg: string }>; log: Logger; sums: CounterSums; up: { v: boolean } } {
  const lines: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  const log = { info: (obj: Record<string, unknown>, msg: string) => lines.push({ obj, msg }) } as unknown as Logger;
  const sums: CounterSums = { counters: new Float64Array(COUNTER_NAMES.length), drops: new Float64Array(VERDICT_NAMES.length), extra: { log_write_errors: 0 } };
  return { lines, log, sums, up: { v: true } };
}

describe('StatsLog', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('logs every interval only when the figures changed', async () => {
    const { lines, log, sums, up } = fixture();
    const s = new StatsLog(60, { sums: () => (up.v ? { ...sums, counters: sums.counters.slice(), drops: sums.drops.slice(), extra: { ...sums.extra } } : null) }, log);
    s.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(lines).toHaveLength(1); // the first look always logs
    expect(lines[0]!.msg).toBe('counters');
    expect(lines[0]!.obj).toMatchObject({ subsystem: 'stats', drops: {} });
    expect(Object.keys(lines[0]!.obj.counters as object)).toEqual([...COUNTER_NAMES, 'log_write_errors']);

    await vi.advanceTimersByTimeAsync(60_000);
    expect(lines).toHaveLength(1); // nothing changed

    sums.counters[TX] = 5;
    sums.drops[SPOOFED] = 2;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(lines).toHaveLength(2);
    expect(lines[1]!.obj).toMatchObject({ counters: { tx_packets: 5 }, drops: { spoofed_source: 2 } });

    sums.extra.log_write_errors = 1; // a counter outside the queues counts as a change too
    await vi.advanceTimersByTimeAsync(60_000);
    expect(lines).toHaveLength(3);
    expect(lines[2]!.obj).toMatchObject({ counters: { log_write_errors: 1 } });

    up.v = false;
    sums.counters[TX] = 9;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(lines).toHaveLength(3); // not up: nothing

    up.v = true;
    s.stop();
    await vi.advanceTimersByTimeAsync(120_000);
    expect(lines).toHaveLength(3); // stopped
  });

  it('a source slow to answer: ticks do not pile up, and nothing is logged after stop', async () => {
    const { lines, log, sums } = fixture();
    let calls = 0;
    let answer: ((s: CounterSums) => void) | undefined;
    const s = new StatsLog(1, { sums: () => { calls++; return new Promise<CounterSums>((r) => (answer = r)); } }, log);
    s.start();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(calls).toBe(1);
    s.stop();
    answer!(sums);
    await vi.advanceTimersByTimeAsync(0);
    expect(lines).toHaveLength(0);
  });

  it('addFigures adds queues up, counters and drops', () => {
    const into = { counters: new Float64Array(3), drops: new Float64Array(2) };
    addFigures(into, { counters: [1, 2, 3], drops: [4, 5] });
    addFigures(into, { counters: new Float64Array([10, 0, 1]), drops: new Float64Array([0, 1]) });
    expect(Array.from(into.counters)).toEqual([11, 2, 4]);
    expect(Array.from(into.drops)).toEqual([4, 6]);
  });
});
