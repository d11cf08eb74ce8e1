/**
 * Data-path queues 1..n-1 (config io.queues > 1), each a worker thread with its own Dataplane on
 * its own TUN queue fd and its own steered raw socket (src/daemon/queue-worker.ts); the main
 * thread runs queue 0 and everything else (ICMP from the underlay, control socket, routes).
 *
 * Why threads: past one queue, an end's forwarding is bounded by one core (one read(2) per
 * packet from the TUN and the raw socket's send path, docs/performance.md). A multi-queue TUN
 * spreads flows over queues, and the steering filters spread the underlay's datagrams by inner
 * flow the same way, so each queue's thread forwards its flows start to end, in order, sharing
 * no buffer and no lock with the others.
 *
 * What is shared, and how (the data path stays free of locks and atomics):
 * - Peers: each queue has its own Peer copies. Outer IDs are kept apart by the ID plan
 *   (src/dataplane/queue.ts `queueIds`). A path MTU learned by queue 0 (it alone reads underlay
 *   ICMP) or aged out is posted to the workers (`setPeerMtu`): rare, and a worker applies it
 *   between two batches.
 * - Counters: each queue counts its own; `snapshotsSettled()` asks every worker for its counters,
 *   drop counts, last errors and per-peer figures, which the daemon adds to its own for the status.
 * - ICMP errors ipipd originates: each queue's token bucket gets the configured rate and burst
 *   divided by the queue count, so the daemon as a whole keeps to `icmp.rate`.
 * - Next hops (`underlay.send: packet`): the main thread reads them from the kernel; each worker
 *   has its own copy of the table and its own AF_PACKET socket, and a changed entry is posted
 *   (`setPeerHop`), so that a worker never reads an entry half written.
 *
 * Lifecycle (STYLE rule 13):
 *
 *   start() --all ready--> running --stop()--> stopped (workers exited; final snapshots)
 *      |                      |
 *      |                      +--a worker fails (uncaught exception, early exit)--> onFailure(err)
 *      +--a worker fails before ready--> the others are terminated, start() rejects
 *
 * The fds belong to the daemon: workers never close them, and the daemon closes them only after
 * stop() has resolved (every worker's Readers released first).
 */
import { Worker } from 'node:worker_threads';
import type { QueueSnapshot } from '../dataplane/figures.js';
import type { QueueReload, QueueSpec } from '../dataplane/queue.js';
import type { TraceFilter, TraceRecord } from '../dataplane/trace.js';
import type { Config } from './config.js';
import { WORKER_HEAP_LIMITS } from './footprint.js';
import type { Logger } from './logger.js';

export type { QueueSnapshot };

/**
 * What a worker needs to run queue `queue`, passed as its workerData (structured clone): the
 * plain-data part of its `QueueSpec` (src/dataplane/queue.ts), the config, and what the worker
 * turns into the rest.
 */
export interface QueueWorkerData extends Pick<QueueSpec, 'queue' | 'queues' | 'tunFd' | 'rawFd' | 'tunMtu' | 'underlayMax' | 'udpGro' | 'icmpSource' | 'fou' | 'fouMtu'> {
  config: Config;
  /** The per-peer random ID starts drawn by the main thread (src/dataplane/queue.ts `queueIds`). */
  idStarts: number[];
  logLevel: string;
  /**
   * `underlay.send: packet`: this queue's AF_PACKET fd and the next-hop table as it stands
   * (src/dataplane/hops.ts; later changes come as 'hop' messages); -1 and [] with `raw`.
   */
  packetFd: number;
  hops: number[];
}

/** Main thread -> worker. */
export type ToWorker =
  | { type: 'snapshot'; id: number }
  | { type: 'mtu'; peer: number; mtu: number }
  | { type: 'hop'; peer: number; entry: number[] }
  | { type: 'trace'; filter: TraceFilter | null }
  | { type: 'reload'; id: number; reload: QueueReload; logLevel: string }
  | { type: 'stop' };
/** Worker -> main thread. */
export type FromWorker =
  | { type: 'ready'; packets: number; ms: number }
  | { type: 'snapshot'; id: number; snap: QueueSnapshot }
  | { type: 'reloaded'; id: number; peers: number }
  | { type: 'stopped'; snap: QueueSnapshot }
  | { type: 'trace'; records: TraceRecord[]; skipped: number };

