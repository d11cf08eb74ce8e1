/**
 * RFC 2003 IP-in-IP encapsulation and decapsulation over caller-owned buffers.
 *
 * Flow, in the order the code appears: `RouteLookup` (the prefix table, seen structurally) and
 * `PacketResult` (the reused out-parameter); `TunnelPolicy`; `Tunnel`'s constructor, which
 * validates the policy, binds every peer's outer-header template and builds the endpoint index;
 * the small look-ups (`mtuFor`, `peerByEndpoint`, `isTunnelAddress`); then `encapsulate`
 * (TUN -> underlay) and `decapsulate` (underlay -> TUN).
 *
 * Contract of both directions (STYLE rules 2, 5, 6):
 * - They return a `Verdict` and fill the caller's `PacketResult`; nothing else is returned,
 *   thrown, logged or allocated. Each packet gets exactly one verdict: the checks run in the
 *   order listed on each method and the first failing one wins.
 * - `out` is written on every call. On `forward` it describes the bytes to send. On a drop,
 *   `out.offset`/`out.length` are the arguments as given (the packet the I/O layer may quote in
 *   an ICMP error, e.g. for `ttl_expired` or `too_big`) and `out.peer` is the peer concerned if
 *   it was known when the check failed (encap: from `loop` on; decap: from `inner_malformed` on),
 *   else null.
 * - Buffers belong to the caller; a Tunnel keeps no reference to them. `encapsulate` writes
 *   only the 20 bytes before `off`. `decapsulate` writes only when the outer header is marked CE
 *   and the inner packet is ECN-capable: the inner ECN field becomes CE and the inner header
 *   checksum is updated to match (RFC 6040 §4.2, RFC 1624).
 * - Counters are the caller's: drops indexed by verdict, and the per-peer `Peer.tx*`/`rx*`,
 *   which the I/O layer increments once the write of a `forward`ed packet succeeded. The only
 *   per-peer state changed here is `Peer.nextId`.
 *
 * A Tunnel is immutable policy. On reload build a new one (its constructor rebinds the peers'
 * templates, so a Peer belongs to one live Tunnel at a time) and swap between batches.
 */
import type { Buffer } from 'node:buffer';
import {
  FLAG_DF,
  IPPROTO_IPIP,
  IPV4_ERR_CHECKSUM,
  IPV4_MIN_HEADER,
  IPV4_OK,
  IPV4_VERSION_IHL_NO_OPTIONS,
  OFF_CHECKSUM,
  OFF_DST,
  OFF_FLAGS_FRAG,
  OFF_ID,
  OFF_PROTOCOL,
  OFF_SRC,
  OFF_TOS,
  OFF_TOTAL_LENGTH,
  OFF_TTL,
  OFF_VERSION_IHL,
  checkIPv4,
  getChecksum,
  getDst,
  getFlagsFragment,
  getHeaderLength,
  getProtocol,
  getSrc,
  getTos,
  getTotalLength,
  getTtl,
  getVersion,
  setChecksum,
  setTos,
} from './ipv4.js';
import { checksumUpdate16 } from './checksum.js';
import { FOU_OVERHEAD } from './fou.js';
import { ENCAP_FOU, MAX_TUNNEL_MTU, MIN_TUNNEL_MTU, Peer } from './peer.js';
import { Verdict } from './verdict.js';

/**
 * Longest-prefix-match look-up of an int32 address (src/routing's `PrefixTable<T>` satisfies
 * it). Must not allocate or throw.
 */
export interface RouteLookup<T> {
  lookup(addr: number): T | undefined;
}

/**
 * The out-parameter of `encapsulate`/`decapsulate`: allocate one per direction (or per batch
 * loop) and pass the same object for every packet. Overwritten by every call; copy what you
 * need before the next one.
 */
export class PacketResult {
  /** Start of the bytes to send (forward), or the `off` argument (drop). */
  offset = 0;
  /** Number of bytes to send (forward), or the `len` argument (drop). */
  length = 0;
  /** Peer the packet goes to (encap) or came from (decap); null if not (yet) known. */
  peer: Peer | null = null;
  /**
   * Encapsulation toward a FOU peer: the outer TOS byte for the kernel to put on the UDP
   * datagram (DSCP fixed or copied, ECN from the inner as RFC 6040 §4.1); else not written.
   */
  tos = 0;
}

