/**
 * Receive offload (GRO), underlay -> TUN: `Coalescer` merges consecutive segments of one TCP/IPv4
 * flow in a batch of decapsulated packets into super-packets with a TCPV4 virtio_net_hdr
 * (vnet.ts), and (when the kernel takes UDP_L4) consecutive same-sized datagrams of one UDP/IPv4
 * flow into UDP_L4 super-packets, as Linux's GRO does; it puts a zero header in front of every
 * packet it does not merge (in the 10 bytes before it, which hold the outer header's addresses,
 * no longer needed after decapsulation: no copy).
 *
 * Flow, in the order of this file: the limits and states; `mergeablePayload` and
 * `udpMergeablePayload`, what a segment or datagram must be to merge at all; `l4ChecksumOk`,
 * `sameFlow` and `sameBytes`; then `Coalescer`: `coalesce` plans the batch (joining each packet
 * to its flow's open super-packet: `closeFlowOf`, `openFlow`, `addDatagram`, `datagramFollows`,
 * `follows`, `verify`, `closeAt`), and `build` writes it (`writeGro`, `writeAsCame`,
 * `writeSuper`, `emit`).
 *
 * Pure: no I/O, no throws, no allocation per packet (the coalescer's arrays are allocated once).
 */
import type { Buffer } from 'node:buffer';
import { foldSum, onesSum32 } from './checksum.js';
import {
  FLAG_DF, IPV4_MAX_TOTAL_LENGTH, IPV4_MIN_HEADER, OFF_SRC, computeHeaderChecksum, getFlagsFragment,
  getFragmentOffset, getHeaderLength, getId, getProtocol, getTos, getTtl, isDontFragment, isFragment,
  isIPv4NoOptions, setChecksum, setTotalLength,
} from './ipv4.js';
import {
  IPPROTO_TCP, TCP_ACK, TCP_CSUM_OFFSET, TCP_MIN_HEADER, TCP_OFF_ACK, TCP_OFF_DATA_OFFSET, TCP_OFF_SRC_PORT,
  TCP_OFF_WINDOW, TCP_PSH, TCP_TIMESTAMP_HEADER, TCP_TIMESTAMP_WORD, getTcpFlags, getTcpHeaderLength,
  getTcpSeq, setTcpChecksum, setTcpFlags, tcpPseudoSum,
} from './tcp.js';
import { IPPROTO_UDP, UDP_HEADER, UDP_OFF_CHECKSUM, getUdpChecksum, getUdpLength, setUdpChecksum, setUdpLength } from './udp.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_GSO_UDP_L4, VNET_HDR_LEN, writeVnetHdr, writeVnetHdrNone } from './vnet.js';

/** Most datagrams in one UDP super-packet: Linux's UDP_GRO_CNT_MAX. */
export const UDP_GRO_MAX_SEGMENTS = 64;
/** Flows the coalescer keeps open at once (TCP and UDP together); more and the oldest is closed. */
const OPEN_FLOWS = 8;
/** The header length of a TCP/IPv4 segment it merges: no IP options, TCP with or without a timestamp. */
const IP_HL = IPV4_MIN_HEADER;
/** Bytes of the flow key in the IPv4 header: source and destination addresses. */
const ADDRS = 8;
/** Bytes of the flow key in the TCP or UDP header: source and destination ports. */
const PORTS = 4;

const ST_MEMBER = 0;
const ST_CLOSED = 1;
const ST_OPEN = 2;

/**
 * `inGso[j]` of an input whose 10 bytes before it are not its own (a datagram inside a UDP_GRO
 * read, after another): if written as it came it is first copied into the pool.
 */
export const IN_CRAMPED = -1;

/**
 * The payload length of `buf[off, off+len)` if it is a segment the coalescer may merge, else 0:
 * IPv4 without options, TCP, DF set and not a fragment, a TCP header of 20 bytes or 32 with
 * exactly Linux's timestamp option layout (NOP NOP TS), no reserved bits, flags ACK or ACK+PSH
 * (no SYN, FIN, RST, URG, ECE, CWR), at least one payload byte. The packet is a forwarded,
 * decapsulated one: its IPv4 header was validated by `Tunnel.decapsulate`.
 */
