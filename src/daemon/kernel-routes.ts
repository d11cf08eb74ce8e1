/**
 * `routes.source: kernel` (README "Live changes"): the routes of `routes.table` into the TUN with
 * a gateway, whatever protocol installed them (BIRD, Felix, `ip route add 203.0.113.0/26 via
 * 192.0.2.2 dev ipip0 onlink`), become peers: the gateway is the endpoint, the prefix that peer's.
 * Flow: the route watch (src/tun/route-watch.ts) hands events and dumps to `onRoutes`, which
 * keeps `Live.kernelRoutes` (prefix -> gateway) and schedules one apply once no event came for
 * `COALESCE_MS` (at most `COALESCE_MAX_MS` after the first), so a burst of 10 000 routes is one apply through the
 * reload path (src/daemon/live.ts `kernelChanged`), which checks each route (allowed
 * endpoints, RFC 2003 §3.2 loops) and logs a refusal once. Routes without a gateway (ipipd's
 * own), of other devices or other tables are ignored.
 */
import { formatPrefix } from '../routing/prefix.js';
import { RouteWatch, type RouteEvent, type RouteWatchHandlers } from '../tun/route-watch.js';
import type { Logger } from './logger.js';
import type { KernelRoute } from './peer-set.js';

/** An apply waits until no event came for this long... */
export const COALESCE_MS = 100;
/** ...but not longer than this after the first event it holds. */
export const COALESCE_MAX_MS = 1000;
/** A route-socket error is logged at most this often; the others are counted. */
const ERROR_LOG_MS = 10_000;

/** What the watch updates and asks to apply (src/daemon/live.ts `Live`). */
export interface KernelRouteSink {
  readonly kernelRoutes: Map<string, KernelRoute>;
  kernelChanged(events: { added: number; removed: number }): Promise<void>;
}

/** Fold `events` into `routes` (prefix text -> route); returns what was added and removed. Pure but for `routes`. */
export function foldRoutes(routes: Map<string, KernelRoute>, events: readonly RouteEvent[], dump: boolean, tunIndex: number, table: number): { added: number; removed: number } {
  let added = 0;
  let removed = 0;
  const seen = dump ? new Set<string>() : null;
  for (const e of events) {
    if (e.table !== table || e.oif !== tunIndex || e.gateway === undefined) continue;
    const text = formatPrefix(e.dst, e.dstLen);
    if (e.kind === 'add') {
      seen?.add(text);
      const had = routes.get(text);
      if (had?.gateway === e.gateway) continue;
      routes.set(text, { prefix: { text, addr: e.dst, len: e.dstLen }, gateway: e.gateway });
      added++;
    } else if (routes.get(text)?.gateway === e.gateway) {
      routes.delete(text);
      removed++;
    }
  }
  if (seen) {
    for (const k of [...routes.keys()]) {
      if (!seen.has(k)) {
        routes.delete(k);
        removed++;
      }
    }
  }
  return { added, removed };
}

/** What KernelRoutes needs of the route watch (tests hand a fake netlink side). */
export interface RouteSource {
  start(): Promise<void>;
  close(): void;
  readonly events: number;
  readonly dumps: number;
  readonly errors: number;
}

export class KernelRoutes {
  private watch: RouteSource | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pending = { added: 0, removed: 0 };
  private firstAt = 0;
  private lastAt = 0;
  private lastErrorLog = 0;
  private stopped = false;

  constructor(
    private readonly sink: KernelRouteSink,
    private readonly tunIndex: number,
    private readonly table: number,
    private readonly log: Logger,
    private readonly makeWatch: (h: RouteWatchHandlers) => RouteSource = (h) => new RouteWatch(h),
  ) {}

  /** Dump and apply what is there, then follow. */
  async start(): Promise<void> {
    this.watch = this.makeWatch({
      onRoutes: (events, dump) => this.onRoutes(events, dump),
      onError: (what) => this.onError(what),
    });
    await this.watch.start();
    // The dump is applied now, not after COALESCE_MS.
    if (this.timer) clearTimeout(this.timer);
    await this.flush();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.watch?.close();
  }

  /** Figures for the status report. */
  figures(): { routes: number; events: number; dumps: number; errors: number } {
    const w = this.watch;
    return { routes: this.sink.kernelRoutes.size, events: w?.events ?? 0, dumps: w?.dumps ?? 0, errors: w?.errors ?? 0 };
  }

  private onRoutes(events: RouteEvent[], dump: boolean): void {
    const d = foldRoutes(this.sink.kernelRoutes, events, dump, this.tunIndex, this.table);
    this.pending.added += d.added;
    this.pending.removed += d.removed;
    if (d.added + d.removed === 0 || this.stopped) return;
    const now = Date.now();
    this.lastAt = now;
    if (this.timer) return;
    this.firstAt = now;
    this.timer = setTimeout(() => this.due(), COALESCE_MS);
  }

  /** Apply now, unless events are still coming (and the first one waited less than COALESCE_MAX_MS). */
  private due(): void {
    const now = Date.now();
    const quietIn = this.lastAt + COALESCE_MS - now;
    if (quietIn > 0 && now - this.firstAt < COALESCE_MAX_MS) {
      this.timer = setTimeout(() => this.due(), quietIn);
      return;
    }
    void this.flush();
  }

  private async flush(): Promise<void> {
    this.timer = undefined;
    const events = this.pending;
    this.pending = { added: 0, removed: 0 };
    if (this.stopped) return;
    try {
      await this.sink.kernelChanged(events);
    } catch (err) {
      this.onError(`apply: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private onError(what: string): void {
    const now = Date.now();
    if (now - this.lastErrorLog < ERROR_LOG_MS) return;
    this.lastErrorLog = now;
    this.log.warn({ error: what, errors: this.watch?.errors ?? 0 }, 'kernel route watch: error (re-reading the table; further ones within 10 s are only counted)');
  }
}
