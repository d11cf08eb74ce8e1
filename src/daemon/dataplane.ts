/**
 * The data path: batch loops that wire the I/O adapters (src/tun/native.ts) to the RFC 2003
 * core (src/ipip). Flow, in the order of this file:
 *   1. TUN -> underlay (`onTunBatch`): the native Reader drained up to `batch` inner packets into
 *      the TUN slab, each 20 bytes into its slot (headroom); `Tunnel.encapsulate` writes the outer
 *      header in front in place; forwards go out in one `sendRaw` (sendmmsg) call. The two drops
 *      that RFC 2003 answers are answered here: too big with DF -> ICMP Fragmentation Needed
 *      (§5.1), inner TTL 0 -> ICMP Time Exceeded (§3.1); too big without DF is fragmented
 *      (`sendFragments`, inner fragmentation, see src/ipip/fragment.ts).
 *   2. underlay -> TUN (`onRawBatch`): the Reader drained whole IPIP datagrams into the raw slab;
 *      `Tunnel.decapsulate` validates them and points at the inner packet inside the slot; the
 *      forwards go to the TUN with one `writeTun` call.
 *   3. ICMP from the underlay (`onIcmpBatch`): errors that routers inside the tunnel send about
 *      our outer packets update the peer's soft state (path MTU, reachability) and are relayed to
 *      the inner sender as the RFC 2003 §4 table says.
 *   4. ICMP errors ipipd originates are queued (`queueIcmpError`, RFC 1122 §3.2.2 rules and a
 *      token-bucket rate limit) and written into the TUN once per batch (`flushIcmp`).
 * No object, closure, Buffer or log call per packet on the forwarding paths: offsets and lengths
 * live in typed arrays preallocated here, the verdict result object is reused, drops increment a
 * counter indexed by the verdict. Every packet read is either forwarded (possibly as fragments)
 * or counted under exactly one drop reason.
 *
 * Buffer ownership: all slabs are pools. The Readers overwrite them on their next wake-up, so
 * nothing here keeps a view of a packet after a batch callback returns.
 */
import { constants as osConstants } from 'node:os';
import {
  FLAG_DF,
  ICMP_DEST_UNREACH,
  ICMP_ERROR_MAX,
  ICMP_TIME_EXCEEDED,
  IcmpQuote,
  MIN_TUNNEL_MTU,
  OFF_FLAGS_FRAG,
  PacketResult,
  UNREACH_FRAG_NEEDED,
  UNREACH_HOST,
  UnderlayIcmp,
  classifyUnderlayIcmp,
  fragmentInner,
  mayAnswerWithIcmpError,
  plateauBelow,
  writeIcmpError,
  type Peer,
  type Tunnel,
} from '../ipip/index.js';
import { Verdict, VERDICT_NAMES, type VerdictName } from '../ipip/verdict.js';
import { formatIPv4 } from '../routing/prefix.js';
import { native, type NativeReader } from '../tun/native.js';
import type { Logger } from './logger.js';
import { COUNTER_NAMES, type CounterName } from './dataplane-counters.js';

export { COUNTER_NAMES, type CounterName };

/** Bytes reserved before each inner packet for the outer header (RFC 2003: 20, no options). */
export const HEADROOM = 20;
/** Most fragments one inner packet may be cut into; more and it is dropped as too_big. */
const MAX_FRAGMENTS = 64;
/** ICMP errors queued per batch at most (the rest count as rate limited). */
const ICMP_QUEUE = 32;
/** ICMP messages read from the underlay per wake-up; errors are rare. */
const ICMP_BATCH = 16;
const ICMP_SLOT = 2048;

const C = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])) as Record<CounterName, number>;

