/**
 * rtnetlink messages, built and parsed (RFC 3549 §2; the kernel's include/uapi/linux/netlink.h,
 * rtnetlink.h, if_link.h, if_addr.h, neighbour.h): only the messages and attributes ipipd sends
 * and reads. Pure: no socket (src/tun/nl-socket.ts has it), no allocation beyond the results.
 *
 *     nlmsghdr, 16 bytes, host byte order; then the family header and its attributes:
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                          nlmsg_len                            |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |           nlmsg_type          |          nlmsg_flags          |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                          nlmsg_seq                            |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                          nlmsg_pid                            |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |  family header (ifinfomsg 16, ifaddrmsg 8, rtmsg 12, ndmsg 12) |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |    rta_len (incl. these 4)    |           rta_type            |  attributes, each
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  padded to 4 bytes
 *    |                     value ...                                 |
 *
 * Flow, in the order of this file: the constants; `MalformedMessage` (code EBADMSG, what every
 * check throws); the header (`checkMessage`, the one framing check, then unchecked accessors);
 * attributes (`attrs`, checked); family headers as field tables (`Layout`); the error and done
 * payloads; then per family header a shape, a layout, an encoder and a decoder: links
 * (ifinfomsg), addresses (ifaddrmsg), routes (rtmsg), neighbours (ndmsg). Encoders return a whole request with seq and pid 0 (the socket sets seq);
 * decoders take one message that `checkMessage` accepted and check its family header and every
 * attribute they read.
 *
 * Integers are in host byte order (the kernel's own); IPv4 addresses in network order, as the
 * signed 32-bit ints used everywhere in ipipd.
 */
import { Buffer } from 'node:buffer';

const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export const NLMSG_HDRLEN = 16;
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
/** On NLMSG_ERROR: the request was not echoed whole (NETLINK_CAP_ACK); extended-ACK attributes follow. */
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;
export const RTM_GETNEIGH = 30;
/** Multicast groups (RTNLGRP_*), for NETLINK_ADD_MEMBERSHIP. */
export const RTNLGRP_LINK = 1;
export const RTNLGRP_NEIGH = 3;
export const RTNLGRP_IPV4_ROUTE = 7;

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const IFF_UP = 0x1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_TXQLEN = 13;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const RTA_DST = 1;
const RTA_SRC = 2;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_TABLE = 15;
const NDA_DST = 1;
const NDA_LLADDR = 2;
/** ndm_flags: the entry is in use (RTM_NEWNEIGH: as if a packet had been sent through it). */
export const NTF_USE = 0x01;

/** A message that does not parse: truncated, overlong, or with an attribute of the wrong size. */
export class MalformedMessage extends Error {
  /** The errno name a socket would use for it ("Bad message"). */
  readonly code = 'EBADMSG';
  constructor(what: string) {
    super(`malformed netlink message: ${what}`);
    this.name = 'MalformedMessage';
  }
}

function u16(b: Buffer, o: number): number {
  return LE ? b.readUInt16LE(o) : b.readUInt16BE(o);
}
function u32(b: Buffer, o: number): number {
  return LE ? b.readUInt32LE(o) : b.readUInt32BE(o);
}
function i32(b: Buffer, o: number): number {
  return LE ? b.readInt32LE(o) : b.readInt32BE(o);
}
function w16(b: Buffer, o: number, v: number): void {
  if (LE) b.writeUInt16LE(v, o);
  else b.writeUInt16BE(v, o);
}
function w32(b: Buffer, o: number, v: number): void {
  if (LE) b.writeUInt32LE(v >>> 0, o);
  else b.writeUInt32BE(v >>> 0, o);
}
const align4 = (n: number): number => (n + 3) & ~3;

// ---------------------------------------------------------------------------------------------
// The header

/**
 * The one framing check: a message starts at `off` and lies within `end` (nlmsg_len >= 16 and
 * not past the datagram). Returns nlmsg_len; the next message starts at `off + align4(len)`.
 */