/** Frozen tunnel policy; validated by the config layer, asserted again by `Tunnel`. */
export interface TunnelPolicy {
  /** Our underlay address, int32: outer source when sending, required outer destination when receiving. */
  readonly local: number;
  /** Peer prefixes: inner destination -> peer (encap), inner source -> allowed peer (decap). */
  readonly routes: RouteLookup<Peer>;
  /** All peers; `peers[i].index === i`, endpoints distinct and not `local`. */
  readonly peers: readonly Peer[];
  /** Outer TTL 1..255, or 'inherit' to copy the inner TTL (RFC 2003 §3.1). */
  readonly ttl: number | 'inherit';
  /** Outer TOS 0..255, or 'inherit' to copy the inner TOS (RFC 2003 §3.1 default). */
  readonly tos: number | 'inherit';
  /** 'inherit': outer DF = inner DF (RFC 2003 §3.1 MUST); 'always': outer DF always set. */
  readonly df: 'inherit' | 'always';
  /** Tunnel MTU: largest inner packet in bytes (underlay MTU - 20), 68..65515. */
  readonly mtu: number;
  /** Tunnel MTU toward FOU peers (underlay MTU - 28), 68..mtu; default mtu - 8. */
  readonly fouMtu?: number;
}

/** The ECN field, the low two bits of the TOS byte (RFC 3168 §5). */
const ECN_MASK = 0x03;
const ECN_NOT_ECT = 0x00;
const ECN_ECT0 = 0x02;
const ECN_CE = 0x03;

function isInt32(v: number): boolean {
  return (v | 0) === v;
}

export class Tunnel {
  readonly local: number;
  readonly routes: RouteLookup<Peer>;
  readonly peers: readonly Peer[];
  readonly ttl: number | 'inherit';
  readonly tos: number | 'inherit';
  readonly df: 'inherit' | 'always';
  readonly mtu: number;
  /** Tunnel MTU toward FOU peers (policy `fouMtu`). */
  readonly fouMtu: number;

  // Masks selecting the inherited part of a per-packet field (0 when the policy fixes it; the
  // fixed value then lives in the peer's template). Branch-free per packet. The ECN bits of the
  // TOS byte are never fixed: they always follow the inner packet (RFC 6040).
  private readonly dscpMask: number;
  private readonly ttlMask: number;
  private readonly dfMask: number;
  /** Peer endpoints sorted ascending (signed), for binary search. */
  private readonly endpoints: Int32Array;
  /** `endpointPeers[i].endpoint === endpoints[i]`. */
  private readonly endpointPeers: readonly Peer[];

