/**
 * The daemon's lifecycle: acquire the system resources in order, run the dataplane, release
 * exactly what was acquired in reverse order (STYLE rule 13, after wireguard-go device.go).
 *
 *     created --start()--> starting --ok--> up --close()--> closing --> closed
 *                             |                 |               ^
 *                             |                 +--> failed ----+  (the TUN vanished: onFatal)
 *                             +--failure: undo what was done ---+  (start() rethrows)
 *
 * start(), in order: `acquire` calls one method of `Resources` (src/daemon/lifecycle.ts) per
 * step, and each step that changes the system pushes its undo on a stack:
 *   0. recover: a live daemon with our state file -> ERR_ALREADY_RUNNING; a dead one's TUN,
 *      routes (protocol RTPROT_IPIPD), control socket and state file are removed and logged
 *   1. checkHost: the underlay address is on this host, the TUN name is free (nothing touched
 *      yet: a wrong address or a taken name fails here)
 *   2. openTun: the TUN                                       undo: close fd (device goes)
 *      (io.queues > 1: a multi-queue TUN, one fd per queue)    undo: close each fd
 *      (io.offload: does it take UDP super-packets? probed once)
 *      recordState: pid, TUN name and ifindex, routes             undo: remove the state file
 *   3. setUpTun: IPv6 off, accept_local, MTU (default underlay MTU - 20), txqueuelen, up
 *                                                              (gone with the device)
 *   4. addTunAddress: the TUN's address                        undo: delete the address
 *   5. openUnderlaySockets: the raw protocol-4 socket bound to the underlay address
 *                                                              undo: close
 *      (io.queues > 1: one per queue, steered by inner flow)   undo: close each
 *      and a raw ICMP socket (path MTU, RFC 2003 §4 relaying)  undo: close
 *      openPacketSockets, with underlay.send: packet: an AF_PACKET socket per queue
 *                                                              undo: close each
 *      and the peers' next hops (src/daemon/nexthop.ts)        undo: stop refreshing
 *   6. startDataPath: the dataplane pollers (queue 0, this thread), warmed up
 *                                                              undo: stop, close
 *      and one worker thread per further queue (src/daemon/queues.ts)
 *                                                              undo: stop, wait for exit
 *   7. installRoutes: one kernel route per peer prefix into the TUN
 *                                                              undo: delete each route
 *      (encap.mode: cross-subnet) a plain route via the endpoint of a peer on the underlay
 *      subnet instead, and (routes.own_blocks) a blackhole per block (src/daemon/plain-routes.ts)
 *                                                              undo: delete each route
 *      watchKernelRoutes, with routes.source: kernel: dump and follow the routes into the TUN
 *      (src/daemon/kernel-routes.ts)                           undo: stop watching
 *   8. openControlSocket: the control socket                   undo: close, unlink
 *   9. openMetrics: the Prometheus exporter (metrics.listen)   undo: close
 * close(): state `closing`, stop reading (dataplane.stop, then the queue workers, whose final
 * counters join the final report), then pop the stack. Nothing is queued inside ipipd (each
 * batch is processed synchronously), so stopping the pollers is the drain. A queue worker that
 * fails while up is fatal: `onFatal` is called (the CLI shuts down and exits 1), since the
 * flows steered to that queue would otherwise be silently lost.
 * A failing undo step is logged and the rest still run: close() never throws.
 * The TUN deleted from outside while up (src/tun/link-watch.ts: rtnetlink RTM_DELLINK, or its
 * sysfs backstop): its routes and address went with it and nothing more can be delivered, so
 * the state becomes `failed` (status names the reason and the routes lost) and `onFatal` gets
 * ERR_TUN_GONE: the CLI shuts down and exits 1, for a supervisor to start ipipd again.
 */
import { realpathSync } from 'node:fs';
import type { Config } from './config-plain.js';
import { loadConfigInThread, parseConfigInThread } from './config-thread.js';
import type { ControlHandler, ControlRequest } from './control.js';
import { IpipdError } from './errors.js';
import { LinkWatch } from '../tun/link-watch.js';
import { native } from '../tun/native.js';
import { MALLOC_ARENAS, heapReserved, settleMemory } from './footprint.js';
import { KernelRoutes } from './kernel-routes.js';
import { Live, type ReloadAnswer } from './live.js';
import { Resources } from './lifecycle.js';
import { lastLogWriteError, logWriteErrors, type Logger } from './logger.js';
import type { QueueSnapshot } from './queues.js';
import { TraceHub } from './trace.js';
import { addFigures } from '../dataplane/figures.js';
import { nonZero, StatsLog, type CounterSums } from './stats-log.js';
import { statusReport, type DaemonState, type StatusReport } from './status.js';

/** The report's type, for the tests and helpers that import it from here. */
export type { StatusReport };