/** How long a worker may take to answer a snapshot request or to stop. */
const ANSWER_MS = 5000;

interface Pending {
  resolve: (s: QueueSnapshot) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

class QueueWorker {
  private readonly pending = new Map<number, Pending>();
  /** Reloads posted and not yet applied, by id: resolved with the worker's new peer count. */
  private readonly reloads = new Map<number, { resolve: (n: number) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private nextId = 1;
  private stopping: Pending | null = null;
  exited = false;

  constructor(
    readonly queue: number,
    readonly worker: Worker,
  ) {}

  request(): Promise<QueueSnapshot> {
    if (this.exited) return Promise.reject(new Error(`queue ${this.queue}: worker has exited`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`queue ${this.queue}: no snapshot within ${ANSWER_MS} ms`));
      }, ANSWER_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.post({ type: 'snapshot', id });
    });
  }

  /** Post a config reload; resolves once the worker has swapped it in between two of its batches. */
  reload(reload: QueueReload, logLevel: string): Promise<number> {
    if (this.exited) return Promise.reject(new Error(`queue ${this.queue}: worker has exited`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.reloads.delete(id);
        reject(new Error(`queue ${this.queue}: reload not applied within ${ANSWER_MS} ms`));
      }, ANSWER_MS);
      this.reloads.set(id, { resolve, reject, timer });
      this.post({ type: 'reload', id, reload, logLevel });
    });
  }

  stop(): Promise<QueueSnapshot> {
    if (this.exited) return Promise.reject(new Error(`queue ${this.queue}: worker has exited`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.stopping = null;
        reject(new Error(`queue ${this.queue}: did not stop within ${ANSWER_MS} ms`));
      }, ANSWER_MS);
      this.stopping = { resolve, reject, timer };
      this.post({ type: 'stop' });
    });
  }

  post(m: ToWorker): void {
    if (!this.exited) this.worker.postMessage(m);
  }

  onMessage(m: FromWorker): void {
    if (m.type === 'snapshot') {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      p.resolve(m.snap);
    } else if (m.type === 'reloaded') {
      const p = this.reloads.get(m.id);
      if (!p) return;
      this.reloads.delete(m.id);
      clearTimeout(p.timer);
      p.resolve(m.peers);
    } else if (m.type === 'stopped' && this.stopping) {
      clearTimeout(this.stopping.timer);
      this.stopping.resolve(m.snap);
      this.stopping = null;
    }
  }

  /** The worker is gone: fail whatever still waits on it. */
  onGone(err: Error): void {
    this.exited = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    for (const p of this.reloads.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.reloads.clear();
    if (this.stopping) {
      clearTimeout(this.stopping.timer);
      this.stopping.reject(err);
      this.stopping = null;
    }
  }
}

export class QueueWorkers {
  private state: 'running' | 'stopping' | 'stopped' = 'running';
  /** Live tracing (src/daemon/trace.ts): where the workers' sampled packets go. */
  onTrace: ((records: TraceRecord[], skipped: number) => void) | undefined;

  private constructor(
    private readonly workers: QueueWorker[],
    private readonly log: Logger,
  ) {}

