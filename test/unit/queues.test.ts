/**
 * The main thread's side of the data-path queue workers (src/daemon/queues.ts `QueueWorkers`),
 * run against fixture workers (test/fixtures/queue-worker-*.mjs) that speak the real message
 * protocol with no data path:
 *
 *   test --start(data, log, onFailure, fixture)--> QueueWorkers ==Worker per entry==> fixture
 *                                                        <-- ready / snapshot / stopped --
 *                                                        -- snapshot / mtu / stop -->
 *
 * Flow of this file:
 *   1. the happy path: start waits for every 'ready'; snapshots come back in queue order; an
 *      MTU reaches every worker; stop returns the final snapshots, every thread has exited,
 *      and stop is idempotent;
 *   2. failures: before 'ready' (start rejects, the others are terminated, onFailure is not
 *      called), after 'ready' (onFailure exactly once, naming the queue; stop still resolves),
 *      and a worker that does not answer (null in the snapshots; terminated by stop);
 *   3. the real worker (dist/src/daemon/queue-worker.js, so `npm run build` first) with a real
 *      Dataplane on FIFOs standing in for its TUN queue and its raw socket, as in
 *      test/unit/warmup.test.ts: ready after the warm-up, which leaves no figure and no byte
 *      behind; a packet written to its TUN FIFO is handled by it; an MTU reaches its peers.
 *
 * Needs the native addon (build/Release/ipipd_native.node) for section 3, as `npm ci` builds it.
 *
 * Worker threads are observed from outside: `node:worker_threads` is wrapped so that every
 * Worker QueueWorkers creates is recorded with its exit code, by a listener of the test's own.
 */
import { existsSync, readdirSync, statSync, writeSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Worker as NodeWorker } from 'node:worker_threads';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { COUNTER_NAMES } from '../../src/dataplane/figures.js';
import { createLogger } from '../../src/daemon/logger.js';
import { QueueWorkers, type QueueSnapshot, type QueueWorkerData } from '../../src/daemon/queues.js';
import { VERDICT_NAMES } from '../../src/ipip/index.js';
import { Fifos, drain } from '../helpers/fifos.js';
import { recordingLogger } from '../helpers/hop-kernel.js';
import { ip, refChecksum } from '../helpers/packets.js';

// ---------------------------------------------------------------- helpers

/** Every Worker created through node:worker_threads in this file, with its exit code once it exited. */
const threads = vi.hoisted(() => ({ all: [] as { worker: unknown; exit: number | undefined; exited: Promise<number> }[] }));

vi.mock('node:worker_threads', async (importOriginal) => {
  const m = await importOriginal<typeof import('node:worker_threads')>();
  class RecordedWorker extends m.Worker {
    constructor(...args: ConstructorParameters<typeof m.Worker>) {
      super(...args);
      const entry = { worker: this as unknown, exit: undefined as number | undefined, exited: undefined as unknown as Promise<number> };
      // Registered before any listener of QueueWorkers: it runs first on 'exit'.
      entry.exited = new Promise<number>((resolve) =>
        this.once('exit', (code) => {
          entry.exit = code;
          resolve(code);
        }),
      );
      threads.all.push(entry);
    }
  }
  return { ...m, Worker: RecordedWorker, default: { ...m, Worker: RecordedWorker } };
});

const fixture = (name: string): URL => new URL(`../fixtures/${name}`, import.meta.url);
const OK = fixture('queue-worker-ok.mjs');
const THROW_EARLY = fixture('queue-worker-throw-early.mjs');
const THROW_LATER = fixture('queue-worker-throw-later.mjs');
const SILENT = fixture('queue-worker-silent.mjs');

const CONFIG = parseConfig(`
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
io: { queues: 4 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
`);

/** Fields only the fixtures read (see test/fixtures/queue-worker-ok.mjs). */
interface FixtureData {
  gate?: SharedArrayBuffer;
  answerDelay?: Record<number, number>;
  failQueue?: number;
  quietExit?: boolean;
  silentQueue?: number;
  ignoreStop?: boolean;
  dieSoonQueue?: number;
  lingerQueue?: number;
}

