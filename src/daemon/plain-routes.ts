/**
 * The routes ipipd installs outside its TUN (issue 12; the decision is src/daemon/cross-subnet.ts):
 *   - plain routes, `encap.mode: cross-subnet`: `<prefix> via <peer endpoint> dev <underlay>`,
 *     for a configured peer on the underlay subnet (no IPIP);
 *   - blackholes, `routes.own_blocks`: `blackhole <block>`, as Calico installs for the node's
 *     own blocks, so an unassigned pod address is not sent to the default route.
 * Both carry ipipd's route protocol (RTPROT_IPIPD, `proto 77`), the table and metric of
 * `routes.table`/`routes.metric`, like the TUN routes (src/daemon/lifecycle.ts `addPeerRoute`).
 * Unlike those, they do not go with the TUN when ipipd dies: the state file records them
 * (`recorded`) and crash recovery deletes them (src/daemon/recovery.ts `recoverUnderlayRoutes`).
 * Flow, in the order of this file: `addPlain` / `delPlain`, `addBlackhole` / `delBlackhole`,
 * `release` (at exit, every one still installed, newest first), `recorded`, `lines`.
 * A prefix moving between the TUN and a plain route (a mode change, a peer's new endpoint) is
 * replaced in one step (NLM_F_REPLACE), which `replacing` says; this class then owns it.
 */
import { formatIPv4 } from '../routing/prefix.js';
import type { Rtnl, RouteSpec } from '../tun/netlink.js';
import type { Config, Prefix } from './config.js';
import { plainRouteText, plainRoutes, type PlainRoute } from './cross-subnet.js';
import { IpipdError, errnoName } from './errors.js';
import type { Logger } from './logger.js';
import { RTPROT_IPIPD, writeState } from './recovery.js';

interface Installed {
  spec: RouteSpec;
  /** As `ip route` shows it, without proto and metric. */
  shown: string;
  /** Plain routes: the next hop (int32). */
  via?: number;
}

/** What the state file records of these routes, for crash recovery. */
export interface RecordedUnderlayRoutes {
  /** `{ dst: "203.0.113.0/25", via: "192.0.2.2", ifindex }` per plain route. */
  plain: { dst: string; via: string; ifindex: number }[];
  /** Blackholed blocks, "198.51.100.0/25". */
  blackholes: string[];
}

export class UnderlayRoutes {
  private readonly plain = new Map<string, Installed>();
  private readonly holes = new Map<string, Installed>();

  constructor(
    private readonly rtnl: Rtnl,
    private readonly log: Logger,
    /** routes.table and routes.metric (fixed while running). */
    private readonly table: number,
    private readonly metric: number | undefined,
    /** The underlay device: its name and ifindex. */
    private readonly dev: { name: string; index: number },
  ) {}

  private spec(x: Prefix, extra: Partial<RouteSpec>): RouteSpec {
    const spec: RouteSpec = { dst: x.addr, dstLen: x.len, oif: this.dev.index, table: this.table, protocol: RTPROT_IPIPD, ...extra };
    if (this.metric !== undefined) spec.metric = this.metric;
    return spec;
  }

  /** The underlay device's ifindex (the plain routes' device). */
  get ifindex(): number {
    return this.dev.index;
  }

  /** Whether this class holds a plain route for prefix `text` (a TUN route replacing it takes it over). */
  hasPlain(text: string): boolean {
    return this.plain.has(text);
  }

  /** Forget plain route `text` without deleting it: a TUN route replaced it. */
  forgetPlain(text: string): void {
    this.plain.delete(text);
  }

  /**
   * Install plain route `r`. `replacing`: a route of ipipd's for the prefix is there already
   * (into the TUN, or via another endpoint) and is replaced in one step.
   */
  async addPlain(r: PlainRoute, replacing: boolean): Promise<void> {
    const spec = this.spec(r.prefix, { gateway: r.via.value });
    await this.rtnl.addRoute(spec, replacing || this.plain.has(r.prefix.text));
    this.plain.set(r.prefix.text, { spec, shown: plainRouteText(r, this.dev.name), via: r.via.value });
  }

  /** Delete plain route `r`, if it is still the one installed for its prefix (not replaced since). */
  async delPlain(r: PlainRoute): Promise<void> {
    const got = this.plain.get(r.prefix.text);
    if (!got || got.via !== r.via.value) return;
    this.plain.delete(r.prefix.text);
    await this.rtnl.delRoute(got.spec);
  }

  async addBlackhole(x: Prefix): Promise<void> {
    if (this.holes.has(x.text)) return;
    const spec = this.spec(x, { blackhole: true });
    await this.rtnl.addRoute(spec);
    this.holes.set(x.text, { spec, shown: `blackhole ${x.text}` });
  }

  async delBlackhole(text: string): Promise<void> {
    const got = this.holes.get(text);
    if (!got) return;
    this.holes.delete(text);
    await this.rtnl.delRoute(got.spec);
  }

  /** At exit: delete every route still installed, newest first; a failure is logged, the rest still go. */
  async release(): Promise<void> {
    for (const map of [this.holes, this.plain]) {
      for (const [text, got] of [...map].reverse()) {
        map.delete(text);
        try {
          await this.rtnl.delRoute(got.spec);
          this.log.debug({ step: `delete ${got.shown}` }, 'released');
        } catch (err) {
          this.log.error({ step: `delete ${got.shown}`, code: errnoName(err), err: err instanceof Error ? err.message : String(err) }, 'cleanup step failed');
        }
      }
    }
  }