  /** Throws RangeError on an invalid policy (control path only). */
  constructor(policy: TunnelPolicy) {
    const { local, routes, peers, ttl, tos, df, mtu } = policy;
    if (!isInt32(local)) throw new RangeError(`ipip: local must be an int32 address, got ${local}`);
    if (ttl !== 'inherit' && (!Number.isInteger(ttl) || ttl < 1 || ttl > 255)) {
      throw new RangeError(`ipip: ttl must be 1..255 or 'inherit', got ${ttl}`);
    }
    if (tos !== 'inherit' && (!Number.isInteger(tos) || tos < 0 || tos > 255)) {
      throw new RangeError(`ipip: tos must be 0..255 or 'inherit', got ${tos}`);
    }
    if (df !== 'inherit' && df !== 'always') throw new RangeError(`ipip: df must be 'inherit' or 'always', got ${String(df)}`);
    if (!Number.isInteger(mtu) || mtu < MIN_TUNNEL_MTU || mtu > MAX_TUNNEL_MTU) {
      throw new RangeError(`ipip: mtu must be an integer ${MIN_TUNNEL_MTU}..${MAX_TUNNEL_MTU}, got ${mtu}`);
    }
    const fouMtu = policy.fouMtu ?? mtu - FOU_OVERHEAD;
    if (!Number.isInteger(fouMtu) || fouMtu < MIN_TUNNEL_MTU || fouMtu > mtu) {
      throw new RangeError(`ipip: fouMtu must be an integer ${MIN_TUNNEL_MTU}..mtu, got ${fouMtu}`);
    }
    const seen = new Set<number>();
    for (let i = 0; i < peers.length; i++) {
      const p = peers[i];
      if (p.index !== i) throw new RangeError(`ipip: peer ${p.name} has index ${p.index} but is at position ${i}`);
      if (p.endpoint === local) throw new RangeError(`ipip: peer ${p.name}: endpoint is our own local address`);
      if (seen.has(p.endpoint)) throw new RangeError(`ipip: peer ${p.name}: endpoint is shared with another peer`);
      seen.add(p.endpoint);
    }

    this.local = local;
    this.routes = routes;
    this.peers = Object.freeze(peers.slice());
    this.ttl = ttl;
    this.tos = tos;
    this.df = df;
    this.mtu = mtu;
    this.fouMtu = fouMtu;
    this.dscpMask = tos === 'inherit' ? 0xfc : 0;
    this.ttlMask = ttl === 'inherit' ? 0xff : 0;
    this.dfMask = df === 'inherit' ? FLAG_DF : 0;

    const fixedTos = tos === 'inherit' ? 0 : tos & 0xfc;
    const fixedTtl = ttl === 'inherit' ? 0 : ttl;
    const fixedFlags = df === 'always' ? FLAG_DF : 0;
    for (const p of this.peers) p.bindOuter(local, fixedTos, fixedTtl, fixedFlags);

    const sorted = this.peers.slice().sort((a, b) => a.endpoint - b.endpoint);
    this.endpoints = Int32Array.from(sorted, (p) => p.endpoint);
    this.endpointPeers = Object.freeze(sorted);
    Object.freeze(this);
  }

  /**
   * Effective tunnel MTU toward `peer`: min(policy mtu, peer.mtu), in inner bytes; for a FOU
   * peer the policy's `fouMtu` (the UDP header: 28 bytes of overhead, not 20).
   */
  mtuFor(peer: Peer): number {
    const m = peer.mtu;
    const cap = peer.encap === ENCAP_FOU ? this.fouMtu : this.mtu;
    return m < cap ? m : cap;
  }