export interface DataplaneOptions {
  tunFd: number;
  rawFd: number;
  /** Raw ICMP socket on the underlay address, or -1 for none. */
  icmpFd: number;
  tunnel: Tunnel;
  /** Packets per batch, fixed for the dataplane's life. */
  batch: number;
  /** Largest inner packet the TUN can hand us (its MTU). */
  tunMtu: number;
  /** Largest datagram the raw socket may hand us (outer header included). */
  underlayMax: number;
  /** Source address of the ICMP errors ipipd writes into the TUN (its address, int32). */
  icmpSource: number;
  /** ICMP errors per second at most, and the burst allowed (like Linux's icmp_ratelimit). */
  icmpRate: number;
  icmpBurst: number;
  log: Logger;
  /** Clock in ms; a parameter so that tests can drive it. */
  now?: () => number;
}

function slotSize(payload: number): number {
  // +1 so that a packet exactly filling the slot is told apart from a truncated one; 64-byte
  // alignment keeps every slot's start on its own cache line.
  return (HEADROOM + payload + 1 + 63) & ~63;
}

export class Dataplane {
  /** Global counters, indexed as COUNTER_NAMES. Float64: exact up to 2^53. */
  readonly counters = new Float64Array(COUNTER_NAMES.length);
  /** Packets dropped, indexed by verdict (index 0, `forward`, stays 0). */
  readonly drops = new Float64Array(VERDICT_NAMES.length);
  /** errno name of the last failed read/write, per direction, for the status report. */
  readonly lastErrors: { tunRead?: string; underlayRead?: string; icmpRead?: string; tunWrite?: string; underlaySend?: string } = {};

  private tunnel: Tunnel;
  private readonly log: Logger;
  private readonly tunFd: number;
  private readonly rawFd: number;
  private readonly batch: number;
  private readonly now: () => number;

  // TUN -> underlay
  private readonly tunSlot: number;
  private readonly tunSlab: Buffer;
  private readonly tunLens: Int32Array;
  private readonly sendOffs: Int32Array;
  private readonly sendLens: Int32Array;
  private readonly sendDsts: Int32Array;
  private readonly sendPeers: (Peer | null)[];
  // fragments of one inner packet (slow path)
  private readonly fragSlab: Buffer;
  private readonly fragLens: Int32Array;
  private readonly fragOffs: Int32Array;
  private readonly fragDsts: Int32Array;
  private readonly fragResult = new PacketResult();
  // underlay -> TUN
  private readonly rawSlot: number;
  private readonly rawSlab: Buffer;
  private readonly rawLens: Int32Array;
  private readonly writeOffs: Int32Array;
  private readonly writeLens: Int32Array;
  private readonly writePeers: (Peer | null)[];
  // ICMP in (underlay) and out (TUN)
  private readonly icmpInSlab: Buffer;
  private readonly icmpInLens: Int32Array;
  private readonly quote = new IcmpQuote();
  private readonly icmpOutSlab = Buffer.alloc(ICMP_QUEUE * ICMP_ERROR_MAX);
  private readonly icmpOutOffs = new Int32Array(ICMP_QUEUE);
  private readonly icmpOutLens = new Int32Array(ICMP_QUEUE);
  private icmpOutCount = 0;
  private icmpId = 0;
  private readonly icmpSource: number;
  private readonly icmpRate: number;
  private readonly icmpBurst: number;
  private icmpTokens: number;
  private icmpRefilledAt: number;

  private readonly result = new PacketResult();
  private readonly ioRes = new Int32Array(2);
  private readonly tunReader: NativeReader;
  private readonly rawReader: NativeReader;
  private readonly icmpReader: NativeReader | null;
  private lastErrorLog = 0;
  private closed = false;

