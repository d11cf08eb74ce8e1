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
 * Offload mode (`offload`, config `io.offload`; the TUN is opened with IFF_VNET_HDR, TSO4 and
 * checksum offload, src/ipip/gso.ts): every TUN read starts with a virtio_net_hdr, which the
 * Reader puts in the last 10 bytes of the headroom (slots of 64 KiB + headroom). A plain packet
 * with NEEDS_CSUM gets its checksum completed and goes on as above. A TCP super-packet (or,
 * with `udpGro`, a UDP one from a socket using UDP_SEGMENT; one packet read, counted once under
 * its verdict) is cut into MSS-sized segments (datagrams) in the segment
 * region of the same buffer, each with 20 bytes of headroom, and each segment goes through the
 * unchanged `Tunnel.encapsulate`, so every RFC 2003 check, the ICMP answers and fragmentation
 * apply per segment; the first segment that is dropped drops the rest of the super-packet, counted
 * once. Segments of all the batch's super-packets go out in the batch's sendmmsg calls. On the
 * way back, `Coalescer` merges consecutive segments of each TCP flow in a batch (and, with
 * `udpGro`, consecutive same-sized datagrams of each UDP flow) into super-packets (built in the
 * pool after the raw slab) and writes the rest as they came, each with a virtio_net_hdr in
 * front: far fewer TUN writes. The ICMP errors written into the TUN get
 * a zero header.
 *
 * Buffer ownership: all slabs are pools. The Readers overwrite them on their next wake-up, so
 * nothing here keeps a view of a packet after a batch callback returns. The TUN slab and the
 * segment region share one Buffer (`txBuf`), as do the raw slab and the coalescing pool
 * (`rxBuf`), so that one sendRaw / writeTun call covers a whole batch.
 */
import { constants as osConstants } from 'node:os';
import {
  FLAG_DF,
  ICMP_DEST_UNREACH,
  ICMP_ERROR_MAX,
  ICMP_TIME_EXCEEDED,
  IPV4_MAX_TOTAL_LENGTH,
  IcmpQuote,
  MIN_TUNNEL_MTU,
  OFF_FLAGS_FRAG,
  PacketResult,
  Coalescer,
  UNREACH_FRAG_NEEDED,
  UNREACH_HOST,
  UnderlayIcmp,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_NONE,
  VNET_HDR_LEN,
  VNET_OFF_GSO_TYPE,
  TCP_OFF_DATA_OFFSET,
  IPV4_MIN_HEADER,
  checkTcp4Gso,
  checkUdp4Gso,
  classifyUnderlayIcmp,
  groSegmentSize,
  completeChecksum,
  fragmentInner,
  getVnetCsumOffset,
  getVnetCsumStart,
  getVnetGsoSize,
  mayAnswerWithIcmpError,
  plateauBelow,
  tcp4SegmentCount,
  writeIcmpError,
  writeTcp4Segment,
  writeUdp4Segment,
  VNET_GSO_UDP_L4,
  type Peer,
  type Tunnel,
} from '../ipip/index.js';
import { Verdict, VERDICT_NAMES, type VerdictName } from '../ipip/verdict.js';
import { formatIPv4 } from '../routing/prefix.js';
import { native, type NativeReader } from '../tun/native.js';
import type { Logger } from '../daemon/logger.js';
import { COUNTER_NAMES, type CounterName } from './figures.js';
import { WARM_ICMP, WARM_TCP, WARM_UDP, writeWarmOuter, writeWarmPacket, writeWarmVnet, type WarmFlow } from './warmup.js';

export { COUNTER_NAMES, type CounterName };