export function checkMessage(b: Buffer, off: number, end: number): number {
  if (end - off < NLMSG_HDRLEN) throw new MalformedMessage(`${end - off} bytes left, less than a header (16)`);
  const len = u32(b, off);
  if (len < NLMSG_HDRLEN || len > end - off) throw new MalformedMessage(`nlmsg_len ${len} with ${end - off} bytes left`);
  return len;
}

/** nlmsg_type (unchecked: after `checkMessage`). */
export const msgType = (b: Buffer, off: number): number => u16(b, off + 4);
/** nlmsg_flags. */
export const msgFlags = (b: Buffer, off: number): number => u16(b, off + 6);
/** nlmsg_seq. */
export const msgSeq = (b: Buffer, off: number): number => u32(b, off + 8);
/** nlmsg_pid: the sender's port (0: the kernel), or on a reply the port of the request's sender. */
export const msgPid = (b: Buffer, off: number): number => u32(b, off + 12);
/** Set nlmsg_seq of a built request (the socket numbers each one it sends). */
export const setSeq = (b: Buffer, off: number, seq: number): void => w32(b, off + 8, seq);

// ---------------------------------------------------------------------------------------------
// Attributes

/**
 * Each attribute of the message at `off` (length `len`) after a family header of `fixed` bytes:
 * `visit(type, valueOff, valueLen)`, type without the NLA_F_NESTED/NET_BYTEORDER bits. Throws
 * MalformedMessage for a short family header or an attribute that does not fit.
 */
function attrs(b: Buffer, off: number, len: number, fixed: number, what: string, visit: (type: number, o: number, n: number) => void): void {
  if (len < NLMSG_HDRLEN + fixed) throw new MalformedMessage(`${what}: ${len} bytes, too short for its header (${NLMSG_HDRLEN + fixed})`);
  const end = off + len;
  for (let o = off + NLMSG_HDRLEN + align4(fixed); o < end; ) {
    const n = end - o >= 4 ? u16(b, o) : 0;
    if (n < 4 || n > end - o) throw new MalformedMessage(`${what}: attribute of length ${n} with ${end - o} bytes left`);
    visit(u16(b, o + 2) & 0x3fff, o + 4, n - 4);
    o += align4(n);
  }
}

/** A 4-byte attribute's value: host-order u32, or with `ip` an IPv4 address (network order). */
function attr4(b: Buffer, o: number, n: number, what: string, type: number, ip = false): number {
  if (n !== 4) throw new MalformedMessage(`${what}: attribute ${type} of ${n} bytes, not 4`);
  return ip ? b.readInt32BE(o) : u32(b, o);
}

/** A NUL-terminated string attribute (the NUL may be missing). */
function attrStr(b: Buffer, o: number, n: number): string {
  const z = b.indexOf(0, o);
  return b.toString('latin1', o, z >= o && z < o + n ? z : o + n);
}

type Attr = readonly [type: number, value: Buffer];

function u32Value(type: number, v: number): Attr {
  const b = Buffer.alloc(4);
  w32(b, 0, v);
  return [type, b];
}
function ipValue(type: number, a: number): Attr {
  const b = Buffer.alloc(4);
  b.writeInt32BE(a | 0, 0);
  return [type, b];
}

/** A whole request: header (seq, pid 0), family header, attributes (skipping undefined ones). */
function build(type: number, flags: number, fixed: Buffer, list: ReadonlyArray<Attr | undefined>): Buffer {
  const present = list.filter((a): a is Attr => a !== undefined);
  const len = NLMSG_HDRLEN + align4(fixed.length) + present.reduce((s, [, v]) => s + align4(4 + v.length), 0);
  const b = Buffer.alloc(len);
  w32(b, 0, len);
  w16(b, 4, type);
  w16(b, 6, flags);
  fixed.copy(b, NLMSG_HDRLEN);
  let o = NLMSG_HDRLEN + align4(fixed.length);
  for (const [t, v] of present) {
    w16(b, o, 4 + v.length);
    w16(b, o + 2, t);
    v.copy(b, o + 4);
    o += align4(4 + v.length);
  }
  return b;
}