export class Daemon {
  state: DaemonState = 'created';
  private readonly res: Resources;
  /** Called once if the data path fails while up (a queue worker died); the CLI shuts down. */
  onFatal: ((err: Error) => void) | undefined;
  /** A queue worker that failed while the daemon was still starting. */
  private queueFailure: Error | undefined;
  private startedAt = 0;
  /** This thread's V8 heap, reserved bytes, once up: what settleMemory (src/daemon/footprint.ts) compares with. */
  private heapAtUp = 0;
  private statsLog: StatsLog | undefined;
  private pmtuTimer: NodeJS.Timeout | undefined;
  /** The TUN's presence and kernel-side drops, watched while up. */
  private linkWatch: LinkWatch | undefined;
  /** Why the daemon is `failed`, and the routes that went with the TUN. */
  private failure: StatusReport['failure'] = null;
  /** `ipipd trace` sessions (src/daemon/trace.ts). */
  private readonly trace: TraceHub;
  /** Live changes: reloads and kernel-learned peers (src/daemon/live.ts). */
  readonly live: Live;
  /** The config file the daemon was started with: what SIGHUP and `ipipd reload` re-read. */
  configFile: string | undefined;
  /** Called just before a reload is applied, and after (systemd RELOADING=1 / READY=1). */
  onReload: { before?: () => void; after?: () => void } = {};
  /** routes.source: kernel: the route watch. */
  private kernelRoutes: KernelRoutes | undefined;

  constructor(
    public config: Config,
    private readonly log: Logger,
  ) {
    this.res = new Resources(config, log, (err) => this.queueFailed(err));
    this.trace = new TraceHub({ tracer: () => this.res.dataplane?.tracer, workers: () => this.res.queues, peers: () => this.live.peers });
    this.live = new Live(this.res, log, config);
  }

  async start(): Promise<void> {
    if (this.state !== 'created') throw new Error(`start() in state ${this.state}`);
    this.state = 'starting';
    // Before the queue workers start: each thread would otherwise get malloc arenas of its own.
    native.limitMallocArenas(MALLOC_ARENAS);
    try {
      await this.acquire();
      if (this.queueFailure) throw new IpipdError('ERR_QUEUE', this.queueFailure.message, { cause: this.queueFailure });
    } catch (err) {
      const undo = this.res.held;
      this.log.error({ err: err instanceof Error ? err.message : String(err) }, undo > 0 ? `start failed; undoing what was set up (${undo} step${undo === 1 ? '' : 's'})` : 'start failed; nothing was set up');
      await this.res.release();
      this.state = 'closed';
      throw err;
    }
    this.startedAt = Date.now();
    this.state = 'up';
    this.startStatsLog();
    this.startPmtuAging();
    this.linkWatch = new LinkWatch(
      this.config.tun.name,
      this.res.tunIndex,
      (why) => this.tunGone(why),
      (why) => this.log.warn({ subsystem: 'link', err: why }, 'the TUN is watched without link events'),
    );
    this.linkWatch.start();
    // What start-up allocated and freed (config, netlink dumps, warm-up) goes back to the kernel.
    native.trimMemory();
    this.heapAtUp = heapReserved();
    this.log.info(
      { tun: this.config.tun.name, mtu: this.res.tunMtu, underlay: this.config.underlay.address.text, peers: this.res.peers.length, routes: this.res.routes.length },
      'up',
    );
  }

  /** The steps of the diagram above, in its order; each pushes its undo (src/daemon/lifecycle.ts). */
  private async acquire(): Promise<void> {
    const r = this.res;
    await r.recover(); // 0, crash recovery (src/daemon/recovery.ts)
    await r.checkHost(); // 1
    await r.openTun(); // 2
    r.recordState(); // 2, the state file
    await r.setUpTun(); // 3
    await r.addTunAddress(); // 4
    r.openUnderlaySockets(); // 5
    await r.openPacketSockets(); // 5, underlay.send: packet
    await r.startDataPath(); // 6
    await r.installRoutes(); // 7
    if (this.config.routes.source === 'kernel') await this.watchKernelRoutes(); // 7
    await r.openControlSocket(this.controlHandlers()); // 8
    await r.openMetrics(() => this.status()); // 9
  }

