/**
 * TUN -> underlay, as wireguard-go's device/send.go: the TUN Reader's batch handler and what it
 * calls, in the order of this file:
 *   - `onTunBatch`: the Reader drained up to `batch` inner packets into the TUN slab, each 20
 *     bytes into its slot (headroom); `Tunnel.encapsulate` writes the outer header in front in
 *     place, and each forward is queued (`queueSend`).
 *   - `sendSuperPacket` (offload mode): a TCP super-packet (or, with `udpGro`, a UDP one from a
 *     socket using UDP_SEGMENT; one packet read, counted once under its verdict) is cut into
 *     MSS-sized segments (datagrams) in the segment region, each with 20 bytes of headroom, and
 *     each segment goes through the unchanged `encapsulate`, so every RFC 2003 check, the ICMP
 *     answers and fragmentation apply per segment; the first segment that is dropped drops the
 *     rest of the super-packet, counted once. With FOU sockets a TCP segment's headers are
 *     written alone (`writeTcp4SegmentHead`) and, to a FOU peer, it is queued in two pieces,
 *     its payload sent from where it is in the TUN slot (no copy before the kernel's).
 *   - `sendUnderlay`: the one place every underlay send goes through (`underlay.send`: the raw
 *     socket, or AF_PACKET toward each peer's next hop).
 *   - `flushSends`: everything queued in one sendmmsg call, then the figures.
 *   - `answerDrop`: the two drops RFC 2003 answers: too big with DF -> ICMP Fragmentation Needed
 *     (§5.1), inner TTL 0 -> ICMP Time Exceeded (§3.1); too big without DF is fragmented
 *     (`sendFragments`, inner fragmentation, see src/ipip/fragment.ts).
 * In offload mode every TUN read starts with a virtio_net_hdr, which the Reader puts in the last
 * 10 bytes of the headroom; a plain packet with NEEDS_CSUM gets its checksum completed first.
 * No object, closure, Buffer or log call per packet; every packet read is either forwarded
 * (possibly as fragments or segments) or counted under exactly one drop reason.
 */
import {
  ENCAP_FOU,
  ICMP_DEST_UNREACH,
  ICMP_TIME_EXCEEDED,
  PacketResult,
  UNREACH_FRAG_NEEDED,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_NONE,
  VNET_GSO_UDP_L4,
  VNET_HDR_LEN,
  getVnetGsoType,
  getVnetFlags,
  Verdict,
  checkTcp4Gso,
  checkUdp4Gso,
  completeChecksum,
  fragmentInner,
  getVnetCsumOffset,
  getVnetCsumStart,
  getVnetGsoSize,
  isDontFragment,
  tcp4SegmentCount,
  tcp4SegmentPayload,
  writeTcp4Segment,
  writeTcp4SegmentHead,
  writeUdp4Segment,
  type Peer,
  type Tunnel,
} from '../ipip/index.js';
import { C, type Figures } from './figures.js';
import type { FouSender } from './fou.js';
import type { IcmpErrors } from './icmp.js';
import type { Ports } from './io.js';
import { errnoLabel } from '../tun/native.js';
import { HEADROOM, MAX_FRAGMENTS, type Slabs } from './slabs.js';
import { TRACE_FRAGMENTED, TRACE_SEGMENTED, Tracer } from './trace.js';
import { underlaySend } from './underlay-send.js';

export class Sender {
  /** Packets queued for the next sendRaw (TUN packets encapsulated in place, or segments). */
  sendCount = 0;
  /** Segment slots of the segment region in use. */
  segCursor = 0;
  /** The TUN slot whose failed send was counted last in this batch (a packet read counts once). */
  lastFailedOrigin = -1;
  private readonly result = new PacketResult();
  private readonly fragResult = new PacketResult();