/** Bytes reserved before each inner packet for the outer header (RFC 2003: 20, no options). */
export const HEADROOM = 20;
/** Most fragments one inner packet may be cut into; more and it is dropped as too_big. */
const MAX_FRAGMENTS = 64;
/** ICMP errors queued per batch at most (the rest count as rate limited). */
const ICMP_QUEUE = 32;
/** Bytes before each queued ICMP error: room for a (zero) virtio_net_hdr in offload mode. */
const ICMP_OUT_HEAD = 16;
const ICMP_OUT_STRIDE = ICMP_OUT_HEAD + ICMP_ERROR_MAX;
/** Offload mode: segment slots (each one tunnel-MTU packet + headroom) filled before a sendRaw. */
const GSO_SLOTS = 256;
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
   * (src/daemon/nexthop.ts, HOP_INTS int32s per peer index) it sends by; a peer without an
   * entry goes through `rawFd`. Default: none, everything through `rawFd`.
   */
  packet?: { fd: number; hops: Int32Array };
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
  /** The TUN and raw socket fds; `native.DISCARD_FD` for the length of `warmUp` only. */
  private tunFd: number;
  private rawFd: number;
  /** `underlay.send: packet`: the AF_PACKET fd (`native.DISCARD_FD` during `warmUp`), else -1. */
  private packetFd: number;
  private readonly hops: Int32Array;
  private readonly batch: number;
  private readonly now: () => number;
  private readonly offload: boolean;
  private readonly onPathMtu: ((peer: Peer) => void) | undefined;

  // TUN -> underlay: txBuf = [TUN slab: batch slots | segment region: gsoSlots slots]
  private readonly tunSlot: number;
  private readonly txBuf: Buffer;
  private readonly tunSlab: Buffer;
  private readonly tunLens: Int32Array;
  private readonly gsoBase: number;
  private readonly segSlot: number;
  private readonly gsoSlots: number;
  private segCursor = 0;
  // packets queued for the next sendRaw (TUN packets encapsulated in place, or segments)
  private sendCount = 0;
  private readonly sendOffs: Int32Array;
  private readonly sendLens: Int32Array;
  private readonly sendDsts: Int32Array;
  /** Peer index per queued packet: its entry in the next-hop table (packet mode). */
  private readonly sendHops: Int32Array;
  private readonly sendPeers: (Peer | null)[];
  /** The TUN slot (packet read) each queued packet comes from, to count a failure once per packet read. */
  private readonly sendOrigin: Int32Array;
  private lastFailedOrigin = -1;
  // fragments of one inner packet (slow path)
  private readonly fragSlot: number;
  private readonly fragSlab: Buffer;
  private readonly fragLens: Int32Array;
  private readonly fragOffs: Int32Array;
  private readonly fragDsts: Int32Array;
  private readonly fragHops: Int32Array;
  private readonly fragResult = new PacketResult();
  // underlay -> TUN: rxBuf = [raw slab: batch slots | coalescing pool (offload mode)]
  private readonly rawSlot: number;
  private readonly rxBuf: Buffer;
  private readonly rawSlab: Buffer;
  private readonly rawLens: Int32Array;
  private readonly writeOffs: Int32Array;
  private readonly writeLens: Int32Array;
  private readonly writePeers: (Peer | null)[];
  /** Per packet to write: gso_size if it is a TCP super-packet from the underlay's GRO, else 0. */
  private readonly writeGso: Int32Array;
  private readonly tunMtu: number;
  /** Offload mode; its `udp` says the TUN has UDP_L4 (USO) both ways. */
  private readonly coalescer: Coalescer | null;
  private readonly poolStart: number;
  // ICMP in (underlay) and out (TUN)
  private readonly icmpInSlab: Buffer;
  private readonly icmpInLens: Int32Array;
  private readonly quote = new IcmpQuote();
  /** Queued ICMP errors, slot i at i * ICMP_OUT_STRIDE + ICMP_OUT_HEAD; the bytes before stay 0 (the vnet header). */
  private readonly icmpOutSlab = Buffer.alloc(ICMP_QUEUE * ICMP_OUT_STRIDE);
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
    this.packetFd = o.packet?.fd ?? -1;
    this.hops = o.packet?.hops ?? new Int32Array(0);
    this.batch = o.batch;
    this.now = o.now ?? Date.now;
    this.offload = o.offload ?? false;
    this.onPathMtu = o.onPathMtu;
    const b = o.batch;
    // Offload mode: a slot takes the largest super-packet (64 KiB) and its virtio_net_hdr.
    const vnet = this.offload ? VNET_HDR_LEN : 0;

    this.tunSlot = this.offload ? slotSize(VNET_HDR_LEN + IPV4_MAX_TOTAL_LENGTH) : slotSize(o.tunMtu);
    this.segSlot = slotSize(o.tunMtu);
    this.gsoSlots = this.offload ? GSO_SLOTS : 0;
    this.gsoBase = b * this.tunSlot;
    this.txBuf = Buffer.alloc(this.gsoBase + this.gsoSlots * this.segSlot);
    this.tunSlab = this.txBuf.subarray(0, this.gsoBase);
    this.tunLens = new Int32Array(b);
    const sends = b + this.gsoSlots;
    this.sendOffs = new Int32Array(sends);
    this.sendLens = new Int32Array(sends);
    this.sendDsts = new Int32Array(sends);
    this.sendHops = new Int32Array(sends);
    this.sendPeers = new Array<Peer | null>(sends).fill(null);
    this.sendOrigin = new Int32Array(sends);

    this.fragSlot = this.segSlot;
    this.fragSlab = Buffer.alloc(MAX_FRAGMENTS * this.fragSlot);
    this.fragLens = new Int32Array(MAX_FRAGMENTS);
    this.fragOffs = new Int32Array(MAX_FRAGMENTS);
    this.fragDsts = new Int32Array(MAX_FRAGMENTS);
    this.fragHops = new Int32Array(MAX_FRAGMENTS);

    // Any IPv4 datagram, not just an underlay-MTU one: with GRO on the underlay device (the
    // default on most NICs) the kernel may merge IPIP/TCP packets before the raw socket.
    this.rawSlot = slotSize(Math.max(o.underlayMax, IPV4_MAX_TOTAL_LENGTH));
    this.poolStart = b * this.rawSlot;
    // The pool holds at most every packet of a batch once more (a super-packet is shorter than
    // its segments together), plus alignment.
    this.rxBuf = Buffer.alloc(this.poolStart + (this.offload ? this.poolStart + 64 : 0));
    this.rawSlab = this.rxBuf.subarray(0, this.poolStart);
    this.rawLens = new Int32Array(b);
    this.writeOffs = new Int32Array(b);
    this.writeLens = new Int32Array(b);
    this.writePeers = new Array<Peer | null>(b).fill(null);
    this.writeGso = new Int32Array(b);
    this.tunMtu = o.tunMtu;
    this.coalescer = this.offload ? new Coalescer(b, o.udpGro === true) : null;

    this.icmpInSlab = Buffer.alloc(ICMP_BATCH * ICMP_SLOT);
    this.icmpInLens = new Int32Array(ICMP_BATCH);
    for (let i = 0; i < ICMP_QUEUE; i++) this.icmpOutOffs[i] = i * ICMP_OUT_STRIDE + ICMP_OUT_HEAD - vnet;
    this.icmpSource = o.icmpSource;
    this.icmpRate = o.icmpRate;
    this.icmpBurst = o.icmpBurst;
    this.icmpTokens = o.icmpBurst;
    this.icmpRefilledAt = this.now();

    // In offload mode the virtio_net_hdr is read into the last 10 bytes of the headroom.
    this.tunReader = new native.Reader(o.tunFd, 0, this.tunSlab, this.tunLens, this.tunSlot, HEADROOM - vnet, b,
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

  /**
   * JIT warm-up, before `start` (src/daemon/warmup.ts says why): run `rounds` rounds of
   * synthetic batches through the real batch handlers and the real Tunnel, TUN -> underlay and
   * underlay -> TUN, for each flow, with both fds swapped for the discard fd, so that nothing is
   * sent anywhere. The real objects, not copies, so that the code V8 optimizes has seen exactly
   * their shapes. Batch sizes cycle from 1 to the batch size; in offload mode some packets carry
   * partial checksums and some are TCP super-packets. Afterwards the fds are back, every peer's
   * state (IDs, counters, soft state) is as it was, and every counter, drop count and last error
   * is reset: the status report starts from zero. Returns the packets processed.
   */
  warmUp(flows: readonly WarmFlow[], rounds: number): number {
    if (flows.length === 0 || rounds <= 0) return 0;
    const tunnel = this.tunnel;
    const real = { tunFd: this.tunFd, rawFd: this.rawFd, packetFd: this.packetFd };
    const icmpId = this.icmpId;
    // What the batch handlers change on a peer (path MTU is only learned from underlay ICMP).
    // IDs apart from the doubles: one array of both would hold the ID as a double too, and
    // writing that back would make nextId a double field, deoptimizing `encapsulate`.
    const ids = new Int32Array(tunnel.peers.map((p) => p.nextId));
    const peerStates = tunnel.peers.map((p) => Float64Array.of(p.txPackets, p.txBytes, p.rxPackets, p.rxBytes, p.lastRxAt, p.unreachableAt));
    const reasons = tunnel.peers.map((p) => p.unreachableReason);
    this.tunFd = native.DISCARD_FD;
    this.rawFd = native.DISCARD_FD;
    if (real.packetFd >= 0) this.packetFd = native.DISCARD_FD;
    const { txBuf, tunSlot, rxBuf, rawSlot, tunLens, rawLens, batch } = this;
    const vnet = this.offload ? VNET_HDR_LEN : 0;
    const sizes = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 64];
    let packets = 0;
    let seq = 1;
    try {
      for (let r = 0; r < rounds; r++) {
        const f = flows[r % flows.length]!;
        const n = Math.min(batch, sizes[r % sizes.length]!);
        // Full-sized packets as large as the path takes (TCP with timestamps: 52 header bytes),
        // so that they are forwarded, not answered as too big.
        const peer = tunnel.peerByEndpoint(f.endpoint);
        const mtu = peer === null ? tunnel.mtu : tunnel.mtuFor(peer);
        const bigTcp = Math.max(1, Math.min(1400, mtu - 52));
        const bigUdp = Math.max(1, Math.min(1400, mtu - 28));
        // TUN -> underlay: a mix of kinds; a super-packet now and then (offload mode).
        for (let i = 0; i < n; i++) {
          const off = i * tunSlot + HEADROOM;
          const kind = (r + i) % 3;
          const gso = this.offload && kind === WARM_TCP && i === 0 && r % 4 === 0 ? bigTcp : 0;
          const payload = kind === WARM_ICMP ? 56 : kind === WARM_UDP ? (i % 2 === 0 ? 64 : bigUdp) : gso > 0 ? 8 * gso : bigTcp;
          const partial = this.offload && (r + i) % 2 === 0;
          const len = writeWarmPacket(txBuf, off, kind, f.local, f.remote, payload, r + i, seq, partial || gso > 0);
          if (this.offload) writeWarmVnet(txBuf, off, kind, partial || gso > 0, gso);
          seq += payload;
          tunLens[i] = len + vnet;
        }
        this.onTunBatch(n);
        // underlay -> TUN: runs of one kind, so that offload mode coalesces them.
        const kind = r % 3;
        for (let i = 0; i < n; i++) {
          const off = i * rawSlot;
          const payload = kind === WARM_ICMP ? 56 : kind === WARM_UDP ? 64 : bigTcp;
          const len = writeWarmPacket(rxBuf, off + 20, kind, f.remote, f.local, payload, r * 64 + i, seq, false);
          seq += payload;
          rawLens[i] = writeWarmOuter(rxBuf, off, len, f.endpoint, tunnel.local, r * 64 + i);
        }
        this.onRawBatch(n);
        packets += 2 * n;
      }
    } finally {
      // Put back only what the warm-up changed. V8 treats a field that was only ever
      // initialised as a constant; a second store, even of the same value, makes it mutable and
      // throws away the optimized batch handlers that relied on it (seen with --trace-deopt:
      // `icmpOutCount = 0` and the peers' unchanged fields did it), and at a few packets per
      // second they are not optimized again for minutes.
      tunnel.peers.forEach((p, i) => {
        if (p.nextId !== ids[i]) p.nextId = ids[i]!;
        const s = peerStates[i]!;
        if (!Object.is(p.txPackets, s[0])) p.txPackets = s[0]!;
        if (!Object.is(p.txBytes, s[1])) p.txBytes = s[1]!;
        if (!Object.is(p.rxPackets, s[2])) p.rxPackets = s[2]!;
        if (!Object.is(p.rxBytes, s[3])) p.rxBytes = s[3]!;
        if (!Object.is(p.lastRxAt, s[4])) p.lastRxAt = s[4]!;
        if (!Object.is(p.unreachableAt, s[5])) p.unreachableAt = s[5]!;
        if (p.unreachableReason !== reasons[i]) p.unreachableReason = reasons[i]!;
      });
      this.tunFd = real.tunFd;
      this.rawFd = real.rawFd;
      if (real.packetFd >= 0) this.packetFd = real.packetFd;
      this.counters.fill(0);
      this.drops.fill(0);
      for (const k of Object.keys(this.lastErrors)) delete this.lastErrors[k as keyof typeof this.lastErrors];
      if (this.sendCount !== 0) this.sendCount = 0;
      if (this.segCursor !== 0) this.segCursor = 0;
      if (this.lastFailedOrigin !== -1) this.lastFailedOrigin = -1;
      if (this.icmpOutCount !== 0) this.icmpOutCount = 0;
      if (this.icmpId !== icmpId) this.icmpId = icmpId;
      if (this.icmpTokens !== this.icmpBurst) this.icmpTokens = this.icmpBurst;
      this.icmpRefilledAt = this.now();
    }
    return packets;
  }

  /** Swap in a new Tunnel (new peers/routes) between two batches. */
  setTunnel(t: Tunnel): void {
    this.tunnel = t;
  }

  // ---- 1. TUN -> underlay ---------------------------------------------------------------------

  private onTunBatch(n: number): void {
    const { txBuf, tunLens, tunSlot, result, counters, drops, tunnel } = this;
    counters[C.tun_rx_batches]++;
    counters[C.tun_rx_packets] += n;
    this.lastFailedOrigin = -1;
    for (let i = 0; i < n; i++) {
      let len = tunLens[i];
      const off = i * tunSlot + HEADROOM;
      if (this.offload && len !== -1) {
        // The virtio_net_hdr sits in the 10 bytes before the packet.
        const h = off - VNET_HDR_LEN;
        len -= VNET_HDR_LEN;
        if (len < 0) {
          drops[Verdict.inner_malformed]++;
          continue;
        }
        counters[C.tun_rx_bytes] += len;
        if (txBuf[h + VNET_OFF_GSO_TYPE] !== VNET_GSO_NONE) {
          this.sendSuperPacket(i, h, off, len);
          continue;
        }
        if ((txBuf[h] & VNET_F_NEEDS_CSUM) !== 0 && !completeChecksum(txBuf, off, len, getVnetCsumStart(txBuf, h), getVnetCsumOffset(txBuf, h))) {
          drops[Verdict.inner_malformed]++;
          continue;
        }
      } else if (len > 0) counters[C.tun_rx_bytes] += len;
      const v = tunnel.encapsulate(txBuf, off, len, result);
      if (v === Verdict.forward) {
        this.queueSend(i);
        continue;
      }
      const w = this.answerDrop(v, txBuf, off, len);
      if (w !== Verdict.forward) drops[w]++;
    }
    this.flushSends();
    if (this.icmpOutCount > 0) this.flushIcmp();
  }

  /**
   * Offload mode: the TCP/IPv4 super-packet (or, with `udpGro`, UDP/IPv4 super-packet)
   * `txBuf[off, off+len)` (header at `h`) from TUN slot `origin`, cut into segments (datagrams)
   * in the segment region, each encapsulated and queued. One packet read: a drop is counted
   * once, and the first segment dropped ends it (the segments share their headers, so the rest
   * would fare the same).
   */
  private sendSuperPacket(origin: number, h: number, off: number, len: number): void {
    const { txBuf, result, counters, drops, tunnel } = this;
    counters[C.gso_packets]++;
    const udp = txBuf[h + VNET_OFF_GSO_TYPE] === VNET_GSO_UDP_L4 && this.coalescer !== null && this.coalescer.udp;
    const hdrLen = udp ? checkUdp4Gso(txBuf, h, off, len) : checkTcp4Gso(txBuf, h, off, len);
    const gso = getVnetGsoSize(txBuf, h);
    // A segment must fit a segment slot: the kernel never makes them larger than the TUN MTU.
    if (hdrLen === 0 || HEADROOM + hdrLen + gso > this.segSlot) {
      drops[Verdict.inner_malformed]++;
      return;
    }
    const count = tcp4SegmentCount(len, hdrLen, gso);
    for (let s = 0; s < count; s++) {
      if (this.segCursor === this.gsoSlots) this.flushSends();
      const o = this.gsoBase + this.segCursor * this.segSlot + HEADROOM;
      this.segCursor++;
      const segLen = udp ? writeUdp4Segment(txBuf, off, len, hdrLen, gso, s, txBuf, o) : writeTcp4Segment(txBuf, off, len, hdrLen, gso, s, txBuf, o);
      counters[C.gso_segments]++;
      const v = tunnel.encapsulate(txBuf, o, segLen, result);
      if (v === Verdict.forward) {
        this.queueSend(origin);
        continue;
      }
      const w = this.answerDrop(v, txBuf, o, segLen);
      if (w !== Verdict.forward) {
        drops[w]++;
        return;
      }
    }
  }

  /** Queue the packet `result` describes (a forward from `encapsulate`) for the next sendRaw. */
  private queueSend(origin: number): void {
    const k = this.sendCount++;
    const peer = this.result.peer!;
    this.sendOffs[k] = this.result.offset;
    this.sendLens[k] = this.result.length;
    this.sendDsts[k] = peer.endpoint;
    this.sendHops[k] = peer.index;
    this.sendPeers[k] = peer;
    this.sendOrigin[k] = origin;
  }

  /**
   * Send packets 0..n-1 on the underlay (`underlay.send`): through the raw socket, or in packet
   * mode through AF_PACKET to each one's peer's next hop (`hopOf`: peer index). Results in ioRes.
   */
  private sendUnderlay(slab: Buffer, offs: Int32Array, lens: Int32Array, dsts: Int32Array, hopOf: Int32Array, n: number): number {
    if (this.packetFd === -1) return native.sendRaw(this.rawFd, slab, offs, lens, dsts, n, this.ioRes);
    return native.sendPacket(this.packetFd, slab, offs, lens, dsts, n, this.ioRes, this.rawFd, this.hops, hopOf);
  }

  /** Send what is queued in one sendRaw (sendmmsg) call; empties the queue and the segment region. */
  private flushSends(): void {
    const k = this.sendCount;
    this.sendCount = 0;
    this.segCursor = 0;
    if (k === 0) return;
    const { sendOffs, sendLens, sendDsts, sendPeers, sendOrigin, counters, drops } = this;
    const sent = this.sendUnderlay(this.txBuf, sendOffs, sendLens, sendDsts, this.sendHops, k);
    counters[C.tx_packets] += sent;
    for (let j = 0; j < k; j++) {
      const peer = sendPeers[j]!;
      sendPeers[j] = null;
      const l = sendLens[j];
      if (l < 0) {
        // The native layer marks a failed packet with -errno. A packet read counts once, even
        // when several of its segments failed.
        if (sendOrigin[j] !== this.lastFailedOrigin) {
          this.lastFailedOrigin = sendOrigin[j];
          drops[Verdict.socket_write_error]++;
        }
        continue;
      }
      // Byte counters count inner packets (what the tunnel carries) in both directions; the
      // underlay's own bytes are in underlay_rx_bytes.
      const inner = l - HEADROOM;
      counters[C.tx_bytes] += inner;
      peer.txPackets++;
      peer.txBytes += inner;
    }
    if (this.ioRes[0] > 0) this.lastErrors.underlaySend = errnoLabel(this.ioRes[1]);
  }

  /**
   * The answer to a packet from the TUN (`buf[off, off+len)`) that `encapsulate` did not
   * forward, with `this.result` as it left it. RFC 2003 §3.1 / RFC 792: an inner TTL of 0 is
   * answered with ICMP Time Exceeded. §5.1: too big with DF is answered with ICMP Fragmentation
   * Needed (RFC 1191), too big without DF is fragmented (inner). Returns the verdict to count:
   * `forward` if it went out as fragments after all.
   */
  private answerDrop(v: Verdict, buf: Buffer, off: number, len: number): Verdict {
    if (v === Verdict.too_big) {
      const peer = this.result.peer!;
      const mtu = this.tunnel.mtuFor(peer);
      if ((buf[off + OFF_FLAGS_FRAG] << 8) & FLAG_DF) {
        this.queueIcmpError(ICMP_DEST_UNREACH, UNREACH_FRAG_NEEDED, mtu, buf, off, len);
        return v;
      }
      // What is queued goes first: a flow's packets leave in the order they came.
      this.flushSends();
      return this.sendFragments(buf, off, len, peer, mtu);
    }
    if (v === Verdict.ttl_expired) this.queueIcmpError(ICMP_TIME_EXCEEDED, 0, 0, buf, off, len);
    return v;
  }

  /**
   * Fragment one inner packet, encapsulate each piece, send them in one sendmmsg. Slow path.
   * Returns `forward`, or the one verdict the whole packet is lost under.
   */
  private sendFragments(buf: Buffer, off: number, len: number, peer: Peer, mtu: number): Verdict {
    const { fragSlab, fragSlot, fragLens, fragOffs, fragDsts, fragResult, tunnel, counters } = this;
    const n = fragmentInner(buf, off, len, mtu, fragSlab, fragSlot, HEADROOM, fragLens, MAX_FRAGMENTS);
    if (n === 0) return Verdict.too_big;
    let k = 0;
    for (let j = 0; j < n; j++) {
      const v = tunnel.encapsulate(fragSlab, j * fragSlot + HEADROOM, fragLens[j], fragResult);
      // A fragment of a packet that passed every check passes them too; if not, the packet
      // is lost as a whole and counted once, under the fragment's reason.
      if (v !== Verdict.forward) return v;
      fragOffs[k] = fragResult.offset;
      fragLens[k] = fragResult.length;
      fragDsts[k] = peer.endpoint;
      this.fragHops[k] = peer.index;
      k++;
    }
    const sent = this.sendUnderlay(fragSlab, fragOffs, fragLens, fragDsts, this.fragHops, k);
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
      this.lastErrors.underlaySend = errnoLabel(this.ioRes[1]);
      return Verdict.socket_write_error;
    }
    counters[C.fragmented_packets]++;
    return Verdict.forward;
  }

  // ---- 2. underlay -> TUN ---------------------------------------------------------------------

  private onRawBatch(n: number): void {
    const { rxBuf, rawLens, rawSlot, writeOffs, writeLens, writePeers, writeGso, result, counters, drops, tunnel } = this;
    counters[C.underlay_rx_batches]++;
    counters[C.underlay_rx_packets] += n;
    const now = this.now();
    let k = 0;
    for (let i = 0; i < n; i++) {
      const len = rawLens[i];
      if (len > 0) counters[C.underlay_rx_bytes] += len;
      const v = tunnel.decapsulate(rxBuf, i * rawSlot, len, result);
      if (v !== Verdict.forward) {
        drops[v]++;
        continue;
      }
      const peer = result.peer!;
      // Soft state (RFC 2003 §5): a packet from the peer proves it reachable again.
      peer.lastRxAt = now;
      if (peer.unreachableAt !== 0) {
        peer.unreachableAt = 0;
        peer.unreachableReason = null;
      }
      let gso = 0;
      if (result.length > this.tunMtu) {
        // Larger than any packet a peer sends: the kernel's GRO merged TCP segments (or the
        // peer's MTU is larger than ours). A TCP one is cut again for the TUN's MTU.
        gso = groSegmentSize(rxBuf, result.offset, result.length, this.tunMtu);
        if (gso > 0) {
          counters[C.underlay_gro_packets]++;
          if (this.coalescer === null) {
            // Plain mode has no virtio_net_hdr to hand the kernel a super-packet: cut it here,
            // after what is queued (a flow keeps its order).
            if (k > 0) this.writePlain(k);
            k = 0;
            this.writeSegmented(rxBuf, result.offset, result.length, gso, peer);
            continue;
          }
        }
      }
      writeOffs[k] = result.offset;
      writeLens[k] = result.length;
      writePeers[k] = peer;
      writeGso[k] = gso;
      k++;
    }
    if (k === 0) return;
    if (this.coalescer !== null) this.writeCoalesced(k);
    else this.writePlain(k);
  }

  /**
   * Plain mode: the TCP super-packet `buf[off, off+len)` from the underlay's GRO, cut into
   * segments of `mss` payload bytes in the fragment slab (full checksums, as the kernel's
   * segmentation would make them) and written to the TUN; counted as the segments written.
   */
  private writeSegmented(buf: Buffer, off: number, len: number, mss: number, peer: Peer): void {
    const { fragSlab, fragOffs, fragLens, fragSlot } = this;
    const hdrLen = IPV4_MIN_HEADER + ((buf[off + IPV4_MIN_HEADER + TCP_OFF_DATA_OFFSET] >> 4) << 2);
    const count = tcp4SegmentCount(len, hdrLen, mss);
    // In chunks of the fragment slab (more than 64 segments with a small TUN MTU).
    for (let first = 0; first < count; first += MAX_FRAGMENTS) {
      const n = Math.min(MAX_FRAGMENTS, count - first);
      for (let s = 0; s < n; s++) {
        fragOffs[s] = s * fragSlot;
        fragLens[s] = writeTcp4Segment(buf, off, len, hdrLen, mss, first + s, fragSlab, s * fragSlot);
      }
      this.writeTunCounted(fragSlab, fragOffs, fragLens, n, null, peer);
    }
  }

  /** Write the k decapsulated packets to the TUN as they are, one write(2) each. */
  private writePlain(k: number): void {
    this.writeTunCounted(this.rxBuf, this.writeOffs, this.writeLens, k, this.writePeers, null);
  }

  /**
   * Write packets i < n (`buf[offs[i], offs[i] + lens[i])`) to the TUN and count them: rx_*
   * and the peer's (`peers[i]`, cleared, or `peer` for all), tun_write_error per failure.
   */
  private writeTunCounted(buf: Buffer, offs: Int32Array, lens: Int32Array, n: number, peers: (Peer | null)[] | null, peer: Peer | null): void {
    const { counters, drops } = this;
    const written = native.writeTun(this.tunFd, buf, offs, lens, n, this.ioRes);
    counters[C.rx_packets] += written;
    for (let j = 0; j < n; j++) {
      const l = lens[j];
      let p = peer;
      if (peers !== null) {
        p = peers[j]!;
        peers[j] = null;
      }
      if (l < 0) continue;
      counters[C.rx_bytes] += l;
      p!.rxPackets++;
      p!.rxBytes += l;
    }
    if (this.ioRes[0] > 0) {
      drops[Verdict.tun_write_error] += this.ioRes[0];
      this.lastErrors.tunWrite = errnoLabel(this.ioRes[1]);
    }
  }

  /**
   * Offload mode: coalesce the k decapsulated packets (src/ipip/gso.ts `Coalescer`) and write
   * the result, each packet behind its virtio_net_hdr. Counters still count the packets that
   * arrived (rx_packets, rx_bytes, tun_write_error per segment); gro_* count the super-packets.
   */
  private writeCoalesced(k: number): void {
    const co = this.coalescer!;
    const { writePeers, counters, drops } = this;
    const m = co.coalesce(this.rxBuf, this.writeOffs, this.writeLens, k, this.poolStart, this.rxBuf.length, this.writeGso);
    native.writeTun(this.tunFd, this.rxBuf, co.offs, co.lens, m, this.ioRes);
    for (let x = 0; x < m; x++) {
      const segs = co.segments[x];
      if (co.lens[x] < 0) {
        drops[Verdict.tun_write_error] += segs;
        continue;
      }
      const bytes = co.bytes[x];
      const peer = writePeers[co.first[x]]!;
      counters[C.rx_packets] += segs;
      counters[C.rx_bytes] += bytes;
      peer.rxPackets += segs;
      peer.rxBytes += bytes;
      if (segs > 1) {
        counters[C.gro_packets]++;
        counters[C.gro_segments] += segs;
      }
    }
    for (let j = 0; j < k; j++) writePeers[j] = null;
    if (this.ioRes[0] > 0) this.lastErrors.tunWrite = errnoLabel(this.ioRes[1]);
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
    this.onPathMtu?.(peer);
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
    const at = slot * ICMP_OUT_STRIDE + ICMP_OUT_HEAD;
    // In offload mode the write starts at the (zero) virtio_net_hdr before the message.
    this.icmpOutLens[slot] = at - this.icmpOutOffs[slot] + writeIcmpError(this.icmpOutSlab, at, type, code, rest, this.icmpSource, dst, this.icmpId, buf, off, len);
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
  snapshot(): NamedFigures {
    return nameFigures(this.counters, this.drops);
  }

  get batchSize(): number {
    return this.batch;
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

const UNREACH_NAMES = ['net unreachable', 'host unreachable', 'protocol unreachable'];

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

function errnoLabel(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}