  /** Shut down: stop reading, release in reverse order, log the final counters. Idempotent. */
  async close(reason = 'shutdown'): Promise<StatusReport | undefined> {
    if (this.state === 'closing' || this.state === 'closed') return undefined;
    const wasUp = this.state === 'up' || this.state === 'failed';
    this.state = 'closing';
    this.linkWatch?.stop(); // our own close deletes the TUN: not a failure
    this.statsLog?.stop();
    if (this.pmtuTimer) clearInterval(this.pmtuTimer);
    this.log.info({ reason }, 'closing');
    this.trace.close();
    this.kernelRoutes?.stop(); // no route event applies anything from here on
    this.res.dataplane?.stop();
    // The workers stop first; their last figures are part of the final report.
    const finals = (await this.res.queues?.stop()) ?? [];
    const final = wasUp ? this.report(finals) : undefined;
    await this.res.release();
    this.state = 'closed';
    if (final) {
      final.state = 'closed';
      this.log.info({ counters: final.counters, drops: nonZero(final.drops), peers: final.peers, ...(this.failure ? { failure: this.failure } : {}) }, 'closed: final counters');
    }
    return final;
  }

  /** What the control socket answers (src/daemon/control.ts), by command. */
  private controlHandlers(): Record<string, ControlHandler> {
    return {
      status: () => this.status(),
      trace: (req, conn) => this.trace.handle(req, conn),
      reload: (req) => this.reloadRequest(req),
      routes: () => this.routesTable(),
    };
  }

  /** routes.source: kernel: follow the TUN's routes; what they make goes through the reload path. */
  private async watchKernelRoutes(): Promise<void> {
    const watch = new KernelRoutes(this.live, this.res.tunIndex, this.config.routes.table, this.log.child({ subsystem: 'routes' }));
    this.kernelRoutes = watch;
    this.res.pushUndo('stop watching kernel routes', () => watch.stop());
    await watch.start();
  }

  /**
   * `{"cmd":"reload"}`: re-read the daemon's own config file and apply it. `file`: the file the
   * CLI was given; it must be the daemon's own (README "Live changes"). `text` with `dryRun`:
   * `ipipd check --diff`, a config the CLI read and validated, only compared.
   */
  private async reloadRequest(req: ControlRequest): Promise<ReloadAnswer> {
    const dryRun = req['dryRun'] === true;
    if (typeof req['text'] === 'string') {
      if (!dryRun) throw new IpipdError('ERR_CONTROL_REQUEST', 'reload: a config text is only compared (dryRun), never applied: the daemon applies its own file');
      const source = typeof req['source'] === 'string' ? req['source'] : 'config';
      return this.live.reload(await parseConfigInThread(req['text'], source), true, 'check --diff');
    }
    const own = this.configFile;
    if (own === undefined) throw new IpipdError('ERR_RELOAD_REFUSED', 'this daemon was not started from a config file: nothing to re-read');
    if (typeof req['file'] === 'string' && !sameFile(req['file'], own)) {
      throw new IpipdError('ERR_RELOAD_REFUSED', `${req['file']} is not the file this daemon runs (${own}): edit that file and reload, or compare another one with ipipd check --config FILE --diff`);
    }
    return this.reloadFile(dryRun ? 'dry run' : 'control socket', dryRun);
  }

  private refuseUnlessUp(): void {
    if (this.state !== 'up') throw new IpipdError('ERR_RELOAD_REFUSED', `the daemon is ${this.state}, not up`);
  }

  /** Re-read the config file and apply it (SIGHUP, `ipipd reload`); errors as `ipipd check` gives them. */
  async reloadFile(trigger: string, dryRun = false): Promise<ReloadAnswer> {
    this.refuseUnlessUp();
    const next = await loadConfigInThread(this.configFile!);
    // The parse ran in a thread (src/daemon/config-thread.ts): a shutdown may have begun meanwhile.
    this.refuseUnlessUp();
    let told = false;
    const before = (): void => {
      told = true;
      this.onReload.before?.();
    };
    try {
      const answer = await this.live.reload(next, dryRun, trigger, before);
      if (answer.applied) this.config = next;
      // A large reload (100k prefixes) leaves ~100 MiB of garbage that V8 would keep reserved;
      // collected after the answer has gone out, so that the reload's caller does not wait for it.
      if (answer.applied) setImmediate(() => settleMemory(native, this.heapAtUp));
      return answer;
    } finally {
      if (told) this.onReload.after?.();
    }
  }

  /** `ipipd routes`: the live prefix table, with each peer's packets (every queue's). */
  private async routesTable(): Promise<unknown> {
    const s = await this.status();
    const table = this.live.table();
    return {
      source: this.config.routes.source,
      routes: table.map((r) => {
        const p = s.peers[r.peer];
        return { prefix: r.prefix, peer: p?.name ?? '?', endpoint: p?.endpoint ?? '?', source: r.source, txPackets: p?.txPackets ?? 0, rxPackets: p?.rxPackets ?? 0 };
      }),
    };
  }

  /** The daemon's state and figures, every queue's added up (asks the queue workers). */
  async status(): Promise<StatusReport> {
    const queues = this.res.queues;
    if (queues === undefined || this.state !== 'up') return this.report([]);
    const settled = await queues.snapshotsSettled();
    const snaps = settled.filter((x): x is QueueSnapshot => x !== null);
    const report = this.report(snaps);
    settled.forEach((x, i) => {
      if (x === null) report.lastErrors[`queue${i + 1}`] = 'no answer';
    });
    return report;
  }

