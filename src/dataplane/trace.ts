/**
 * Live tracing's data-path half (`ipipd trace`, README "Tracing"): one queue's sampler. The
 * control path (src/daemon/trace.ts) turns it on with a filter, drains its ring every
 * `TRACE_DRAIN_MS` and turns it off when the last client goes away.
 *
 * Flow, in the order of this file: the verdict codes a trace adds to src/ipip's (`TRACE_FRAGMENTED`,
 * `TRACE_SEGMENTED`); `Tracer`: `sendVerdicts` / `receiveVerdicts`, the per-slot verdicts of
 * the current batch; `configure` (on, off); `sampleSend` / `sampleReceive`, called once after a
 * batch and only while on; `record`, the header fields into the ring; `drain`.
 *
 * Costing nothing when no one traces: the batch handlers test `tracer.on` once per batch. The
 * only per-packet work left when off is one byte store per *dropped* packet (its reason into
 * `sendVerdicts` / `receiveVerdicts`, beside the drop counter); forwards store nothing: the
 * arrays are zeroed (= forward) when tracing starts and after each sampled batch.
 *
 * Bounded: at most `TRACE_RATE` samples per second per queue (a token bucket, burst
 * `TRACE_RATE`), into a ring of `TRACE_RING` records that the control path empties every
 * `TRACE_DRAIN_MS`; what does not fit is only counted (`skipped`). Why these numbers: each
 * sample costs the data path a header parse, and the control path an object, a JSON line and a
 * socket write; 200 a second per queue is ~30 KB/s of JSON, far below what would slow forwarding
 * (a line rate of ~100k packets/s), and more than a human reads. No object per packet: records
 * are typed-array rows.
 */
import { Verdict } from '../ipip/index.js';
import { ICMP_BATCH } from './slabs.js';

/** Forwarded as inner fragments (RFC 2003 §5.1 without DF): no outer header in the slot. */
export const TRACE_FRAGMENTED = 254;
/** Offload mode: a super-packet forwarded as segments: no outer header in the slot. */
export const TRACE_SEGMENTED = 253;
/**
 * ICMP from the underlay about our outer packets (icmp.ts), by what became of it, named as its
 * counter: not about our packets, not to be relayed, quote too short, relayed to the inner sender.
 */
export const TRACE_ICMP_NOT_OURS = 240;
export const TRACE_ICMP_NOT_RELAYED = 241;
export const TRACE_ICMP_UNRELAYABLE = 242;
export const TRACE_ICMP_RELAYED = 243;
/** Filter: every verdict; every drop; every underlay ICMP message. */
export const TRACE_ANY = -1;
export const TRACE_ANY_DROP = -2;
export const TRACE_ICMP = -3;

export const TRACE_RATE = 200;
export const TRACE_RING = 256;
export const TRACE_DRAIN_MS = 100;

/** Direction of a traced packet. */
export const DIR_SEND = 0; // TUN -> underlay
export const DIR_RECEIVE = 1; // underlay -> TUN
export const DIR_ICMP = 2; // ICMP from the underlay

/** One traced packet as the control path gets it (addresses as signed int32, 0: absent). */
export interface TraceRecord {
  time: number;
  queue: number;
  dir: number;
  verdict: number;
  outerSrc: number;
  outerDst: number;
  src: number;
  dst: number;
  proto: number;
  sport: number;
  dport: number;
  length: number;
}

/** What to sample: a verdict (TRACE_ANY, TRACE_ANY_DROP or a Verdict), and a peer's endpoint (0: any). */
export interface TraceFilter {
  verdict: number;
  peerEndpoint: number;
}

/**
 * Does a filter (`verdict`: TRACE_ANY, TRACE_ANY_DROP or a Verdict, where `forward` takes
 * fragmented and segmented forwards too; `peer`: an endpoint, 0 for any) take verdict `v` of a
 * packet to `outerDst` / from `outerSrc`?
 */
export function traceWanted(verdict: number, peer: number, v: number, outerDst: number, outerSrc: number): boolean {
  const forwarded = v === Verdict.forward || v === TRACE_FRAGMENTED || v === TRACE_SEGMENTED;
  const icmp = v >= TRACE_ICMP_NOT_OURS && v <= TRACE_ICMP_RELAYED;
  if (verdict === TRACE_ICMP ? !icmp : verdict === TRACE_ANY_DROP ? forwarded || icmp : verdict !== TRACE_ANY && (verdict === Verdict.forward ? !forwarded : v !== verdict)) return false;
  return peer === 0 || outerDst === peer || outerSrc === peer;
}

