/**
 * The data path's JIT warm-up (issue 4), in one file: the synthetic packets, the flows they
 * travel, and the procedure that runs them through a queue before it starts reading.
 *
 * Why: V8 runs a function in its interpreter or baseline tier until it has been called often
 * enough; at a few packets per second (a ping every 10 ms) the encapsulation path stays there
 * for minutes, and each cold wake-up costs ~100 µs more than an optimized one (docs/
 * performance.md, "Latency"). Before the Readers start, the queue runs its real data path over
 * these packets into the discard fd (nothing is sent anywhere), so the first real packet
 * already meets optimized code.
 *
 * Flow of this file:
 *   1. the packets (`writeWarmPacket`, `writeWarmVnet`, `writeWarmOuter`): well-formed IPv4
 *      packets of the shapes real traffic has: ICMP echo (84 bytes), UDP (64 and 1400 byte
 *      payloads), TCP segments with Linux's timestamp option; in offload mode also packets with
 *      a partial checksum (NEEDS_CSUM) and TCP super-packets (GSO TCPV4), as the kernel hands
 *      them over. Pure: they write into the caller's buffer;
 *   2. the flows (`warmUpFlows`): one inner flow per peer, from the config;
 *   3. the procedure (`warmUp`, `WARM_UP_ROUNDS`): rounds of synthetic batches through the
 *      real batch handlers, both ways, then everything put back as it was.
 */
import type { Buffer } from 'node:buffer';
import {
  ENCAP_FOU,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_ACK,
  TCP_OFF_CHECKSUM,
  TCP_PSH,
  TCP_TIMESTAMP_HEADER,
  TCP_TIMESTAMP_WORD,
  UDP_OFF_CHECKSUM,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_HDR_LEN,
  FLAG_DF,
  IPPROTO_ICMP,
  IPPROTO_IPIP,
  computeHeaderChecksum,
  foldSum,
  getProtocol,
  internetChecksum,
  setChecksum,
  setDst,
  setFlagsFragment,
  setId,
  setProtocol,
  setSrc,
  setTos,
  setTotalLength,
  setTtl,
  setVersionIhl,
  onesSum32,
  tcpPseudoSum,
  writeVnetHdr,
  type Tunnel,
} from '../ipip/index.js';
import { UDP_INFO_INTS } from '../tun/native.js';
import type { Dataplane } from './dataplane.js';
import type { QueueConfig } from './queue.js';

// ---- 1. the packets

export const WARM_ICMP = 0;
export const WARM_UDP = 1;
export const WARM_TCP = 2;

/** One inner flow of the warm-up: `local` (ours, behind the TUN) <-> `remote` (behind `endpoint`). */
export interface WarmFlow {
  /** The peer's underlay endpoint (int32). */
  endpoint: number;
  /** An inner address the peer owns (int32): routed to it, not an endpoint. */
  remote: number;
  /** An inner address on our side (int32): routed to no peer, not an endpoint. */
  local: number;
}

/**
 * Write an IPv4 packet at `buf[off ...]`: `kind` (ICMP echo request, UDP or TCP with the
 * timestamp option), `payload` bytes, `src` -> `dst`, TTL 64, DF, ID `id`, every checksum right
 * (with `partial`, the UDP/TCP checksum field holds only the pseudo-header sum, as the kernel
 * leaves it for offload). `seq` is the TCP sequence number. Returns the length.
 */