function mergeablePayload(buf: Buffer, off: number, len: number): number {
  if (!isIPv4NoOptions(buf, off) || getProtocol(buf, off) !== IPPROTO_TCP) return 0;
  if (getFlagsFragment(buf, off) !== FLAG_DF) return 0; // DF, no MF, offset 0
  if (len <= IP_HL + TCP_MIN_HEADER) return 0;
  const t = off + IP_HL;
  const flags = getTcpFlags(buf, t);
  if (flags !== TCP_ACK && flags !== (TCP_ACK | TCP_PSH)) return 0;
  // The whole byte, Data Offset and the reserved bits at once (not getTcpHeaderLength): 5 or 8 words, no reserved bit.
  const doff = buf[t + TCP_OFF_DATA_OFFSET];
  const o = t + TCP_MIN_HEADER;
  let tcpHl: number;
  if (doff === 0x50) tcpHl = TCP_MIN_HEADER;
  else if (doff === 0x80 && ((buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]) === TCP_TIMESTAMP_WORD) tcpHl = TCP_TIMESTAMP_HEADER;
  else return 0;
  const pay = len - IP_HL - tcpHl;
  return pay > 0 ? pay : 0;
}

/**
 * The payload length of `buf[off, off+len)` if it is a datagram the coalescer may merge, else 0:
 * IPv4 without options, UDP, not a fragment (MF clear, offset 0), a UDP Length that matches the
 * IP payload, a checksum present (not 0: a super-packet's datagrams all get one from the
 * kernel, so one sent without must stay as it came), at least one payload byte.
 */
function udpMergeablePayload(buf: Buffer, off: number, len: number): number {
  if (!isIPv4NoOptions(buf, off) || getProtocol(buf, off) !== IPPROTO_UDP) return 0;
  if (isFragment(buf, off)) return 0;
  if (len <= IP_HL + UDP_HEADER) return 0;
  const u = off + IP_HL;
  if (getUdpLength(buf, u) !== len - IP_HL) return 0;
  if (getUdpChecksum(buf, u) === 0) return 0;
  return len - IP_HL - UDP_HEADER;
}

/** The TCP or UDP (`protocol`) checksum of the option-less IPv4 packet `buf[off, off+len)` verifies. */
function l4ChecksumOk(buf: Buffer, off: number, len: number, protocol: number): boolean {
  const l4Len = len - IP_HL;
  return onesSum32(buf, off + IP_HL, l4Len, foldSum(tcpPseudoSum(buf, off, protocol, l4Len))) === 0xffff;
}

/**
 * The option-less packets at `a` and `b` have one flow key but for the protocol: source and
 * destination addresses, and ports (the first 4 bytes of TCP and UDP alike, RFC 768). A free
 * function, not a method: as a method it measured ~5% slower on the coalescer's batch loop.
 */
function sameFlow(buf: Buffer, a: number, b: number): boolean {
  return sameBytes(buf, a + OFF_SRC, b + OFF_SRC, ADDRS) && sameBytes(buf, a + IP_HL + TCP_OFF_SRC_PORT, b + IP_HL + TCP_OFF_SRC_PORT, PORTS);
}

/** Bytes `[a, a+n)` and `[b, b+n)` of `buf` are equal. */
function sameBytes(buf: Buffer, a: number, b: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (buf[a + i] !== buf[b + i]) return false;
  return true;
}