  /**
   * Start one worker per entry and wait until each has warmed up its data path and started
   * reading. `onFailure` is called once if a worker fails later, while running. `script` is the
   * worker's entry (tests pass their own).
   */
  static async start(
    data: QueueWorkerData[],
    log: Logger,
    onFailure: (err: Error) => void,
    script: URL = new URL('./queue-worker.js', import.meta.url),
  ): Promise<QueueWorkers> {
    const workers: QueueWorker[] = [];
    let set: QueueWorkers | null = null;
    // A worker that fails after its `ready` but before the others are: start() must still fail.
    let failedWhileStarting: Error | null = null;
    const ready = data.map(
      (d) =>
        new Promise<void>((resolve, reject) => {
          const w = new QueueWorker(d.queue, new Worker(script, { workerData: d, name: `ipipd queue ${d.queue}`, resourceLimits: WORKER_HEAP_LIMITS }));
          workers.push(w);
          const fail = (err: Error): void => {
            const first = !w.exited;
            w.onGone(err);
            reject(err); // no effect once ready
            if (!first) return;
            if (set === null) failedWhileStarting ??= err;
            else if (set.state === 'running') onFailure(err);
          };
          w.worker.on('message', (m: FromWorker) => {
            if (m.type === 'ready') {
              log.debug({ queue: d.queue, packets: m.packets, ms: m.ms }, 'queue up (data path warmed up)');
              resolve();
            } else if (m.type === 'trace') set?.onTrace?.(m.records, m.skipped);
            else w.onMessage(m);
          });
          w.worker.on('error', (err) => fail(new Error(`queue ${d.queue}: worker failed: ${err.message}`, { cause: err })));
          w.worker.on('exit', (code) => fail(new Error(`queue ${d.queue}: worker exited (code ${code})`)));
        }),
    );
    try {
      await Promise.all(ready);
      if (failedWhileStarting) throw failedWhileStarting;
    } catch (err) {
      await Promise.all(workers.map((w) => w.worker.terminate()));
      throw err;
    }
    set = new QueueWorkers(workers, log);
    return set;
  }

  /** Worker threads (queues 1..N-1). */
  get count(): number {
    return this.workers.length;
  }

  /** Every worker's figures, in queue order; null for one that did not answer. */
  snapshotsSettled(): Promise<(QueueSnapshot | null)[]> {
    return Promise.all(this.workers.map((w) => w.request().catch(() => null)));
  }

  /** Tell every worker that the tunnel MTU toward peer `index` is now `mtu`. */
  setPeerMtu(index: number, mtu: number): void {
    for (const w of this.workers) w.post({ type: 'mtu', peer: index, mtu });
  }

  /**
   * Give every worker peer `index`'s next-hop table entry (`underlay.send: packet`, nexthop.ts
   * `hopEntry`), applied between two batches (postMessage copies it).
   */
  setPeerHop(index: number, entry: number[]): void {
    for (const w of this.workers) w.post({ type: 'hop', peer: index, entry });
  }

  /** Live tracing: every worker samples with `filter` (drained and posted every TRACE_DRAIN_MS), or stops (null). */
  setTrace(filter: TraceFilter | null): void {
    for (const w of this.workers) w.post({ type: 'trace', filter });
  }

  /**
   * A config reload (src/daemon/apply.ts): every worker swaps in the new peer set and prefix
   * table between two of its batches (src/dataplane/queue.ts `reloadQueue`) and sets its log
   * level; resolves when all have. Messages to a worker keep their order, so an 'mtu' or 'hop'
   * posted before this uses the old peer indices and one posted after it the new ones.
   */
  async reload(reload: QueueReload, logLevel: string): Promise<void> {
    await Promise.all(this.workers.map((w) => w.reload(reload, logLevel)));
  }

  /**
   * Stop every worker (its Readers stop and are released; it exits) and return the final
   * snapshots of those that stopped cleanly; a worker that does not answer (or had already
   * failed) is logged and terminated. Idempotent: a second call returns [].
   */
  async stop(): Promise<QueueSnapshot[]> {
    if (this.state !== 'running') return [];
    this.state = 'stopping';
    const finals = await Promise.all(
      this.workers.map(async (w) => {
        try {
          const snap = await w.stop();
          // It said `stopped`; its thread must now end by itself, or it is terminated.
          const exited = await new Promise<boolean>((resolve) => {
            if (w.exited) return resolve(true);
            const timer = setTimeout(() => resolve(false), ANSWER_MS);
            w.worker.once('exit', () => {
              clearTimeout(timer);
              resolve(true);
            });
          });
          if (!exited) await w.worker.terminate();
          return snap;
        } catch (err) {
          // Its final figures are lost: say so, or the final counters would leave it out unnoticed.
          this.log.warn({ queue: w.queue, err: (err as Error).message }, 'queue did not stop cleanly: terminated; its final counters are left out');
          await w.worker.terminate();
          return null;
        }
      }),
    );
    this.state = 'stopped';
    return finals.filter((s): s is QueueSnapshot => s !== null);
  }
}
