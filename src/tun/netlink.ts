/**
 * rtnetlink, wrapped: the only module that talks to the `netlink` package.
 *
 * The daemon needs a handful of operations on links, addresses and routes; this file gives them
 * names and hides the package's gotchas (FINDINGS.md, measured on netlink 0.3.0, pinned):
 *   - a link's index is `data.index` (the package README's `link.index` is wrong);
 *   - adds need NLM_F_CREATE|NLM_F_EXCL (without CREATE the kernel answers ENOENT);
 *   - route deletes need `scope: NOWHERE` (otherwise ESRCH);
 *   - an `onlink` next hop is rtm_flags bit RTNH_F_ONLINK (4), which the typings don't name;
 *   - an exception thrown inside the package's low-level socket listener aborts the process
 *     (SIGABRT, bypassing `uncaughtException`): we never register listeners that can throw.
 * Errors come back as `NetlinkError` with the errno name in `code` and the operation in `op`.
 *
 * Addresses are IPv4 as signed 32-bit ints, like everywhere else in ipipd.
 */
import { createRequire } from 'node:module';
import type * as NL from 'netlink';

const require = createRequire(import.meta.url);
// The package is CommonJS; load it once, typed by its own declarations.
const netlink: typeof NL = require('netlink');

const AF_INET = 2;
const NLM_F_CREATE = 0x400;
const NLM_F_EXCL = 0x200;
const NLM_F_REPLACE = 0x100;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const RTNH_F_ONLINK = 4;
const RT_TABLE_MAIN = 254;
const RTPROT_STATIC = 4;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RT_SCOPE_NOWHERE = 255;
const RTN_UNICAST = 1;
/** Requests that get no answer in this time fail with ETIMEDOUT rather than hang start-up. */
const REQUEST_TIMEOUT_MS = 5000;

export class NetlinkError extends Error {
  readonly code: string;
  readonly op: string;
  constructor(op: string, cause: unknown) {
    const c = cause as { code?: unknown; message?: unknown };
    const message = typeof c?.message === 'string' ? c.message : String(cause);
    // The package reports kernel rejections only as text ("Request rejected: EEXIST").
    const code = typeof c?.code === 'string' ? c.code : (/\b(E[A-Z0-9]{2,})\b/.exec(message)?.[1] ?? 'EUNKNOWN');
    super(`${op}: ${code === 'EUNKNOWN' ? message : code}`);
    this.name = 'NetlinkError';
    this.code = code;
    this.op = op;
  }
}

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

function ipBuf(a: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(a | 0, 0);
  return b;
}

function bufIp(b: Buffer | undefined): number | undefined {
  return b && b.length === 4 ? b.readInt32BE(0) : undefined;
}

/** One rtnetlink socket. Not kept alive by itself (the package's sockets are unref'd). */
export class Rtnl {
  private readonly sock: NL.RtNetlinkSocket;
  private closed = false;

  constructor() {
    this.sock = netlink.createRtNetlink();
    // Never let an 'error' event become an uncaught exception; requests report their own errors.
    this.sock.socket.on('error', () => {});
    this.sock.on('invalid', () => {});
  }