/**
 * Merges TCP/IPv4 segments of a batch of decapsulated packets into super-packets for a TUN
 * opened with IFF_VNET_HDR, like Linux's tcp_gro_receive (and wireguard-go's tcpGRO), within one
 * batch; with `udp`, UDP/IPv4 datagrams too, like Linux's udp_gro_receive_segment (and
 * wireguard-go's udpGRO). Allocate one per data path (arrays for `maxPackets`) and call
 * `coalesce` per batch.
 *
 * Segment j is appended to the open super-packet of its flow (same addresses and ports) when it
 * is mergeable (`mergeablePayload`), its sequence number follows the last byte so far, and TTL,
 * TOS, ACK number, window and TCP header (with the timestamp option, byte for byte) equal the
 * first segment's; its payload is no larger than the first's (a smaller one, or PSH, ends the
 * super-packet), the result stays within 65535 bytes, and the TCP checksums of both verify (the
 * kernel trusts a super-packet's checksum, so a corrupted segment must not hide in one; a
 * segment that fails is written as it came, and the kernel drops it). A segment of the same flow
 * that does not follow ends the flow's super-packet (Linux GRO's flush) and may start the next.
 * IP IDs are not compared: with DF set they carry nothing (RFC 6864 §4.1).
 *
 * UDP (`udp`: only for a kernel that takes UDP_L4 from a TUN, Linux 6.2+): datagram j joins the
 * open super-packet of its flow (same addresses and ports) when it is mergeable
 * (`udpMergeablePayload`), TTL, TOS and the flags word (DF) equal the first datagram's, its
 * payload is no larger than the first's (a smaller one ends the super-packet, as every datagram
 * but the last is cut to gso_size when the kernel splits it again), there are fewer than 64
 * (UDP_GRO_CNT_MAX) and the result stays within 65535 bytes; without DF its IP ID must be the
 * first's plus its position, since the kernel gives segment i the ID first + i; and the UDP
 * checksums of both verify. The kernel splits the super-packet into the same datagrams, byte for
 * byte (with DF, IDs aside), before any socket sees them. UDP_L4 header: NEEDS_CSUM, hdr_len 28,
 * gso_size = the first datagram's payload, csum_start 20, csum_offset 6; UDP Length and the
 * checksum field (the pseudo-header sum, as udp4_gro_complete leaves it) for the whole.
 *
 * Output, in the order of the first segment of each: `count` packets at `offs[x]`, `lens[x]`,
 * each starting with its 10-byte virtio_net_hdr; `segments[x]` input packets in it, `bytes[x]`
 * their summed lengths, `first[x]` the index of the first. A packet merged with nothing stays
 * where it was, with a zero header in the 10 bytes before it; a super-packet is built in the
 * pool behind a TCPV4 header (NEEDS_CSUM, gso_size = the first segment's payload), its checksum
 * field the pseudo-header sum for the kernel to complete, as tcp4_gro_complete (`writeSuper`).
 *
 * Buffer ownership: nothing is kept across calls; the input packets may be overwritten by the
 * zero headers and the pool is reused by every call.
 */
export class Coalescer {
  /** Output: start of packet x (its virtio_net_hdr) in the buffer given to `coalesce`. */
  readonly offs: Int32Array;
  /** Output: length of packet x, header included. */
  readonly lens: Int32Array;
  /** Output: input packets merged into packet x (1 for a packet written as it came). */
  readonly segments: Int32Array;
  /** Output: the summed lengths of those input packets. */
  readonly bytes: Int32Array;
  /** Output: index of the first input packet in packet x. */
  readonly first: Int32Array;

  private readonly next: Int32Array;
  private readonly tail: Int32Array;
  private readonly segs: Int32Array;
  private readonly sumLen: Int32Array;
  private readonly payload: Int32Array;
  private readonly gsoSize: Int32Array;
  private readonly nextSeq: Int32Array;
  private readonly state: Uint8Array;
  private readonly verified: Uint8Array;
  private readonly proto: Uint8Array;
  private readonly open = new Int32Array(OPEN_FLOWS);
  private openCount = 0;
  /** Where `build` places the next packet in the pool. */
  private cursor = 0;