  /** The peer whose endpoint is `addr` (int32), or null. Binary search; no allocation. */
  peerByEndpoint(addr: number): Peer | null {
    const eps = this.endpoints;
    let lo = 0;
    let hi = eps.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = eps[mid];
      if (v === addr) return this.endpointPeers[mid];
      if (v < addr) lo = mid + 1;
      else hi = mid - 1;
    }
    return null;
  }

  /** True if `addr` is our underlay address or any peer's endpoint (an address of the tunnel itself). */
  isTunnelAddress(addr: number): boolean {
    return addr === this.local || this.peerByEndpoint(addr) !== null;
  }

  /**
   * TUN -> underlay. `buf[off, off+len)` is an inner packet as read from the TUN, with at least
   * 20 bytes of headroom before `off`; `len` -1 means it did not fit the slot. Checks, first
   * failure wins:
   *  1. len === -1                                                  -> truncated
   *  2. off < 20, len < 0 or off + len > buf.length (I/O bug)      -> malformed
   *  3. len === 0                                                   -> inner_malformed
   *  4. version nibble != 4                                         -> not_ipv4
   *  5. inner header: fewer than 20 bytes, IHL < 5, IHL*4 > total
   *     length, or total length != len (the inner checksum is not
   *     verified: the kernel just wrote it)                         -> inner_malformed
   *  6. inner TTL 0 (RFC 2003 §3.1)                                 -> ttl_expired
   *  7. RFC 2003 §3.2: inner destination is `local` or any peer
   *     endpoint (checked before the route: a hand-made kernel
   *     route may send an endpoint into the TUN)                    -> loop
   *  8. no peer owns the inner destination (LPM), or the table
   *     returned a peer not in this Tunnel's `peers` (stale table)  -> no_route
   *  9. RFC 2003 §3.2: inner source is `local` or the chosen peer's
   *     endpoint                                                    -> loop
   * 10. len > mtuFor(peer), whatever DF says (with IP_HDRINCL the
   *     kernel never fragments; fragmenting is the caller's choice) -> too_big
   * Then writes the outer header at `off - 20` (the inner header is not touched): 0x45; TOS:
   * DSCP fixed or copied, ECN copied from the inner except that CE becomes ECT(0) (RFC 6040
   * §4.1, as Linux's INET_ECN_encapsulate); Total Length len + 20; ID = peer.nextId (then advanced by peer.idStep, mod 2^16); DF fixed
   * or copied from the inner, no MF, offset 0; TTL fixed or copied; protocol 4; checksum; source
   * `local`; destination `peer.endpoint`. Sets `out` to `[off - 20, len + 20)` and the peer,
   * returns `forward`.
   */
  encapsulate(buf: Buffer, off: number, len: number, out: PacketResult): Verdict {
    out.offset = off;
    out.length = len;
    out.peer = null;
    if (len === -1) return Verdict.truncated;
    if (off < IPV4_MIN_HEADER || len < 0 || off + len > buf.length) return Verdict.malformed;
    if (len === 0) return Verdict.inner_malformed;
    if (getVersion(buf, off) !== 4) return Verdict.not_ipv4;
    if (checkIPv4(buf, off, len, false) !== IPV4_OK || getTotalLength(buf, off) !== len) {
      return Verdict.inner_malformed;
    }
    const ttl = getTtl(buf, off);
    if (ttl === 0) return Verdict.ttl_expired;

    const dst = getDst(buf, off);
    if (dst === this.local || this.peerByEndpoint(dst) !== null) return Verdict.loop;
    const peer = this.routes.lookup(dst);
    if (peer === undefined || this.peers[peer.index] !== peer) return Verdict.no_route;
    out.peer = peer;
    const src = getSrc(buf, off);
    if (src === this.local || src === peer.endpoint) return Verdict.loop;
    if (len > this.mtuFor(peer)) return Verdict.too_big;
    // Per-packet words; the inherited parts are masked to 0 when the policy fixes the field.
    const innerTos = getTos(buf, off);
    const ecn = innerTos & ECN_MASK;
    const tos = (innerTos & this.dscpMask) | (ecn === ECN_CE ? ECN_ECT0 : ecn);
    // FOU (fou.ts): the inner packet is the whole UDP payload; the kernel writes IP and UDP,
    // with this TOS (a cmsg per datagram).
    if (peer.encap === ENCAP_FOU) {
      out.tos = peer.outerTos | tos;
      return Verdict.forward;
    }
    const ttlIn = ttl & this.ttlMask;
    const df = getFlagsFragment(buf, off) & this.dfMask;
    const id = peer.nextId;
    peer.nextId = (id + peer.idStep) & 0xffff;
    const total = len + IPV4_MIN_HEADER;
    // RFC 1071 §2 (C): precomputed partial sum + the words that change per packet.
    let sum = peer.outerSum + tos + (ttlIn << 8) + df + total + id;
    sum = (sum & 0xffff) + (sum >>> 16);
    sum = (sum & 0xffff) + (sum >>> 16);
    const checksum = ~sum & 0xffff;

    const o = off - IPV4_MIN_HEADER;
    // Byte by byte, not with the ipv4.ts setters: ten more inlined calls use up TurboFan's inlining
    // budget for encapsulate and checkIPv4 is no longer inlined (measured: 45 -> 65 ns a packet).
    buf[o + OFF_VERSION_IHL] = IPV4_VERSION_IHL_NO_OPTIONS;
    buf[o + OFF_TOS] = peer.outerTos | tos;
    buf[o + OFF_TOTAL_LENGTH] = total >> 8;
    buf[o + OFF_TOTAL_LENGTH + 1] = total & 0xff;
    buf[o + OFF_ID] = id >> 8;
    buf[o + OFF_ID + 1] = id & 0xff;
    buf[o + OFF_FLAGS_FRAG] = (peer.outerFlags | df) >> 8;
    buf[o + OFF_FLAGS_FRAG + 1] = 0;
    buf[o + OFF_TTL] = peer.outerTtl | ttlIn;
    buf[o + OFF_PROTOCOL] = IPPROTO_IPIP;
    buf[o + OFF_CHECKSUM] = checksum >> 8;
    buf[o + OFF_CHECKSUM + 1] = checksum & 0xff;
    const s = peer.outerSrc;
    buf[o + OFF_SRC] = (s >> 24) & 0xff;
    buf[o + OFF_SRC + 1] = (s >> 16) & 0xff;
    buf[o + OFF_SRC + 2] = (s >> 8) & 0xff;
    buf[o + OFF_SRC + 3] = s & 0xff;
    const d = peer.endpoint;
    buf[o + OFF_DST] = (d >> 24) & 0xff;
    buf[o + OFF_DST + 1] = (d >> 16) & 0xff;
    buf[o + OFF_DST + 2] = (d >> 8) & 0xff;
    buf[o + OFF_DST + 3] = d & 0xff;

    out.offset = o;
    out.length = total;
    return Verdict.forward;
  }

  /**
   * Underlay -> TUN. `buf[off, off+len)` is a datagram from the raw protocol-4 socket, outer
   * header included; `len` -1 means it did not fit the slot. Checks, first failure wins:
   *  1. len === -1                                                  -> truncated
   *  2. off < 0, len < 0 or off + len > buf.length (I/O bug)       -> malformed
   *  3. outer header (checkIPv4 with received = len): short,
   *     version, IHL, lengths                                       -> malformed
   *     checksum, only of a header without options (IHL 5)         -> bad_checksum
   *     The kernel verified the checksum before the raw socket got the
   *     datagram (RFC 1122 §3.2.1.2; Linux ip_rcv_core), and with options it
   *     then filled in Record Route / Timestamp on local delivery without
   *     recomputing it (ip_options_compile sets is_changed; only
   *     ip_forward_options calls ip_send_check): measured, such a valid
   *     datagram reaches us with a stale checksum. Its options were also
   *     checked by the kernel (a bad one is answered with ICMP Parameter
   *     Problem and never delivered), so here they are skipped, not parsed,
   *     as RFC 1122 §3.2.1.8 lets a host do with options it does not use.
   *     An option-less header is exactly as the kernel verified it: a wrong
   *     checksum there means bytes that did not come from the kernel.
   *  4. outer protocol != 4                                         -> not_ipip
   *  5. outer destination != local                                  -> not_for_us
   *  6. outer source is no peer's endpoint (CVE-2020-10136)         -> unknown_peer
   *  7. inner = the outer payload, bytes [IHL*4, outer total length)
   *     (bytes past the outer total length are link-layer padding
   *     and ignored, as Linux ip_rcv trims them); checkIPv4 over
   *     it: short, version != 4, IHL, lengths                       -> inner_malformed
   *     checksum                                                    -> inner_bad_checksum
   *     inner total length != outer payload length (trailing bytes
   *     inside the outer datagram; also an outer fragment)          -> inner_malformed
   *  8. inner TTL 0                                                 -> ttl_expired
   *  9. inner source or destination is `local` or any endpoint
   *     (RFC 2003 §3.2; before the prefix checks, which could not
   *     tell: the config keeps endpoints out of every prefix)       -> loop
   * 10. LPM(inner source) is not the sending peer (AllowedIPs)      -> spoofed_source
   * 11. LPM(inner destination) is some peer: it would re-enter the
   *     tunnel                                                      -> bad_destination
   * 12. outer ECN is CE and the inner is not ECN-capable (RFC 6040
   *     §4.2: the congestion mark cannot be passed on)              -> ecn_drop
   * Then sets `out` to the inner datagram and the sending peer, returns `forward`.
   * The inner packet goes to the TUN unchanged (RFC 2003 §3.1), with one exception: an outer CE
   * over an ECT inner sets the inner ECN field to CE (RFC 6040 §4.2, as Linux's
   * INET_ECN_decapsulate), with the inner checksum updated incrementally (RFC 1624).
   */
  decapsulate(buf: Buffer, off: number, len: number, out: PacketResult): Verdict {
    out.offset = off;
    out.length = len;
    out.peer = null;
    if (len === -1) return Verdict.truncated;
    if (off < 0 || len < 0 || off + len > buf.length) return Verdict.malformed;
    const outer = checkIPv4(buf, off, len, buf[off + OFF_VERSION_IHL] === IPV4_VERSION_IHL_NO_OPTIONS);
    if (outer !== IPV4_OK) return outer === IPV4_ERR_CHECKSUM ? Verdict.bad_checksum : Verdict.malformed;
    if (getProtocol(buf, off) !== IPPROTO_IPIP) return Verdict.not_ipip;
    if (getDst(buf, off) !== this.local) return Verdict.not_for_us;
    const peer = this.peerByEndpoint(getSrc(buf, off));
    if (peer === null) return Verdict.unknown_peer;
    out.peer = peer;

    const ohl = getHeaderLength(buf, off);
    return this.decapsulateInner(buf, off + ohl, getTotalLength(buf, off) - ohl, peer, getTos(buf, off), out);
  }

  /**
   * Underlay -> TUN over FOU (fou.ts): `buf[off, off+len)` is the payload of a UDP datagram that
   * reached our FOU port from `src` (int32) with outer TOS `outerTos`; the kernel checked its IP
   * and UDP headers. Checks, first failure wins:
   *  1. len === -1                                                  -> truncated
   *  2. off < 0, len < 0 or off + len > buf.length (I/O bug)       -> malformed
   *  3. `src` is no peer's endpoint (CVE-2020-10136)                -> unknown_peer
   *  4. the peer's encap is not FOU                                 -> not_fou_peer
   *  5.-10. the inner checks of `decapsulate` (7.-12. there), the inner datagram being the
   *     whole payload.
   */
  decapsulateFou(buf: Buffer, off: number, len: number, src: number, outerTos: number, out: PacketResult): Verdict {
    out.offset = off;
    out.length = len;
    out.peer = null;
    if (len === -1) return Verdict.truncated;
    if (off < 0 || len < 0 || off + len > buf.length) return Verdict.malformed;
    const peer = this.peerByEndpoint(src);
    if (peer === null) return Verdict.unknown_peer;
    out.peer = peer;
    if (peer.encap !== ENCAP_FOU) return Verdict.not_fou_peer;
    return this.decapsulateInner(buf, off, len, peer, outerTos, out);
  }

  /** The inner checks of both receive paths (`decapsulate` 7.-12.): `buf[inner, inner+innerLen)` from `peer`. */
  private decapsulateInner(buf: Buffer, inner: number, innerLen: number, peer: Peer, outerTos: number, out: PacketResult): Verdict {
    const check = checkIPv4(buf, inner, innerLen, true);
    if (check !== IPV4_OK) return check === IPV4_ERR_CHECKSUM ? Verdict.inner_bad_checksum : Verdict.inner_malformed;
    if (getTotalLength(buf, inner) !== innerLen) return Verdict.inner_malformed;
    if (getTtl(buf, inner) === 0) return Verdict.ttl_expired;

    const src = getSrc(buf, inner);
    const dst = getDst(buf, inner);
    if (this.isTunnelAddress(src) || this.isTunnelAddress(dst)) return Verdict.loop;
    if (this.routes.lookup(src) !== peer) return Verdict.spoofed_source;
    if (this.routes.lookup(dst) !== undefined) return Verdict.bad_destination;
    if ((outerTos & ECN_MASK) === ECN_CE) {
      const innerTos = getTos(buf, inner);
      const ecn = innerTos & ECN_MASK;
      if (ecn === ECN_NOT_ECT) return Verdict.ecn_drop;
      if (ecn !== ECN_CE) {
        // The 16-bit word the TOS byte is in (after version/IHL) changes: RFC 1624 eqn. 3.
        const word0 = (buf[inner + OFF_VERSION_IHL] << 8) | innerTos;
        setChecksum(buf, inner, checksumUpdate16(getChecksum(buf, inner), word0, word0 | ECN_CE));
        setTos(buf, inner, innerTos | ECN_CE);
      }
    }

    out.offset = inner;
    out.length = innerLen;
    return Verdict.forward;
  }
}