  constructor(o: DataplaneOptions) {
    this.tunnel = o.tunnel;
    this.log = o.log;
    this.tunFd = o.tunFd;
    this.rawFd = o.rawFd;
    this.batch = o.batch;
    this.now = o.now ?? Date.now;
    const b = o.batch;

    this.tunSlot = slotSize(o.tunMtu);
    this.tunSlab = Buffer.alloc(b * this.tunSlot);
    this.tunLens = new Int32Array(b);
    this.sendOffs = new Int32Array(b);
    this.sendLens = new Int32Array(b);
    this.sendDsts = new Int32Array(b);
    this.sendPeers = new Array<Peer | null>(b).fill(null);

    this.fragSlab = Buffer.alloc(MAX_FRAGMENTS * this.tunSlot);
    this.fragLens = new Int32Array(MAX_FRAGMENTS);
    this.fragOffs = new Int32Array(MAX_FRAGMENTS);
    this.fragDsts = new Int32Array(MAX_FRAGMENTS);

    this.rawSlot = slotSize(o.underlayMax);
    this.rawSlab = Buffer.alloc(b * this.rawSlot);
    this.rawLens = new Int32Array(b);
    this.writeOffs = new Int32Array(b);
    this.writeLens = new Int32Array(b);
    this.writePeers = new Array<Peer | null>(b).fill(null);

    this.icmpInSlab = Buffer.alloc(ICMP_BATCH * ICMP_SLOT);
    this.icmpInLens = new Int32Array(ICMP_BATCH);
    for (let i = 0; i < ICMP_QUEUE; i++) this.icmpOutOffs[i] = i * ICMP_ERROR_MAX;
    this.icmpSource = o.icmpSource;
    this.icmpRate = o.icmpRate;
    this.icmpBurst = o.icmpBurst;
    this.icmpTokens = o.icmpBurst;
    this.icmpRefilledAt = this.now();

    this.tunReader = new native.Reader(o.tunFd, 0, this.tunSlab, this.tunLens, this.tunSlot, HEADROOM, b,
      (n) => this.onTunBatch(n), (err) => this.onReadError('tun', err));
    // The raw sockets hand us the outer header too: no headroom needed there.
    this.rawReader = new native.Reader(o.rawFd, 1, this.rawSlab, this.rawLens, this.rawSlot, 0, b,
      (n) => this.onRawBatch(n), (err) => this.onReadError('underlay', err));
    this.icmpReader = o.icmpFd < 0 ? null : new native.Reader(o.icmpFd, 1, this.icmpInSlab, this.icmpInLens, ICMP_SLOT, 0, ICMP_BATCH,
      (n) => this.onIcmpBatch(n), (err) => this.onReadError('icmp', err));
  }

  start(): void {
    this.tunReader.start();
    this.rawReader.start();
    this.icmpReader?.start();
  }

  /** Stop reading (the first step of shutdown); nothing is queued inside ipipd. */
  stop(): void {
    this.tunReader.stop();
    this.rawReader.stop();
    this.icmpReader?.stop();
  }

  /** Release the pollers. The fds belong to the caller, who closes them after this. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.tunReader.close();
    this.rawReader.close();
    this.icmpReader?.close();
  }

  /** Swap in a new Tunnel (new peers/routes) between two batches. */
  setTunnel(t: Tunnel): void {
    this.tunnel = t;
  }

  // ---- 1. TUN -> underlay ---------------------------------------------------------------------

  private onTunBatch(n: number): void {
    const { tunSlab, tunLens, tunSlot, sendOffs, sendLens, sendDsts, sendPeers, result, counters, drops, tunnel } = this;
    counters[C.tun_rx_batches]++;
    counters[C.tun_rx_packets] += n;
    let k = 0;
    for (let i = 0; i < n; i++) {
      const len = tunLens[i];
      if (len > 0) counters[C.tun_rx_bytes] += len;
      const off = i * tunSlot + HEADROOM;
      const v = tunnel.encapsulate(tunSlab, off, len, result);
      if (v !== Verdict.forward) {
        if (v === Verdict.too_big) this.tooBig(off, len, result.peer!);
        else {
          drops[v]++;
          // RFC 2003 §3.1 / RFC 792: the encapsulator answers an inner TTL of 0.
          if (v === Verdict.ttl_expired) this.queueIcmpError(ICMP_TIME_EXCEEDED, 0, 0, tunSlab, off, len);
        }
        continue;
      }
      sendOffs[k] = result.offset;
      sendLens[k] = result.length;
      sendDsts[k] = result.peer!.endpoint;
      sendPeers[k] = result.peer;
      k++;
    }
    if (k > 0) {
      const sent = native.sendRaw(this.rawFd, tunSlab, sendOffs, sendLens, sendDsts, k, this.ioRes);
      counters[C.tx_packets] += sent;
      for (let j = 0; j < k; j++) {
        const peer = sendPeers[j]!;
        sendPeers[j] = null;
        const l = sendLens[j];
        if (l < 0) continue; // the native layer marks a failed packet with -errno
        // Byte counters count inner packets (what the tunnel carries) in both directions; the
        // underlay's own bytes are in underlay_rx_bytes.
        const inner = l - HEADROOM;
        counters[C.tx_bytes] += inner;
        peer.txPackets++;
        peer.txBytes += inner;
      }
      if (this.ioRes[0] > 0) {
        drops[Verdict.socket_write_error] += this.ioRes[0];
        this.lastErrors.underlaySend = errnoLabel(this.ioRes[1]);
      }
    }
    if (this.icmpOutCount > 0) this.flushIcmp();
  }