/** workerData for queues 1..n-1 of n, as the daemon builds it (queue 0 is the main thread's). */
function data(n: number, extra: FixtureData = {}): QueueWorkerData[] {
  return Array.from({ length: n - 1 }, (_, i) => ({
    queue: i + 1,
    queues: n,
    config: CONFIG,
    tunFd: -1,
    rawFd: -1,
    tunMtu: 1480,
    underlayMax: 1540,
    udpGro: false,
    icmpSource: 1,
    idStarts: [7],
    logLevel: 'silent',
    packetFd: -1,
    hops: [],
    ...extra,
  }));
}

const log = createLogger('silent');

/** What the fixture's counters say (see queue-worker-ok.mjs). */
function seen(s: QueueSnapshot | null): { queue: number; requests: number; mtus: number; peer: number; mtu: number; stopped: number } | null {
  if (s === null) return null;
  const [queue, requests, mtus, peer, mtu, stopped] = s.counters;
  return { queue: queue!, requests: requests!, mtus: mtus!, peer: peer!, mtu: mtu!, stopped: stopped! };
}

/** Let messages already posted by a worker reach this thread's listeners. */
const settle = (ms = 100): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Sets that a test started and did not stop: stopped after it, so no thread outlives its test. */
const started: QueueWorkers[] = [];
async function start(n: number, script: URL, extra: FixtureData = {}, onFailure: (err: Error) => void = () => {}): Promise<QueueWorkers> {
  const set = await QueueWorkers.start(data(n, extra), log, onFailure, script);
  started.push(set);
  return set;
}

afterEach(async () => {
  while (started.length > 0) await started.pop()!.stop();
  // Whatever a test left running (a failed assertion mid-way) is ended here.
  await Promise.all(threads.all.map((t) => (t.worker as NodeWorker).terminate()));
  threads.all.length = 0;
});

// ---------------------------------------------------------------- 1. running