export function writeWarmPacket(buf: Buffer, off: number, kind: number, src: number, dst: number, payload: number, id: number, seq: number, partial: boolean): number {
  const l4 = kind === WARM_ICMP ? 8 : kind === WARM_UDP ? 8 : TCP_TIMESTAMP_HEADER;
  const total = 20 + l4 + payload;
  writeWarmIPv4(buf, off, total, id, kind === WARM_ICMP ? IPPROTO_ICMP : kind === WARM_UDP ? IPPROTO_UDP : IPPROTO_TCP, src, dst);
  const t = off + 20;
  buf.fill(0, t, t + l4);
  for (let i = 0; i < payload; i++) buf[t + l4 + i] = (i * 7 + id) & 0xff;
  if (kind === WARM_ICMP) {
    buf[t] = 8; // echo request
    buf.writeUInt16BE(id & 0xffff, t + 4);
    buf.writeUInt16BE(seq & 0xffff, t + 6);
    buf.writeUInt16BE(internetChecksum(buf, t, l4 + payload), t + 2);
    return total;
  }
  let csumAt: number;
  if (kind === WARM_UDP) {
    buf.writeUInt16BE(40000, t);
    buf.writeUInt16BE(5201, t + 2);
    buf.writeUInt16BE(l4 + payload, t + 4);
    csumAt = t + UDP_OFF_CHECKSUM;
  } else {
    buf.writeUInt16BE(40000, t);
    buf.writeUInt16BE(5201, t + 2);
    buf.writeInt32BE(seq | 0, t + 4);
    buf.writeInt32BE(0x10000, t + 8);
    buf[t + 12] = (TCP_TIMESTAMP_HEADER / 4) << 4;
    buf[t + 13] = TCP_ACK | (payload < 1000 ? TCP_PSH : 0);
    buf.writeUInt16BE(0xffff, t + 14);
    buf.writeInt32BE(TCP_TIMESTAMP_WORD, t + 20);
    buf.writeInt32BE(0x01020304, t + 24);
    buf.writeInt32BE(0x05060708, t + 28);
    csumAt = t + TCP_OFF_CHECKSUM;
  }
  const pseudo = foldSum(tcpPseudoSum(buf, off, getProtocol(buf, off), l4 + payload));
  if (partial) {
    buf.writeUInt16BE(pseudo, csumAt);
  } else {
    const c = ~onesSum32(buf, t, l4 + payload, pseudo) & 0xffff;
    buf.writeUInt16BE(c === 0 ? 0xffff : c, csumAt);
  }
  return total;
}

/**
 * Offload mode: the virtio_net_hdr for a packet written by `writeWarmPacket` at `off` (header at
 * `off - 10`): none for a complete one, NEEDS_CSUM for a partial one, or a TCP super-packet of
 * `gsoSize`-byte segments.
 */
export function writeWarmVnet(buf: Buffer, off: number, kind: number, partial: boolean, gsoSize: number): void {
  const h = off - VNET_HDR_LEN;
  if (!partial || kind === WARM_ICMP) {
    writeVnetHdr(buf, h, 0, VNET_GSO_NONE, 0, 0, 0, 0);
    return;
  }
  const csumOffset = kind === WARM_UDP ? UDP_OFF_CHECKSUM : TCP_OFF_CHECKSUM;
  const hdrLen = 20 + (kind === WARM_UDP ? 8 : TCP_TIMESTAMP_HEADER);
  writeVnetHdr(buf, h, VNET_F_NEEDS_CSUM, gsoSize > 0 ? VNET_GSO_TCPV4 : VNET_GSO_NONE, gsoSize > 0 ? hdrLen : 0, gsoSize, 20, csumOffset);
}

/**
 * Wrap the inner packet at `buf[off + 20 ...]` (length `len`) in an outer IPIP header at
 * `buf[off ...]` from `src` to `dst`, as a peer would send it. Returns the outer length.
 */
export function writeWarmOuter(buf: Buffer, off: number, len: number, src: number, dst: number, id: number): number {
  const total = len + 20;
  writeWarmIPv4(buf, off, total, id, IPPROTO_IPIP, src, dst);
  return total;
}

