/**
 * The kernel's IPv4 routes as they change (RTM_NEWROUTE / RTM_DELROUTE on the RTNLGRP_IPV4_ROUTE
 * multicast group), on an rtnetlink socket of its own (src/tun/nl-socket.ts), with a dump
 * (RTM_GETROUTE) to start from and to resynchronise after a lost event. Flow: `start` joins the
 * group, then dumps; events that arrive during the dump are held and replayed after it, so a
 * route deleted meanwhile is not brought back; `close`.
 *
 * Nothing escapes the socket's callback: a message that does not parse is counted and skipped
 * (EBADMSG), and a burst that overflows the socket (ENOBUFS: events were lost) is answered with
 * a fresh dump. The dump's replies go to the dump (the socket matches them by sequence number),
 * not to the event handler.
 */
import { NetlinkSocket, type NetlinkError } from './nl-socket.js';
import {
  AF_INET,
  decodeRoute,
  encodeRoute,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  routeTable,
  RTM_DELROUTE,
  RTM_GETROUTE,
  RTM_NEWROUTE,
  RTNLGRP_IPV4_ROUTE,
} from './rtnetlink.js';

const RTN_UNICAST = 1;
const RECV_BUFFER = 32 << 20;
const DUMP_TIMEOUT_MS = 10_000;

/** One route as the kernel announced it; `gateway` and `oif` undefined when it has none. */
export interface RouteEvent {
  readonly kind: 'add' | 'del';
  readonly dst: number;
  readonly dstLen: number;
  readonly gateway: number | undefined;
  readonly oif: number | undefined;
  readonly table: number;
}

export interface RouteWatchHandlers {
  /** Events in arrival order; `dump` true: the full table (replace what you had). Must not throw (it is caught and counted). */
  onRoutes(events: RouteEvent[], dump: boolean): void;
  /** A socket error or a message that could not be parsed; the watch goes on. */
  onError(what: string): void;
}

/** A unicast IPv4 route message as an event; null for any other (throws MalformedMessage). */
function toEvent(kind: 'add' | 'del', b: Buffer, off: number, len: number): RouteEvent | null {
  const m = decodeRoute(b, off, len);
  if (m.family !== AF_INET || m.type !== RTN_UNICAST) return null;
  return { kind, dst: m.dst ?? 0, dstLen: m.dstLen, gateway: m.gateway, oif: m.oif, table: routeTable(m) };
}

/** The dump request: every IPv4 route. */
const DUMP_REQUEST = (): Buffer =>
  encodeRoute(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, { family: AF_INET, dstLen: 0, srcLen: 0, tos: 0, table: 0, protocol: 0, scope: 0, type: 0, flags: 0 });

export class RouteWatch {
  private readonly sock: NetlinkSocket;
  private held: RouteEvent[] | null = null;
  private arrived: RouteEvent[] = [];
  private closed = false;
  /** Events and dumps seen, and failures absorbed (for the status report). */
  events = 0;
  dumps = 0;
  errors = 0;

  constructor(private readonly h: RouteWatchHandlers) {
    // Forced past net.core.rmem_max when we may; else capped by it: a burst that overflows is
    // resynchronised by a dump anyway.
    this.sock = new NetlinkSocket(
      { onEvent: (type, b, off, len) => this.onEvent(type, b, off, len), onEventsEnd: () => this.onEventsEnd(), onError: (err) => this.onSocketError(err) },
      RECV_BUFFER,
    );
  }

  /** Join the route group, then dump: resolves once the dump has been handed to `onRoutes`. */
  async start(): Promise<void> {
    this.sock.join(RTNLGRP_IPV4_ROUTE);
    await this.dump();
  }

  /** Read the whole table again (start, and after lost events); events meanwhile are held. */
  async dump(): Promise<void> {
    if (this.closed || this.held !== null) return;
    this.held = [];
    let routes: RouteEvent[] = [];
    try {
      await this.sock.request('route dump', DUMP_REQUEST(), (type, b, off, len) => {
        const e = type === RTM_NEWROUTE ? toEvent('add', b, off, len) : null;
        if (e) routes.push(e);
      }, DUMP_TIMEOUT_MS);
    } catch (err) {
      this.failed(`route dump: ${(err as { code?: string }).code ?? String(err)}`);
      routes = [];
      const held = this.held;
      this.held = null;
      if (held.length) this.deliver(held, false);
      return;
    }
    const held = this.held;
    this.held = null;
    this.dumps++;
    this.deliver(routes, true);
    if (held.length) this.deliver(held, false);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
  }

  /**
   * One multicast message (a reply to our own dump goes to the dump instead). A message that
   * does not parse throws, and the socket reports it to onSocketError as EBADMSG.
   */
  private onEvent(type: number, b: Buffer, off: number, len: number): void {
    if (type !== RTM_NEWROUTE && type !== RTM_DELROUTE) return;
    const e = toEvent(type === RTM_NEWROUTE ? 'add' : 'del', b, off, len);
    if (e === null) return;
    this.events++;
    this.arrived.push(e);
  }

  /** The events of one wake-up, delivered together (or held while a dump runs). */
  private onEventsEnd(): void {
    const out = this.arrived;
    if (out.length === 0) return;
    this.arrived = [];
    if (this.held !== null) this.held.push(...out);
    else this.deliver(out, false);
  }

  private onSocketError(err: NetlinkError): void {
    if (this.closed) return;
    if (err.code === 'EBADMSG') {
      this.failed(`route message that does not parse: ${err.message}`);
      return;
    }
    this.failed(`route socket: ${err.code}`);
    // ENOBUFS: events were lost; the table is read again.
    void this.dump();
  }

  private deliver(events: RouteEvent[], dump: boolean): void {
    try {
      this.h.onRoutes(events, dump);
    } catch (err) {
      this.failed(`route handler: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private failed(what: string): void {
    this.errors++;
    try {
      this.h.onError(what);
    } catch {
      // the handler's own failure is not ours to report
    }
  }
}