  /**
   * An inner packet larger than the tunnel MTU toward `peer` (RFC 2003 §5.1). With DF: drop it
   * and tell the sender the MTU (ICMP 3/4, RFC 1191). Without DF: fragment it (inner).
   */
  private tooBig(off: number, len: number, peer: Peer): void {
    const buf = this.tunSlab;
    const mtu = this.tunnel.mtuFor(peer);
    if ((buf[off + OFF_FLAGS_FRAG] << 8) & FLAG_DF) {
      this.drops[Verdict.too_big]++;
      this.queueIcmpError(ICMP_DEST_UNREACH, UNREACH_FRAG_NEEDED, mtu, buf, off, len);
      return;
    }
    this.sendFragments(off, len, peer, mtu);
  }

  /** Fragment one inner packet, encapsulate each piece, send them in one sendmmsg. Slow path. */
  private sendFragments(off: number, len: number, peer: Peer, mtu: number): void {
    const { fragSlab, fragLens, fragOffs, fragDsts, fragResult, tunnel, counters, drops } = this;
    const n = fragmentInner(this.tunSlab, off, len, mtu, fragSlab, this.tunSlot, HEADROOM, fragLens, MAX_FRAGMENTS);
    if (n === 0) {
      drops[Verdict.too_big]++;
      return;
    }
    let k = 0;
    for (let j = 0; j < n; j++) {
      const v = tunnel.encapsulate(fragSlab, j * this.tunSlot + HEADROOM, fragLens[j], fragResult);
      if (v !== Verdict.forward) {
        // A fragment of a packet that passed every check passes them too; if not, the packet
        // is lost as a whole and counted once, under the fragment's reason.
        drops[v]++;
        return;
      }
      fragOffs[k] = fragResult.offset;
      fragLens[k] = fragResult.length;
      fragDsts[k] = peer.endpoint;
      k++;
    }
    const sent = native.sendRaw(this.rawFd, fragSlab, fragOffs, fragLens, fragDsts, k, this.ioRes);
    counters[C.tx_packets] += sent;
    counters[C.fragments_sent] += sent;
    for (let j = 0; j < k; j++) {
      const l = fragLens[j];
      if (l < 0) continue;
      counters[C.tx_bytes] += l - HEADROOM;
      peer.txPackets++;
      peer.txBytes += l - HEADROOM;
    }
    if (this.ioRes[0] > 0) {
      // One lost fragment loses the packet: count it once.
      drops[Verdict.socket_write_error]++;
      this.lastErrors.underlaySend = errnoLabel(this.ioRes[1]);
    } else {
      counters[C.fragmented_packets]++;
    }
  }

  // ---- 2. underlay -> TUN ---------------------------------------------------------------------

