/**
 * Next hops for `underlay.send: packet` (docs/performance.md, "AF_PACKET sending"): where each
 * peer's outer packets go on the link, so that the data path can hand them to an AF_PACKET
 * socket (native `sendPacket`) and skip the kernel's route lookup and IP output path per packet.
 *
 * The kernel stays the authority: a refresh asks it, per peer, for the route to
 * the peer's endpoint from our underlay address (`ip route get`) and the neighbour (ARP) entry
 * of that route's next hop (the gateway, or the endpoint itself), and writes the result into the
 * shared next-hop table the data path reads (`HOP_INTS` int32s per peer: ifindex, MAC). A peer
 * without a usable entry (none yet, INCOMPLETE, FAILED, or a link without 6-byte addresses) gets
 * ifindex 0, and its packets go through the raw socket as in `underlay.send: raw`; that traffic
 * makes the kernel resolve the neighbour, and the next refresh picks the address up. Because
 * packets sent through AF_PACKET never tell the kernel the entry is in use, a STALE entry is
 * nudged (NTF_USE), so that the kernel re-probes it and a changed address is learned; a missing
 * one is created and resolved at once. The table is only ever written here, between batches
 * (same thread); the data-path queues in worker threads have their own copies, to which
 * `onChange` posts a changed entry (src/daemon/queues.ts `setPeerHop`).
 *
 * When to refresh: when the kernel says something it depends on changed (src/tun/hop-watch.ts:
 * a neighbour entry of a next hop, a route covering an endpoint, or events lost), `EVENT_DELAY_MS`
 * later so that a burst makes one refresh, but no sooner than `REFRESH_MS` after the previous
 * one began (a refresh asks one route per peer: on a large on-link mesh the next hops' entries go
 * STALE many times a second between them, and events must never cost more than the polling
 * they replace), and every `BACKSTOP_MS` in any case. This runs on
 * queue 0's thread, between its batches: a refresh every second there cost 0.5 ms of each second
 * (docs/performance.md, "Latency: where the tail comes from"), and the kernel announces every
 * state change that matters (REACHABLE -> STALE included), so polling bought nothing but the
 * stall. Without the subscription (it could not be opened) it polls every `REFRESH_MS`.
 *
 * Not per packet: one netlink round trip per peer and one neighbour dump per refresh.
 */
import { formatIPv4, prefixContains } from '../routing/prefix.js';
import { HOP_INTS, hopEntry, readHop, writeHop } from '../dataplane/hops.js';
import type { HopEvents } from '../tun/hop-watch.js';
import { NUD, nudName, type NeighbourInfo, type RouteLookup } from '../tun/netlink.js';
import type { Logger } from './logger.js';

/** How often the kernel's tables are read again when no event says they changed (lost events' backstop). */
export const BACKSTOP_MS = 10_000;
/** How often they are read without the event subscription (it could not be opened). */
export const REFRESH_MS = 1000;
/** An event's refresh runs this long after it, so that a burst of events makes one. */
export const EVENT_DELAY_MS = 20;

/** Neighbour states whose link-layer address the kernel itself sends to. */
const USABLE = NUD.REACHABLE | NUD.STALE | NUD.DELAY | NUD.PROBE | NUD.PERMANENT | NUD.NOARP;

/** What NextHops needs from rtnetlink (src/tun/netlink.ts Rtnl). */
export interface HopSource {
  routeGet(dst: number, src: number): Promise<RouteLookup>;
  neighbours(): Promise<NeighbourInfo[]>;
  useNeighbour(ifindex: number, dst: number, create?: boolean): Promise<void>;
  /** Subscribe to neighbour and route changes (src/tun/hop-watch.ts); throws if it cannot. Absent: poll. */
  watchHops?(on: HopEvents): { close(): void };
}

/** One peer's next hop as the status report shows it. */
export interface HopStatus {
  /** `packet`: sent through AF_PACKET to `mac`; `raw`: through the raw socket (no usable entry). */
  send: 'packet' | 'raw';
  /** The neighbour the packets go to: the route's gateway, or the endpoint itself. */
  via?: string;
  ifindex?: number;
  mac?: string;
  /** The neighbour entry's NUD state, or why there is none. */
  state: string;
}

export class NextHops {
  /** The table the data path reads (native sendPacket), HOP_INTS int32s per peer. */
  readonly table: Int32Array;
  private readonly status: HopStatus[];
  private timer: NodeJS.Timeout | null = null;
  /** An event's refresh, due EVENT_DELAY_MS after it. */
  private soonTimer: NodeJS.Timeout | null = null;
  private watch: { close(): void } | null = null;
  private running: Promise<void> | null = null;
  /** A refresh was asked for while one ran: run another when it ends. */
  private again = false;
  /** When the last refresh through `tick` began (Date.now()): events wait for REFRESH_MS after it. */
  private lastStart = -Infinity;
  private stopped = false;
  /** Each peer's next hop (gateway or endpoint) at the last refresh: whose neighbour events matter. */
  private vias = new Set<number>();

  /**
   * `endpoints[i]`: peer i's underlay address; `local`: ours (the routes' source). `onChange(i)`
   * is called after peer i's entry changed (the daemon copies it to the queue workers).
   */
  constructor(
    private readonly source: HopSource,
    private readonly endpoints: readonly number[],
    private readonly names: readonly string[],
    private readonly local: number,
    private readonly log: Logger,
    private readonly onChange: (i: number) => void = () => {},
  ) {
    this.table = new Int32Array(endpoints.length * HOP_INTS);
    this.status = endpoints.map(() => ({ send: 'raw', state: 'not looked up yet' }));
  }

  /** Peer i's next hop for `ipipd status`. */
  hopStatus(i: number): HopStatus {
    return { ...this.status[i]! };
  }