  /** `udp`: merge UDP datagrams too (the kernel takes UDP_L4 super-packets from a TUN). */
  constructor(readonly maxPackets: number, readonly udp = false) {
    this.offs = new Int32Array(maxPackets);
    this.lens = new Int32Array(maxPackets);
    this.segments = new Int32Array(maxPackets);
    this.bytes = new Int32Array(maxPackets);
    this.first = new Int32Array(maxPackets);
    this.next = new Int32Array(maxPackets);
    this.tail = new Int32Array(maxPackets);
    this.segs = new Int32Array(maxPackets);
    this.sumLen = new Int32Array(maxPackets);
    this.payload = new Int32Array(maxPackets);
    this.gsoSize = new Int32Array(maxPackets);
    this.nextSeq = new Int32Array(maxPackets);
    this.state = new Uint8Array(maxPackets);
    this.verified = new Uint8Array(maxPackets);
    this.proto = new Uint8Array(maxPackets);
  }

  /**
   * Plan and build the writes for input packets j < n, each `buf[inOffs[j], inOffs[j] +
   * inLens[j])`, a valid IPv4 datagram with at least 10 writable bytes before it (n <=
   * maxPackets). Super-packets are built in `buf[poolStart, poolEnd)`, which must not overlap
   * the inputs; if it runs out, the segments of a super-packet are written as they came. Returns
   * the number of output packets. `inGso[j] > 0` marks input j as a TCP/IPv4 super-packet
   * already (one the kernel's GRO merged before the raw socket, its TCP checksum field holding
   * the pseudo-header sum): it is written as it is behind a TCPV4 header with gso_size
   * `inGso[j]`, and ends its flow's open super-packet. `inGso[j] === IN_CRAMPED` marks input j
   * as having no writable bytes before it: the pool must then have room for every input once
   * more (each length + 32), as what is written as it came is copied there first.
   */
  coalesce(buf: Buffer, inOffs: Int32Array, inLens: Int32Array, n: number, poolStart: number, poolEnd: number, inGso: Int32Array | null = null): number {
    const { next, tail, segs, sumLen, payload, gsoSize, nextSeq, state, verified, proto, open } = this;
    this.openCount = 0;
    for (let j = 0; j < n; j++) {
      const off = inOffs[j];
      const len = inLens[j];
      next[j] = -1;
      tail[j] = j;
      segs[j] = 1;
      sumLen[j] = len;
      verified[j] = 0;
      payload[j] = 0;
      gsoSize[j] = 0;
      const p = getProtocol(buf, off);
      proto[j] = p;
      if (inGso !== null && inGso[j] > 0) {
        // A TCP super-packet already (merged by the kernel's GRO before the raw socket): written
        // as it is, with a TCPV4 header; it ends its flow's open super-packet, keeping the order.
        state[j] = ST_CLOSED;
        gsoSize[j] = inGso[j];
        this.closeFlowOf(buf, inOffs, off, len, p);
        continue;
      }
      if (p === IPPROTO_UDP && this.udp) {
        this.addDatagram(buf, inOffs, inLens, j, off, len);
        continue;
      }
      const pay = mergeablePayload(buf, off, len);
      if (pay === 0) {
        state[j] = ST_CLOSED;
        this.closeFlowOf(buf, inOffs, off, len, p);
        continue;
      }
      const seq = getTcpSeq(buf, off + IP_HL);
      const last = (getTcpFlags(buf, off + IP_HL) & TCP_PSH) !== 0;
      let merged = false;
      for (let q = this.openCount - 1; q >= 0; q--) {
        const h = open[q];
        const ho = inOffs[h];
        if (proto[h] !== IPPROTO_TCP || !sameFlow(buf, ho, off)) continue;
        if (this.follows(buf, h, ho, off, pay, seq) && this.verify(buf, h, ho, inLens[h]) && l4ChecksumOk(buf, off, len, IPPROTO_TCP)) {
          next[tail[h]] = j;
          tail[h] = j;
          segs[h]++;
          sumLen[h] += len;
          payload[h] += pay;
          nextSeq[h] = (seq + pay) | 0;
          state[j] = ST_MEMBER;
          merged = true;
          if (last || pay < gsoSize[h]) this.closeAt(q);
        } else {
          this.closeAt(q);
        }
        break;
      }
      if (merged) continue;
      payload[j] = pay;
      gsoSize[j] = pay;
      nextSeq[j] = (seq + pay) | 0;
      if (last) {
        state[j] = ST_CLOSED;
        continue;
      }
      this.openFlow(j);
    }
    return this.build(buf, inOffs, inLens, n, poolStart, poolEnd, inGso);
  }

