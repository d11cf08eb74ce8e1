/**
 * What one data-path queue counts (README "Counters"), all in typed arrays that the batch
 * handlers increment and the control path reads (STYLE rule 10: drops are counters, not logs).
 *
 * Flow: the global counter names (`COUNTER_NAMES`) and their indices (`C`); `PeerFigures`, the
 * per-peer figures indexed by peer index (`Peer.index`); `Figures`, one queue's counters, drops,
 * last errors and peer figures; then the views the status report takes of them (`nameFigures`,
 * `queueSnapshot`).
 *
 * The per-peer figures live here rather than on `Peer` (src/ipip) because they are the data
 * path's statistics, not tunnel state: src/ipip never reads them, each queue keeps its own, and a
 * typed-array element can be stored again and again without changing any object's shape, so the
 * JIT warm-up (warmup.ts) can put them back without deoptimizing the batch handlers.
 */
import { VERDICT_NAMES, type VerdictName } from '../ipip/index.js';

/** The data path's global counters (README "Counters"), by index into `Figures.counters`. */
export const COUNTER_NAMES = [
  'tun_rx_packets',
  'tun_rx_bytes',
  'tun_rx_batches',
  'tun_read_errors',
  'tx_packets',
  'tx_bytes',
  'underlay_rx_packets',
  'underlay_rx_bytes',
  'underlay_rx_batches',
  'underlay_read_errors',
  'rx_packets',
  'rx_bytes',
  'fragmented_packets',
  'fragments_sent',
  'icmp_sent',
  'icmp_rate_limited',
  'icmp_not_sent',
  'underlay_icmp_rx',
  'icmp_relayed',
  'icmp_not_relayed',
  'icmp_unrelayable',
  'icmp_not_ours',
  'pmtu_updates',
  'gso_packets',
  'gso_segments',
  'gro_packets',
  'gro_segments',
  'underlay_gro_packets',
  'fou_gso_sends',
  'fou_gso_segments',
  'fou_gso_refused',
  'fou_gro_reads',
  'fou_gro_segments',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];

/** Index of each counter in `Figures.counters`. */
export const C = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])) as Record<CounterName, number>;

/**
 * Per-peer figures of one queue, each array indexed by peer index. Written by the batch handlers
 * (tx_* after a send that succeeded, rx_* after a TUN write that succeeded, so a failed write is
 * counted only under its drop reason); times are milliseconds since the epoch, 0 for "never".
 */
export class PeerFigures {
  /** Encapsulated packets sent to the peer, and their inner bytes (the outer header is not counted, so tx and rx compare). */
  readonly txPackets: Float64Array;
  readonly txBytes: Float64Array;
  /** Decapsulated packets from the peer written to the TUN, and their bytes. */
  readonly rxPackets: Float64Array;
  readonly rxBytes: Float64Array;
  /** When the last packet from the peer was accepted (RFC 2003 §5 soft state). */
  readonly lastRxAt: Float64Array;
  /** When an ICMP unreachable about our packets to the peer arrived (0: none since the last packet from it). */
  readonly unreachableAt: Float64Array;
  /** What that ICMP said, e.g. "host unreachable from 192.0.2.126"; only the control path reads it. */
  readonly unreachableReason: (string | null)[];

  constructor(readonly count: number) {
    this.txPackets = new Float64Array(count);
    this.txBytes = new Float64Array(count);
    this.rxPackets = new Float64Array(count);
    this.rxBytes = new Float64Array(count);
    this.lastRxAt = new Float64Array(count);
    this.unreachableAt = new Float64Array(count);
    this.unreachableReason = new Array<string | null>(count).fill(null);
  }

  /** Every figure of `from`, element by element (same peer count): no field is stored. */
  setFrom(from: PeerFigures): void {
    this.txPackets.set(from.txPackets);
    this.txBytes.set(from.txBytes);
    this.rxPackets.set(from.rxPackets);
    this.rxBytes.set(from.rxBytes);
    this.lastRxAt.set(from.lastRxAt);
    this.unreachableAt.set(from.unreachableAt);
    for (let i = 0; i < this.count; i++) {
      if (this.unreachableReason[i] !== from.unreachableReason[i]) this.unreachableReason[i] = from.unreachableReason[i]!;
    }
  }

