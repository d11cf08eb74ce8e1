/**
 * One remote tunnel endpoint and its soft state (RFC 2003 §5).
 *
 * Flow, in the order the members appear: identity (`index`, `name`, `endpoint`); soft state the
 * data path reads and updates (`mtu`, `nextId`, and `baseMtu` / `pmtuLearnedAt` for the path MTU);
 * the outer-header template (written by `Tunnel`'s constructor through `bindOuter`, read by
 * `Tunnel.encapsulate`); and `inheritSoftState`, which carries the ID sequence across a config
 * reload.
 *
 * Who writes what:
 * - `Tunnel.encapsulate` takes `nextId` for the outer Identification and advances it.
 * - The data path may lower `mtu` (and stamp `pmtuLearnedAt`) when the underlay reports
 *   Fragmentation Needed for our outer packets (RFC 2003 §5.1: tunnel MTU = path MTU - 20); the
 *   daemon puts it back to `baseMtu` when that ages out (RFC 1191 §6.3).
 * - `bindOuter` is for `Tunnel` only.
 * The data path's statistics about a peer (packets, bytes, last packet time, reachability) are
 * not here: they are figures of each data-path queue, indexed by `index` (src/dataplane/figures.ts).
 *
 * No I/O; the template is a handful of numbers, not a Buffer, so encapsulation writes fields
 * directly without a copy call.
 */
import { int32Sum } from './checksum.js';
import { IPPROTO_IPIP, IPV4_MAX_TOTAL_LENGTH, IPV4_MIN_HEADER, IPV4_VERSION_IHL_NO_OPTIONS } from './ipv4.js';

/** Largest possible tunnel MTU (inner packet size): 65535 - the 20-byte outer header. */
export const MAX_TUNNEL_MTU = IPV4_MAX_TOTAL_LENGTH - IPV4_MIN_HEADER;
/** Smallest IPv4 MTU: RFC 791 §3.2, every module must forward a datagram of 68 octets unfragmented. */
export const MIN_TUNNEL_MTU = 68;

/**
 * 0 for the timestamp below, stored as a double (-0 is not a small integer to V8, and equals 0
 * for every comparison and in JSON): the field is a double from the start, so the first
 * timestamp does not change the Peer's shape, which would throw the optimized data path back to
 * slower code in the middle of traffic.
 */
const DOUBLE_ZERO = -0;

/** `Peer.encap`: plain IP-in-IP (RFC 2003, protocol 4). */
export const ENCAP_IPIP = 0;
/** `Peer.encap`: IP-in-IP over UDP as Linux FOU with ipproto 4 (fou.ts). */
export const ENCAP_FOU = 1;

export interface PeerOptions {
  /** Position of this peer in the `peers` array given to `Tunnel` (checked there). */
  readonly index: number;
  /** Config name, for logs and per-peer counter labels. */
  readonly name: string;
  /** Underlay address of the peer (the outer destination / expected outer source), int32. */
  readonly endpoint: number;
  /** Tunnel MTU toward this peer in bytes (largest inner packet); default MAX_TUNNEL_MTU (no per-peer limit). */
  readonly mtu?: number;
  /** First outer Identification value, 0..0xffff; default 0. The daemon may pass a random one. */
  readonly initialId?: number;
  /**
   * What `nextId` advances by: 1, or with several data-path queues (each its own Peer copy) a
   * power of two >= the queue count, each queue starting at its own offset, so that the queues'
   * IDs toward one endpoint never collide (RFC 6864 §4.1). Default 1.
   */
  readonly idStep?: number;
  /** ENCAP_IPIP (default) or ENCAP_FOU. With FOU, `mtu` must leave room for the 8-byte UDP header (the caller's). */
  readonly encap?: number;
}

function isInt32(v: number): boolean {
  return (v | 0) === v;
}

export class Peer {
  /** Position in the owning Tunnel's `peers` array. */
  readonly index: number;
  readonly name: string;
  /** Underlay address of the peer, int32 (RFC 2003 "tunnel exit point" when we encapsulate). */
  readonly endpoint: number;

  /**
   * Tunnel MTU toward this peer, in bytes of inner packet (soft state, RFC 2003 §5.1). The
   * effective limit is `min(tunnel policy mtu, this)`, see `Tunnel.mtuFor`.
   */
  mtu: number;
  /** Next outer Identification (16 bits, wraps), one counter per (local, endpoint, 4) as RFC 6864 §4.1 asks. */
  nextId: number;
  /** What `nextId` advances by (a power of two, so that the wrap keeps a queue's IDs its own). */
  readonly idStep: number;
  /** ENCAP_IPIP or ENCAP_FOU: how packets to and from this peer travel. */
  readonly encap: number;