describe('QueueWorkers: start, snapshots, MTU, stop', () => {
  it('start resolves only once every worker has said ready', async () => {
    // Each fixture waits on its gate slot before 'ready'; the gate opens one queue at a time.
    const gate = new SharedArrayBuffer(32 * 4);
    const g = new Int32Array(gate);
    let resolved = false;
    const p = QueueWorkers.start(data(4, { gate }), log, () => {}, OK).then((s) => {
      resolved = true;
      started.push(s);
      return s;
    });
    p.catch(() => {}); // awaited below; if an assertion fails first, afterEach ends the workers
    for (const q of [2, 1]) {
      Atomics.store(g, q, 1);
      Atomics.notify(g, q);
      await vi.waitFor(() => expect(Atomics.load(g, 16 + q)).toBe(1), { timeout: 10_000 });
      await settle(); // its 'ready', posted right after the flag, is delivered
      expect(resolved, `after queue ${q}'s ready`).toBe(false);
    }
    Atomics.store(g, 3, 1);
    Atomics.notify(g, 3);
    const set = await p;
    expect(resolved).toBe(true);
    expect(set.count).toBe(3);
    expect([1, 2, 3].map((q) => Atomics.load(g, 16 + q))).toEqual([1, 1, 1]);
    expect(threads.all).toHaveLength(3);
    expect(threads.all.every((t) => t.exit === undefined)).toBe(true);
  });

  it('snapshotsSettled: one per worker, in queue order, even when they answer in reverse', async () => {
    // Queue 1 answers last, queue 3 first.
    const set = await start(4, OK, { answerDelay: { 1: 300, 2: 150, 3: 0 } });
    const snaps = await set.snapshotsSettled();
    expect(snaps.map(seen)).toEqual([
      { queue: 1, requests: 1, mtus: 0, peer: -1, mtu: -1, stopped: 0 },
      { queue: 2, requests: 1, mtus: 0, peer: -1, mtu: -1, stopped: 0 },
      { queue: 3, requests: 1, mtus: 0, peer: -1, mtu: -1, stopped: 0 },
    ]);
    // The rest of the snapshot is passed through as the worker sent it.
    expect(snaps[1]).toEqual({
      counters: [2, 1, 0, -1, -1, 0],
      drops: [20],
      lastErrors: { who: 'fixture queue 2' },
      peers: [{ txPackets: 2, txBytes: 0, rxPackets: 0, rxBytes: 0, lastRxAt: 0 }],
    });
    // Two calls at once: each is its own request to every worker, each gets its own answers.
    const again = await Promise.all([set.snapshotsSettled(), set.snapshotsSettled()]);
    expect(again.map((call) => call.map((s) => [seen(s)!.queue, seen(s)!.requests]))).toEqual([
      [[1, 2], [2, 2], [3, 2]],
      [[1, 3], [2, 3], [3, 3]],
    ]);
  });

  it('setPeerMtu reaches every worker, and in order with the other messages', async () => {
    const set = await start(4, OK);
    set.setPeerMtu(0, 1400);
    let snaps = await set.snapshotsSettled();
    expect(snaps.map((s) => seen(s)).map((s) => [s!.queue, s!.mtus, s!.peer, s!.mtu])).toEqual([
      [1, 1, 0, 1400],
      [2, 1, 0, 1400],
      [3, 1, 0, 1400],
    ]);
    set.setPeerMtu(3, 1280);
    set.setPeerMtu(2, 576);
    snaps = await set.snapshotsSettled();
    expect(snaps.map((s) => seen(s)).map((s) => [s!.mtus, s!.peer, s!.mtu])).toEqual([
      [3, 2, 576],
      [3, 2, 576],
      [3, 2, 576],
    ]);
  });

  it('stop returns every final snapshot in queue order, every thread has exited; a second stop returns []', async () => {
    const onFailure = vi.fn();
    const set = await QueueWorkers.start(data(4), log, onFailure, OK);
    set.setPeerMtu(1, 1300);
    const finals = await set.stop();
    // The 'stopped' snapshots (stopped = 1), after the MTU message.
    expect(finals.map(seen)).toEqual([
      { queue: 1, requests: 0, mtus: 1, peer: 1, mtu: 1300, stopped: 1 },
      { queue: 2, requests: 0, mtus: 1, peer: 1, mtu: 1300, stopped: 1 },
      { queue: 3, requests: 0, mtus: 1, peer: 1, mtu: 1300, stopped: 1 },
    ]);
    // stop() waited for each thread's exit: every one is recorded as ended, cleanly.
    expect(threads.all).toHaveLength(3);
    expect(threads.all.map((t) => t.exit)).toEqual([0, 0, 0]);
    // A clean stop is no failure.
    await settle();
    expect(onFailure).not.toHaveBeenCalled();

    expect(await set.stop()).toEqual([]);
    // After stop: no worker answers, and telling them an MTU is harmless.
    expect(await set.snapshotsSettled()).toEqual([null, null, null]);
    expect(() => set.setPeerMtu(0, 1400)).not.toThrow();
  });

  it('two overlapping stops: the first gets the snapshots, the second []', async () => {
    const set = await QueueWorkers.start(data(3), log, () => {}, OK);
    const [a, b] = await Promise.all([set.stop(), set.stop()]);
    expect(a.map((s) => seen(s)!.queue)).toEqual([1, 2]);
    expect(b).toEqual([]);
    expect(threads.all.map((t) => t.exit)).toEqual([0, 0]);
  });
});

// ---------------------------------------------------------------- 2. failures