  /** A copy (the warm-up's saved state). */
  clone(): PeerFigures {
    const c = new PeerFigures(this.count);
    c.setFrom(this);
    return c;
  }

  /**
   * Carry peer `fromIndex`'s traffic counters in `from` over to peer `index` here: what a config
   * reload does for a peer that stays (with `Peer.inheritSoftState` for its ID sequence). Control path.
   */
  carry(index: number, from: PeerFigures, fromIndex: number): void {
    this.txPackets[index] = from.txPackets[fromIndex]!;
    this.txBytes[index] = from.txBytes[fromIndex]!;
    this.rxPackets[index] = from.rxPackets[fromIndex]!;
    this.rxBytes[index] = from.rxBytes[fromIndex]!;
  }
}

/** errno names of the last failed read/write, per direction, for the status report. */
export interface LastErrors {
  tunRead?: string;
  underlayRead?: string;
  icmpRead?: string;
  tunWrite?: string;
  underlaySend?: string;
}

/** One queue's figures. */
export class Figures {
  /** Global counters, indexed as COUNTER_NAMES. Float64: exact up to 2^53. */
  readonly counters = new Float64Array(COUNTER_NAMES.length);
  /** Packets dropped, indexed by verdict (index 0, `forward`, stays 0). */
  readonly drops = new Float64Array(VERDICT_NAMES.length);
  readonly lastErrors: LastErrors = {};
  /** Replaced as a whole by a config reload (`Dataplane.setTunnel`), between batches. */
  peers: PeerFigures;

  constructor(peerCount: number) {
    this.peers = new PeerFigures(peerCount);
  }

  /** Counters, drops and last errors back to nothing (peer figures are left alone). */
  resetCounters(): void {
    this.counters.fill(0);
    this.drops.fill(0);
    for (const k of Object.keys(this.lastErrors)) delete this.lastErrors[k as keyof LastErrors];
  }
}

export interface NamedFigures {
  counters: Record<CounterName, number>;
  drops: Record<Exclude<VerdictName, 'forward'>, number>;
}

/** Counters (indexed as COUNTER_NAMES) and drops (as VERDICT_NAMES) as plain objects. */
export function nameFigures(counters: ArrayLike<number>, drops: ArrayLike<number>): NamedFigures {
  const c = {} as Record<CounterName, number>;
  COUNTER_NAMES.forEach((name, i) => (c[name] = counters[i]!));
  const d = {} as Record<Exclude<VerdictName, 'forward'>, number>;
  VERDICT_NAMES.forEach((name, i) => {
    if (name !== 'forward') d[name] = drops[i]!;
  });
  return { counters: c, drops: d };
}

/** One queue's figures as plain data (what a queue worker posts): counters and drops indexed as COUNTER_NAMES / VERDICT_NAMES. */
export interface QueueSnapshot {
  counters: number[];
  drops: number[];
  lastErrors: Record<string, string>;
  /** Per peer, in config order. */
  peers: { txPackets: number; txBytes: number; rxPackets: number; rxBytes: number; lastRxAt: number }[];
}

/** Adds one queue's counters and drops (indexed as COUNTER_NAMES / VERDICT_NAMES) into `into`'s. */
export function addFigures(into: { counters: Float64Array; drops: Float64Array }, q: { counters: ArrayLike<number>; drops: ArrayLike<number> }): void {
  const { counters, drops } = into;
  for (let j = 0; j < counters.length; j++) counters[j]! += q.counters[j]!;
  for (let j = 0; j < drops.length; j++) drops[j]! += q.drops[j]!;
}

/** A queue's figures as they stand. */
export function queueSnapshot(f: Figures): QueueSnapshot {
  const p = f.peers;
  return {
    counters: Array.from(f.counters),
    drops: Array.from(f.drops),
    lastErrors: { ...f.lastErrors } as Record<string, string>,
    peers: Array.from({ length: p.count }, (_, i) => ({
      txPackets: p.txPackets[i]!,
      txBytes: p.txBytes[i]!,
      rxPackets: p.rxPackets[i]!,
      rxBytes: p.rxBytes[i]!,
      lastRxAt: p.lastRxAt[i]!,
    })),
  };
}