  // Path MTU soft state (RFC 1191 §6.3) kept beside `mtu`, which it qualifies: the time is
  // milliseconds since the epoch, 0 for "never". src/ipip only stores them.
  /** The configured tunnel MTU toward this peer; `mtu` returns to it when a learned one ages out. */
  readonly baseMtu: number;
  /** When `mtu` was last lowered by an ICMP Fragmentation Needed from the underlay. */
  pmtuLearnedAt = DOUBLE_ZERO;

  // Outer-header template (STYLE rule 7). Written only by bindOuter(); read by Tunnel.encapsulate.
  /** Outer Source Address: our underlay address, int32. */
  outerSrc = 0;
  /** Fixed outer TOS, or 0 when the tunnel inherits it from the inner header. */
  outerTos = 0;
  /** Fixed outer TTL, or 0 when the tunnel inherits it from the inner header. */
  outerTtl = 0;
  /** Fixed outer Flags word: FLAG_DF when the tunnel always sets DF, else 0. */
  outerFlags = 0;
  /**
   * Folded one's complement sum (RFC 1071) of the outer header's fixed words: version/IHL and
   * fixed TOS, fixed flags, fixed TTL and protocol 4, source, destination. Per packet the
   * encapsulator adds Total Length, Identification and any inherited TOS/TTL/DF.
   */
  outerSum = 0;

  constructor(options: PeerOptions) {
    const { index, name, endpoint, mtu = MAX_TUNNEL_MTU, initialId = 0, idStep = 1, encap = ENCAP_IPIP } = options;
    if (encap !== ENCAP_IPIP && encap !== ENCAP_FOU) throw new RangeError(`ipip: peer ${name}: encap must be ENCAP_IPIP or ENCAP_FOU, got ${encap}`);
    if (!Number.isInteger(index) || index < 0) throw new RangeError(`ipip: peer index must be an integer >= 0, got ${index}`);
    if (!isInt32(endpoint)) throw new RangeError(`ipip: peer ${name}: endpoint must be an int32 address, got ${endpoint}`);
    if (!Number.isInteger(mtu) || mtu < MIN_TUNNEL_MTU || mtu > MAX_TUNNEL_MTU) {
      throw new RangeError(`ipip: peer ${name}: mtu must be an integer ${MIN_TUNNEL_MTU}..${MAX_TUNNEL_MTU}, got ${mtu}`);
    }
    if (!Number.isInteger(initialId) || initialId < 0 || initialId > 0xffff) {
      throw new RangeError(`ipip: peer ${name}: initialId must be an integer 0..65535, got ${initialId}`);
    }
    if (!Number.isInteger(idStep) || idStep < 1 || idStep > 0x8000 || (idStep & (idStep - 1)) !== 0) {
      throw new RangeError(`ipip: peer ${name}: idStep must be a power of two 1..32768, got ${idStep}`);
    }
    this.index = index;
    this.name = name;
    this.endpoint = endpoint;
    this.mtu = mtu;
    this.baseMtu = mtu;
    this.nextId = initialId;
    this.idStep = idStep;
    this.encap = encap;
  }

  /**
   * Precomputes the outer header template for tunnel source `local` (int32) and the fixed
   * parts of the tunnel's policy: `tos` and `ttl` are the fixed values, or 0 for "inherit"
   * (0 contributes nothing to the sum, and the inherited value is OR-ed in per packet);
   * `flags` is FLAG_DF or 0. Called by `Tunnel`'s constructor; a Peer serves one live Tunnel.
   */
  bindOuter(local: number, tos: number, ttl: number, flags: number): void {
    this.outerSrc = local | 0;
    this.outerTos = tos;
    this.outerTtl = ttl;
    this.outerFlags = flags;
    const sum =
      ((IPV4_VERSION_IHL_NO_OPTIONS << 8) | tos) +
      flags +
      ((ttl << 8) | IPPROTO_IPIP) +
      int32Sum(local) +
      int32Sum(this.endpoint);
    this.outerSum = (sum & 0xffff) + (sum >>> 16);
  }

  /**
   * Copies soft state from the Peer with the same identity in the previous configuration, so a
   * reload keeps the ID sequence (RFC 6864: no early reuse of an ID toward the same endpoint);
   * the data path's figures are carried by `PeerFigures.carry` (src/dataplane/figures.ts).
   * `mtu` is not carried: it restarts from this peer's configured value, as a learned path MTU
   * is soft state that ages anyway (RFC 1191 §6.3). Control path.
   */
  inheritSoftState(previous: Peer): void {
    this.nextId = previous.nextId;
  }
}