  /**
   * Read the kernel's tables once and update every peer's entry. Never throws: a failed lookup
   * leaves that peer on the raw socket, with the reason in its status.
   */
  async refresh(): Promise<void> {
    let neighbours: NeighbourInfo[];
    try {
      neighbours = await this.source.neighbours();
    } catch (err) {
      for (let i = 0; i < this.endpoints.length; i++) this.set(i, null, { send: 'raw', state: `neighbour table unreadable: ${(err as Error).message}` });
      return;
    }
    const vias = new Set<number>();
    for (let i = 0; i < this.endpoints.length; i++) {
      if (this.stopped) return;
      const endpoint = this.endpoints[i]!;
      let route: RouteLookup;
      try {
        route = await this.source.routeGet(endpoint, this.local);
      } catch (err) {
        this.set(i, null, { send: 'raw', state: `no route: ${(err as Error).message}` });
        continue;
      }
      const via = route.gateway ?? endpoint;
      vias.add(via);
      const n = neighbours.find((x) => x.ifindex === route.oif && x.dst === via);
      const base = { via: formatIPv4(via), ifindex: route.oif };
      if (n === undefined || (n.state & (NUD.INCOMPLETE | NUD.FAILED)) !== 0 || n.state === 0) {
        // Ask the kernel to resolve it now; meanwhile the raw socket carries the packets.
        if (n === undefined) await this.nudge(route.oif, via, true);
        this.set(i, null, { send: 'raw', ...base, state: n === undefined ? 'no neighbour entry yet' : nudName(n.state) });
        continue;
      }
      if ((n.state & USABLE) === 0 || n.lladdr === undefined || n.lladdr.length !== 6) {
        this.set(i, null, { send: 'raw', ...base, state: n.lladdr === undefined || n.lladdr.length === 6 ? nudName(n.state) : `${n.lladdr.length}-byte link-layer address` });
        continue;
      }
      // Nothing the data path sends tells the kernel this entry is in use: have it re-probed.
      if ((n.state & NUD.STALE) !== 0) await this.nudge(route.oif, via, false);
      this.set(i, n.lladdr, { send: 'packet', ...base, state: nudName(n.state) });
    }
    this.vias = vias;
  }

  /**
   * Refresh now, then on the kernel's events and every BACKSTOP_MS (every REFRESH_MS without
   * events) until `stop`. The timers do not keep the process alive.
   */
  async start(): Promise<void> {
    // Subscribed first: the first refresh creates missing entries, and their resolution a few
    // milliseconds later is an event that must not be missed.
    if (this.source.watchHops) {
      try {
        this.watch = this.source.watchHops({
          // While a refresh runs, which next hops it will find is not known yet: any entry counts.
          neighbour: (_ifindex, dst) => {
            if (this.running !== null || this.vias.has(dst)) this.soon();
          },
          route: (dst, dstLen) => {
            if (this.endpoints.some((e) => prefixContains(dst, dstLen, e))) this.soon();
          },
          lost: () => this.soon(),
        });
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, `no neighbour and route events; reading the kernel's tables every ${REFRESH_MS} ms instead`);
      }
    }
    this.tick();
    await this.running;
    if (this.stopped) return;
    this.timer = setInterval(() => this.tick(), this.watch ? BACKSTOP_MS : REFRESH_MS);
    this.timer.unref();
  }

  /** Stop refreshing; waits for a refresh under way. The table keeps its last contents. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    if (this.soonTimer !== null) clearTimeout(this.soonTimer);
    this.timer = this.soonTimer = null;
    this.watch?.close();
    this.watch = null;
    await this.running;
  }

  /**
   * An event: one refresh EVENT_DELAY_MS from now, or REFRESH_MS after the last one began if
   * that is later (unless one is already due).
   */
  private soon(): void {
    if (this.stopped || this.soonTimer !== null) return;
    const wait = Math.max(EVENT_DELAY_MS, this.lastStart + REFRESH_MS - Date.now());
    this.soonTimer = setTimeout(() => {
      this.soonTimer = null;
      this.tick(true);
    }, wait);
    this.soonTimer.unref();
  }

  /**
   * A refresh, unless one is under way; then, for an event (`again`), one more after it: the
   * event may have come after that refresh read the table. The backstop just skips.
   */
  private tick(again = false): void {
    if (this.stopped) return;
    if (this.running !== null) {
      if (again) this.again = true;
      return;
    }
    this.lastStart = Date.now();
    this.running = this.refresh().finally(() => {
      this.running = null;
      if (this.again) {
        this.again = false;
        this.soon();
      }
    });
  }

  private async nudge(ifindex: number, dst: number, create: boolean): Promise<void> {
    try {
      await this.source.useNeighbour(ifindex, dst, create);
    } catch {
      // The entry went away in between, or the device cannot resolve: the next refresh sees it.
    }
  }

  private set(i: number, mac: Uint8Array | null, st: HopStatus): void {
    const ifindex = mac === null ? 0 : st.ifindex ?? 0;
    const before = hopEntry(this.table, i);
    writeHop(this.table, i, ifindex, mac);
    const after = readHop(this.table, i);
    if (after !== null) st.mac = after[1];
    const prev = this.status[i]!;
    this.status[i] = st;
    if (hopEntry(this.table, i).some((v, k) => v !== before[k])) {
      this.log.info({ peer: this.names[i], send: st.send, via: st.via, ifindex: st.ifindex, mac: st.mac, state: st.state }, after === null ? 'peer sent through the raw socket' : 'peer sent through AF_PACKET');
      this.onChange(i);
    } else if (prev.state !== st.state && after === null) {
      this.log.debug({ peer: this.names[i], state: st.state }, 'next hop not usable yet');
    }
  }
}