  /** The report from this thread's figures (queue 0) plus the workers' `snaps` (queues 1..). */
  private report(snaps: readonly QueueSnapshot[]): StatusReport {
    const r = statusReport(this.state, this.startedAt, this.res, snaps);
    r.failure = this.failure;
    if (r.counters.tun_rx_packets !== undefined) {
      Object.assign(r.counters, this.outsideCounters());
    }
    if (logWriteErrors() > 0) r.lastErrors.log = lastLogWriteError();
    const last = this.live.last;
    r.live = {
      reloads: this.live.reloads,
      lastChange: last ? { secondsAgo: Math.round((Date.now() - last.at) / 1000), trigger: last.trigger, ...last.counts } : null,
      kernelRoutes: this.kernelRoutes ? this.kernelRoutes.figures() : null,
    };
    return r;
  }

  /** The TUN vanished while up (src/tun/link-watch.ts): `failed`, then `onFatal` (exit 1). */
  private tunGone(reason: string): void {
    if (this.state !== 'up') return;
    this.state = 'failed';
    this.failure = { code: 'ERR_TUN_GONE', reason, routesLost: [...this.res.routes] };
    this.res.tunGone();
    const err = new IpipdError('ERR_TUN_GONE', `${reason}; its routes (${this.failure.routesLost.join(', ') || 'none'}) and address went with it`);
    this.log.error({ subsystem: 'tun', err: err.message }, 'the TUN is gone; shutting down');
    this.onFatal?.(err);
  }

  /** A queue worker failed while up: log it and hand it to `onFatal` (the CLI shuts down). */
  private queueFailed(err: Error): void {
    // Still starting (routes, control socket): start() fails instead, and undoes what it did.
    if (this.state === 'starting') {
      this.queueFailure ??= err;
      return;
    }
    if (this.state !== 'up') return; // closing: nothing more to do
    this.log.error({ subsystem: 'queues', err: err.message }, 'a data-path queue failed; shutting down');
    this.onFatal?.(new IpipdError('ERR_QUEUE', err.message, { cause: err }));
  }

  /**
   * RFC 1191 §6.3: a learned path MTU is soft state; after `underlay.pmtu_expires` seconds the
   * peer goes back to its configured MTU, and a smaller path shows itself again by ICMP.
   */
  private startPmtuAging(): void {
    const expires = this.config.underlay.pmtu_expires * 1000;
    if (!expires) return;
    this.pmtuTimer = setInterval(() => {
      const now = Date.now();
      for (const p of this.res.peers) {
        if (p.pmtuLearnedAt !== 0 && now - p.pmtuLearnedAt >= expires) {
          this.log.info({ peer: p.name, from: p.mtu, to: p.baseMtu }, 'learned path MTU expired');
          p.mtu = p.baseMtu;
          p.pmtuLearnedAt = 0;
          this.res.queues?.setPeerMtu(p.index, p.mtu);
        }
      }
    }, Math.min(expires, 30_000));
    this.pmtuTimer.unref();
  }

  /** Log a counter summary at most every `log.stats_interval` seconds, and only if it changed (stats-log.ts). */
  private startStatsLog(): void {
    const every = this.config.log.stats_interval;
    if (!every || !this.res.dataplane) return;
    this.statsLog = new StatsLog(every, { sums: () => this.counterSums() }, this.log);
    this.statsLog.start();
  }

  /**
   * Every queue's counters and drops added up, and the two counters kept outside the queues: what
   * the summary logs, and nothing else of the status report. Queue 0's are read here; the
   * workers', if any, when they answer. Null unless up.
   */
  private async counterSums(): Promise<CounterSums | null> {
    const dp = this.res.dataplane;
    if (!dp || this.state !== 'up') return null;
    const sums: CounterSums = { counters: new Float64Array(dp.figures.counters.length), drops: new Float64Array(dp.figures.drops.length), extra: {} };
    addFigures(sums, dp.figures);
    if (this.res.queues && this.res.queues.count > 0) {
      for (const q of await this.res.queues.snapshotsSettled()) if (q) addFigures(sums, q);
      if (this.state !== 'up') return null;
    }
    sums.extra = this.outsideCounters();
    return sums;
  }

  /** The counters kept outside the queues: the TUN's own tx_dropped, the log's write errors. */
  private outsideCounters(): { tun_kernel_tx_dropped: number; log_write_errors: number } {
    return { tun_kernel_tx_dropped: this.linkWatch?.txDropped() ?? 0, log_write_errors: logWriteErrors() };
  }
}

function sameFile(a: string, b: string): boolean {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}