describe('QueueWorkers: failures', () => {
  it('a worker that throws before ready: start rejects naming it, the others (not yet ready) are terminated', async () => {
    // Queues 1 and 3 wait on a gate that is never opened: they are mid-warm-up when 2 fails.
    const gate = new SharedArrayBuffer(32 * 4);
    const onFailure = vi.fn();
    const err = await QueueWorkers.start(data(4, { gate, failQueue: 2 }), log, onFailure, THROW_EARLY).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^queue 2: worker failed: fixture: queue 2 thrown before ready$/);
    expect(((err as Error).cause as Error).message).toBe('fixture: queue 2 thrown before ready');
    // start() awaited the terminations: every thread has already exited.
    expect(threads.all).toHaveLength(3);
    expect(threads.all.every((t) => t.exit !== undefined)).toBe(true);
    expect(new Int32Array(gate).slice(17, 20)).toEqual(new Int32Array([0, 0, 0])); // none got to 'ready'
    await settle();
    expect(onFailure).not.toHaveBeenCalled();
  });

  it('a worker that throws before ready while the others are ready: they are terminated too', async () => {
    const onFailure = vi.fn();
    await expect(QueueWorkers.start(data(4, { failQueue: 3 }), log, onFailure, THROW_EARLY)).rejects.toThrow(/^queue 3: worker failed: /);
    expect(threads.all.map((t) => t.exit !== undefined)).toEqual([true, true, true]);
    await settle();
    expect(onFailure).not.toHaveBeenCalled();
  });

  it('a worker that ends before ready without an error: start rejects with its exit code', async () => {
    const onFailure = vi.fn();
    await expect(QueueWorkers.start(data(3, { failQueue: 1, quietExit: true }), log, onFailure, THROW_EARLY)).rejects.toThrow(
      /^queue 1: worker exited \(code 0\)$/,
    );
    expect(threads.all.map((t) => t.exit)).toHaveLength(2);
    expect(threads.all.every((t) => t.exit !== undefined)).toBe(true);
    expect(onFailure).not.toHaveBeenCalled();
  });

  it('a worker that fails after its ready while another still warms up: start rejects naming it, all are terminated, onFailure never', async () => {
    // The window between one worker's ready and the last one's: nobody would hear of it if start()
    // resolved, and the flows steered to that queue would be lost without a trace.
    const gate = new SharedArrayBuffer(128);
    const g = new Int32Array(gate);
    Atomics.store(g, 1, 1); // queue 1 is ready at once; queue 2 waits for the gate
    const onFailure = vi.fn();
    const p = QueueWorkers.start(data(3, { gate, dieSoonQueue: 1 }), log, onFailure, OK);
    const outcome = p.then(
      () => 'resolved',
      (e: Error) => e.message,
    );
    expect(await threads.all[0]!.exited).toBe(1); // queue 1 died after its ready
    Atomics.store(g, 2, 1);
    Atomics.notify(g, 2);
    expect(await outcome).toBe('queue 1: worker failed: fixture: queue 1 died soon after ready');
    expect(threads.all.every((t) => t.exit !== undefined)).toBe(true);
    await settle();
    expect(onFailure).not.toHaveBeenCalled();
  }, 15_000);

  it('a worker that says stopped but keeps its thread alive: stop terminates it after the timeout, with its snapshot', async () => {
    const set = await start(3, OK, { lingerQueue: 2 });
    const finals = await set.stop();
    expect(finals.map((s) => [seen(s)!.queue, seen(s)!.stopped])).toEqual([
      [1, 1],
      [2, 1],
    ]);
    expect(threads.all.map((t) => t.exit)).toEqual([0, 1]);
  }, 15_000);

  it('a worker that throws after ready: onFailure once, naming the queue; the rest still answer; stop resolves', async () => {
    const onFailure = vi.fn();
    const set = await start(4, THROW_LATER, { failQueue: 2 }, onFailure);
    expect(onFailure).not.toHaveBeenCalled();
    set.setPeerMtu(0, 1400); // queue 2 throws on it
    await threads.all[1]!.exited; // queue 2's thread
    await settle(); // both its 'error' and its 'exit' have been handled
    expect(onFailure).toHaveBeenCalledTimes(1);
    const e = onFailure.mock.calls[0]![0] as Error;
    expect(e).toBeInstanceOf(Error);
    expect(e.message).toBe('queue 2: worker failed: fixture: queue 2 thrown after ready');
    expect((e.cause as Error).message).toBe('fixture: queue 2 thrown after ready');
    // The others are still running and saw the MTU; the failed one is null.
    expect((await set.snapshotsSettled()).map((s) => (s === null ? null : [seen(s)!.queue, seen(s)!.mtu]))).toEqual([[1, 1400], null, [3, 1400]]);
    // Stopping: the failed worker is skipped, the others return their final snapshots.
    const finals = await set.stop();
    expect(finals.map((s) => [seen(s)!.queue, seen(s)!.stopped])).toEqual([
      [1, 1],
      [3, 1],
    ]);
    expect(threads.all.map((t) => t.exit)).toEqual([0, 1, 0]);
    expect(onFailure).toHaveBeenCalledTimes(1);
  }, 15_000);

  it('a worker that exits after ready: onFailure once with its exit code', async () => {
    const onFailure = vi.fn();
    const set = await start(3, THROW_LATER, { failQueue: 1 }, onFailure);
    set.setPeerMtu(0, 9999); // queue 1 calls process.exit(3)
    expect(await threads.all[0]!.exited).toBe(3);
    await settle();
    expect(onFailure).toHaveBeenCalledTimes(1);
    expect((onFailure.mock.calls[0]![0] as Error).message).toBe('queue 1: worker exited (code 3)');
    expect((await set.stop()).map((s) => seen(s)!.queue)).toEqual([2]);
    expect(onFailure).toHaveBeenCalledTimes(1);
  }, 15_000);

  it(
    'a worker that does not answer: null in its place after the answer timeout; it still stops',
    async () => {
      const set = await start(4, SILENT, { silentQueue: 2 });
      const snaps = await set.snapshotsSettled();
      expect(snaps.map((s) => (s === null ? null : seen(s)!.queue))).toEqual([1, null, 3]);
      // It still answers 'stop' (this fixture ignores snapshot requests only).
      const finals = await set.stop();
      expect(finals.map((s) => seen(s)!.queue)).toEqual([1, 2, 3]);
      expect(threads.all.map((t) => t.exit)).toEqual([0, 0, 0]);
    },
    15_000,
  );

  it(
    'a worker that does not answer stop: stop terminates it after the timeout, logs it, and returns the others',
    async () => {
      const onFailure = vi.fn();
      const { log: rec, lines } = recordingLogger();
      const set = await QueueWorkers.start(data(4, { silentQueue: 3, ignoreStop: true }), rec, onFailure, SILENT);
      started.push(set);
      const finals = await set.stop();
      expect(finals.map((s) => seen(s)!.queue)).toEqual([1, 2]);
      // Its final figures are missing from the total: the log says which queue, and why.
      expect(lines.filter((l) => l.level !== 'debug')).toEqual([
        { level: 'warn', obj: { queue: 3, err: 'queue 3: did not stop within 5000 ms' }, msg: 'queue did not stop cleanly: terminated; its final counters are left out' },
      ]);
      // Terminated, not exited by itself: every thread is gone when stop resolves.
      expect(threads.all.every((t) => t.exit !== undefined)).toBe(true);
      expect(threads.all.map((t) => t.exit)).toEqual([0, 0, 1]);
      await settle();
      expect(onFailure).not.toHaveBeenCalled();
    },
    15_000,
  );
});

