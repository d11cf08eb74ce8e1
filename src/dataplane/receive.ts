/**
 * Underlay -> TUN, as wireguard-go's device/receive.go: the raw socket Reader's batch handler
 * and the three ways its forwards reach the TUN, in the order of this file:
 *   - `onRawBatch`: the Reader drained whole IPIP datagrams into the raw slab;
 *     `Tunnel.decapsulate` validates each and points at the inner packet inside its slot; a
 *     packet from a peer proves it reachable (RFC 2003 §5 soft state).
 *   - `writeSegmented` (plain mode): a TCP super-packet that the kernel's GRO merged before the
 *     raw socket, cut for the TUN's MTU.
 *   - `writePlain` / `writeTunCounted`: the forwards as they are, one write(2) each, counted.
 *   - `writeCoalesced` (offload mode): `Coalescer` (src/ipip/coalesce.ts) merges consecutive segments
 *     of each TCP flow in the batch (and, with `udpGro`, consecutive same-sized datagrams of each
 *     UDP flow) into super-packets built in the pool after the raw slab, and writes the rest as
 *     they came, each behind a virtio_net_hdr: far fewer TUN writes.
 * No object, closure, Buffer or log call per packet; every datagram read is either written or
 * counted under exactly one drop reason.
 */
import { IN_CRAMPED, IPV4_MIN_HEADER, PacketResult, Verdict, getTcpHeaderLength, groSegmentSize, tcp4SegmentCount, writeTcp4Segment, type Coalescer, type Tunnel } from '../ipip/index.js';
import { errnoLabel, UDP_INFO_INTS } from '../tun/native.js';
import { C, type Figures } from './figures.js';
import type { Ports } from './io.js';
import { HEADROOM, MAX_FRAGMENTS, type Slabs } from './slabs.js';
import { Tracer } from './trace.js';

export class Receiver {
  private readonly result = new PacketResult();
  /** FOU: the UDP Reader's per-slot info (src/tun/native.ts UDP_INFO_INTS), set by the Dataplane. */
  fouInfo = new Int32Array(0);

  constructor(
    public tunnel: Tunnel,
    private readonly slabs: Slabs,
    private readonly figures: Figures,
    private readonly ports: Ports,
    /** Offload mode's coalescer; null in plain mode. */
    private readonly coalescer: Coalescer | null,
    private readonly tunMtu: number,
    private readonly now: () => number,
    /** Live tracing (trace.ts): tested once per batch; drops note their reason in its `receiveVerdicts`. */
    private readonly tracer: Tracer = new Tracer(slabs.rawLens.length),
  ) {}