/** A 20-byte IPv4 header at `buf[off ...]`: TOS 0, DF, TTL 64, the given fields, checksum. */
function writeWarmIPv4(buf: Buffer, off: number, total: number, id: number, protocol: number, src: number, dst: number): void {
  setVersionIhl(buf, off, 4, 5);
  setTos(buf, off, 0);
  setTotalLength(buf, off, total);
  setId(buf, off, id);
  setFlagsFragment(buf, off, FLAG_DF);
  setTtl(buf, off, 64);
  setProtocol(buf, off, protocol);
  setSrc(buf, off, src);
  setDst(buf, off, dst);
  setChecksum(buf, off, computeHeaderChecksum(buf, off));
}

// ---- 2. the flows

/**
 * The warm-up's flows, one per peer: an inner address the peer owns (the first of its prefixes
 * that routes to it, host part 1 when there is room) and one of ours that routes to no peer and
 * is no endpoint (the TUN's address, or the first such of a few candidates).
 */
export function warmUpFlows(c: QueueConfig, tunnel: Tunnel): WarmFlow[] {
  const usable = (a: number): boolean => !tunnel.isTunnelAddress(a) && tunnel.routes.lookup(a) === undefined;
  const candidates = [c.tun.address?.addr, 0x0a000001, 0x64400001, 0xc6120001 | 0, 0xac100001 | 0, 0xc0a80001 | 0];
  const local = candidates.find((a): a is number => a !== undefined && usable(a));
  if (local === undefined) return [];
  const flows: WarmFlow[] = [];
  c.peers.forEach((p, i) => {
    const peer = tunnel.peers[i]!;
    for (const x of p.prefixes) {
      const remote = x.len < 31 ? (x.addr + 1) | 0 : x.addr;
      if (!tunnel.isTunnelAddress(remote) && tunnel.routes.lookup(remote) === peer) {
        flows.push({ endpoint: peer.endpoint, remote, local });
        return;
      }
    }
  });
  return flows;
}

// ---- 3. the procedure

/** Rounds of synthetic batches in the JIT warm-up (each both ways, 1..64 packets). */
export const WARM_UP_ROUNDS = 2000;

/** Batch sizes of successive rounds (capped at the queue's batch size). */
const WARM_SIZES = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 64];

/**
 * Before `dp.start()`: run `rounds` rounds of synthetic batches through the real batch handlers
 * and the real Tunnel, TUN -> underlay and underlay -> TUN, for each flow, with the fds swapped
 * for the discard fd, so that nothing is sent anywhere. The real objects, not copies, so that
 * the code V8 optimizes has seen exactly their shapes. Batch sizes cycle from 1 to the batch
 * size; in offload mode some packets carry partial checksums and some are TCP super-packets.
 * Afterwards the fds are back, every peer's state (IDs, figures, soft state) is as it was, and
 * every counter, drop count and last error is reset: the status report starts from zero.
 * Returns the packets processed.
 */
export function warmUp(dp: Dataplane, flows: readonly WarmFlow[], rounds: number): number {
  if (flows.length === 0 || rounds <= 0) return 0;
  const { ports, figures } = dp;
  const peers = dp.tunnel.peers;
  const real = { tun: ports.tun, raw: ports.raw, packet: ports.packet };
  const icmpId = dp.icmpErrors.id;
  // What the batch handlers change on a Peer: only the ID (path MTU is only learned from
  // underlay ICMP). In an Int32Array: an array of doubles would hold the ID as a double, and
  // writing that back would make nextId a double field, deoptimizing `encapsulate`.
  const ids = new Int32Array(peers.map((p) => p.nextId));
  const saved = figures.peers.clone();
  ports.tun = ports.io.DISCARD_FD;
  ports.raw = ports.io.DISCARD_FD;
  if (real.packet >= 0) ports.packet = ports.io.DISCARD_FD;
  const realFou = dp.send.fou?.discard(ports.io.DISCARD_FD);
  let packets = 0;
  const seq = { next: 1 };
  try {
    for (let r = 0; r < rounds; r++) {
      const n = Math.min(dp.batchSize, WARM_SIZES[r % WARM_SIZES.length]!);
      warmRound(dp, flows[r % flows.length]!, r, n, seq);
      packets += 2 * n;
    }
  } finally {
    // Put back only what the warm-up changed. V8 treats a field that was only ever
    // initialised as a constant; a second store, even of the same value, makes it mutable and
    // throws away the optimized batch handlers that relied on it (seen with --trace-deopt: the
    // ICMP queue's count set to 0 again did it, and so did the peers' counters when they were
    // Peer fields), and at a few packets per second they are not optimized again for minutes.
    // Typed-array elements (the figures) are no fields: storing them changes no shape.
    peers.forEach((p, i) => {
      if (p.nextId !== ids[i]) p.nextId = ids[i]!;
    });
    figures.peers.setFrom(saved);
    ports.tun = real.tun;
    ports.raw = real.raw;
    if (real.packet >= 0) ports.packet = real.packet;
    if (realFou) dp.send.fou!.restore(realFou);
    figures.resetCounters();
    dp.send.settle();
    dp.icmpErrors.settle(icmpId);
  }
  return packets;
}

