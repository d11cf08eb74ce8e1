/**
 * The bench's latency figures (bench/report.ts, bench/measure.ts): the nearest-rank percentiles
 * the tail is read with, the "added" figures (a mode minus direct routing in the same round),
 * the ratio to quicktun's that the issue 15 targets are read off, the idle ratio to the Node
 * floor's, and the table rows they make.
 *
 * Flow of this file: `percentile`; `setAdded`; `ratiosToQuicktun`; `ratiosToFloor`; `summarize` + `table`.
 */
import { describe, expect, it } from 'vitest';
import { percentile } from '../../bench/measure.js';
import { ADDED, FIGURES, type Figures, ratiosTo, ratiosToFloor, ratiosToQuicktun, setAdded, summarize, table } from '../../bench/report.js';

function figures(over: Partial<Figures>): Figures {
  const f = Object.fromEntries(FIGURES.map((d) => [d.key, null])) as unknown as Figures;
  return { ...f, ...over };
}

describe('percentile', () => {
  const thousand = Array.from({ length: 1000 }, (_, i) => i + 1); // 1..1000, ascending

  it('nearest rank: p50, p99 and p99.9 of 1000 samples are the 500th, 990th and 999th', () => {
    expect(percentile(thousand, 50)).toBe(500);
    expect(percentile(thousand, 99)).toBe(990);
    expect(percentile(thousand, 99.9)).toBe(999);
  });

  it('with fewer than 1000 samples, p99.9 is the largest', () => {
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99.9)).toBe(10);
  });
});

describe('setAdded', () => {
  it('every added figure is the raw one minus direct routing’s, idle and under load', () => {
    const direct = figures({ rttP50Us: 100, rttP99Us: 300, rttP999Us: 900, loadRttP50Us: 1000, loadRttP99Us: 2000, loadRttP999Us: 4000 });
    const f = figures({ rttP50Us: 400, rttP99Us: 700, rttP999Us: 1900, loadRttP50Us: 1500, loadRttP99Us: 5000, loadRttP999Us: 4000 });
    setAdded(f, direct, false);
    expect([f.addedP50Us, f.addedP99Us, f.addedP999Us]).toEqual([300, 400, 1000]);
    expect([f.loadAddedP50Us, f.loadAddedP99Us, f.loadAddedP999Us]).toEqual([500, 3000, 0]);
  });

  it('direct routing adds 0 where it has a value; no direct routing, or no value, gives null', () => {
    const direct = figures({ rttP50Us: 100, rttP99Us: null, loadRttP50Us: 900 });
    setAdded(direct, direct, true);
    expect([direct.addedP50Us, direct.addedP99Us, direct.loadAddedP50Us, direct.loadAddedP999Us]).toEqual([0, null, 0, null]);
    const f = figures({ rttP50Us: 400, loadRttP50Us: 1000 });
    setAdded(f, undefined, false);
    for (const [added] of ADDED) expect(f[added]).toBeNull();
  });
});

describe('ratiosToQuicktun', () => {
  it('only the added latency figures, as value / quicktun’s value', () => {
    const qt = figures({ addedP50Us: 200, addedP99Us: 400, loadAddedP99Us: 1000, tcp1Gbps: 1 });
    const r = ratiosToQuicktun(qt, figures({ addedP50Us: 240, addedP99Us: 600, loadAddedP99Us: 500, tcp1Gbps: 2 }));
    expect(r.addedP50Us).toBeCloseTo(1.2);
    expect(r.addedP99Us).toBeCloseTo(1.5);
    expect(r.loadAddedP99Us).toBeCloseTo(0.5);
    expect(r.addedP999Us).toBeNull(); // neither has it
    expect(r).not.toHaveProperty('tcp1Gbps');
  });

  it('null without quicktun in the round, or where quicktun’s value is not positive', () => {
    expect(ratiosToQuicktun(undefined, figures({ addedP50Us: 10 })).addedP50Us).toBeNull();
    expect(ratiosToQuicktun(figures({ addedP50Us: 0 }), figures({ addedP50Us: 10 })).addedP50Us).toBeNull();
  });
});