  private async run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new NetlinkError(op, err);
    }
  }

  async links(): Promise<LinkInfo[]> {
    const msgs = await this.run('list links', () => this.sock.getLinks(undefined, undefined, { timeout: REQUEST_TIMEOUT_MS }));
    return msgs.map((m) => ({
      index: m.data.index ?? 0,
      name: m.attrs.ifname ?? '',
      mtu: m.attrs.mtu ?? 0,
      up: !!m.data.flags?.up,
      txqlen: m.attrs.txqlen ?? 0,
    }));
  }

  async link(name: string): Promise<LinkInfo | undefined> {
    return (await this.links()).find((l) => l.name === name);
  }

  /** Delete a link (RTM_DELLINK), e.g. a TUN a dead daemon left behind. */
  async delLink(index: number): Promise<void> {
    await this.run(`delete link ${index}`, () => this.sock.delLink({ index }, undefined, { timeout: REQUEST_TIMEOUT_MS }));
  }

  /** Set any of: administrative up/down, MTU, transmit queue length. */
  async setLink(index: number, change: { up?: boolean; mtu?: number; txqlen?: number }): Promise<void> {
    const data: NL.rt.Link = { index };
    if (change.up !== undefined) {
      data.change = { up: true };
      data.flags = change.up ? { up: true } : {};
    }
    const attrs: NL.ifla.LinkAttrs = {};
    if (change.mtu !== undefined) attrs.mtu = change.mtu;
    if (change.txqlen !== undefined) attrs.txqlen = change.txqlen;
    await this.run(`set link ${index} ${JSON.stringify(change)}`, () =>
      this.sock.setLink(data, attrs, { timeout: REQUEST_TIMEOUT_MS }),
    );
  }

  async addresses(): Promise<AddressInfo[]> {
    const msgs = await this.run('list addresses', () =>
      this.sock.getAddresses({ family: AF_INET }, undefined, { timeout: REQUEST_TIMEOUT_MS }),
    );
    const out: AddressInfo[] = [];
    for (const m of msgs) {
      if (m.data.family !== AF_INET) continue;
      const a = bufIp(m.attrs.local) ?? bufIp(m.attrs.address);
      if (a === undefined) continue;
      out.push({ index: m.data.index ?? 0, address: a, prefixLength: m.data.prefixlen ?? 32 });
    }
    return out;
  }

  /** Add an IPv4 address; fails with EEXIST if the link already has it. */
  async addAddress(index: number, address: number, prefixLength: number): Promise<void> {
    await this.run(`add address to link ${index}`, () =>
      this.sock.newAddress(
        { family: AF_INET, prefixlen: prefixLength, index, scope: RT_SCOPE_UNIVERSE },
        { local: ipBuf(address), address: ipBuf(address) },
        { flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, timeout: REQUEST_TIMEOUT_MS },
      ),
    );
  }

  async delAddress(index: number, address: number, prefixLength: number): Promise<void> {
    await this.run(`delete address from link ${index}`, () =>
      this.sock.delAddress(
        { family: AF_INET, prefixlen: prefixLength, index },
        { local: ipBuf(address), address: ipBuf(address) },
        { timeout: REQUEST_TIMEOUT_MS },
      ),
    );
  }

  /**
   * Add a unicast (or blackhole) route; fails with EEXIST if one with the same destination,
   * table and metric is there. `replace`: take that one's place instead (NLM_F_REPLACE, in one
   * step: no moment without a route), or add it if there is none.
   */
  async addRoute(r: RouteSpec, replace = false): Promise<void> {
    const attrs: NL.rt.RouteAttrs = r.blackhole ? { dst: ipBuf(r.dst) } : { dst: ipBuf(r.dst), oif: r.oif };
    if (r.gateway !== undefined) attrs.gateway = ipBuf(r.gateway);
    if (r.metric !== undefined) attrs.priority = r.metric;
    await this.run(`add route ${fmt(r.dst)}/${r.dstLen}`, () =>
      this.sock.newRoute(
        {
          family: AF_INET,
          dstLen: r.dstLen,
          table: r.table ?? RT_TABLE_MAIN,
          protocol: (r.protocol ?? RTPROT_STATIC) as NL.rt.RouteProtocol,
          scope: r.gateway === undefined && !r.blackhole ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE,
          type: r.blackhole ? RTN_BLACKHOLE : RTN_UNICAST,
          flags: r.onlink ? { __unknown: RTNH_F_ONLINK } : {},
        },
        attrs,
        { flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL), timeout: REQUEST_TIMEOUT_MS },
      ),
    );
  }

  async delRoute(r: RouteSpec): Promise<void> {
    const attrs: NL.rt.RouteAttrs = r.blackhole ? { dst: ipBuf(r.dst) } : { dst: ipBuf(r.dst), oif: r.oif };
    if (r.gateway !== undefined) attrs.gateway = ipBuf(r.gateway);
    if (r.metric !== undefined) attrs.priority = r.metric;
    await this.run(`delete route ${fmt(r.dst)}/${r.dstLen}`, () =>
      this.sock.delRoute(
        { family: AF_INET, dstLen: r.dstLen, table: r.table ?? RT_TABLE_MAIN, scope: RT_SCOPE_NOWHERE, ...(r.blackhole ? { type: RTN_BLACKHOLE } : {}) },
        attrs,
        { timeout: REQUEST_TIMEOUT_MS },
      ),
    );
  }

  async routes(table = RT_TABLE_MAIN): Promise<RouteInfo[]> {
    const msgs = await this.run('list routes', () =>
      this.sock.getRoutes({ family: AF_INET }, undefined, { timeout: REQUEST_TIMEOUT_MS }),
    );
    const out: RouteInfo[] = [];
    for (const m of msgs) {
      const t = m.attrs.table ?? m.data.table ?? 0;
      if (m.data.family !== AF_INET || t !== table) continue;
      out.push({
        dst: bufIp(m.attrs.dst) ?? 0,
        dstLen: m.data.dstLen ?? 0,
        oif: m.attrs.oif,
        gateway: bufIp(m.attrs.gateway),
        table: t,
        protocol: typeof m.data.protocol === 'string' ? (netlink.rt.RouteProtocol[m.data.protocol] ?? 0) : (m.data.protocol ?? 0),
        type: typeof m.data.type === 'string' ? (netlink.rt.RouteType[m.data.type] ?? 0) : (m.data.type ?? 0),
      });
    }
    return out;
  }

  /** Look up the route the kernel would take to `dst` from `src` (RTM_GETROUTE, `ip route get`). */
  async routeGet(dst: number, src: number): Promise<RouteLookup> {
    const msgs = await this.run(`route get ${fmt(dst)}`, () =>
      this.sock.getRoute({ family: AF_INET, dstLen: 32, srcLen: 32 }, { dst: ipBuf(dst), src: ipBuf(src) }, { timeout: REQUEST_TIMEOUT_MS }),
    );
    const m = msgs.find((x) => x.data.family === AF_INET && x.attrs.oif !== undefined);
    if (m === undefined) throw new NetlinkError(`route get ${fmt(dst)}`, { code: 'ENETUNREACH' });
    return { oif: m.attrs.oif!, gateway: bufIp(m.attrs.gateway) };
  }

  /** Every IPv4 neighbour entry (RTM_GETNEIGH dump). */
  async neighbours(): Promise<NeighbourInfo[]> {
    const msgs = await this.run('list neighbours', () => this.sock.getNeighbors({ family: AF_INET }, undefined, { timeout: REQUEST_TIMEOUT_MS }));
    const out: NeighbourInfo[] = [];
    for (const m of msgs) {
      const dst = bufIp(m.attrs.dst);
      if (m.data.family !== AF_INET || dst === undefined) continue;
      let state = 0;
      for (const [k, v] of NUD_NAMES) if ((m.data.state as Record<string, unknown> | undefined)?.[k] === true) state |= v;
      out.push({ ifindex: m.data.ifindex ?? 0, dst, lladdr: m.attrs.lladdr, state });
    }
    return out;
  }

  /**
   * Tell the kernel that the neighbour entry for `dst` on `ifindex` is in use (RTM_NEWNEIGH with
   * NTF_USE, no NLM_F_CREATE): a STALE entry goes to DELAY and is probed, as if a packet had
   * been sent through it, so that a changed link-layer address is learned. With `create`, a
   * missing entry is created and resolved (ARP) at once; without, ENOENT if there is none.
   */
  async useNeighbour(ifindex: number, dst: number, create = false): Promise<void> {
    await this.run(`use neighbour ${fmt(dst)}`, () =>
      this.sock.newNeighbor({ family: AF_INET, ifindex, flags: { use: true } }, { dst: ipBuf(dst) }, {
        flags: NLM_F_REQUEST | NLM_F_ACK | (create ? NLM_F_CREATE : 0),
        timeout: REQUEST_TIMEOUT_MS,
      }),
    );
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSocket(this.sock);
  }
}

function fmt(a: number): string {
  return `${(a >>> 24) & 255}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

/** Close an rtnetlink socket that the package may have closed already. */
export function closeSocket(sock: NL.RtNetlinkSocket): void {
  try {
    sock.socket.close();
  } catch {
    // already closed by the package: nothing left to release
  }
}

/** The package and the address decoding, for the kernel route watch (route-watch.ts). */
export { netlink as netlinkPackage, bufIp };