  /**
   * A packet that is not merged (`buf[off, off+len)`, protocol `p`) ends the open super-packet of
   * its flow, as a flush does in Linux GRO: what follows of the flow is written after it, so the
   * flow keeps its order. The flow key is read at the packet's own header length; a packet too
   * short to show its ports, or a fragment after the first, ends every open super-packet between
   * its two addresses.
   */
  private closeFlowOf(buf: Buffer, inOffs: Int32Array, off: number, len: number, p: number): void {
    if (this.openCount === 0 || (p !== IPPROTO_TCP && p !== IPPROTO_UDP)) return;
    const ihl = getHeaderLength(buf, off);
    const ports = len >= ihl + PORTS && getFragmentOffset(buf, off) === 0;
    for (let q = this.openCount - 1; q >= 0; q--) {
      const ho = inOffs[this.open[q]];
      if (this.proto[this.open[q]] !== p || !sameBytes(buf, ho + OFF_SRC, off + OFF_SRC, ADDRS)) continue;
      if (ports && !sameBytes(buf, ho + IP_HL, off + ihl, PORTS)) continue;
      this.closeAt(q);
    }
  }

  /** Open a super-packet headed by packet j, closing the oldest if all slots are taken. */
  private openFlow(j: number): void {
    if (this.openCount === OPEN_FLOWS) this.closeAt(0);
    this.state[j] = ST_OPEN;
    this.open[this.openCount++] = j;
  }

  /** UDP datagram j (`buf[off, off+len)`): joins its flow's open super-packet, or heads one. */
  private addDatagram(buf: Buffer, inOffs: Int32Array, inLens: Int32Array, j: number, off: number, len: number): void {
    const { next, tail, segs, sumLen, payload, gsoSize, state, proto, open } = this;
    const pay = udpMergeablePayload(buf, off, len);
    if (pay === 0) {
      state[j] = ST_CLOSED;
      this.closeFlowOf(buf, inOffs, off, len, IPPROTO_UDP);
      return;
    }
    for (let q = this.openCount - 1; q >= 0; q--) {
      const h = open[q];
      const ho = inOffs[h];
      if (proto[h] !== IPPROTO_UDP || !sameFlow(buf, ho, off)) continue;
      if (this.datagramFollows(buf, h, ho, off, pay) && this.verify(buf, h, ho, inLens[h]) && l4ChecksumOk(buf, off, len, IPPROTO_UDP)) {
        next[tail[h]] = j;
        tail[h] = j;
        segs[h]++;
        sumLen[h] += len;
        payload[h] += pay;
        state[j] = ST_MEMBER;
        if (pay < gsoSize[h] || segs[h] === UDP_GRO_MAX_SEGMENTS) this.closeAt(q);
        return;
      }
      this.closeAt(q);
      break;
    }
    payload[j] = pay;
    gsoSize[j] = pay;
    this.openFlow(j);
  }

  /** The datagram at `off` (payload `pay`) may be appended to head h's UDP super-packet. */
  private datagramFollows(buf: Buffer, h: number, ho: number, off: number, pay: number): boolean {
    if (pay > this.gsoSize[h] || IP_HL + UDP_HEADER + this.payload[h] + pay > IPV4_MAX_TOTAL_LENGTH) return false;
    if (getTtl(buf, ho) !== getTtl(buf, off) || getTos(buf, ho) !== getTos(buf, off)) return false;
    if (getFlagsFragment(buf, ho) !== getFlagsFragment(buf, off)) return false;
    if (isDontFragment(buf, ho)) return true;
    // Without DF the ID matters (a router may fragment): it must be what the kernel will give.
    return getId(buf, off) === ((getId(buf, ho) + this.segs[h]) & 0xffff);
  }