describe('ratiosToFloor', () => {
  it('only the idle added latency figures, as value / node-floor’s value (under load the floor has no offloads)', () => {
    const floor = figures({ addedP50Us: 200, addedP99Us: 400, addedP999Us: 800, loadAddedP50Us: 5000, tcp1Gbps: 1 });
    const r = ratiosToFloor(floor, figures({ addedP50Us: 220, addedP99Us: 300, addedP999Us: 1600, loadAddedP50Us: 2500, tcp1Gbps: 2 }));
    expect(r.addedP50Us).toBeCloseTo(1.1);
    expect(r.addedP99Us).toBeCloseTo(0.75);
    expect(r.addedP999Us).toBeCloseTo(2);
    expect(r).not.toHaveProperty('loadAddedP50Us');
    expect(r).not.toHaveProperty('tcp1Gbps');
  });

  it('null without node-floor in the round', () => {
    expect(ratiosToFloor(undefined, figures({ addedP50Us: 10 })).addedP50Us).toBeNull();
  });
});

describe('table', () => {
  const direct = figures({ rttP50Us: 100, loadRttP50Us: 500 });
  const rounds = [
    { qt: figures({ rttP50Us: 300, loadRttP50Us: 900 }), ipipd: figures({ rttP50Us: 340, loadRttP50Us: 1300 }) },
    { qt: figures({ rttP50Us: 300, loadRttP50Us: 900 }), ipipd: figures({ rttP50Us: 400, loadRttP50Us: 1700 }) },
  ].map(({ qt, ipipd }) => {
    const d = { ...direct };
    setAdded(d, direct, true);
    setAdded(qt, direct, false);
    setAdded(ipipd, direct, false);
    return {
      direct: { figures: d, ratios: ratiosTo(direct, d) },
      quicktun: { figures: qt, ratios: ratiosTo(direct, qt), vsQuicktun: ratiosToQuicktun(qt, qt) },
      ipipd: { figures: ipipd, ratios: ratiosTo(direct, ipipd), vsQuicktun: ratiosToQuicktun(qt, ipipd) },
    };
  });
  const lines = table(summarize(rounds, ['direct', 'ipipd', 'quicktun']), ['direct', 'ipipd', 'quicktun']).split('\n');
  const row = (label: string, after = 0): string[] => {
    const i = lines.findIndex((l) => l.startsWith(label));
    expect(i).toBeGreaterThan(0);
    return lines[i + after]!.trim().split(/\s{3,}/);
  };

  it('added RTT idle and under load, each followed by its ratio to quicktun (median (min..max) over rounds)', () => {
    expect(row('added RTT p50 (minus direct)')).toEqual(['added RTT p50 (minus direct), µs', '0', '270 (240..300)', '200']);
    expect(row('added RTT p50 (minus direct)', 1)).toEqual(['× quicktun', '1.35× (1.20..1.50)', '1.00×']);
    expect(row('added RTT p50 under load')).toEqual(['added RTT p50 under load (minus direct), µs', '0', '1000 (800..1200)', '400']);
    expect(row('added RTT p50 under load', 1)).toEqual(['× quicktun', '2.50× (2.00..3.00)', '1.00×']);
  });

  it('"× node-floor" after each idle added RTT row when node-floor ran, and none under load', () => {
    const withFloor = rounds.map((r, i) => {
      const floor = figures({ rttP50Us: 280 + 40 * i, loadRttP50Us: 5000 });
      setAdded(floor, direct, false);
      const ipipd = { ...r.ipipd, vsFloor: ratiosToFloor(floor, r.ipipd.figures) };
      return { ...r, ipipd, 'node-floor': { figures: floor, ratios: ratiosTo(direct, floor), vsFloor: ratiosToFloor(floor, floor) } };
    });
    const modes = ['direct', 'ipipd', 'node-floor'] as const;
    const t = table(summarize(withFloor, [...modes]), [...modes]).split('\n');
    const i = t.findIndex((l) => l.startsWith('added RTT p50 (minus direct)'));
    // ipipd 240 and 300 over the floor's 180 and 220: 1.33 and 1.36.
    expect(t[i + 1]!.trim().split(/\s{3,}/)).toEqual(['× node-floor', '1.35× (1.33..1.36)', '1.00×']);
    expect(t.filter((l) => l.trim().startsWith('× node-floor'))).toHaveLength(3);
    const j = t.findIndex((l) => l.startsWith('added RTT p50 under load'));
    expect(t[j + 1]!.trim().startsWith('× node-floor')).toBe(false);
    expect(table(summarize(rounds, ['direct', 'ipipd']), ['direct', 'ipipd'])).not.toContain('× node-floor');
  });

  it('no "× quicktun" rows when quicktun did not run', () => {
    const t = table(summarize(rounds, ['direct', 'ipipd']), ['direct', 'ipipd']);
    expect(t).not.toContain('× quicktun');
    expect(t).toContain('ping RTT p99.9 under 1 TCP stream');
  });
});