  private onRawBatch(n: number): void {
    const { rawSlab, rawLens, rawSlot, writeOffs, writeLens, writePeers, result, counters, drops, tunnel } = this;
    counters[C.underlay_rx_batches]++;
    counters[C.underlay_rx_packets] += n;
    let k = 0;
    for (let i = 0; i < n; i++) {
      const len = rawLens[i];
      if (len > 0) counters[C.underlay_rx_bytes] += len;
      const v = tunnel.decapsulate(rawSlab, i * rawSlot, len, result);
      if (v !== Verdict.forward) {
        drops[v]++;
        continue;
      }
      writeOffs[k] = result.offset;
      writeLens[k] = result.length;
      writePeers[k] = result.peer;
      k++;
    }
    if (k === 0) return;
    const written = native.writeTun(this.tunFd, rawSlab, writeOffs, writeLens, k, this.ioRes);
    counters[C.rx_packets] += written;
    const now = this.now();
    for (let j = 0; j < k; j++) {
      const peer = writePeers[j]!;
      writePeers[j] = null;
      // Soft state (RFC 2003 §5): a packet from the peer proves it reachable again.
      peer.lastRxAt = now;
      if (peer.unreachableAt !== 0) {
        peer.unreachableAt = 0;
        peer.unreachableReason = null;
      }
      const l = writeLens[j];
      if (l < 0) continue;
      counters[C.rx_bytes] += l;
      peer.rxPackets++;
      peer.rxBytes += l;
    }
    if (this.ioRes[0] > 0) {
      drops[Verdict.tun_write_error] += this.ioRes[0];
      this.lastErrors.tunWrite = errnoLabel(this.ioRes[1]);
    }
  }

  // ---- 3. ICMP from the underlay (RFC 2003 §4, §5) ------------------------------------------

  private onIcmpBatch(n: number): void {
    const { icmpInSlab, icmpInLens, quote, counters, tunnel } = this;
    for (let i = 0; i < n; i++) {
      counters[C.underlay_icmp_rx]++;
      const off = i * ICMP_SLOT;
      const len = icmpInLens[i];
      const kind = classifyUnderlayIcmp(icmpInSlab, off, len, tunnel.local, quote);
      const peer = kind === UnderlayIcmp.notOurs ? null : tunnel.peerByEndpoint(quote.endpoint);
      if (peer === null) {
        counters[C.icmp_not_ours]++;
        continue;
      }
      if (kind === UnderlayIcmp.noRelay) {
        counters[C.icmp_not_relayed]++;
        continue;
      }
      if (kind === UnderlayIcmp.fragNeeded) {
        this.learnPathMtu(peer, off);
        if (quote.innerLength === 0) counters[C.icmp_unrelayable]++;
        // Only a sender that asked for DF wants to hear it; without DF we fragment ourselves.
        else if (!quote.innerDf) counters[C.icmp_not_relayed]++;
        else this.relay(ICMP_DEST_UNREACH, UNREACH_FRAG_NEEDED, tunnel.mtuFor(peer));
        continue;
      }
      // Net/host/protocol unreachable, time exceeded: the inner sender hears Host Unreachable.
      if (quote.type === ICMP_DEST_UNREACH && quote.code <= 2) {
        peer.unreachableAt = this.now();
        peer.unreachableReason = `${UNREACH_NAMES[quote.code]} from ${formatIPv4(icmpInSlab.readInt32BE(off + 12))}`;
      }
      if (quote.innerLength === 0) counters[C.icmp_unrelayable]++;
      else this.relay(ICMP_DEST_UNREACH, UNREACH_HOST, 0);
    }
    if (this.icmpOutCount > 0) this.flushIcmp();
  }

  /** Fragmentation Needed about our outer packets to `peer`: lower its tunnel MTU (RFC 1191). */
  private learnPathMtu(peer: Peer, icmpOff: number): void {
    const q = this.quote;
    // A router that does not say (0), or says something no smaller than what it refused, is
    // answered with the RFC 1191 §5 plateau below the refused length.
    const pmtu = q.nextHopMtu === 0 || q.nextHopMtu >= q.outerLength ? plateauBelow(q.outerLength) : q.nextHopMtu;
    const tunnelMtu = pmtu - HEADROOM;
    if (tunnelMtu < MIN_TUNNEL_MTU || tunnelMtu >= peer.mtu) return;
    const from = peer.mtu;
    peer.mtu = tunnelMtu;
    peer.pmtuLearnedAt = this.now();
    this.counters[C.pmtu_updates]++;
    // Each update lowers the MTU, so there are few of them: no rate limit needed.
    this.log.info({ peer: peer.name, from, to: tunnelMtu, router: formatIPv4(this.icmpInSlab.readInt32BE(icmpOff + 12)) }, 'path MTU toward peer lowered');
  }