/**
 * A family header's fields: name in the message's shape, byte offset, size in bytes (-4: a signed
 * 32-bit int). Encoder and decoder of each header read the same table, so they cannot disagree.
 */
type Layout<T> = ReadonlyArray<readonly [field: keyof T & string, offset: number, size: 1 | 2 | 4 | -4]>;

function writeFixed<T>(layout: Layout<T>, size: number, m: T): Buffer {
  const h = Buffer.alloc(size);
  const v = m as unknown as Record<string, number>;
  for (const [k, o, n] of layout) {
    if (n === 1) h[o] = v[k]!;
    else if (n === 2) w16(h, o, v[k]!);
    else w32(h, o, v[k]!);
  }
  return h;
}

/** The header's fields into `m`; unchecked: `attrs` has checked that the header is there. */
function readFixed<T>(b: Buffer, off: number, layout: Layout<T>, m: T): T {
  const v = m as unknown as Record<string, number>;
  const h = off + NLMSG_HDRLEN;
  for (const [k, o, n] of layout) v[k] = n === 1 ? b[h + o]! : n === 2 ? u16(b, h + o) : n === 4 ? u32(b, h + o) : i32(b, h + o);
  return m;
}

// ---------------------------------------------------------------------------------------------
// NLMSG_ERROR and NLMSG_DONE

/** The outcome of an NLMSG_ERROR: `errno` 0 is an ACK; `message` the kernel's extended-ACK text. */
export interface ErrorReply {
  errno: number;
  message: string | undefined;
}

/**
 * struct nlmsgerr: int error (0 or -errno), then the request's header, then (unless
 * NLM_F_CAPPED) the rest of the request, then (with NLM_F_ACK_TLVS) extended-ACK attributes.
 */
export function decodeError(b: Buffer, off: number, len: number): ErrorReply {
  if (len < NLMSG_HDRLEN + 4 + NLMSG_HDRLEN) throw new MalformedMessage(`NLMSG_ERROR of ${len} bytes`);
  const errno = -i32(b, off + NLMSG_HDRLEN) | 0;
  const flags = msgFlags(b, off);
  let message: string | undefined;
  if ((flags & NLM_F_ACK_TLVS) !== 0) {
    const echoed = (flags & NLM_F_CAPPED) !== 0 ? NLMSG_HDRLEN : align4(u32(b, off + NLMSG_HDRLEN + 4));
    if (4 + echoed <= len - NLMSG_HDRLEN) {
      attrs(b, off, len, 4 + echoed, 'NLMSG_ERROR', (t, o, n) => {
        if (t === NLMSGERR_ATTR_MSG) message = attrStr(b, o, n);
      });
    }
  }
  return { errno, message };
}

/** NLMSG_DONE's payload: the dump's own error as a positive errno (0: complete). Old kernels may send none. */
export function decodeDone(b: Buffer, off: number, len: number): number {
  return len >= NLMSG_HDRLEN + 4 ? -i32(b, off + NLMSG_HDRLEN) | 0 : 0;
}

// ---------------------------------------------------------------------------------------------
// Links: struct ifinfomsg { u8 family, pad; u16 type; s32 index; u32 flags, change } (16 bytes)

export interface LinkMsg {
  family: number;
  /** ARPHRD_* device type. */
  type: number;
  index: number;
  /** IFF_* flags (IFF_UP ...); on a request, those of `change` to set. */
  flags: number;
  /** Which IFF_* bits a request changes. */
  change: number;
  name?: string | undefined;
  mtu?: number | undefined;
  txqlen?: number | undefined;
}

const IFINFOMSG: Layout<LinkMsg> = [['family', 0, 1], ['type', 2, 2], ['index', 4, -4], ['flags', 8, 4], ['change', 12, 4]];