  /** The segment at `off` (payload `pay`, sequence `seq`) continues head h's super-packet. */
  private follows(buf: Buffer, h: number, ho: number, off: number, pay: number, seq: number): boolean {
    if (seq !== this.nextSeq[h] || pay > this.gsoSize[h]) return false;
    const ht = ho + IP_HL;
    const t = off + IP_HL;
    const tcpHl = getTcpHeaderLength(buf, t);
    if (IP_HL + tcpHl + this.payload[h] + pay > IPV4_MAX_TOTAL_LENGTH) return false;
    if (getTtl(buf, ho) !== getTtl(buf, off) || getTos(buf, ho) !== getTos(buf, off)) return false;
    // Data offset (so the same header length), then ACK number, then window: equal.
    if (buf[ht + TCP_OFF_DATA_OFFSET] !== buf[t + TCP_OFF_DATA_OFFSET]) return false;
    if (!sameBytes(buf, ht + TCP_OFF_ACK, t + TCP_OFF_ACK, 4) || !sameBytes(buf, ht + TCP_OFF_WINDOW, t + TCP_OFF_WINDOW, 2)) return false;
    // The timestamp option, when there is one: equal byte for byte (Linux GRO's rule too).
    return tcpHl === TCP_MIN_HEADER || sameBytes(buf, ht + TCP_MIN_HEADER, t + TCP_MIN_HEADER, tcpHl - TCP_MIN_HEADER);
  }

  /** Head h's TCP or UDP checksum verifies (computed once, when the first packet is merged into it). */
  private verify(buf: Buffer, h: number, ho: number, hlen: number): boolean {
    if (this.verified[h] === 0) {
      if (!l4ChecksumOk(buf, ho, hlen, this.proto[h])) return false;
      this.verified[h] = 1;
    }
    return true;
  }

  private closeAt(q: number): void {
    const open = this.open;
    this.state[open[q]] = ST_CLOSED;
    for (let r = q + 1; r < this.openCount; r++) open[r - 1] = open[r];
    this.openCount--;
  }

  /**
   * Write the plan: for every input that heads an output (not a member), in input order, the
   * GRO'd super-packet in place (`writeGro`), the packets as they came (`writeAsCame`: alone, or
   * a super-packet the pool has no room for), or a super-packet built in the pool (`writeSuper`).
   */
  private build(buf: Buffer, inOffs: Int32Array, inLens: Int32Array, n: number, poolStart: number, poolEnd: number, inGso: Int32Array | null): number {
    const { next, segs, payload, gsoSize, state, proto } = this;
    let k = 0;
    this.cursor = poolStart;
    for (let j = 0; j < n; j++) {
      if (state[j] === ST_MEMBER) continue;
      const off = inOffs[j];
      if (segs[j] === 1 && gsoSize[j] > 0 && payload[j] === 0) {
        k = this.writeGro(buf, j, off, inLens[j], k);
        continue;
      }
      const hdrLen = IP_HL + (proto[j] === IPPROTO_UDP ? UDP_HEADER : getTcpHeaderLength(buf, off + IP_HL));
      const total = hdrLen + payload[j];
      // The IPv4 header of a super-packet starts 16-byte aligned, its vnet header 10 bytes before.
      const o = (this.cursor + VNET_HDR_LEN + 15) & ~15;
      if (segs[j] === 1 || o + total > poolEnd) {
        // Written as they came (the pool can only run out if it was sized too small).
        for (let m = j; m !== -1; m = next[m]) k = this.writeAsCame(buf, m, inOffs[m], inLens[m], k, inGso !== null && inGso[m] === IN_CRAMPED, poolEnd);
        continue;
      }
      this.writeSuper(buf, inOffs, inLens, j, hdrLen, total, o);
      k = this.emit(k, o - VNET_HDR_LEN, total + VNET_HDR_LEN, segs[j], this.sumLen[j], j);
      this.cursor = o + total;
    }
    return k;
  }

