/**
 * The memory of one data-path queue, allocated once when the queue is built and never again:
 * slot sizes (`slotSize`), then `Slabs`, which holds every Buffer and typed array the batch
 * handlers of send.ts, receive.ts and icmp.ts work in, direction by direction.
 *
 * Buffer ownership (STYLE rule 8): all slabs are pools, none is a slab of kept slices. The
 * native Readers overwrite the TUN, raw and ICMP slabs on their next wake-up, so nothing keeps a
 * view of a packet after a batch callback returns. The TUN slab and the segment region share one
 * Buffer (`txBuf`), as do the raw slab and the coalescing pool (`rxBuf`), so that one sendRaw /
 * writeTun call covers a whole batch:
 *
 *   txBuf = [TUN slab: packed, see below | segment region: gsoSlots slots of segSlot]
 *   rxBuf = [raw slab: batch slots of rawSlot | coalescing pool (offload mode): as large again]
 *
 * The typed arrays beside them describe packets in those Buffers by offset and length (int32),
 * so that no object is made per packet.
 *
 * The TUN slab is packed (the native Reader's packed mode): packet i's slot starts at
 * `tunOffs[i]`, the next right after it on a 64-byte boundary, and a read needs room for one
 * whole slot. In offload mode a slot is 64 KiB (a super-packet), so fixed slots cost batch x 64
 * KiB, and a long run under mixed traffic touches every page of it; packed, the slab is
 * TUN_PACK_BYTES plus one slot, which holds a batch of small packets or a few super-packets.
 */
import { ICMP_ERROR_MAX, IPV4_MAX_TOTAL_LENGTH, VNET_HDR_LEN } from '../ipip/index.js';

/** Bytes reserved before each inner packet for the outer header (RFC 2003: 20, no options). */
export const HEADROOM = 20;
/** Most fragments one inner packet may be cut into; more and it is dropped as too_big. */
export const MAX_FRAGMENTS = 64;
/** ICMP errors queued per batch at most (the rest count as rate limited). */
export const ICMP_QUEUE = 32;
/** Bytes before each queued ICMP error: room for a (zero) virtio_net_hdr in offload mode. */
export const ICMP_OUT_HEAD = 16;
export const ICMP_OUT_STRIDE = ICMP_OUT_HEAD + ICMP_ERROR_MAX;
/** Offload mode: segment slots (each one tunnel-MTU packet + headroom) filled before a sendRaw. */
const GSO_SLOTS = 256;
/**
 * Packed TUN slab: bytes of packets a batch may start in before it ends for want of room (plus
 * one slot for the packet that crosses the line). 256 KiB is four 64 KiB super-packets, or a
 * whole batch of packets up to ~4 KiB; a batch callback costs a few microseconds, which over
 * 256 KiB of data is nothing.
 */
export const TUN_PACK_BYTES = 256 * 1024;
/** ICMP messages read from the underlay per wake-up; errors are rare. */
export const ICMP_BATCH = 16;
export const ICMP_SLOT = 2048;

/** A slot for `payload` bytes after the headroom. */
export function slotSize(payload: number): number {
  // +1 so that a packet exactly filling the slot is told apart from a truncated one; 64-byte
  // alignment keeps every slot's start on its own cache line.
  return (HEADROOM + payload + 1 + 63) & ~63;
}

/** What the slab sizes depend on (DataplaneOptions). */
export interface SlabSizes {
  /** Packets per batch, fixed for the queue's life. */
  batch: number;
  /** Largest inner packet the TUN can hand us (its MTU). */
  tunMtu: number;
  /** Largest datagram the raw socket may hand us (outer header included). */
  underlayMax: number;
  /** Offload mode: every TUN read and write carries a virtio_net_hdr; super-packets. */
  offload: boolean;
}

export class Slabs {
  /** Bytes of virtio_net_hdr before each TUN packet: VNET_HDR_LEN in offload mode, else 0. */
  private readonly vnet: number;
  // ---- TUN -> underlay (send.ts)
  /** TUN slot: in offload mode the largest super-packet (64 KiB) and its virtio_net_hdr. */
  readonly tunSlot: number;
  readonly txBuf: Buffer;
  readonly tunSlab: Buffer;
  readonly tunLens: Int32Array;
  /** Where each packet's slot starts in the TUN slab (the packet itself HEADROOM later). */
  readonly tunOffs: Int32Array;
  /** Where the segment region starts in txBuf, its slot size and slot count (0 in plain mode). */
  readonly gsoBase: number;
  readonly segSlot: number;
  readonly gsoSlots: number;
  /** Packets queued for the next sendRaw: offset in txBuf, length, outer destination. */
  readonly sendOffs: Int32Array;
  readonly sendLens: Int32Array;
  readonly sendDsts: Int32Array;
  /** Peer index per queued packet: its figures, and its entry in the next-hop table (packet mode). */
  readonly sendHops: Int32Array;
  /** The TUN slot (packet read) each queued packet comes from, to count a failure once per packet read. */
  readonly sendOrigin: Int32Array;
  /** Fragments of one inner packet (slow path), and segments of one GRO datagram (receive.ts). */
  readonly fragSlot: number;
  readonly fragSlab: Buffer;
  readonly fragLens: Int32Array;
  readonly fragOffs: Int32Array;
  readonly fragDsts: Int32Array;
  readonly fragHops: Int32Array;

