/**
 * rtnetlink, by name: the operations the daemon needs on links, addresses, routes and
 * neighbours, over one socket of ipipd's own (src/tun/nl-socket.ts; messages in
 * src/tun/rtnetlink.ts). What the kernel wants, learned the hard way:
 *   - adds need NLM_F_CREATE|NLM_F_EXCL (without CREATE the kernel answers ENOENT);
 *   - route deletes need `scope: NOWHERE` (otherwise ESRCH);
 *   - an `onlink` next hop is rtm_flags bit RTNH_F_ONLINK (4);
 *   - a table id above 255 only fits RTA_TABLE (rtm_table is one byte: RT_TABLE_UNSPEC there).
 * Every request but a dump asks for an ACK, so that each one ends in a definite answer. Errors
 * come back as `NetlinkError` with the errno name in `code` and the operation in `op`.
 *
 * Addresses are IPv4 as signed 32-bit ints, like everywhere else in ipipd.
 */
import { watchHops, type HopEvents } from './hop-watch.js';
import { NetlinkError, NetlinkSocket } from './nl-socket.js';
import {
  AF_INET,
  AF_UNSPEC,
  decodeAddr,
  decodeLink,
  decodeNeigh,
  decodeRoute,
  encodeAddr,
  encodeLink,
  encodeNeigh,
  encodeRoute,
  IFF_UP,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NLM_F_REQUEST,
  NTF_USE,
  routeTable,
  RTM_DELADDR,
  RTM_DELLINK,
  RTM_DELROUTE,
  RTM_GETADDR,
  RTM_GETLINK,
  RTM_GETNEIGH,
  RTM_GETROUTE,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  RTM_SETLINK,
  type RouteMsg,
} from './rtnetlink.js';

const RTNH_F_ONLINK = 4;
const RT_TABLE_MAIN = 254;
const RTPROT_STATIC = 4;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RT_SCOPE_NOWHERE = 255;
const RTN_UNSPEC = 0;
const RTN_UNICAST = 1;
/** Requests that get no answer in this time fail with ETIMEDOUT rather than hang start-up. */
const REQUEST_TIMEOUT_MS = 5000;
const DUMP = NLM_F_REQUEST | NLM_F_DUMP;
const ACKED = NLM_F_REQUEST | NLM_F_ACK;

export interface LinkInfo {
  index: number;
  name: string;
  mtu: number;
  up: boolean;
  txqlen: number;
}

export interface AddressInfo {
  index: number;
  address: number;
  prefixLength: number;
}

export interface RouteSpec {
  /** Destination network (int32) and prefix length. */
  dst: number;
  dstLen: number;
  /** Output interface index. */
  oif: number;
  /** Optional next hop (int32). */
  gateway?: number;
  /** Mark the next hop as on-link (RTNH_F_ONLINK), as Calico's `via X dev tunl0 onlink`. */
  onlink?: boolean;
  /** Routing table id; default main (254). */
  table?: number;
  /** Route metric. */
  metric?: number;
  /** rtm_protocol, the route's origin marker (`ip route ... proto N`); default static (4). */
  protocol?: number;
  /** A blackhole route (RTN_BLACKHOLE, `ip route add blackhole ...`): no device; `oif` is ignored. */
  blackhole?: boolean;
}

/** What the kernel would do with a datagram to one address (`ip route get`). */
export interface RouteLookup {
  /** Output interface index. */
  oif: number;
  /** The next hop's address if the route has a gateway, else undefined (the address itself is on-link). */
  gateway: number | undefined;
}

/** One IPv4 neighbour (ARP) entry. */
export interface NeighbourInfo {
  ifindex: number;
  dst: number;
  /** Link-layer address, if the entry has one. */
  lladdr: Buffer | undefined;
  /** NUD_* bits (include/uapi/linux/neighbour.h): REACHABLE 0x02, STALE 0x04, ... */
  state: number;
}

/** NUD_* neighbour states (include/uapi/linux/neighbour.h). */
export const NUD = {
  INCOMPLETE: 0x01,
  REACHABLE: 0x02,
  STALE: 0x04,
  DELAY: 0x08,
  PROBE: 0x10,
  FAILED: 0x20,
  NOARP: 0x40,
  PERMANENT: 0x80,
} as const;

const NUD_NAMES: ReadonlyArray<[string, number]> = Object.entries(NUD).map(([k, v]) => [k.toLowerCase(), v]);

/** The names of the NUD_* bits in `state`, e.g. 'reachable', 'stale', or 'none'. */
export function nudName(state: number): string {
  const names = NUD_NAMES.filter(([, v]) => (state & v) !== 0).map(([k]) => k);
  return names.length > 0 ? names.join('|') : 'none';
}