  constructor(
    public tunnel: Tunnel,
    private readonly slabs: Slabs,
    private readonly figures: Figures,
    private readonly ports: Ports,
    private readonly icmp: IcmpErrors,
    /** Offload mode: virtio_net_hdr on every read, super-packets. */
    private readonly offload: boolean,
    /** Offload mode with UDP_L4 on the TUN: UDP super-packets are cut too. */
    private readonly udpGro: boolean,
    /** Live tracing (trace.ts): tested once per batch; drops note their reason in its `sendVerdicts`. */
    private readonly tracer: Tracer = new Tracer(slabs.tunLens.length),
    /** FOU (fou.ts): where packets to FOU peers wait; null when the daemon has no FOU sockets. */
    readonly fou: FouSender | null = null,
  ) {}

  /** The TUN Reader's batch handler: inner packets 0..n-1 of the packed TUN slab (slabs.ts). */
  onTunBatch(n: number): void {
    const { result, tunnel } = this;
    const { txBuf, tunLens, tunOffs } = this.slabs;
    const { counters, drops } = this.figures;
    const sv = this.tracer.sendVerdicts;
    counters[C.tun_rx_batches]++;
    counters[C.tun_rx_packets] += n;
    this.lastFailedOrigin = -1;
    for (let i = 0; i < n; i++) {
      let len = tunLens[i];
      const off = tunOffs[i] + HEADROOM;
      if (this.offload && len !== -1) {
        // The virtio_net_hdr sits in the 10 bytes before the packet.
        const h = off - VNET_HDR_LEN;
        len -= VNET_HDR_LEN;
        if (len < 0) {
          drops[Verdict.inner_malformed]++;
          sv[i] = Verdict.inner_malformed;
          continue;
        }
        counters[C.tun_rx_bytes] += len;
        if (getVnetGsoType(txBuf, h) !== VNET_GSO_NONE) {
          sv[i] = this.sendSuperPacket(i, h, off, len);
          continue;
        }
        if ((getVnetFlags(txBuf, h) & VNET_F_NEEDS_CSUM) !== 0 && !completeChecksum(txBuf, off, len, getVnetCsumStart(txBuf, h), getVnetCsumOffset(txBuf, h))) {
          drops[Verdict.inner_malformed]++;
          sv[i] = Verdict.inner_malformed;
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
      sv[i] = w === Verdict.forward ? TRACE_FRAGMENTED : w;
    }
    this.flushSends();
    if (this.icmp.count > 0) this.icmp.flush();
    if (this.tracer.on) this.tracer.sampleSend(txBuf, tunLens, tunOffs, HEADROOM, this.offload ? VNET_HDR_LEN : 0, n);
  }

  /**
   * Offload mode: the TCP/IPv4 super-packet (or, with `udpGro`, UDP/IPv4 super-packet)
   * `txBuf[off, off+len)` (header at `h`) from TUN slot `origin`, cut into segments (datagrams)
   * in the segment region, each encapsulated and queued. One packet read: a drop is counted
   * once, and the first segment dropped ends it (the segments share their headers, so the rest
   * would fare the same). Returns what tracing records for it: TRACE_SEGMENTED, or the drop.
   */
  private sendSuperPacket(origin: number, h: number, off: number, len: number): number {
    const { result, tunnel, slabs } = this;
    const { counters, drops } = this.figures;
    const txBuf = slabs.txBuf;
    counters[C.gso_packets]++;
    const udp = this.udpGro && getVnetGsoType(txBuf, h) === VNET_GSO_UDP_L4;
    const hdrLen = udp ? checkUdp4Gso(txBuf, h, off, len) : checkTcp4Gso(txBuf, h, off, len);
    const gso = getVnetGsoSize(txBuf, h);
    // A segment must fit a segment slot: the kernel never makes them larger than the TUN MTU.
    if (hdrLen === 0 || HEADROOM + hdrLen + gso > slabs.segSlot) {
      drops[Verdict.inner_malformed]++;
      return Verdict.inner_malformed;
    }
    const count = tcp4SegmentCount(len, hdrLen, gso);
    // With FOU, a TCP segment's headers are written alone and its payload stays where it is:
    // a segment to a FOU peer leaves in two pieces, any other gets its payload copied after them.
    const split = !udp && this.fou !== null;
    for (let s = 0; s < count; s++) {
      if (this.segCursor === slabs.gsoSlots) this.flushSends();
      const o = slabs.gsoBase + this.segCursor * slabs.segSlot + HEADROOM;
      this.segCursor++;
      const segLen = udp
        ? writeUdp4Segment(txBuf, off, len, hdrLen, gso, s, txBuf, o)
        : split
          ? writeTcp4SegmentHead(txBuf, off, len, hdrLen, gso, s, txBuf, o)
          : writeTcp4Segment(txBuf, off, len, hdrLen, gso, s, txBuf, o);
      counters[C.gso_segments]++;
      const v = tunnel.encapsulate(txBuf, o, segLen, result);
      const pay = split ? tcp4SegmentPayload(off, hdrLen, gso, s) : 0;
      if (split && (v !== Verdict.forward || result.peer!.encap !== ENCAP_FOU)) {
        txBuf.copyWithin(o + hdrLen, pay, pay + segLen - hdrLen);
      }
      if (v === Verdict.forward) {
        if (split && result.peer!.encap === ENCAP_FOU) this.queueFou(origin, result.peer!, hdrLen, pay);
        else this.queueSend(origin);
        continue;
      }
      const w = this.answerDrop(v, txBuf, o, segLen);
      if (w !== Verdict.forward) {
        drops[w]++;
        return w;
      }
    }
    return TRACE_SEGMENTED;
  }

  /** Queue the packet `result` describes (a forward from `encapsulate`) for the next sendRaw. */
  private queueSend(origin: number): void {
    const s = this.slabs;
    const peer = this.result.peer!;
    if (peer.encap === ENCAP_FOU) {
      this.queueFou(origin, peer);
      return;
    }
    const k = this.sendCount++;
    s.sendOffs[k] = this.result.offset;
    s.sendLens[k] = this.result.length;
    s.sendDsts[k] = peer.endpoint;
    s.sendHops[k] = peer.index;
    s.sendOrigin[k] = origin;
  }

  /**
   * A forward to a FOU peer: into the FOU queue (in two pieces with `head` > 0: see
   * FouSender.queue); without FOU sockets, a failed send.
   */
  private queueFou(origin: number, peer: Peer, head = 0, tail = 0): void {
    const fou = this.fou;
    if (fou === null) {
      if (origin !== this.lastFailedOrigin) {
        this.lastFailedOrigin = origin;
        this.figures.drops[Verdict.socket_write_error]++;
        this.tracer.sendVerdicts[origin] = Verdict.socket_write_error;
      }
      this.figures.lastErrors.underlaySend = 'EBADF';
      return;
    }
    if (!fou.hasRoom(1)) this.lastFailedOrigin = fou.flush(this.slabs.txBuf, this.lastFailedOrigin, this.tracer);
    fou.queue(this.slabs.txBuf, this.result.offset, this.result.length, peer, origin, this.result.tos, head, tail);
  }

  /**
   * Send packets 0..n-1 on the underlay (`underlay.send`): through the raw socket, or in packet
   * mode through AF_PACKET to each one's peer's next hop (`hopOf`: peer index). Results in
   * `ports.res`. Every underlay send goes through here.
   */
  private sendUnderlay(slab: Buffer, offs: Int32Array, lens: Int32Array, dsts: Int32Array, hopOf: Int32Array, n: number): number {
    const p = this.ports;
    return underlaySend(p.io, p.raw, p.packet, p.hops, slab, offs, lens, dsts, hopOf, n, p.res);
  }

  /** Send what is queued in one sendRaw (sendmmsg) call; empties the queue and the segment region. */
  private flushSends(): void {
    const k = this.sendCount;
    this.sendCount = 0;
    this.segCursor = 0;
    if (this.fou !== null) this.lastFailedOrigin = this.fou.flush(this.slabs.txBuf, this.lastFailedOrigin, this.tracer);
    if (k === 0) return;
    const { sendOffs, sendLens, sendDsts, sendHops, sendOrigin } = this.slabs;
    const { counters, drops, peers } = this.figures;
    const sent = this.sendUnderlay(this.slabs.txBuf, sendOffs, sendLens, sendDsts, sendHops, k);
    counters[C.tx_packets] += sent;
    for (let j = 0; j < k; j++) {
      const l = sendLens[j];
      if (l < 0) {
        // The native layer marks a failed packet with -errno. A packet read counts once, even
        // when several of its segments failed.
        if (sendOrigin[j] !== this.lastFailedOrigin) {
          this.lastFailedOrigin = sendOrigin[j];
          drops[Verdict.socket_write_error]++;
          this.tracer.sendVerdicts[sendOrigin[j]] = Verdict.socket_write_error;
        }
        continue;
      }
      // Byte counters count inner packets (what the tunnel carries) in both directions; the
      // underlay's own bytes are in underlay_rx_bytes.
      const inner = l - HEADROOM;
      const p = sendHops[j];
      counters[C.tx_bytes] += inner;
      peers.txPackets[p]++;
      peers.txBytes[p] += inner;
    }
    if (this.ports.res[0] > 0) this.figures.lastErrors.underlaySend = errnoLabel(this.ports.res[1]);
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
      if (isDontFragment(buf, off)) {
        this.icmp.queue(ICMP_DEST_UNREACH, UNREACH_FRAG_NEEDED, mtu, buf, off, len);
        return v;
      }
      // What is queued goes first: a flow's packets leave in the order they came.
      this.flushSends();
      return this.sendFragments(buf, off, len, peer, mtu);
    }
    if (v === Verdict.ttl_expired) this.icmp.queue(ICMP_TIME_EXCEEDED, 0, 0, buf, off, len);
    return v;
  }

  /**
   * Fragment one inner packet, encapsulate each piece, send them in one sendmmsg. Slow path.
   * Returns `forward`, or the one verdict the whole packet is lost under.
   */
  private sendFragments(buf: Buffer, off: number, len: number, peer: Peer, mtu: number): Verdict {
    const { fragResult, tunnel } = this;
    const { fragSlab, fragSlot, fragLens, fragOffs, fragDsts, fragHops } = this.slabs;
    const { counters, peers } = this.figures;
    const n = fragmentInner(buf, off, len, mtu, fragSlab, fragSlot, HEADROOM, fragLens, MAX_FRAGMENTS);
    if (n === 0) return Verdict.too_big;
    for (let j = 0; j < n; j++) {
      const v = tunnel.encapsulate(fragSlab, j * fragSlot + HEADROOM, fragLens[j], fragResult);
      // A fragment of a packet that passed every check passes them too; if not, the packet
      // is lost as a whole and counted once, under the fragment's reason.
      if (v !== Verdict.forward) return v;
      fragOffs[j] = fragResult.offset;
      fragLens[j] = fragResult.length;
      fragDsts[j] = peer.endpoint;
      fragHops[j] = peer.index;
    }
    // FOU: the fragments themselves are the UDP payloads (no outer header in front).
    const fou = peer.encap === ENCAP_FOU;
    if (fou && this.fou === null) return Verdict.socket_write_error;
    const sent = fou ? this.fou!.sendNow(fragSlab, fragOffs, fragLens, fragDsts, n, fragResult.tos) : this.sendUnderlay(fragSlab, fragOffs, fragLens, fragDsts, fragHops, n);
    const outer = fou ? 0 : HEADROOM;
    counters[C.tx_packets] += sent;
    counters[C.fragments_sent] += sent;
    for (let j = 0; j < n; j++) {
      const l = fragLens[j];
      if (l < 0) continue;
      counters[C.tx_bytes] += l - outer;
      peers.txPackets[peer.index]++;
      peers.txBytes[peer.index] += l - outer;
    }
    if (fou && sent < n) return Verdict.socket_write_error;
    if (this.ports.res[0] > 0) {
      // One lost fragment loses the packet: count it once.
      this.figures.lastErrors.underlaySend = errnoLabel(this.ports.res[1]);
      return Verdict.socket_write_error;
    }
    counters[C.fragmented_packets]++;
    return Verdict.forward;
  }

  /**
   * After the warm-up (warmup.ts): nothing queued, no failure remembered. Each field is stored
   * only if it changed (warmup.ts says why).
   */
  settle(): void {
    if (this.sendCount !== 0) this.sendCount = 0;
    if (this.segCursor !== 0) this.segCursor = 0;
    if (this.lastFailedOrigin !== -1) this.lastFailedOrigin = -1;
  }
}
