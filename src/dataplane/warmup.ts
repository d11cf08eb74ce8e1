/**
 * Synthetic packets for the data path's JIT warm-up (`Dataplane.warmUp`, issue 4).
 *
 * Why: V8 runs a function in its interpreter or baseline tier until it has been called often
 * enough; at a few packets per second (a ping every 10 ms) the encapsulation path stays there
 * for minutes, and each cold wake-up costs ~100 µs more than an optimized one (docs/
 * performance.md, "Latency"). Before the readers start, the daemon runs its real data path over
 * these packets into the discard fd (nothing is sent anywhere) with a throwaway Tunnel, so the
 * first real packet already meets optimized code.
 *
 * What: well-formed IPv4 packets of the shapes real traffic has: ICMP echo (84 bytes), UDP (64
 * and 1400 byte payloads), TCP segments with Linux's timestamp option; in offload mode also
 * packets with a partial checksum (NEEDS_CSUM) and TCP super-packets (GSO TCPV4), as the kernel
 * hands them over. Pure: no I/O; writes into the caller's buffer.
 */
import type { Buffer } from 'node:buffer';
import {
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
} from '../ipip/index.js';

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
  const pseudo = foldSum(tcpPseudoSum(buf, off, buf[off + 9], l4 + payload));
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
