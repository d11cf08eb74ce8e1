/**
 * One data-path queue: batch loops that wire the I/O (io.ts: the native Readers and batched
 * writes of src/tun/native.ts) to the RFC 2003 core (src/ipip). This class only composes; each
 * direction has its own file, as wireguard-go splits device/send.go and device/receive.go:
 *
 *   TUN fd --Reader--> Sender.onTunBatch (send.ts) --encapsulate--> sendRaw / sendPacket --> underlay
 *   underlay --Reader--> Receiver.onRawBatch (receive.ts) --decapsulate--> writeTun --> TUN fd
 *   ICMP socket --Reader--> IcmpReceiver.onIcmpBatch (icmp.ts): path MTU, reachability, RFC 2003 §4
 *   ICMP errors ipipd originates: IcmpErrors (icmp.ts), written into the TUN once per batch
 *
 * They share one `Slabs` (slabs.ts: every buffer, and who owns it), one `Figures` (figures.ts:
 * counters, drops, last errors, per-peer figures) and one `Ports` (io.ts: the fds). Flow of this
 * file: the options; the constructor, which builds those and the Readers; start / stop / close
 * (STYLE rule 13); `setTunnel`; read errors (counted, logged at most every 5 s); the figures for
 * the status report. The JIT warm-up that runs before `start` is warmup.ts; the queue is built
 * from the config by queue.ts.
 *
 * Offload mode (`offload`, config `io.offload`; the TUN is opened with IFF_VNET_HDR, TSO4 and
 * checksum offload, src/ipip/vnet.ts): every TUN read and write carries a virtio_net_hdr (TUN
 * slots of 64 KiB + headroom); TCP (and with `udpGro` UDP) super-packets are cut before
 * encapsulation (send.ts), and received segments coalesced before the TUN write (receive.ts).
 */
import type { Logger } from 'pino';
import { Coalescer, VNET_HDR_LEN, type Peer, type Tunnel } from '../ipip/index.js';
import { READER_RAW, READER_TUN, READER_UDP, UDP_INFO_INTS, type NativeError, type NativeReader } from '../tun/native.js';
import { C, Figures, nameFigures, type NamedFigures, type PeerFigures } from './figures.js';
import { FouSender, type FouOptions } from './fou.js';
import { IcmpErrors, IcmpReceiver } from './icmp.js';
import { Ports, nativeIo, type DataplaneIo } from './io.js';
import { Receiver } from './receive.js';
import { Sender } from './send.js';
import { HEADROOM, ICMP_BATCH, ICMP_SLOT, Slabs } from './slabs.js';
import { Tracer } from './trace.js';

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
  /**
   * Offload mode: the TUN was opened with IFF_VNET_HDR and TUN_F_CSUM | TUN_F_TSO4 (every read
   * and write carries a virtio_net_hdr; TCP super-packets are segmented here, and received
   * segments coalesced). Default false.
   */
  offload?: boolean;
  /**
   * Offload mode only: the TUN was set up with UDP segmentation offload (TUN_F_USO4|USO6, Linux
   * 6.2+): received UDP datagrams are coalesced into UDP_L4 super-packets, and UDP_L4
   * super-packets read from the TUN are cut into datagrams. Default false.
   */
  udpGro?: boolean;
  /** Called after a path MTU learned from underlay ICMP lowered `peer.mtu` (queue 0 tells the other queues). */
  onPathMtu?: (peer: Peer) => void;
  /**
   * `underlay.send: packet`: an AF_PACKET socket (native `openPacket`) and the next-hop table
   * (hops.ts, HOP_INTS int32s per peer index) it sends by; a peer without an entry goes through
   * `rawFd`. Default: none, everything through `rawFd`.
   */
  packet?: { fd: number; hops: Int32Array };
  /** The I/O to use (io.ts); default the native binding. Tests hand their own. */
  io?: DataplaneIo;
  /** FOU (fou.ts): the UDP sockets for peers whose encap is fou; absent: no FOU. */
  fou?: FouOptions;
}

export class Dataplane {
  readonly figures: Figures;
  readonly slabs: Slabs;
  readonly ports: Ports;
  readonly send: Sender;
  readonly receive: Receiver;
  readonly icmpErrors: IcmpErrors;
  readonly icmpIn: IcmpReceiver;
  /** Live tracing's sampler (trace.ts); off unless `ipipd trace` runs. */
  readonly tracer: Tracer;
  readonly batchSize: number;
  readonly offload: boolean;
  readonly now: () => number;
  private readonly log: Logger;
  private readonly tunReader: NativeReader;
  private readonly rawReader: NativeReader;
  private readonly icmpReader: NativeReader | null;
  /** FOU: the UDP receive socket's Reader (queue 0), else null. */
  private readonly fouReader: NativeReader | null = null;
  private lastErrorLog = 0;
  private closed = false;