export interface RouteInfo {
  dst: number;
  dstLen: number;
  oif: number | undefined;
  gateway: number | undefined;
  table: number;
  /** rtm_protocol: who installed it (2 kernel, 4 static, ipipd's own RTPROT_IPIPD ...). */
  protocol: number;
  /** rtm_type: 1 unicast, 6 blackhole (RTN_BLACKHOLE) ... */
  type: number;
}

/** rtm_type of a blackhole route. */
export const RTN_BLACKHOLE = 6;

/** The fixed part of a route request: rtm_table holds ids below 256, RTA_TABLE any. */
function routeMsg(r: RouteSpec, over: Partial<RouteMsg>): RouteMsg {
  const table = r.table ?? RT_TABLE_MAIN;
  return {
    family: AF_INET,
    dstLen: r.dstLen,
    srcLen: 0,
    tos: 0,
    table: table < 256 ? table : 0,
    protocol: 0,
    scope: RT_SCOPE_UNIVERSE,
    type: RTN_UNSPEC,
    flags: 0,
    dst: r.dst,
    oif: r.blackhole ? undefined : r.oif,
    gateway: r.gateway,
    priority: r.metric,
    tableId: table,
    ...over,
  };
}

/** One rtnetlink socket. Not kept alive by itself (only a request in flight keeps the process up). */
export class Rtnl {
  private readonly sock = new NetlinkSocket();

  /** Neighbour and route changes, on a socket of their own (src/tun/hop-watch.ts): for the next-hop table. */
  watchHops(on: HopEvents): { close(): void } {
    return watchHops(on);
  }

  async links(): Promise<LinkInfo[]> {
    const out: LinkInfo[] = [];
    await this.sock.request('list links', encodeLink(RTM_GETLINK, DUMP, { family: AF_UNSPEC, type: 0, index: 0, flags: 0, change: 0 }), (type, b, off, len) => {
      if (type !== RTM_NEWLINK) return;
      const m = decodeLink(b, off, len);
      out.push({ index: m.index, name: m.name ?? '', mtu: m.mtu ?? 0, up: (m.flags & IFF_UP) !== 0, txqlen: m.txqlen ?? 0 });
    }, REQUEST_TIMEOUT_MS);
    return out;
  }

  async link(name: string): Promise<LinkInfo | undefined> {
    return (await this.links()).find((l) => l.name === name);
  }

  /** Delete a link (RTM_DELLINK), e.g. a TUN a dead daemon left behind. */
  async delLink(index: number): Promise<void> {
    await this.acked(`delete link ${index}`, encodeLink(RTM_DELLINK, ACKED, { family: AF_UNSPEC, type: 0, index, flags: 0, change: 0 }));
  }

  /** Set any of: administrative up/down, MTU, transmit queue length. */
  async setLink(index: number, change: { up?: boolean; mtu?: number; txqlen?: number }): Promise<void> {
    const up = change.up === undefined ? 0 : IFF_UP;
    const msg = encodeLink(RTM_SETLINK, ACKED, { family: AF_UNSPEC, type: 0, index, flags: change.up ? IFF_UP : 0, change: up, mtu: change.mtu, txqlen: change.txqlen });
    await this.acked(`set link ${index} ${JSON.stringify(change)}`, msg);
  }

  async addresses(): Promise<AddressInfo[]> {
    const out: AddressInfo[] = [];
    await this.sock.request('list addresses', encodeAddr(RTM_GETADDR, DUMP, { family: AF_INET, prefixLength: 0, flags: 0, scope: 0, index: 0 }), (type, b, off, len) => {
      if (type !== RTM_NEWADDR) return;
      const m = decodeAddr(b, off, len);
      const a = m.local ?? m.address;
      if (m.family === AF_INET && a !== undefined) out.push({ index: m.index, address: a, prefixLength: m.prefixLength });
    }, REQUEST_TIMEOUT_MS);
    return out;
  }

  /** Add an IPv4 address; fails with EEXIST if the link already has it. */
  async addAddress(index: number, address: number, prefixLength: number): Promise<void> {
    const m = { family: AF_INET, prefixLength, flags: 0, scope: RT_SCOPE_UNIVERSE, index, local: address, address };
    await this.acked(`add address to link ${index}`, encodeAddr(RTM_NEWADDR, ACKED | NLM_F_CREATE | NLM_F_EXCL, m));
  }

  async delAddress(index: number, address: number, prefixLength: number): Promise<void> {
    const m = { family: AF_INET, prefixLength, flags: 0, scope: RT_SCOPE_UNIVERSE, index, local: address, address };
    await this.acked(`delete address from link ${index}`, encodeAddr(RTM_DELADDR, ACKED, m));
  }