const F_DIR = 0, F_VERDICT = 1, F_OSRC = 2, F_ODST = 3, F_SRC = 4, F_DST = 5, F_PROTO = 6, F_SPORT = 7, F_DPORT = 8, F_LEN = 9;
const FIELDS = 10;

export class Tracer {
  /** Tested once per batch by the handlers. */
  on = false;
  /** This tracer's queue (0: the main thread). */
  queue = 0;
  /** The verdict of each TUN slot of the current batch (0 = forward; drops store their reason). */
  readonly sendVerdicts: Uint8Array;
  /** The verdict of each raw-socket slot of the current batch. */
  readonly receiveVerdicts: Uint8Array;
  /** What became of each underlay ICMP message of the current batch (TRACE_ICMP_*). */
  readonly icmpVerdicts: Uint8Array;
  private filterVerdict = TRACE_ANY;
  private filterPeer = 0;
  private tokens = 0;
  private refilledAt = 0;
  private readonly rows = new Int32Array(TRACE_RING * FIELDS);
  private readonly times = new Float64Array(TRACE_RING);
  private count = 0;
  /** Samples that matched but were over the rate or did not fit the ring, since the last drain. */
  private skipped = 0;

  constructor(
    batch: number,
    private readonly now: () => number = Date.now,
  ) {
    this.sendVerdicts = new Uint8Array(batch);
    this.receiveVerdicts = new Uint8Array(batch);
    this.icmpVerdicts = new Uint8Array(ICMP_BATCH);
  }

  /** Start sampling with `f`, or stop (null). Control path, between batches. */
  configure(f: TraceFilter | null): void {
    this.sendVerdicts.fill(0);
    this.receiveVerdicts.fill(0);
    if (f === null) {
      this.on = false;
      return;
    }
    this.filterVerdict = f.verdict;
    this.filterPeer = f.peerEndpoint;
    this.tokens = TRACE_RATE;
    this.refilledAt = this.now();
    this.on = true;
  }

  /**
   * After a TUN batch of `n` (packets at `offs[i] + head`, `lens[i]` bytes, less `vnet` bytes
   * of virtio_net_hdr in offload mode): sample by `sendVerdicts`, then zero them.
   */
  sampleSend(buf: Buffer, lens: Int32Array, offs: Int32Array, head: number, vnet: number, n: number): void {
    const t = this.now();
    this.refill(t);
    const sv = this.sendVerdicts;
    for (let i = 0; i < n; i++) {
      const v = sv[i]!;
      const off = offs[i]! + head;
      const len = lens[i]! - vnet;
      // The outer header is in the headroom only for a packet encapsulated in its slot.
      const outer = v === Verdict.forward && len >= 20;
      if (!this.wanted(v, outer ? buf.readInt32BE(off - 20 + 16) : 0, 0)) continue;
      if (!this.take()) continue;
      this.record(t, DIR_SEND, v, outer ? buf.readInt32BE(off - 20 + 12) : 0, outer ? buf.readInt32BE(off - 20 + 16) : 0, buf, off, len);
    }
    sv.fill(0, 0, n);
  }

  /** After a raw-socket batch of `n` (whole IPIP datagrams at `slot * i`): sample by `receiveVerdicts`, then zero them. */
  sampleReceive(buf: Buffer, lens: Int32Array, slot: number, n: number): void {
    const t = this.now();
    this.refill(t);
    const rv = this.receiveVerdicts;
    for (let i = 0; i < n; i++) {
      const v = rv[i]!;
      const off = i * slot;
      const len = lens[i]!;
      const ok = len >= 20 && buf[off]! >> 4 === 4;
      const src = ok ? buf.readInt32BE(off + 12) : 0;
      if (!this.wanted(v, 0, src)) continue;
      if (!this.take()) continue;
      const ihl = ok ? (buf[off]! & 15) * 4 : 0;
      const inner = ok && ihl >= 20 && len >= ihl + 20;
      this.record(t, DIR_RECEIVE, v, src, ok ? buf.readInt32BE(off + 16) : 0, buf, inner ? off + ihl : off, inner ? len - ihl : 0);
    }
    rv.fill(0, 0, n);
  }

