/**
 * Live changes (README "Live changes"): a config reload (SIGHUP, `ipipd reload`) and the peers
 * learned from kernel routes (src/daemon/kernel-routes.ts) go through one path here.
 * Flow, in the order of this file:
 *   - `plan`: the live peer set the new config and the kernel routes make (src/daemon/peer-set.ts),
 *     the keys that would need a restart, and the change as lines;
 *   - `reload`: refuse (restart keys) or, unless a dry run, apply; answers the lines;
 *   - `kernelChanged`: the route watch's coalesced update, applied the same way;
 *   - `apply`: routes added, every queue's new tunnel core swapped in between two of its batches
 *     (queue 0 here, the workers by message: src/dataplane/queue.ts `reloadQueue`), routes
 *     deleted, log level; one log line with counts.
 * Applies are serialized: a reload and a burst of route events never interleave.
 */
import { reloadQueue, type QueueReload } from '../dataplane/queue.js';
import { random16 } from '../dataplane/random.js';
import type { Config } from './config.js';
import { IpipdError, errnoName } from './errors.js';
import type { Resources } from './lifecycle.js';
import type { Logger } from './logger.js';
import { addUnderlayRoutes, delUnderlayRoutes } from './plain-routes.js';
import { changeCounts, describeChange, diffPeers, isEmpty, livePeers, restartKeys, type Change, type KernelRoute, type LivePeer, type Refusal } from './peer-set.js';

export interface Plan {
  config: Config;
  peers: LivePeer[];
  refused: Refusal[];
  restart: string[];
  change: Change;
  lines: string[];
}

/** What `ipipd reload` and `ipipd check --diff` answer. */
export interface ReloadAnswer {
  applied: boolean;
  changes: string[];
  counts: ReturnType<typeof changeCounts>;
  /** Route or queue steps that failed while applying (the rest was applied). */
  errors: string[];
}

/** The last applied change, for the status report. */
export interface LastChange {
  at: number;
  trigger: string;
  counts: ReturnType<typeof changeCounts>;
}

export class Live {
  /** The config file's content as last applied (without kernel peers). */
  config: Config;
  /** The peers running now, in peer-index order. */
  peers: LivePeer[];
  /** Kernel routes of the TUN with a gateway, by prefix (src/daemon/kernel-routes.ts keeps it). */
  readonly kernelRoutes = new Map<string, KernelRoute>();
  reloads = 0;
  last: LastChange | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly refusedLogged = new Set<string>();

  constructor(
    private readonly res: Resources,
    /** The daemon's logger: each line names its subsystem (`routes`, `reload`); `log.level` sets its level (children follow it). */
    private readonly log: Logger,
    config: Config,
  ) {
    this.config = config;
    this.peers = livePeers(config, []).peers;
  }

  /** What applying `next` (with the kernel routes as they are) would do. Pure. */
  plan(next: Config): Plan {
    const { peers, refused } = livePeers(next, this.kernelRoutes.values());
    const restart = restartKeys(this.config, next, this.peers, peers);
    const change = diffPeers(this.config, this.peers, next, peers, this.res.underlayPrefixLen);
    return { config: next, peers, refused, restart, change, lines: describeChange(change, next.tun.name, this.res.underlayDev) };
  }

  /**
   * Reload to `next`: refused with ERR_RELOAD_REFUSED if a key that cannot change differs (one
   * message naming each); else applied unless `dryRun`. `beforeApply` runs just before the
   * change is applied (systemd's RELOADING=1 belongs there).
   */
  reload(next: Config, dryRun: boolean, trigger: string, beforeApply?: () => void): Promise<ReloadAnswer> {
    return this.serial(async () => {
      const plan = this.plan(next);
      if (plan.restart.length > 0) {
        throw new IpipdError('ERR_RELOAD_REFUSED', `${plan.restart.join(', ')} cannot change while ipipd runs: restart it to apply ${plan.restart.length === 1 ? 'this change' : 'these changes'} (nothing was changed)`);
      }
      if (dryRun) return { applied: false, changes: plan.lines, counts: changeCounts(plan.change), errors: [] };
      beforeApply?.();
      const errors = await this.apply(plan, trigger);
      this.reloads++;
      return { applied: true, changes: plan.lines, counts: changeCounts(plan.change), errors };
    });
  }

  /** The route watch changed `kernelRoutes`: apply the peer set they now make, if it changed. */
  kernelChanged(events: { added: number; removed: number }): Promise<void> {
    return this.serial(async () => {
      const plan = this.plan(this.config);
      for (const r of plan.refused) {
        if (this.refusedLogged.has(r.route)) continue;
        this.refusedLogged.add(r.route);
        this.log.warn({ subsystem: 'routes', route: r.route, reason: r.reason }, 'kernel route refused: not tunnelled');
      }
      if (isEmpty(plan.change)) {
        this.log.info({ subsystem: 'routes', ...events, refused: plan.refused.length }, 'kernel routes changed; peer set unchanged');
        return;
      }
      const errors = await this.apply(plan, 'kernel routes');
      if (errors.length) this.log.warn({ subsystem: 'routes', errors }, 'kernel route change applied with errors');
    });
  }

  /** Prefixes by source, for `ipipd routes`: peer index, prefix and its source. */
  table(): { peer: number; prefix: string; source: string }[] {
    return this.peers.flatMap((p, i) => p.prefixes.map((x) => ({ peer: i, prefix: x.text, source: x.source })));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Apply `plan`. New routes first (a packet to a new prefix before its peer is in the table is
   * only a `no_route` drop), then every queue, then the old routes go. Route failures are
   * logged, counted in the answer and do not stop the rest; a queue that cannot apply is fatal
   * (its worker is gone or stuck, which the queue supervisor reports).
   */
  private async apply(plan: Plan, trigger: string): Promise<string[]> {
    const res = this.res;
    const errors: string[] = [];
    const t0 = performance.now();
    for (const x of plan.change.routesAdded) {
      const p = plan.peers.flatMap((q) => q.prefixes).find((y) => y.text === x);
      if (!p) continue;
      await res.addPeerRoute(p).catch((err: unknown) => errors.push(`add route ${x}: ${errnoName(err) ?? String(err)}`));
    }
    await addUnderlayRoutes(res, plan.change, errors);
    const oldIndex = new Map(this.peers.map((p, i) => [p.name, i]));
    const run: Config = Object.freeze({ ...plan.config, peers: plan.peers }) as Config;
    const reload: QueueReload = {
      config: run,
      carry: plan.peers.map((p) => oldIndex.get(p.name) ?? -1),
      idStarts: random16(plan.peers.length),
    };
    const queues = run.io.queues;
    if (res.dataplane) res.peers = reloadQueue(res.dataplane, res.peers, reload, 0, queues, res.tunMtu);
    res.config = run;
    this.log.level = run.log.level;
    this.config = plan.config;
    this.peers = plan.peers;
    if (res.queues) await res.queues.reload(reload, run.log.level);
    for (const x of plan.change.routesRemoved) {
      await res.delPeerRoute(x).catch((err: unknown) => errors.push(`delete route ${x}: ${errnoName(err) ?? String(err)}`));
    }
    await delUnderlayRoutes(res, plan.change, errors);
    const counts = changeCounts(plan.change);
    this.last = { at: Date.now(), trigger, counts };
    this.log.info({ subsystem: 'reload', trigger, ...counts, peers: plan.peers.length, prefixes: plan.peers.reduce((n, p) => n + p.prefixes.length, 0), ms: Math.round(performance.now() - t0), errors: errors.length }, 'applied');
    return errors;
  }
}