  constructor(o: DataplaneOptions) {
    const io = o.io ?? nativeIo;
    const b = o.batch;
    this.batchSize = b;
    this.offload = o.offload ?? false;
    this.now = o.now ?? Date.now;
    this.log = o.log;
    this.figures = new Figures(o.tunnel.peers.length);
    this.slabs = new Slabs({ batch: b, tunMtu: o.tunMtu, underlayMax: o.underlayMax, offload: this.offload });
    this.ports = new Ports(io, o.tunFd, o.rawFd, o.packet?.fd ?? -1, o.packet?.hops ?? new Int32Array(0));
    const udpGro = this.offload && o.udpGro === true;
    this.icmpErrors = new IcmpErrors(this.slabs, this.figures, this.ports, o.icmpSource, { icmpRate: o.icmpRate, icmpBurst: o.icmpBurst }, this.now);
    this.tracer = new Tracer(b, this.now);
    const fou = o.fou ? new FouSender(this.slabs.sendOffs.length, o.fou, this.figures, o.log, io.sendUdp) : null;
    this.send = new Sender(o.tunnel, this.slabs, this.figures, this.ports, this.icmpErrors, this.offload, udpGro, this.tracer, fou);
    const coalescer = this.offload ? new Coalescer(b, udpGro) : null;
    this.receive = new Receiver(o.tunnel, this.slabs, this.figures, this.ports, coalescer, o.tunMtu, this.now, this.tracer);
    this.icmpIn = new IcmpReceiver(o.tunnel, this.slabs, this.figures, this.icmpErrors, o.log, this.now, o.onPathMtu, this.tracer);

    const { send, receive, icmpIn, slabs } = this;
    // In offload mode the virtio_net_hdr is read into the last 10 bytes of the headroom.
    const vnet = this.offload ? VNET_HDR_LEN : 0;
    // Packed (slabs.ts): the Reader writes where each packet starts into tunOffs.
    this.tunReader = new io.Reader(o.tunFd, READER_TUN, slabs.tunSlab, slabs.tunLens, slabs.tunSlot, HEADROOM - vnet, b,
      (n) => send.onTunBatch(n), (err) => this.onReadError('tun', err), slabs.tunOffs);
    // The raw sockets hand us the outer header too: no headroom needed there.
    this.rawReader = new io.Reader(o.rawFd, READER_RAW, slabs.rawSlab, slabs.rawLens, slabs.rawSlot, 0, b,
      (n) => receive.onRawBatch(n), (err) => this.onReadError('underlay', err));
    this.icmpReader = o.icmpFd < 0 ? null : new io.Reader(o.icmpFd, READER_RAW, slabs.icmpInSlab, slabs.icmpInLens, ICMP_SLOT, 0, ICMP_BATCH,
      (n) => icmpIn.onIcmpBatch(n), (err) => this.onReadError('icmp', err));
    if (o.fou) {
      icmpIn.fouPort = o.fou.port;
      if (o.fou.recvFd >= 0) {
        // It shares the raw slab: the two Readers' batches never overlap (one thread).
        const info = new Int32Array(b * UDP_INFO_INTS);
        receive.fouInfo = info;
        // Datagrams at HEADROOM into each slot: room for a virtio_net_hdr before each (offload mode).
        this.fouReader = new io.Reader(o.fou.recvFd, READER_UDP, slabs.rawSlab, slabs.rawLens, slabs.rawSlot, HEADROOM, b,
          (n) => receive.onFouBatch(n), (err) => this.onReadError('underlay', err), info);
      }
    }
  }

  /** The Tunnel all three directions use. */
  get tunnel(): Tunnel {
    return this.send.tunnel;
  }

  start(): void {
    this.tunReader.start();
    this.rawReader.start();
    this.icmpReader?.start();
    this.fouReader?.start();
  }

  /** Stop reading (the first step of shutdown); nothing is queued inside ipipd. */
  stop(): void {
    this.tunReader.stop();
    this.rawReader.stop();
    this.icmpReader?.stop();
    this.fouReader?.stop();
  }

  /** Release the pollers. The fds belong to the caller, who closes them after this. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.tunReader.close();
    this.rawReader.close();
    this.icmpReader?.close();
    this.fouReader?.close();
  }

  /**
   * Swap in a new Tunnel between two batches (a config reload, src/dataplane/queue.ts
   * `reloadQueue`): new routes, and with `peers` a new peer set whose figures the caller carried
   * over from the old one; without it the same peers by index.
   */
  setTunnel(t: Tunnel, peers?: PeerFigures): void {
    const count = peers?.count ?? this.figures.peers.count;
    if (t.peers.length !== count) throw new RangeError(`dataplane: setTunnel with ${t.peers.length} peers, figures for ${count}`);
    if (peers) this.figures.peers = peers;
    this.send.tunnel = t;
    this.receive.tunnel = t;
    this.icmpIn.tunnel = t;
  }

  private onReadError(face: 'tun' | 'underlay' | 'icmp', err: NativeError): void {
    const f = this.figures;
    f.counters[face === 'tun' ? C.tun_read_errors : C.underlay_read_errors]++;
    f.lastErrors[face === 'tun' ? 'tunRead' : face === 'underlay' ? 'underlayRead' : 'icmpRead'] = err.code ?? String(err);
    // Rate-limited: a persistent error must not flood the log (STYLE rule 10).
    const now = this.now();
    if (now - this.lastErrorLog >= 5000) {
      this.lastErrorLog = now;
      this.log.warn({ face, code: err.code, err: err.message }, 'read error (further ones within 5 s are only counted)');
    }
  }

  /** Counters as a plain object, for status and logs. Drops list every reason, zeros included. */
  snapshot(): NamedFigures {
    return nameFigures(this.figures.counters, this.figures.drops);
  }
}
