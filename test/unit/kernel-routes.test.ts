/**
 * The kernel route watch's control side (src/daemon/kernel-routes.ts) over a fake netlink side:
 * which route events count (table, device, gateway), a dump replacing what was known, a burst
 * of 10 000 routes coalesced into one apply, and failures that never escape.
 */
import { describe, expect, test } from 'vitest';
import { pino } from 'pino';
import { COALESCE_MS, KernelRoutes, foldRoutes, type KernelRouteSink, type RouteSource } from '../../src/daemon/kernel-routes.js';
import type { KernelRoute } from '../../src/daemon/peer-set.js';
import type { RouteEvent, RouteWatchHandlers } from '../../src/tun/route-watch.js';
import { parseIPv4 } from '../../src/routing/prefix.js';

const TUN = 7;
const TABLE = 254;
const GW = parseIPv4('192.0.2.2')!;
const base = parseIPv4('10.0.0.0')!;

function ev(kind: 'add' | 'del', i: number, more: Partial<RouteEvent> = {}): RouteEvent {
  return { kind, dst: base + i * 256, dstLen: 24, gateway: GW, oif: TUN, table: TABLE, ...more };
}

class FakeWatch implements RouteSource {
  events = 0;
  dumps = 0;
  errors = 0;
  closed = false;
  constructor(
    readonly h: RouteWatchHandlers,
    private readonly initial: RouteEvent[],
  ) {}
  async start(): Promise<void> {
    this.dumps++;
    this.h.onRoutes(this.initial, true);
  }
  close(): void {
    this.closed = true;
  }
}

class Sink implements KernelRouteSink {
  readonly kernelRoutes = new Map<string, KernelRoute>();
  applies: { added: number; removed: number; routes: number }[] = [];
  throwNext = false;
  async kernelChanged(events: { added: number; removed: number }): Promise<void> {
    this.applies.push({ ...events, routes: this.kernelRoutes.size });
    if (this.throwNext) {
      this.throwNext = false;
      throw new Error('apply failed');
    }
  }
}

const silent = pino({ level: 'silent' });
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('foldRoutes', () => {
  test('only routes of the table, into the TUN, with a gateway count; a delete needs the same gateway', () => {
    const m = new Map<string, KernelRoute>();
    const d = foldRoutes(m, [ev('add', 1), ev('add', 2, { table: 100 }), ev('add', 3, { oif: 8 }), ev('add', 4, { gateway: undefined }), ev('add', 1)], false, TUN, TABLE);
    expect(d).toEqual({ added: 1, removed: 0 });
    expect([...m.keys()]).toEqual(['10.0.1.0/24']);
    expect(foldRoutes(m, [ev('del', 1, { gateway: GW + 1 })], false, TUN, TABLE)).toEqual({ added: 0, removed: 0 });
    expect(foldRoutes(m, [ev('del', 1)], false, TUN, TABLE)).toEqual({ added: 0, removed: 1 });
    expect(m.size).toBe(0);
  });

  test('a new gateway for a known prefix replaces it; a dump replaces everything', () => {
    const m = new Map<string, KernelRoute>();
    foldRoutes(m, [ev('add', 1), ev('add', 2)], false, TUN, TABLE);
    expect(foldRoutes(m, [ev('add', 1, { gateway: GW + 1 })], false, TUN, TABLE)).toEqual({ added: 1, removed: 0 });
    expect(m.get('10.0.1.0/24')!.gateway).toBe(GW + 1);
    expect(foldRoutes(m, [ev('add', 3)], true, TUN, TABLE)).toEqual({ added: 1, removed: 2 });
    expect([...m.keys()]).toEqual(['10.0.3.0/24']);
  });
});

describe('KernelRoutes over a fake netlink side', () => {
  test('the dump is applied at start; a burst of 10 000 routes is one apply; deletes follow', async () => {
    const sink = new Sink();
    let fake!: FakeWatch;
    const kr = new KernelRoutes(sink, TUN, TABLE, silent, (h) => (fake = new FakeWatch(h, [ev('add', 0)])));
    await kr.start();
    expect(sink.applies).toEqual([{ added: 1, removed: 0, routes: 1 }]);
    for (let i = 1; i <= 10_000; i += 100) fake.h.onRoutes(Array.from({ length: 100 }, (_, j) => ev('add', i + j)), false);
    await wait(COALESCE_MS * 3);
    expect(sink.applies).toHaveLength(2);
    expect(sink.applies[1]).toEqual({ added: 10_000, removed: 0, routes: 10_001 });
    fake.h.onRoutes([ev('del', 0), ev('del', 5)], false);
    await wait(COALESCE_MS * 3);
    expect(sink.applies[2]).toEqual({ added: 0, removed: 2, routes: 9_999 });
    expect(kr.figures()).toMatchObject({ routes: 9_999, dumps: 1 });
    kr.stop();
    expect(fake.closed).toBe(true);
  });

  test('a failing apply and netlink errors are absorbed; events that change nothing apply nothing; nothing after stop', async () => {
    const sink = new Sink();
    let fake!: FakeWatch;
    const kr = new KernelRoutes(sink, TUN, TABLE, silent, (h) => (fake = new FakeWatch(h, [])));
    await kr.start();
    sink.throwNext = true;
    fake.h.onRoutes([ev('add', 1)], false);
    await wait(COALESCE_MS * 3);
    fake.h.onError('route socket: ENOBUFS');
    fake.h.onRoutes([ev('add', 1), ev('add', 9, { table: 5 })], false);
    await wait(COALESCE_MS * 3);
    expect(sink.applies.map((a) => a.added)).toEqual([0, 1]);
    kr.stop();
    fake.h.onRoutes([ev('add', 2)], false);
    await wait(COALESCE_MS * 3);
    expect(sink.applies).toHaveLength(2);
  });
});