  /**
   * After a batch of `n` underlay ICMP messages (at `slot * i`): each by `icmpVerdicts`, with
   * the ICMP datagram's addresses as outer (router -> us) and the quoted inner packet, if the
   * quote reaches it, as inner.
   */
  sampleIcmp(buf: Buffer, lens: Int32Array, slot: number, n: number): void {
    const t = this.now();
    this.refill(t);
    for (let i = 0; i < n; i++) {
      const v = this.icmpVerdicts[i]!;
      const off = i * slot;
      const len = lens[i]!;
      const ok = len >= 20 && buf[off]! >> 4 === 4;
      const src = ok ? buf.readInt32BE(off + 12) : 0;
      const dst = ok ? buf.readInt32BE(off + 16) : 0;
      if (!this.wanted(v, dst, src)) continue;
      if (!this.take()) continue;
      // The ICMP header (8 bytes) after the datagram's header, then our quoted outer header.
      const q = ok ? off + (buf[off]! & 15) * 4 + 8 : off;
      const quoted = ok && len >= q - off + 20 && buf[q]! >> 4 === 4;
      const inner = quoted ? q + (buf[q]! & 15) * 4 : off;
      this.record(t, DIR_ICMP, v, src, dst, buf, inner, quoted ? Math.max(0, len - (inner - off)) : 0);
    }
  }

  private wanted(v: number, outerDst: number, outerSrc: number): boolean {
    return traceWanted(this.filterVerdict, this.filterPeer, v, outerDst, outerSrc);
  }

  private refill(t: number): void {
    this.tokens = Math.min(TRACE_RATE, this.tokens + ((t - this.refilledAt) * TRACE_RATE) / 1000);
    this.refilledAt = t;
  }

  /** A token and a free row, or count the sample as skipped. */
  private take(): boolean {
    if (this.tokens < 1 || this.count === TRACE_RING) {
      this.skipped++;
      return false;
    }
    this.tokens--;
    return true;
  }

  /** One row: the outer addresses given, the inner IPv4 header (and TCP/UDP ports) at `buf[off, off+len)`. */
  private record(t: number, dir: number, v: number, osrc: number, odst: number, buf: Buffer, off: number, len: number): void {
    const r = this.count++ * FIELDS;
    const rows = this.rows;
    this.times[r / FIELDS] = t;
    rows.fill(0, r, r + FIELDS);
    rows[r + F_DIR] = dir;
    rows[r + F_VERDICT] = v;
    rows[r + F_OSRC] = osrc;
    rows[r + F_ODST] = odst;
    rows[r + F_LEN] = len;
    if (len < 20 || buf[off]! >> 4 !== 4) return;
    const ihl = (buf[off]! & 15) * 4;
    const proto = buf[off + 9]!;
    rows[r + F_SRC] = buf.readInt32BE(off + 12);
    rows[r + F_DST] = buf.readInt32BE(off + 16);
    rows[r + F_PROTO] = proto;
    // Ports of TCP and UDP, in a first fragment only (RFC 791: later ones carry no header).
    const firstFragment = (buf.readUInt16BE(off + 6) & 0x1fff) === 0;
    if ((proto === 6 || proto === 17) && firstFragment && ihl >= 20 && len >= ihl + 4) {
      rows[r + F_SPORT] = buf.readUInt16BE(off + ihl);
      rows[r + F_DPORT] = buf.readUInt16BE(off + ihl + 2);
    }
  }

  /** The records since the last drain, and how many were skipped; empties the ring. Control path. */
  drain(): { records: TraceRecord[]; skipped: number } {
    const records: TraceRecord[] = [];
    const rows = this.rows;
    for (let k = 0; k < this.count; k++) {
      const r = k * FIELDS;
      records.push({
        time: this.times[k]!,
        queue: this.queue,
        dir: rows[r + F_DIR]!,
        verdict: rows[r + F_VERDICT]!,
        outerSrc: rows[r + F_OSRC]!,
        outerDst: rows[r + F_ODST]!,
        src: rows[r + F_SRC]!,
        dst: rows[r + F_DST]!,
        proto: rows[r + F_PROTO]!,
        sport: rows[r + F_SPORT]!,
        dport: rows[r + F_DPORT]!,
        length: rows[r + F_LEN]!,
      });
    }
    const skipped = this.skipped;
    this.count = 0;
    this.skipped = 0;
    return { records, skipped };
  }
}
