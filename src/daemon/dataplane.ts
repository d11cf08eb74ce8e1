/**
 * The data path: two batch loops that wire the I/O adapters (src/tun/native.ts) to the RFC 2003
 * core (src/ipip). Flow, in the order of this file:
 *   1. TUN -> underlay (`onTunBatch`): the native Reader drained up to `batch` inner packets into
 *      the TUN slab, each 20 bytes into its slot (headroom); `Tunnel.encapsulate` writes the outer
 *      header in front in place; forwards go out in one `sendRaw` (sendmmsg) call.
 *   2. underlay -> TUN (`onRawBatch`): the Reader drained whole IPIP datagrams into the raw slab;
 *      `Tunnel.decapsulate` validates them and points at the inner packet inside the slot; the
 *      forwards go to the TUN with one `writeTun` call.
 * No object, closure, Buffer or log call per packet: offsets and lengths live in typed arrays
 * preallocated here, the verdict result object is reused, drops increment a counter indexed by
 * the verdict. Every packet read is either forwarded or counted under exactly one drop reason.
 *
 * Buffer ownership: both slabs are pools. The Reader overwrites them on its next wake-up, so
 * nothing here keeps a view of a packet after the batch callback returns.
 */
import { constants as osConstants } from 'node:os';
import { Verdict, VERDICT_NAMES, type VerdictName } from '../ipip/verdict.js';
import { PacketResult, type Peer, type Tunnel } from '../ipip/index.js';
import { native, type NativeReader } from '../tun/native.js';
import type { Logger } from './logger.js';
import { COUNTER_NAMES, type CounterName } from './dataplane-counters.js';

export { COUNTER_NAMES, type CounterName };

/** Bytes reserved before each inner packet for the outer header (RFC 2003: 20, no options). */
export const HEADROOM = 20;

const C = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])) as Record<CounterName, number>;

export interface DataplaneOptions {
  tunFd: number;
  rawFd: number;
  tunnel: Tunnel;
  /** Packets per batch, fixed for the dataplane's life. */
  batch: number;
  /** Largest inner packet the TUN can hand us (its MTU). */
  tunMtu: number;
  /** Largest datagram the raw socket may hand us (outer header included). */
  underlayMax: number;
  log: Logger;
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
  readonly lastErrors: { tunRead?: string; underlayRead?: string; tunWrite?: string; underlaySend?: string } = {};

  private tunnel: Tunnel;
  private readonly log: Logger;
  private readonly tunFd: number;
  private readonly rawFd: number;
  private readonly batch: number;

  // TUN -> underlay
  private readonly tunSlot: number;
  private readonly tunSlab: Buffer;
  private readonly tunLens: Int32Array;
  private readonly sendOffs: Int32Array;
  private readonly sendLens: Int32Array;
  private readonly sendDsts: Int32Array;
  private readonly sendPeers: (Peer | null)[];
  // underlay -> TUN
  private readonly rawSlot: number;
  private readonly rawSlab: Buffer;
  private readonly rawLens: Int32Array;
  private readonly writeOffs: Int32Array;
  private readonly writeLens: Int32Array;
  private readonly writePeers: (Peer | null)[];

  private readonly result = new PacketResult();
  private readonly ioRes = new Int32Array(2);
  private readonly tunReader: NativeReader;
  private readonly rawReader: NativeReader;
  private lastErrorLog = 0;
  private closed = false;