  /** The raw socket Reader's batch handler: IPIP datagrams (outer header included) in raw slots 0..n-1. */
  onRawBatch(n: number): void {
    const { result, tunnel, tunMtu } = this;
    const { rxBuf, rawLens, rawSlot, writeOffs, writeLens, writePeers, writeGso } = this.slabs;
    const { counters, drops, peers } = this.figures;
    const rv = this.tracer.receiveVerdicts;
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
        rv[i] = v;
        continue;
      }
      const p = result.peer!.index;
      // Soft state (RFC 2003 §5): a packet from the peer proves it reachable again.
      peers.lastRxAt[p] = now;
      if (peers.unreachableAt[p] !== 0) {
        peers.unreachableAt[p] = 0;
        peers.unreachableReason[p] = null;
      }
      let gso = 0;
      if (result.length > tunMtu) {
        // Larger than any packet a peer sends: the kernel's GRO merged TCP segments (or the
        // peer's MTU is larger than ours). A TCP one is cut again for the TUN's MTU.
        gso = groSegmentSize(rxBuf, result.offset, result.length, tunMtu);
        if (gso > 0) {
          counters[C.underlay_gro_packets]++;
          if (this.coalescer === null) {
            // Plain mode has no virtio_net_hdr to hand the kernel a super-packet: cut it here,
            // after what is queued (a flow keeps its order).
            if (k > 0) this.writePlain(k);
            k = 0;
            this.writeSegmented(rxBuf, result.offset, result.length, gso, p);
            continue;
          }
        }
      }
      writeOffs[k] = result.offset;
      writeLens[k] = result.length;
      writePeers[k] = p;
      writeGso[k] = gso;
      k++;
    }
    // Sampled before the writes: the coalescer may rewrite headers in place.
    if (this.tracer.on) this.tracer.sampleReceive(rxBuf, rawLens, rawSlot, n);
    if (k === 0) return;
    if (this.coalescer !== null) this.writeCoalesced(k);
    else this.writePlain(k);
  }

  /**
   * FOU (src/ipip/fou.ts): the UDP Reader's batch handler. Slot i holds the payload of one UDP
   * datagram, or with UDP_GRO several of one sender, all `info[4i+2]` bytes but the last; its
   * source address and outer TOS are in `fouInfo` (UDP_INFO_INTS per slot). Each datagram is one
   * inner packet: `Tunnel.decapsulateFou` checks it, and the forwards go to the TUN as on the
   * raw path (coalesced in offload mode). Counted per datagram as the raw path counts packets.
   */
  onFouBatch(n: number): void {
    const { result, tunnel, fouInfo } = this;
    const { rxBuf, rawLens, rawSlot, writeOffs, writeLens, writePeers, writeGso, poolStart } = this.slabs;
    const { counters, drops } = this.figures;
    const cap = writeOffs.length;
    // Offload mode: a packet written as it came gets its virtio_net_hdr in the 10 bytes before
    // it, which inside a UDP_GRO read are the previous datagram's: such a datagram is marked
    // IN_CRAMPED and the coalescer copies it into its pool if (and only if) it is written alone,
    // so a segment it merges is copied once. The pool must hold every queued packet once more
    // (`room`: length + 32 each, the coalescer's alignment), else what is queued goes first.
    const pool = rxBuf.length - poolStart;
    let room = 0;
    counters[C.underlay_rx_batches]++;
    const now = this.now();
    let k = 0;
    for (let i = 0; i < n; i++) {
      const len = rawLens[i];
      const src = fouInfo[i * UDP_INFO_INTS];
      const gro = fouInfo[i * UDP_INFO_INTS + 2];
      const tos = fouInfo[i * UDP_INFO_INTS + 3];
      // A UDP_GRO read: datagrams of `gro` bytes, the last one shorter or equal.
      const seg = gro > 0 && len > gro ? gro : len;
      const count = seg === len ? 1 : Math.ceil(len / seg);
      if (count > 1) {
        counters[C.fou_gro_reads]++;
        counters[C.fou_gro_segments] += count;
      }
      counters[C.underlay_rx_packets] += count;
      if (len > 0) counters[C.underlay_rx_bytes] += len;
      const base = i * rawSlot + HEADROOM;
      for (let s = 0; s < count; s++) {
        const l = count === 1 ? len : Math.min(seg, len - s * seg);
        const v = tunnel.decapsulateFou(rxBuf, base + s * seg, l, src, tos, result);
        if (v !== Verdict.forward) {
          drops[v]++;
          continue;
        }
        const p = result.peer!.index;
        this.markReachable(p, now);
        if (k === cap || room + l + 32 > pool) {
          this.writeBatch(k);
          k = 0;
          room = 0;
        }
        room += l + 32;
        writeOffs[k] = result.offset;
        writeLens[k] = result.length;
        writePeers[k] = p;
        writeGso[k] = s > 0 ? IN_CRAMPED : 0;
        k++;
      }
    }
    if (k > 0) this.writeBatch(k);
  }

  /** Soft state (RFC 2003 §5): a packet from peer index `p` proves it reachable again. */
  private markReachable(p: number, now: number): void {
    const peers = this.figures.peers;
    peers.lastRxAt[p] = now;
    if (peers.unreachableAt[p] !== 0) {
      peers.unreachableAt[p] = 0;
      peers.unreachableReason[p] = null;
    }
  }

  /** Write the k queued forwards: coalesced in offload mode, else as they are. */
  private writeBatch(k: number): void {
    if (this.coalescer !== null) this.writeCoalesced(k);
    else this.writePlain(k);
  }

  /**
   * Plain mode: the TCP super-packet `buf[off, off+len)` from the underlay's GRO (from peer
   * index `peer`), cut into segments of `mss` payload bytes in the fragment slab (full
   * checksums, as the kernel's segmentation would make them) and written to the TUN; counted as
   * the segments written.
   */
  private writeSegmented(buf: Buffer, off: number, len: number, mss: number, peer: number): void {
    const { fragSlab, fragOffs, fragLens, fragSlot } = this.slabs;
    // groSegmentSize accepted it: an IPv4 header without options, then TCP.
    const hdrLen = IPV4_MIN_HEADER + getTcpHeaderLength(buf, off + IPV4_MIN_HEADER);
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
    const s = this.slabs;
    this.writeTunCounted(s.rxBuf, s.writeOffs, s.writeLens, k, s.writePeers, -1);
  }

  /**
   * Write packets i < n (`buf[offs[i], offs[i] + lens[i])`) to the TUN and count them: rx_*
   * and the peer's (peer index `peerOf[i]`, or `peer` for all), tun_write_error per failure.
   */
  private writeTunCounted(buf: Buffer, offs: Int32Array, lens: Int32Array, n: number, peerOf: Int32Array | null, peer: number): void {
    const { ports } = this;
    const { counters, drops, peers } = this.figures;
    const written = ports.io.writeTun(ports.tun, buf, offs, lens, n, ports.res);
    counters[C.rx_packets] += written;
    for (let j = 0; j < n; j++) {
      const l = lens[j];
      if (l < 0) continue;
      const p = peerOf === null ? peer : peerOf[j];
      counters[C.rx_bytes] += l;
      peers.rxPackets[p]++;
      peers.rxBytes[p] += l;
    }
    if (ports.res[0] > 0) {
      drops[Verdict.tun_write_error] += ports.res[0];
      this.figures.lastErrors.tunWrite = errnoLabel(ports.res[1]);
    }
  }

  /**
   * Offload mode: coalesce the k decapsulated packets (src/ipip/coalesce.ts `Coalescer`) and write
   * the result, each packet behind its virtio_net_hdr. Counters still count the packets that
   * arrived (rx_packets, rx_bytes, tun_write_error per segment); gro_* count the super-packets.
   */
  private writeCoalesced(k: number): void {
    const co = this.coalescer!;
    const { ports } = this;
    const { rxBuf, writeOffs, writeLens, writePeers, writeGso, poolStart } = this.slabs;
    const { counters, drops, peers } = this.figures;
    const m = co.coalesce(rxBuf, writeOffs, writeLens, k, poolStart, rxBuf.length, writeGso);
    ports.io.writeTun(ports.tun, rxBuf, co.offs, co.lens, m, ports.res);
    for (let x = 0; x < m; x++) {
      const segs = co.segments[x];
      if (co.lens[x] < 0) {
        drops[Verdict.tun_write_error] += segs;
        continue;
      }
      const bytes = co.bytes[x];
      const p = writePeers[co.first[x]];
      counters[C.rx_packets] += segs;
      counters[C.rx_bytes] += bytes;
      peers.rxPackets[p] += segs;
      peers.rxBytes[p] += bytes;
      if (segs > 1) {
        counters[C.gro_packets]++;
        counters[C.gro_segments] += segs;
      }
    }
    if (ports.res[0] > 0) this.figures.lastErrors.tunWrite = errnoLabel(ports.res[1]);
  }
}