// ---------------------------------------------------------------- 3. the real worker

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REAL_WORKER = new URL('../../dist/src/daemon/queue-worker.js', import.meta.url);

/** Every src/**.ts has its dist/src/**.js, built after it: else this section would test old code. */
function staleDist(): string[] {
  const stale: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) {
        const js = join(ROOT, 'dist', relative(ROOT, p)).replace(/\.ts$/, '.js');
        if (!existsSync(js) || statSync(js).mtimeMs < statSync(p).mtimeMs) stale.push(relative(ROOT, p));
      }
    }
  };
  walk(join(ROOT, 'src'));
  return stale;
}

const REAL_CONFIG = (offload: boolean): string => `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
io: { queues: 2, offload: ${offload} }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
  - { name: h3, endpoint: 192.0.2.3, prefixes: [203.0.113.128/25] }
`;

/** An inner UDP packet 198.51.100.10 -> `dst` of `total` bytes, DF set, header checksum by the reference. */
function udpPacket(dst: string, total: number): Buffer {
  const b = Buffer.alloc(total);
  b[0] = 0x45;
  b.writeUInt16BE(total, 2);
  b.writeUInt16BE(0x4000, 6);
  b[8] = 64;
  b[9] = 17;
  b.writeInt32BE(ip('198.51.100.10'), 12);
  b.writeInt32BE(ip(dst), 16);
  b.writeUInt16BE(refChecksum(b, 0, 20), 10);
  b.writeUInt16BE(40000, 20);
  b.writeUInt16BE(9, 22);
  b.writeUInt16BE(total - 20, 24); // UDP checksum 0: none (RFC 768)
  return b;
}