  constructor(o: DataplaneOptions) {
    this.tunnel = o.tunnel;
    this.log = o.log;
    this.tunFd = o.tunFd;
    this.rawFd = o.rawFd;
    this.batch = o.batch;
    const b = o.batch;

    this.tunSlot = slotSize(o.tunMtu);
    this.tunSlab = Buffer.alloc(b * this.tunSlot);
    this.tunLens = new Int32Array(b);
    this.sendOffs = new Int32Array(b);
    this.sendLens = new Int32Array(b);
    this.sendDsts = new Int32Array(b);
    this.sendPeers = new Array<Peer | null>(b).fill(null);

    this.rawSlot = slotSize(o.underlayMax);
    this.rawSlab = Buffer.alloc(b * this.rawSlot);
    this.rawLens = new Int32Array(b);
    this.writeOffs = new Int32Array(b);
    this.writeLens = new Int32Array(b);
    this.writePeers = new Array<Peer | null>(b).fill(null);

    this.tunReader = new native.Reader(o.tunFd, 0, this.tunSlab, this.tunLens, this.tunSlot, HEADROOM, b,
      (n) => this.onTunBatch(n), (err) => this.onReadError('tun', err));
    // The raw socket hands us the outer header too: no headroom needed there.
    this.rawReader = new native.Reader(o.rawFd, 1, this.rawSlab, this.rawLens, this.rawSlot, 0, b,
      (n) => this.onRawBatch(n), (err) => this.onReadError('underlay', err));
  }

  start(): void {
    this.tunReader.start();
    this.rawReader.start();
  }

  /** Stop reading both faces (the first step of shutdown); nothing is queued inside ipipd. */
  stop(): void {
    this.tunReader.stop();
    this.rawReader.stop();
  }

  /** Release the pollers. The fds belong to the caller, who closes them after this. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.tunReader.close();
    this.rawReader.close();
  }

  /** Swap in a new Tunnel (new peers/routes) between two batches. */
  setTunnel(t: Tunnel): void {
    this.tunnel = t;
  }

  private onTunBatch(n: number): void {
    const { tunSlab, tunLens, tunSlot, sendOffs, sendLens, sendDsts, sendPeers, result, counters, drops, tunnel } = this;
    counters[C.tun_rx_batches]++;
    counters[C.tun_rx_packets] += n;
    let k = 0;
    for (let i = 0; i < n; i++) {
      const len = tunLens[i];
      if (len > 0) counters[C.tun_rx_bytes] += len;
      const v = tunnel.encapsulate(tunSlab, i * tunSlot + HEADROOM, len, result);
      if (v !== Verdict.forward) {
        drops[v]++;
        continue;
      }
      sendOffs[k] = result.offset;
      sendLens[k] = result.length;
      sendDsts[k] = result.peer!.endpoint;
      sendPeers[k] = result.peer;
      k++;
    }
    if (k === 0) return;
    const sent = native.sendRaw(this.rawFd, tunSlab, sendOffs, sendLens, sendDsts, k, this.ioRes);
    const failed = this.ioRes[0];
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
    if (failed > 0) {
      drops[Verdict.socket_write_error] += failed;
      this.noteIoError('underlaySend', this.ioRes[1]);
    }
  }

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
    const failed = this.ioRes[0];
    counters[C.rx_packets] += written;
    for (let j = 0; j < k; j++) {
      const peer = writePeers[j]!;
      writePeers[j] = null;
      const l = writeLens[j];
      if (l < 0) continue;
      counters[C.rx_bytes] += l;
      peer.rxPackets++;
      peer.rxBytes += l;
    }
    if (failed > 0) {
      drops[Verdict.tun_write_error] += failed;
      this.noteIoError('tunWrite', this.ioRes[1]);
    }
  }

  private noteIoError(where: 'underlaySend' | 'tunWrite', errno: number): void {
    this.lastErrors[where] = errnoLabel(errno);
  }

  private onReadError(face: 'tun' | 'underlay', err: Error & { code?: string }): void {
    this.counters[face === 'tun' ? C.tun_read_errors : C.underlay_read_errors]++;
    this.lastErrors[face === 'tun' ? 'tunRead' : 'underlayRead'] = err.code ?? String(err);
    // Rate-limited: a persistent error must not flood the log (STYLE rule 10).
    const now = Date.now();
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

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

function errnoLabel(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}
