/**
 * The kernel's IPv4 routes as they change (RTM_NEWROUTE / RTM_DELROUTE on the RTNLGRP_IPV4_ROUTE
 * multicast group), on an rtnetlink socket of its own, with a dump (RTM_GETROUTE) to start from
 * and to resynchronise after a lost event. Flow: `start` joins the group, then dumps; events
 * that arrive during the dump are held and replayed after it, so a route deleted meanwhile is
 * not brought back; `close`.
 *
 * FINDINGS.md: the package's high-level `message` event drops the message type (new or deleted),
 * so this listens on the low-level socket; an exception thrown inside that listener aborts the
 * process (SIGABRT), so the listener catches everything and counts it. A burst that overflows
 * the socket (ENOBUFS: events were lost) is answered with a fresh dump.
 */
import type * as NL from 'netlink';
import { bufIp, closeSocket, netlinkPackage as netlink } from './netlink.js';

const AF_INET = 2;
const RTM_NEWROUTE = 24;
const RTM_DELROUTE = 25;
const RTN_UNICAST = 1;
const RTNLGRP_IPV4_ROUTE = 7;
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

function toEvent(kind: 'add' | 'del', m: NL.rt.RouteMessage): RouteEvent | null {
  if (m.data.family !== AF_INET) return null;
  const type = m.data.type;
  if (type !== undefined && type !== RTN_UNICAST && type !== 'UNICAST') return null;
  return {
    kind,
    dst: bufIp(m.attrs.dst) ?? 0,
    dstLen: m.data.dstLen ?? 0,
    gateway: bufIp(m.attrs.gateway),
    oif: m.attrs.oif,
    table: m.attrs.table ?? m.data.table ?? 0,
  };
}

export class RouteWatch {
  private readonly sock: NL.RtNetlinkSocket;
  private held: RouteEvent[] | null = null;
  private closed = false;
  /** Events and dumps seen, and failures absorbed (for the status report). */
  events = 0;
  dumps = 0;
  errors = 0;

  constructor(private readonly h: RouteWatchHandlers) {
    this.sock = netlink.createRtNetlink();
    try {
      this.sock.socket.setRecvBufferSize(RECV_BUFFER);
    } catch {
      // Capped by net.core.rmem_max: a burst that overflows is resynchronised by a dump anyway.
    }
    this.sock.socket.on('error', (err) => {
      if (this.closed) return;
      this.failed(`route socket: ${(err as { code?: string }).code ?? String(err)}`);
      // ENOBUFS: events were lost; the table is read again.
      void this.dump();
    });
    this.sock.on('invalid', () => this.failed('route message that does not parse'));
    this.sock.socket.on('message', (msgs) => this.onMessages(msgs));
  }

  /** Join the route group, then dump: resolves once the dump has been handed to `onRoutes`. */
  async start(): Promise<void> {
    this.sock.addMembership(RTNLGRP_IPV4_ROUTE);
    await this.dump();
  }

  /** Read the whole table again (start, and after lost events); events meanwhile are held. */
  async dump(): Promise<void> {
    if (this.closed || this.held !== null) return;
    this.held = [];
    let routes: RouteEvent[] = [];
    try {
      const msgs = await this.sock.getRoutes({ family: AF_INET }, undefined, { timeout: DUMP_TIMEOUT_MS });
      for (const m of msgs) {
        const e = toEvent('add', m);
        if (e) routes.push(e);
      }
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
    closeSocket(this.sock);
  }

  /** The low-level listener: nothing may escape it (FINDINGS.md: it would abort the process). */
  private onMessages(msgs: NL.NetlinkMessage[]): void {
    try {
      const out: RouteEvent[] = [];
      for (const m of msgs) {
        if (m.type !== RTM_NEWROUTE && m.type !== RTM_DELROUTE) continue;
        // A reply to our own dump goes to its request, not here (the package matches the sequence number).
        const e = toEvent(m.type === RTM_NEWROUTE ? 'add' : 'del', netlink.rt.parseMessage(m.type, m.data) as NL.rt.RouteMessage);
        if (e) out.push(e);
      }
      if (out.length === 0) return;
      this.events += out.length;
      if (this.held !== null) this.held.push(...out);
      else this.deliver(out, false);
    } catch (err) {
      this.failed(`route event: ${err instanceof Error ? err.message : String(err)}`);
    }
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