/** Named figures of a snapshot, by the order COUNTER_NAMES / VERDICT_NAMES give. */
function named(s: QueueSnapshot): { counters: Record<string, number>; drops: Record<string, number> } {
  return {
    counters: Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, s.counters[i]!])),
    drops: Object.fromEntries(VERDICT_NAMES.map((n, i) => [n, s.drops[i]!])),
  };
}

/** Wait (5 s at most) until the set's first worker's settled snapshot shows `value` for counter or drop `name`. */
async function waitForFigure(set: QueueWorkers, kind: 'counters' | 'drops', name: string, value: number): Promise<void> {
  await vi.waitFor(
    async () => {
      const [s] = await set.snapshotsSettled();
      expect(named(s!)[kind][name], `${kind}.${name}`).toBe(value);
    },
    { timeout: 5000, interval: 50 },
  );
}

/** A snapshot with every counter, drop, error and peer figure zero. */
function expectAllZero(s: QueueSnapshot | null | undefined, what: string): void {
  expect(s, what).toBeTruthy();
  expect(s!.counters, what).toHaveLength(COUNTER_NAMES.length);
  expect(s!.drops, what).toHaveLength(VERDICT_NAMES.length);
  // `=== 0`, not toBe(0): an untouched peer counter is -0 (src/ipip/peer.ts DOUBLE_ZERO).
  const nonZero = [
    ...s!.counters.flatMap((v, i) => (v === 0 ? [] : [`${COUNTER_NAMES[i]} ${v}`])),
    ...s!.drops.flatMap((v, i) => (v === 0 ? [] : [`drop ${VERDICT_NAMES[i]} ${v}`])),
    ...s!.peers.flatMap((p, i) => Object.entries(p).flatMap(([k, v]) => (v === 0 ? [] : [`peer ${i} ${k} ${v}`]))),
  ];
  expect(nonZero, what).toEqual([]);
  expect(s!.lastErrors, what).toEqual({});
  expect(s!.peers, what).toHaveLength(2);
}