  /** What the state file records (src/daemon/recovery.ts). */
  recorded(): RecordedUnderlayRoutes {
    return {
      plain: [...this.plain.entries()].map(([dst, r]) => ({ dst, via: formatIPv4(r.via!), ifindex: this.dev.index })),
      blackholes: [...this.holes.keys()],
    };
  }

  /** The routes installed, as `ip route` shows them: plain routes, then blackholes. */
  lines(): { plain: string[]; blackholes: string[] } {
    return { plain: [...this.plain.values()].map((r) => r.shown), blackholes: [...this.holes.values()].map((r) => r.shown) };
  }
}

/** What `installUnderlayRoutes` needs of the daemon's resources (src/daemon/lifecycle.ts). */
interface RouteOwner {
  readonly underlayRoutes: UnderlayRoutes | undefined;
  readonly underlayDev: string;
  addPlainRoute(r: PlainRoute): Promise<void>;
}

/** Start-up (step 7): the plain routes, then the blackholes; the first failure is ERR_ROUTE_ADD. */
export async function installUnderlayRoutes(res: RouteOwner, plain: readonly PlainRoute[], blocks: readonly Prefix[]): Promise<void> {
  for (const r of plain) {
    try {
      await res.addPlainRoute(r);
    } catch (err) {
      throw new IpipdError('ERR_ROUTE_ADD', `cannot add route ${plainRouteText(r, res.underlayDev)} (peer ${r.peer}, encap.mode cross-subnet): ${errnoName(err) ?? err}`, { cause: err });
    }
  }
  for (const b of blocks) {
    try {
      await res.underlayRoutes!.addBlackhole(b);
    } catch (err) {
      throw new IpipdError('ERR_ROUTE_ADD', `cannot add route blackhole ${b.text} (routes.own_blocks): ${errnoName(err) ?? err}`, { cause: err });
    }
  }
}

/** What the state file records before the routes of `c` are installed (start-up). */
export function plannedUnderlayRoutes(c: Config, peers: Config['peers'], kernelLen: number, ifindex: number): RecordedUnderlayRoutes {
  return {
    plain: plainRoutes(c, peers, kernelLen).map((r) => ({ dst: r.prefix.text, via: r.via.text, ifindex })),
    blackholes: c.routes.own_blocks.map((b) => b.text),
  };
}

/** What a reload's route steps need of the daemon's resources. */
interface ReloadOwner extends RouteOwner {
  readonly config: Config;
  readonly tunIndex: number;
}

/** The route changes of a reload that `addUnderlayRoutes` and `delUnderlayRoutes` read. */
interface UnderlayChange {
  plainAdded: readonly PlainRoute[];
  plainRemoved: readonly PlainRoute[];
  blackholesAdded: readonly Prefix[];
  blackholesRemoved: readonly Prefix[];
}

const failed = (what: string, err: unknown): string => `${what}: ${errnoName(err) ?? String(err)}`;

/**
 * A reload, before the queues switch (src/daemon/live.ts `apply`): record, then add, the plain
 * routes (each replacing the prefix's TUN route if it had one) and the blackholes. Failures go
 * to `errors` and do not stop the rest.
 */
export async function addUnderlayRoutes(res: ReloadOwner, ch: UnderlayChange, errors: string[]): Promise<void> {
  if (!ch.plainAdded.length && !ch.blackholesAdded.length) return;
  const ifindex = res.underlayRoutes?.ifindex ?? 0;
  record(res, errors, {
    plain: ch.plainAdded.map((r) => ({ dst: r.prefix.text, via: r.via.text, ifindex })),
    blackholes: ch.blackholesAdded.map((b) => b.text),
  });
  for (const r of ch.plainAdded) await res.addPlainRoute(r).catch((err: unknown) => errors.push(failed(`add route ${plainRouteText(r, res.underlayDev)}`, err)));
  for (const b of ch.blackholesAdded) await res.underlayRoutes?.addBlackhole(b).catch((err: unknown) => errors.push(failed(`add route blackhole ${b.text}`, err)));
}

/** A reload, after the queues switched: delete the plain routes and blackholes it removes, then record what is left. */
export async function delUnderlayRoutes(res: ReloadOwner, ch: UnderlayChange, errors: string[]): Promise<void> {
  if (!ch.plainRemoved.length && !ch.blackholesRemoved.length && !ch.plainAdded.length && !ch.blackholesAdded.length) return;
  for (const r of ch.plainRemoved) await res.underlayRoutes?.delPlain(r).catch((err: unknown) => errors.push(failed(`delete route ${plainRouteText(r, res.underlayDev)}`, err)));
  for (const b of ch.blackholesRemoved) await res.underlayRoutes?.delBlackhole(b.text).catch((err: unknown) => errors.push(failed(`delete route blackhole ${b.text}`, err)));
  record(res, errors);
}

/**
 * Rewrite the state file with the plain routes and blackholes installed, plus `planned` (about
 * to be): they outlive a dead ipipd, and crash recovery deletes what it recorded. A failure
 * (ERR_STATE_FILE) is one of the reload's errors.
 */
function record(res: ReloadOwner, errors: string[], planned?: RecordedUnderlayRoutes): void {
  const now = res.underlayRoutes?.recorded() ?? { plain: [], blackholes: [] };
  try {
    writeState(res.config, res.tunIndex, planned ? { plain: [...now.plain, ...planned.plain], blackholes: [...now.blackholes, ...planned.blackholes] } : now);
  } catch (err) {
    errors.push(err instanceof Error ? err.message : String(err));
  }
}