  // ---- underlay -> TUN (receive.ts)
  readonly rawSlot: number;
  readonly rxBuf: Buffer;
  readonly rawSlab: Buffer;
  readonly rawLens: Int32Array;
  /** Where the coalescing pool starts in rxBuf. */
  readonly poolStart: number;
  /** Decapsulated packets to write: offset in rxBuf, length, peer index. */
  readonly writeOffs: Int32Array;
  readonly writeLens: Int32Array;
  readonly writePeers: Int32Array;
  /** Per packet to write: gso_size if it is a TCP super-packet from the underlay's GRO, else 0. */
  readonly writeGso: Int32Array;

  // ---- ICMP in (underlay) and out (TUN) (icmp.ts)
  readonly icmpInSlab = Buffer.alloc(ICMP_BATCH * ICMP_SLOT);
  readonly icmpInLens = new Int32Array(ICMP_BATCH);
  /** Queued ICMP errors, slot i at i * ICMP_OUT_STRIDE + ICMP_OUT_HEAD; the bytes before stay 0 (the vnet header). */
  readonly icmpOutSlab = Buffer.alloc(ICMP_QUEUE * ICMP_OUT_STRIDE);
  readonly icmpOutOffs = new Int32Array(ICMP_QUEUE);
  readonly icmpOutLens = new Int32Array(ICMP_QUEUE);

  constructor(o: SlabSizes) {
    const b = o.batch;
    const vnet = o.offload ? VNET_HDR_LEN : 0;
    this.tunSlot = o.offload ? slotSize(VNET_HDR_LEN + IPV4_MAX_TOTAL_LENGTH) : slotSize(o.tunMtu);
    this.segSlot = slotSize(o.tunMtu);
    this.gsoSlots = o.offload ? GSO_SLOTS : 0;
    this.gsoBase = Math.min(b * this.tunSlot, TUN_PACK_BYTES + this.tunSlot);
    this.txBuf = Buffer.alloc(this.gsoBase + this.gsoSlots * this.segSlot);
    this.tunSlab = this.txBuf.subarray(0, this.gsoBase);
    this.tunLens = new Int32Array(b);
    this.tunOffs = new Int32Array(b);
    this.vnet = vnet;
    const sends = b + this.gsoSlots;
    this.sendOffs = new Int32Array(sends);
    this.sendLens = new Int32Array(sends);
    this.sendDsts = new Int32Array(sends);
    this.sendHops = new Int32Array(sends);
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
    this.rxBuf = Buffer.alloc(this.poolStart + (o.offload ? this.poolStart + 64 : 0));
    this.rawSlab = this.rxBuf.subarray(0, this.poolStart);
    this.rawLens = new Int32Array(b);
    this.writeOffs = new Int32Array(b);
    this.writeLens = new Int32Array(b);
    this.writePeers = new Int32Array(b);
    this.writeGso = new Int32Array(b);

    // In offload mode an ICMP error's write starts at the (zero) virtio_net_hdr before it.
    for (let i = 0; i < ICMP_QUEUE; i++) this.icmpOutOffs[i] = i * ICMP_OUT_STRIDE + ICMP_OUT_HEAD - vnet;
  }

  /**
   * For code that lays out a TUN batch itself (the JIT warm-up, benches, tests) as the packed
   * Reader does: sets `tunOffs[i]` after packet i - 1 (whose length must already be in
   * `tunLens`) and returns where packet i goes (its slot start + HEADROOM). Call in order from
   * 0. RangeError if the slab has no room for another slot.
   */
  placeTun(i: number): number {
    let start = 0;
    if (i > 0) {
      const len = this.tunLens[i - 1]!;
      start = this.tunOffs[i - 1]! + (len < 0 ? this.tunSlot : (HEADROOM - this.vnet + len + 63) & ~63);
    }
    if (start + this.tunSlot > this.gsoBase) throw new RangeError(`TUN slab: no room for packet ${i}`);
    this.tunOffs[i] = start;
    return start + HEADROOM;
  }
}
