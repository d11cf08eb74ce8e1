/**
 * FOU sending (src/ipip/fou.ts has the wire format): the packets `Tunnel.encapsulate` forwarded
 * to FOU peers wait here, inner packet as it is (the kernel's UDP socket writes the outer IP and
 * UDP headers), until `flush` sends them all in one `sendUdp` (sendmmsg) call, with
 * consecutive same-sized packets of one flow to one peer (the segments of a TSO super-packet,
 * or a burst of full-sized packets) in one UDP_SEGMENT send. The source port is the one of the
 * socket chosen by the inner flow's hash (`fouSourceIndex`), so a flow keeps its port.
 *
 * Fallback: the first time the kernel refuses a UDP_SEGMENT send (EIO, EINVAL, ENOPROTOOPT,
 * EOPNOTSUPP; the native call then sends those packets one by one, so none is lost), UDP_SEGMENT
 * is off for the queue's life: `gsoRefused` keeps the errno for the status report, the
 * `fou_gso_refused` counter and one log line say so.
 *
 * Buffer ownership (STYLE rule 8): the queue holds offsets into the caller's txBuf, valid until
 * the next `flush`, which the Sender calls before it reuses any of those slots.
 */
import type { Logger } from 'pino';
import { fouFlowHash, fouSourceIndex, Verdict, type Peer } from '../ipip/index.js';
import { errnoLabel, native, type NativeBinding } from '../tun/native.js';
import { C, type Figures } from './figures.js';
import { MAX_FRAGMENTS } from './slabs.js';
import type { Tracer } from './trace.js';

/** Most segments in one UDP_SEGMENT send (the kernel's UDP_MAX_SEGMENTS before Linux 6.3). */
export const FOU_GSO_MAX = 64;

/** The FOU sockets of a queue and how to use them (the daemon opens them, src/daemon/lifecycle.ts). */
export interface FouOptions {
  /** The UDP socket bound to underlay.address:fou.port that this queue reads, or -1 (queues > 0). */
  recvFd: number;
  /** The sockets packets leave from, one per source port; a flow's hash picks one. */
  sendFds: readonly number[];
  /** UDP destination port of every FOU packet: fou.port. */
  port: number;
  /** Try UDP_SEGMENT on send (else one datagram per packet). */
  gso: boolean;
  /** The receive socket has UDP_GRO on (reads may hold several datagrams, split here). */
  gro: boolean;
}

export class FouSender {
  /** Packets queued for the next flush. */
  count = 0;
  /** UDP_SEGMENT segments per send at most: FOU_GSO_MAX, or 1 when off or refused. */
  gsoMax: number;
  /** The errno label with which the kernel refused UDP_SEGMENT, or null. */
  gsoRefused: string | null = null;
  /** The send sockets in use (the discard fd during the JIT warm-up). */
  fds: Int32Array;
  readonly port: number;
  private readonly offs: Int32Array;
  private readonly lens: Int32Array;
  private readonly dsts: Int32Array;
  private readonly sockOf: Int32Array;
  private readonly peerOf: Int32Array;
  private readonly origin: Int32Array;
  /** The outer TOS of each queued packet (PacketResult.tos). */
  private readonly tos: Int32Array;
  /** A packet in two pieces (a TSO segment, `queue`'s head and tail): its head length, else 0. */
  private readonly heads: Int32Array;
  /** Where the rest of a packet in two pieces is in the buffer. */
  private readonly tails: Int32Array;
  private readonly res = new Int32Array(5);
  /** `sendNow`'s socket per fragment (at most MAX_FRAGMENTS). */
  private readonly fragSock = new Int32Array(MAX_FRAGMENTS);
  private readonly fragTos = new Int32Array(MAX_FRAGMENTS);
  private readonly sendUdp: NativeBinding['sendUdp'];

  constructor(
    capacity: number,
    o: FouOptions,
    private readonly figures: Figures,
    private readonly log: Logger,
    sendUdp?: NativeBinding['sendUdp'],
  ) {
    if (o.sendFds.length === 0) throw new RangeError('fou: at least one send socket');
    this.fds = Int32Array.from(o.sendFds);
    this.port = o.port;
    this.gsoMax = o.gso ? FOU_GSO_MAX : 1;
    this.offs = new Int32Array(capacity);
    this.lens = new Int32Array(capacity);
    this.dsts = new Int32Array(capacity);
    this.sockOf = new Int32Array(capacity);
    this.peerOf = new Int32Array(capacity);
    this.origin = new Int32Array(capacity);
    this.tos = new Int32Array(capacity);
    this.heads = new Int32Array(capacity);
    this.tails = new Int32Array(capacity);
    this.sendUdp = sendUdp ?? native.sendUdp;
  }