describe.each([{ offload: false }, { offload: true }])('the real queue worker on FIFOs (offload $offload)', ({ offload }) => {
  // The worker's TUN and raw fds: FIFOs.
  const fifos = new Fifos('ipipd-queues-');

  beforeAll(() => {
    const stale = staleDist();
    if (stale.length > 0) throw new Error(`dist/ is older than ${stale.slice(0, 3).join(', ')}${stale.length > 3 ? ', ...' : ''}: run 'npm run build'`);
    fifos.setUp();
  });
  afterAll(() => {
    fifos.remove();
  });
  afterEach(async () => {
    // The worker's Readers must be released before their fds are closed (this hook runs
    // before the file's, which would stop the set too late).
    while (started.length > 0) await started.pop()!.stop();
    fifos.closeAll();
  });

  async function startReal(): Promise<{ set: QueueWorkers; tunFd: number; rawFd: number }> {
    const c = parseConfig(REAL_CONFIG(offload));
    const tunFd = fifos.fifo();
    const rawFd = fifos.fifo();
    const d: QueueWorkerData = {
      queue: 1,
      queues: 2,
      config: c,
      tunFd,
      rawFd,
      tunMtu: 1480,
      underlayMax: 1540,
      udpGro: false,
      icmpSource: c.tun.address!.addr,
      idStarts: [100, 65535],
      logLevel: 'silent',
      packetFd: -1,
      hops: [],
    };
    const set = await QueueWorkers.start([d], log, () => {}, REAL_WORKER);
    started.push(set);
    return { set, tunFd, rawFd };
  }

  /** The packet as the TUN would hand it over: with a (zero) virtio_net_hdr in offload mode. */
  const asTunRead = (pkt: Buffer): Buffer => (offload ? Buffer.concat([Buffer.alloc(10), pkt]) : pkt);

  it('gets ready after its warm-up, which leaves every figure at zero and writes nothing to its fds; stop returns the final figures', async () => {
    const { set, tunFd, rawFd } = await startReal();
    expect(set.count).toBe(1);
    const [first] = await set.snapshotsSettled();
    expectAllZero(first, 'first snapshot');
    // The warm-up went to the discard fd: nothing reached the TUN or the raw FIFO.
    expect(drain(tunFd)).toBe('EAGAIN');
    expect(drain(rawFd)).toBe('EAGAIN');

    const finals = await set.stop();
    expect(finals).toHaveLength(1);
    expectAllZero(finals[0], 'final snapshot');
    expect(threads.all.map((t) => t.exit)).toEqual([0]);
    expect(await set.stop()).toEqual([]);
    // The fds are the daemon's: still open after the worker ended (a write and a read work).
    writeSync(tunFd, Buffer.from([1, 2, 3]));
    expect([...(drain(tunFd) as Buffer)]).toEqual([1, 2, 3]);
    expect(drain(rawFd)).toBe('EAGAIN');
  });

  it('reads its TUN fd: a packet written there is encapsulated and sent on its raw fd (a FIFO: ENOTSOCK)', async () => {
    const { set, tunFd, rawFd } = await startReal();
    writeSync(tunFd, asTunRead(udpPacket('203.0.113.5', 100)));
    await waitForFigure(set, 'counters', 'tun_rx_packets', 1);
    const [s] = await set.snapshotsSettled();
    const { counters, drops } = named(s!);
    expect(counters.tun_rx_bytes).toBe(100);
    expect(counters.tx_packets).toBe(0);
    expect(drops.socket_write_error).toBe(1);
    expect(s!.lastErrors).toEqual({ underlaySend: 'ENOTSOCK' });
    expect(drain(rawFd)).toBe('EAGAIN');
    const finals = await set.stop();
    expect(named(finals[0]!).drops.socket_write_error).toBe(1);
  });

  it('setPeerMtu reaches its peers: a DF packet over the new MTU is dropped as too_big', async () => {
    const { set, tunFd } = await startReal();
    set.setPeerMtu(0, 100);
    // The snapshot request is handled after the MTU message (one port, in order).
    await set.snapshotsSettled();
    writeSync(tunFd, asTunRead(udpPacket('203.0.113.5', 200)));
    await waitForFigure(set, 'drops', 'too_big', 1);
    // Its answer, ICMP Fragmentation Needed, is written into the "TUN": the same read-write FIFO,
    // a byte stream. Wait until the worker has read it back (a second packet read), so that the
    // next packet is read on its own and not glued to it.
    await waitForFigure(set, 'counters', 'icmp_sent', 1);
    await waitForFigure(set, 'counters', 'tun_rx_packets', 2);
    // The other peer keeps its MTU: a packet of the same size toward it is sent (and fails on the FIFO).
    writeSync(tunFd, asTunRead(udpPacket('203.0.113.130', 200)));
    await waitForFigure(set, 'drops', 'socket_write_error', 1);
    const [s] = await set.snapshotsSettled();
    expect(named(s!).drops.too_big).toBe(1);
  });
});