export function encodeLink(type: number, flags: number, m: LinkMsg): Buffer {
  const h = writeFixed(IFINFOMSG, 16, m);
  const name = m.name === undefined ? undefined : ([IFLA_IFNAME, Buffer.from(`${m.name}\0`, 'latin1')] as const);
  return build(type, flags, h, [
    name,
    m.mtu === undefined ? undefined : u32Value(IFLA_MTU, m.mtu),
    m.txqlen === undefined ? undefined : u32Value(IFLA_TXQLEN, m.txqlen),
  ]);
}

export function decodeLink(b: Buffer, off: number, len: number): LinkMsg {
  const m: LinkMsg = { family: 0, type: 0, index: 0, flags: 0, change: 0, name: undefined, mtu: undefined, txqlen: undefined };
  attrs(b, off, len, 16, 'ifinfomsg', (t, o, n) => {
    if (t === IFLA_IFNAME) m.name = attrStr(b, o, n);
    else if (t === IFLA_MTU) m.mtu = attr4(b, o, n, 'ifinfomsg', t);
    else if (t === IFLA_TXQLEN) m.txqlen = attr4(b, o, n, 'ifinfomsg', t);
  });
  return readFixed(b, off, IFINFOMSG, m);
}

// ---------------------------------------------------------------------------------------------
// Addresses: struct ifaddrmsg { u8 family, prefixlen, flags, scope; u32 index } (8 bytes)

export interface AddrMsg {
  family: number;
  prefixLength: number;
  flags: number;
  scope: number;
  index: number;
  /** IFA_LOCAL: the interface's own address. */
  local?: number | undefined;
  /** IFA_ADDRESS: the same, or the peer's on a point-to-point link. */
  address?: number | undefined;
}

const IFADDRMSG: Layout<AddrMsg> = [['family', 0, 1], ['prefixLength', 1, 1], ['flags', 2, 1], ['scope', 3, 1], ['index', 4, 4]];

export function encodeAddr(type: number, flags: number, m: AddrMsg): Buffer {
  return build(type, flags, writeFixed(IFADDRMSG, 8, m), [
    m.local === undefined ? undefined : ipValue(IFA_LOCAL, m.local),
    m.address === undefined ? undefined : ipValue(IFA_ADDRESS, m.address),
  ]);
}

export function decodeAddr(b: Buffer, off: number, len: number): AddrMsg {
  const h = off + NLMSG_HDRLEN;
  const m: AddrMsg = { family: 0, prefixLength: 0, flags: 0, scope: 0, index: 0, local: undefined, address: undefined };
  attrs(b, off, len, 8, 'ifaddrmsg', (t, o, n) => {
    // IPv6 addresses are 16 bytes: only an IPv4 message's are read.
    if (b[h] !== AF_INET) return;
    if (t === IFA_LOCAL) m.local = attr4(b, o, n, 'ifaddrmsg', t, true);
    else if (t === IFA_ADDRESS) m.address = attr4(b, o, n, 'ifaddrmsg', t, true);
  });
  return readFixed(b, off, IFADDRMSG, m);
}

// ---------------------------------------------------------------------------------------------
// Routes: struct rtmsg { u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags }

export interface RouteMsg {
  family: number;
  dstLen: number;
  srcLen: number;
  tos: number;
  /** rtm_table: the table id if below 256; RTA_TABLE (`tableId`) carries any. */
  table: number;
  protocol: number;
  scope: number;
  /** RTN_* (1 unicast, 6 blackhole ...). */
  type: number;
  /** RTM_F_* / RTNH_F_* (RTNH_F_ONLINK 4). */
  flags: number;
  dst?: number | undefined;
  src?: number | undefined;
  oif?: number | undefined;
  gateway?: number | undefined;
  priority?: number | undefined;
  tableId?: number | undefined;
}

const RTMSG: Layout<RouteMsg> = [
  ['family', 0, 1], ['dstLen', 1, 1], ['srcLen', 2, 1], ['tos', 3, 1], ['table', 4, 1], ['protocol', 5, 1], ['scope', 6, 1], ['type', 7, 1], ['flags', 8, 4],
];