  private relay(type: number, code: number, rest: number): void {
    const q = this.quote;
    if (this.queueIcmpError(type, code, rest, this.icmpInSlab, q.innerOffset, q.innerLength)) this.counters[C.icmp_relayed]++;
  }

  // ---- 4. ICMP errors ipipd originates ------------------------------------------------------

  /**
   * Queue an ICMP error about the datagram `buf[off, off+len)` to its source, from the TUN's
   * address. Returns false (and counts why) when RFC 1122 forbids it or the rate limit says no.
   */
  private queueIcmpError(type: number, code: number, rest: number, buf: Buffer, off: number, len: number): boolean {
    if (!mayAnswerWithIcmpError(buf, off, len)) {
      this.counters[C.icmp_not_sent]++;
      return false;
    }
    if (this.icmpOutCount >= ICMP_QUEUE || !this.takeIcmpToken()) {
      this.counters[C.icmp_rate_limited]++;
      return false;
    }
    const slot = this.icmpOutCount++;
    const dst = buf.readInt32BE(off + 12);
    this.icmpOutLens[slot] = writeIcmpError(this.icmpOutSlab, slot * ICMP_ERROR_MAX, type, code, rest, this.icmpSource, dst, this.icmpId, buf, off, len);
    this.icmpId = (this.icmpId + 1) & 0xffff;
    return true;
  }

  /** Token bucket: `icmpRate` per second, up to `icmpBurst` at once. */
  private takeIcmpToken(): boolean {
    if (this.icmpTokens < 1) {
      const now = this.now();
      this.icmpTokens = Math.min(this.icmpBurst, this.icmpTokens + ((now - this.icmpRefilledAt) * this.icmpRate) / 1000);
      this.icmpRefilledAt = now;
      if (this.icmpTokens < 1) return false;
    }
    this.icmpTokens--;
    return true;
  }

  private flushIcmp(): void {
    const n = this.icmpOutCount;
    this.icmpOutCount = 0;
    const written = native.writeTun(this.tunFd, this.icmpOutSlab, this.icmpOutOffs, this.icmpOutLens, n, this.ioRes);
    this.counters[C.icmp_sent] += written;
    if (this.ioRes[0] > 0) {
      this.counters[C.icmp_not_sent] += this.ioRes[0];
      this.lastErrors.tunWrite = errnoLabel(this.ioRes[1]);
    }
  }

  // ---- errors, status -----------------------------------------------------------------------

  private onReadError(face: 'tun' | 'underlay' | 'icmp', err: Error & { code?: string }): void {
    this.counters[face === 'tun' ? C.tun_read_errors : C.underlay_read_errors]++;
    this.lastErrors[face === 'tun' ? 'tunRead' : face === 'underlay' ? 'underlayRead' : 'icmpRead'] = err.code ?? String(err);
    // Rate-limited: a persistent error must not flood the log (STYLE rule 10).
    const now = this.now();
    if (now - this.lastErrorLog >= 5000) {
      this.lastErrorLog = now;
      this.log.warn({ face, code: err.code, err: err.message }, 'read error (further ones within 5 s are only counted)');
    }
  }

  /** Counters as a plain object, for status and logs. Drops list every reason, zeros included. */
  snapshot(): { counters: Record<CounterName, number>; drops: Record<Exclude<VerdictName, 'forward'>, number> } {
    const counters = {} as Record<CounterName, number>;
    COUNTER_NAMES.forEach((name, i) => (counters[name] = this.counters[i]));
    const drops = {} as Record<Exclude<VerdictName, 'forward'>, number>;
    VERDICT_NAMES.forEach((name, i) => {
      if (name !== 'forward') drops[name] = this.drops[i];
    });
    return { counters, drops };
  }

  get batchSize(): number {
    return this.batch;
  }
}

const UNREACH_NAMES = ['net unreachable', 'host unreachable', 'protocol unreachable'];

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

function errnoLabel(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}