/** One round of `n` packets each way on flow `f`; `seq.next` is the running TCP sequence number. */
function warmRound(dp: Dataplane, f: WarmFlow, r: number, n: number, seq: { next: number }): void {
  const slabs = dp.slabs;
  const { txBuf, rxBuf, rawSlot, tunLens, rawLens } = slabs;
  const { offload, tunnel } = dp;
  const vnet = offload ? VNET_HDR_LEN : 0;
  // Full-sized packets as large as the path takes (TCP with timestamps: 52 header bytes), so
  // that they are forwarded, not answered as too big.
  const peer = tunnel.peerByEndpoint(f.endpoint);
  const mtu = peer === null ? tunnel.mtu : tunnel.mtuFor(peer);
  const bigTcp = Math.max(1, Math.min(1400, mtu - 52));
  const bigUdp = Math.max(1, Math.min(1400, mtu - 28));
  // TUN -> underlay: a mix of kinds; a super-packet now and then (offload mode).
  for (let i = 0; i < n; i++) {
    const off = slabs.placeTun(i);
    const kind = (r + i) % 3;
    const gso = offload && kind === WARM_TCP && i === 0 && r % 4 === 0 ? bigTcp : 0;
    const payload = kind === WARM_ICMP ? 56 : kind === WARM_UDP ? (i % 2 === 0 ? 64 : bigUdp) : gso > 0 ? 8 * gso : bigTcp;
    const partial = offload && (r + i) % 2 === 0;
    const len = writeWarmPacket(txBuf, off, kind, f.local, f.remote, payload, r + i, seq.next, partial || gso > 0);
    if (offload) writeWarmVnet(txBuf, off, kind, partial || gso > 0, gso);
    seq.next += payload;
    tunLens[i] = len + vnet;
  }
  dp.send.onTunBatch(n);
  // underlay -> TUN: runs of one kind, so that offload mode coalesces them. A FOU peer's
  // packets come through the FOU Reader's handler: the inner packet alone, 20 bytes into the slot.
  const kind = r % 3;
  const fou = peer !== null && peer.encap === ENCAP_FOU && dp.receive.fouInfo.length >= n * UDP_INFO_INTS;
  for (let i = 0; i < n; i++) {
    const off = i * rawSlot;
    const payload = kind === WARM_ICMP ? 56 : kind === WARM_UDP ? 64 : bigTcp;
    const len = writeWarmPacket(rxBuf, off + 20, kind, f.remote, f.local, payload, r * 64 + i, seq.next, false);
    seq.next += payload;
    if (fou) {
      rawLens[i] = len;
      dp.receive.fouInfo.set([f.endpoint, 40000, 0, 0], i * UDP_INFO_INTS);
    } else rawLens[i] = writeWarmOuter(rxBuf, off, len, f.endpoint, tunnel.local, r * 64 + i);
  }
  if (fou) dp.receive.onFouBatch(n);
  else dp.receive.onRawBatch(n);
}