  /**
   * A super-packet from the kernel's GRO (inGso), input j at `buf[off, off+len)`: in place behind
   * a TCPV4 header, its checksum field the pseudo-header sum for its length (as
   * tcp4_gro_complete left it; rewritten to be sure). Returns the next output index.
   */
  private writeGro(buf: Buffer, j: number, off: number, len: number, k: number): number {
    const t = off + IP_HL;
    setTcpChecksum(buf, t, foldSum(tcpPseudoSum(buf, off, IPPROTO_TCP, len - IP_HL)));
    writeVnetHdr(buf, off - VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, IP_HL + getTcpHeaderLength(buf, t), this.gsoSize[j], IP_HL, TCP_CSUM_OFFSET);
    return this.emit(k, off - VNET_HDR_LEN, len + VNET_HDR_LEN, 1, len, j);
  }

  /**
   * Input m at `buf[off, off+len)` as it came, behind a zero header; `cramped` (IN_CRAMPED):
   * copied to the pool first (the caller's room rule makes it fit; were it not to, the header
   * would overwrite the end of the input before). Returns the next output index.
   */
  private writeAsCame(buf: Buffer, m: number, off: number, len: number, k: number, cramped: boolean, poolEnd: number): number {
    const o = (this.cursor + VNET_HDR_LEN + 15) & ~15;
    if (cramped && o + len <= poolEnd) {
      buf.copyWithin(o, off, off + len);
      this.cursor = o + len;
      off = o;
    }
    writeVnetHdrNone(buf, off - VNET_HDR_LEN);
    return this.emit(k, off - VNET_HDR_LEN, len + VNET_HDR_LEN, 1, len, m);
  }

  /**
   * Build the super-packet headed by input j at `buf[o, o+total)`: the head whole, the payload of
   * each member after it; Total Length and header checksum; for UDP the UDP Length, for TCP the
   * flags of the last member; the checksum field the pseudo-header sum (as tcp4_gro_complete and
   * udp4_gro_complete leave it); the vnet header in the 10 bytes before `o`.
   */
  private writeSuper(buf: Buffer, inOffs: Int32Array, inLens: Int32Array, j: number, hdrLen: number, total: number, o: number): void {
    const off = inOffs[j];
    buf.copyWithin(o, off, off + inLens[j]);
    let w = o + inLens[j];
    for (let m = this.next[j]; m !== -1; m = this.next[m]) {
      const mo = inOffs[m];
      buf.copyWithin(w, mo + hdrLen, mo + inLens[m]);
      w += inLens[m] - hdrLen;
    }
    setTotalLength(buf, o, total);
    setChecksum(buf, o, computeHeaderChecksum(buf, o));
    const t = o + IP_HL;
    const l4Len = total - IP_HL;
    if (this.proto[j] === IPPROTO_UDP) {
      setUdpLength(buf, t, l4Len);
      setUdpChecksum(buf, t, foldSum(tcpPseudoSum(buf, o, IPPROTO_UDP, l4Len)));
      writeVnetHdr(buf, o - VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4, hdrLen, this.gsoSize[j], IP_HL, UDP_OFF_CHECKSUM);
    } else {
      setTcpFlags(buf, t, getTcpFlags(buf, inOffs[this.tail[j]] + IP_HL));
      setTcpChecksum(buf, t, foldSum(tcpPseudoSum(buf, o, IPPROTO_TCP, l4Len)));
      writeVnetHdr(buf, o - VNET_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, hdrLen, this.gsoSize[j], IP_HL, TCP_CSUM_OFFSET);
    }
  }

  /** Output k: `len` bytes at `off` (vnet header included), `segments` inputs of `bytes` bytes from input `first`. */
  private emit(k: number, off: number, len: number, segments: number, bytes: number, first: number): number {
    this.offs[k] = off;
    this.lens[k] = len;
    this.segments[k] = segments;
    this.bytes[k] = bytes;
    this.first[k] = first;
    return k + 1;
  }
}