export function encodeRoute(type: number, flags: number, m: RouteMsg): Buffer {
  return build(type, flags, writeFixed(RTMSG, 12, m), [
    m.dst === undefined ? undefined : ipValue(RTA_DST, m.dst),
    m.src === undefined ? undefined : ipValue(RTA_SRC, m.src),
    m.oif === undefined ? undefined : u32Value(RTA_OIF, m.oif),
    m.gateway === undefined ? undefined : ipValue(RTA_GATEWAY, m.gateway),
    m.priority === undefined ? undefined : u32Value(RTA_PRIORITY, m.priority),
    m.tableId === undefined ? undefined : u32Value(RTA_TABLE, m.tableId),
  ]);
}

export function decodeRoute(b: Buffer, off: number, len: number): RouteMsg {
  const h = off + NLMSG_HDRLEN;
  const m: RouteMsg = { family: 0, dstLen: 0, srcLen: 0, tos: 0, table: 0, protocol: 0, scope: 0, type: 0, flags: 0, dst: undefined, src: undefined, oif: undefined, gateway: undefined, priority: undefined, tableId: undefined };
  attrs(b, off, len, 12, 'rtmsg', (t, o, n) => {
    if (t === RTA_OIF) m.oif = attr4(b, o, n, 'rtmsg', t);
    else if (t === RTA_PRIORITY) m.priority = attr4(b, o, n, 'rtmsg', t);
    else if (t === RTA_TABLE) m.tableId = attr4(b, o, n, 'rtmsg', t);
    // IPv6 routes' addresses are 16 bytes: only an IPv4 message's are read.
    else if (b[h] !== AF_INET) return;
    else if (t === RTA_DST) m.dst = attr4(b, o, n, 'rtmsg', t, true);
    else if (t === RTA_SRC) m.src = attr4(b, o, n, 'rtmsg', t, true);
    else if (t === RTA_GATEWAY) m.gateway = attr4(b, o, n, 'rtmsg', t, true);
  });
  return readFixed(b, off, RTMSG, m);
}

/** The route's table: RTA_TABLE if present (any id), else rtm_table. */
export const routeTable = (m: RouteMsg): number => m.tableId ?? m.table;

// ---------------------------------------------------------------------------------------------
// Neighbours: struct ndmsg { u8 family, pad1; u16 pad2; s32 ifindex; u16 state; u8 flags, type }

export interface NeighMsg {
  family: number;
  ifindex: number;
  /** NUD_* bits. */
  state: number;
  /** NTF_* bits. */
  flags: number;
  type: number;
  dst?: number | undefined;
  /** Link-layer address (a copy: the decoder's buffer is reused). */
  lladdr?: Buffer | undefined;
}

const NDMSG: Layout<NeighMsg> = [['family', 0, 1], ['ifindex', 4, -4], ['state', 8, 2], ['flags', 10, 1], ['type', 11, 1]];

export function encodeNeigh(type: number, flags: number, m: NeighMsg): Buffer {
  return build(type, flags, writeFixed(NDMSG, 12, m), [
    m.dst === undefined ? undefined : ipValue(NDA_DST, m.dst),
    m.lladdr === undefined ? undefined : [NDA_LLADDR, m.lladdr],
  ]);
}

export function decodeNeigh(b: Buffer, off: number, len: number): NeighMsg {
  const h = off + NLMSG_HDRLEN;
  const m: NeighMsg = { family: 0, ifindex: 0, state: 0, flags: 0, type: 0, dst: undefined, lladdr: undefined };
  attrs(b, off, len, 12, 'ndmsg', (t, o, n) => {
    if (t === NDA_DST && b[h] === AF_INET) m.dst = attr4(b, o, n, 'ndmsg', t, true);
    else if (t === NDA_LLADDR) m.lladdr = Buffer.from(b.subarray(o, o + n));
  });
  return readFixed(b, off, NDMSG, m);
}