  /**
   * Queue the inner packet `buf[off, off+len)` for `peer` (TUN slot `origin`); the caller
   * flushes before the queue is full. With `head` > 0 the packet is in two pieces: its first
   * `head` bytes at `off`, the rest at `buf[tail ...]` (a TSO segment's payload, not copied).
   */
  queue(buf: Buffer, off: number, len: number, peer: Peer, origin: number, tos: number, head = 0, tail = 0): void {
    const k = this.count++;
    this.tos[k] = tos;
    this.heads[k] = head;
    this.tails[k] = tail;
    this.offs[k] = off;
    this.lens[k] = len;
    this.dsts[k] = peer.endpoint;
    if (origin !== this.lastOrigin) {
      this.lastOrigin = origin;
      this.lastSock = this.fds[fouSourceIndex(fouFlowHash(buf, off), this.fds.length)]!;
    }
    this.sockOf[k] = this.lastSock;
    this.peerOf[k] = peer.index;
    this.origin[k] = origin;
  }

  /** The TUN slot and socket of the last packet queued: a super-packet's segments share a flow, hashed once. */
  private lastOrigin = -1;
  private lastSock = -1;

  /** Room for `n` more packets before a flush is due. */
  hasRoom(n: number): boolean {
    return this.count + n <= this.offs.length;
  }

  /**
   * Send what is queued (offsets into `buf`) and count it: tx_* and the peers' on success; a
   * failure once per packet read (`lastFailedOrigin` as the Sender keeps it), under
   * socket_write_error. Returns the new `lastFailedOrigin`.
   */
  flush(buf: Buffer, lastFailedOrigin: number, tracer: Tracer): number {
    const k = this.count;
    if (k === 0) return lastFailedOrigin;
    this.count = 0;
    // The next batch's slots hold other packets.
    this.lastOrigin = -1;
    const { lens, res, figures } = this;
    const { counters, drops, peers } = figures;
    const sent = this.sendUdp(buf, this.offs, lens, this.dsts, this.sockOf, k, res, this.port, this.gsoMax, this.tos, this.heads, this.tails);
    counters[C.tx_packets] += sent;
    if (res[2]! > 0) {
      counters[C.fou_gso_sends] += res[2]!;
      counters[C.fou_gso_segments] += res[3]!;
    }
    if (res[4]! !== 0) this.refuse(res[4]!);
    for (let j = 0; j < k; j++) {
      const l = lens[j]!;
      if (l < 0) {
        if (this.origin[j] !== lastFailedOrigin) {
          lastFailedOrigin = this.origin[j]!;
          drops[Verdict.socket_write_error]++;
          tracer.sendVerdicts[lastFailedOrigin] = Verdict.socket_write_error;
        }
        continue;
      }
      const p = this.peerOf[j]!;
      counters[C.tx_bytes] += l;
      peers.txPackets[p]++;
      peers.txBytes[p] += l;
    }
    if (res[0]! > 0) figures.lastErrors.underlaySend = errnoLabel(res[1]!);
    return lastFailedOrigin;
  }

  /**
   * Send the inner fragments `slab[offs[j], offs[j] + lens[j])`, j < n, to `peer` at once (the
   * Sender's slow path for a packet too big without DF). Returns the number sent; failures as
   * `sendUdp` marks them, the errno in `lastErrors`.
   */
  sendNow(slab: Buffer, offs: Int32Array, lens: Int32Array, dsts: Int32Array, n: number, tos: number): number {
    const sock = this.fds[fouSourceIndex(fouFlowHash(slab, offs[0]!), this.fds.length)]!;
    this.fragSock.fill(sock, 0, n);
    this.fragTos.fill(tos, 0, n);
    const sent = this.sendUdp(slab, offs, lens, dsts, this.fragSock, n, this.res, this.port, 1, this.fragTos);
    if (this.res[0]! > 0) this.figures.lastErrors.underlaySend = errnoLabel(this.res[1]!);
    return sent;
  }

  /** The kernel refused UDP_SEGMENT with `errno`: off from now on, said once. */
  private refuse(errno: number): void {
    if (this.gsoMax === 1) return;
    this.gsoMax = 1;
    this.gsoRefused = errnoLabel(errno);
    this.figures.counters[C.fou_gso_refused]++;
    this.log.warn({ code: this.gsoRefused }, 'the kernel refused UDP_SEGMENT: FOU sends one datagram per packet from now on');
  }

  /** Swap in the discard fd for every send socket (JIT warm-up); returns the real ones for `restore`. */
  discard(discardFd: number): Int32Array {
    const real = this.fds;
    this.fds = new Int32Array(real.length).fill(discardFd);
    this.lastOrigin = -1;
    return real;
  }

  restore(real: Int32Array): void {
    this.fds = real;
    this.lastOrigin = -1;
  }
}