  /**
   * Add a unicast (or blackhole) route; fails with EEXIST if one with the same destination,
   * table and metric is there. `replace`: take that one's place instead (NLM_F_REPLACE, in one
   * step: no moment without a route), or add it if there is none.
   */
  async addRoute(r: RouteSpec, replace = false): Promise<void> {
    const m = routeMsg(r, {
      protocol: r.protocol ?? RTPROT_STATIC,
      scope: r.gateway === undefined && !r.blackhole ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE,
      type: r.blackhole ? RTN_BLACKHOLE : RTN_UNICAST,
      flags: r.onlink ? RTNH_F_ONLINK : 0,
    });
    await this.acked(`add route ${fmt(r.dst)}/${r.dstLen}`, encodeRoute(RTM_NEWROUTE, ACKED | NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL), m));
  }

  async delRoute(r: RouteSpec): Promise<void> {
    const m = routeMsg(r, { scope: RT_SCOPE_NOWHERE, type: r.blackhole ? RTN_BLACKHOLE : RTN_UNSPEC });
    await this.acked(`delete route ${fmt(r.dst)}/${r.dstLen}`, encodeRoute(RTM_DELROUTE, ACKED, m));
  }

  async routes(table = RT_TABLE_MAIN): Promise<RouteInfo[]> {
    const out: RouteInfo[] = [];
    await this.sock.request('list routes', encodeRoute(RTM_GETROUTE, DUMP, emptyRoute()), (type, b, off, len) => {
      if (type !== RTM_NEWROUTE) return;
      const m = decodeRoute(b, off, len);
      const t = routeTable(m);
      if (m.family !== AF_INET || t !== table) return;
      out.push({ dst: m.dst ?? 0, dstLen: m.dstLen, oif: m.oif, gateway: m.gateway, table: t, protocol: m.protocol, type: m.type });
    }, REQUEST_TIMEOUT_MS);
    return out;
  }

  /** Look up the route the kernel would take to `dst` from `src` (RTM_GETROUTE, `ip route get`). */
  async routeGet(dst: number, src: number): Promise<RouteLookup> {
    const op = `route get ${fmt(dst)}`;
    let found: RouteLookup | undefined;
    const req = encodeRoute(RTM_GETROUTE, ACKED, { ...emptyRoute(), dstLen: 32, srcLen: 32, dst, src });
    await this.sock.request(op, req, (type, b, off, len) => {
      if (type !== RTM_NEWROUTE || found !== undefined) return;
      const m = decodeRoute(b, off, len);
      if (m.family === AF_INET && m.oif !== undefined) found = { oif: m.oif, gateway: m.gateway };
    }, REQUEST_TIMEOUT_MS);
    if (found === undefined) throw NetlinkError.of(op, 'ENETUNREACH');
    return found;
  }

  /** Every IPv4 neighbour entry (RTM_GETNEIGH dump). */
  async neighbours(): Promise<NeighbourInfo[]> {
    const out: NeighbourInfo[] = [];
    await this.sock.request('list neighbours', encodeNeigh(RTM_GETNEIGH, DUMP, { family: AF_INET, ifindex: 0, state: 0, flags: 0, type: 0 }), (type, b, off, len) => {
      if (type !== RTM_NEWNEIGH) return;
      const m = decodeNeigh(b, off, len);
      if (m.family === AF_INET && m.dst !== undefined) out.push({ ifindex: m.ifindex, dst: m.dst, lladdr: m.lladdr, state: m.state });
    }, REQUEST_TIMEOUT_MS);
    return out;
  }

  /**
   * Tell the kernel that the neighbour entry for `dst` on `ifindex` is in use (RTM_NEWNEIGH with
   * NTF_USE, no NLM_F_CREATE): a STALE entry goes to DELAY and is probed, as if a packet had
   * been sent through it, so that a changed link-layer address is learned. With `create`, a
   * missing entry is created and resolved (ARP) at once; without, ENOENT if there is none.
   */
  async useNeighbour(ifindex: number, dst: number, create = false): Promise<void> {
    const msg = encodeNeigh(RTM_NEWNEIGH, ACKED | (create ? NLM_F_CREATE : 0), { family: AF_INET, ifindex, state: 0, flags: NTF_USE, type: 0, dst });
    await this.acked(`use neighbour ${fmt(dst)}`, msg);
  }

  close(): void {
    this.sock.close();
  }

  private acked(op: string, msg: Buffer): Promise<void> {
    return this.sock.request(op, msg, undefined, REQUEST_TIMEOUT_MS);
  }
}

function emptyRoute(): RouteMsg {
  return { family: AF_INET, dstLen: 0, srcLen: 0, tos: 0, table: 0, protocol: 0, scope: 0, type: 0, flags: 0 };
}

function fmt(a: number): string {
  return `${(a >>> 24) & 255}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}
