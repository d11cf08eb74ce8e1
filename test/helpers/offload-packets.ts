/**
 * Packets for the offload tests (segment-*.test.ts, coalesce-*.test.ts), built by hand and
 * independent of src/ipip: TCP and UDP over IPv4 (`tcpPacket`, `udpPacket`, flows of them),
 * super-packets behind a virtio_net_hdr as the kernel hands them over (`superPacket`,
 * `udpSuperPacket`), and RFC 1071 over the pseudo-header the slow, obvious way (`refSum`,
 * `refL4Checksum`, `refPseudo`, `l4Check`). `segmentAll` cuts a TCP super-packet with
 * src/ipip into a 0xA5-poisoned slab, one segment per slot:
 *
 *   segmentation:  [vnet | super-packet]  ->  slot k: [ 20 poison | segment k | poison ... ]
 */
import { expect } from 'vitest';
import { refChecksum, rng } from './packets.js';
import {
  checkTcp4Gso,
  getVnetGsoSize,
  tcp4SegmentCount,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_TCPV4,
  VNET_GSO_UDP_L4,
  VNET_HDR_LEN,
  writeTcp4Segment,
  writeVnetHdr,
} from '../../src/ipip/index.js';

/** RFC 1071 by the book: the folded sum of `len` bytes (odd byte padded) plus `initial` (a pseudo-header sum). */
export function refSum(b: Buffer, off: number, len: number, initial = 0): number {
  let sum = initial;
  for (let i = 0; i < len; i += 2) sum += (b[off + i]! << 8) | (i + 1 < len ? b[off + i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}
/** The transport checksum value over `len` bytes plus a pseudo-header sum; 0 when they include a correct one. */
export function refL4Checksum(b: Buffer, off: number, len: number, pseudo: number): number {
  return ~refSum(b, off, len, pseudo) & 0xffff;
}
/** The pseudo-header sum for the IPv4 header at `ip` (not folded). */
export function refPseudo(b: Buffer, ip: number, proto: number, l4len: number): number {
  return b.readUInt16BE(ip + 12) + b.readUInt16BE(ip + 14) + b.readUInt16BE(ip + 16) + b.readUInt16BE(ip + 18) + proto + l4len;
}
/** 0 when the TCP/UDP checksum of the IPv4 packet at `ip` verifies. */
export function l4Check(b: Buffer, ip: number): number {
  const hl = (b[ip] & 15) * 4;
  const total = b.readUInt16BE(ip + 2);
  return refL4Checksum(b, ip + hl, total - hl, refPseudo(b, ip, b[ip + 9]!, total - hl));
}

export const ACK = 0x10;
export const PSH = 0x08;
export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const URG = 0x20;
export const CWR = 0x80;
export const ECE = 0x40;

export interface TcpSpec {
  src?: number;
  dst?: number;
  sport?: number;
  dport?: number;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  /** [TSval, TSecr]: adds NOP NOP TS (header 32). */
  ts?: [number, number];
  /** Raw TCP options instead (length a multiple of 4). */
  options?: Buffer;
  payload: Buffer;
  id?: number;
  ttl?: number;
  tos?: number;
  /** Flags + fragment offset word; default DF (0x4000). */
  frag?: number;
  ipOptions?: Buffer;
  /** 'full' (default): a correct checksum; 'partial': the pseudo-header sum, as Linux leaves it for offload. */
  csum?: 'full' | 'partial';
}

/**
 * A zeroed packet of `total` bytes with its IPv4 header written (reference code, independent of
 * src/ipip): `ipOpts` after the fixed 20 bytes, TOS 0, DF, TTL 64, 10.0.1.1 -> 10.0.2.1 unless
 * `s` says otherwise, the header checksum right.
 */
export function ipv4Packet(total: number, protocol: number, ipOpts: Buffer, s: { id: number; tos?: number; frag?: number; ttl?: number; src?: number; dst?: number }): Buffer {
  const ihl = 20 + ipOpts.length;
  const b = Buffer.alloc(total);
  b[0] = 0x40 | (ihl >> 2);
  b[1] = s.tos ?? 0;
  b.writeUInt16BE(total, 2);
  b.writeUInt16BE(s.id, 4);
  b.writeUInt16BE(s.frag ?? 0x4000, 6);
  b[8] = s.ttl ?? 64;
  b[9] = protocol;
  b.writeInt32BE(s.src ?? 0x0a000101, 12);
  b.writeInt32BE(s.dst ?? 0x0a000201, 16);
  ipOpts.copy(b, 20);
  b.writeUInt16BE(refChecksum(b, 0, ihl), 10);
  return b;
}

/** A TCP/IPv4 packet, 10.0.1.1:40000 -> 10.0.2.1:5201 by default. */
export function tcpPacket(s: TcpSpec): Buffer {
  const ipOpts = s.ipOptions ?? Buffer.alloc(0);
  const opts = s.options ?? (s.ts ? Buffer.from([1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0]) : Buffer.alloc(0));
  if (s.ts && !s.options) {
    opts.writeUInt32BE(s.ts[0] >>> 0, 4);
    opts.writeUInt32BE(s.ts[1] >>> 0, 8);
  }
  const ihl = 20 + ipOpts.length;
  const thl = 20 + opts.length;
  const total = ihl + thl + s.payload.length;
  const b = ipv4Packet(total, 6, ipOpts, { ...s, id: s.id ?? 0x1234 });
  const t = ihl;
  b.writeUInt16BE(s.sport ?? 40000, t);
  b.writeUInt16BE(s.dport ?? 5201, t + 2);
  b.writeUInt32BE((s.seq ?? 1000) >>> 0, t + 4);
  b.writeUInt32BE((s.ack ?? 777) >>> 0, t + 8);
  b[t + 12] = (thl / 4) << 4;
  b[t + 13] = s.flags ?? ACK;
  b.writeUInt16BE(s.window ?? 502, t + 14);
  opts.copy(b, t + 20);
  s.payload.copy(b, t + thl);
  const pseudo = refPseudo(b, 0, 6, total - ihl);
  if (s.csum === 'partial') b.writeUInt16BE(refSum(Buffer.alloc(0), 0, 0, pseudo), t + 16);
  else b.writeUInt16BE(refL4Checksum(b, t, total - ihl, pseudo), t + 16);
  return b;
}

export function payload(len: number, seed: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = r() & 0xff;
  return b;
}

/** [vnet header | packet] with the header of a TCPV4 super-packet as Linux writes it. */
export function superPacket(pkt: Buffer, gsoSize: number, gsoType = VNET_GSO_TCPV4): Buffer {
  const ihl = (pkt[0] & 15) * 4;
  const thl = (pkt[ihl + 12] >> 4) * 4;
  const b = Buffer.alloc(VNET_HDR_LEN + pkt.length);
  writeVnetHdr(b, 0, VNET_F_NEEDS_CSUM, gsoType, ihl + thl, gsoSize, ihl, 16);
  pkt.copy(b, VNET_HDR_LEN);
  return b;
}

export const SLOT = 2048;
export const HEAD = 20;

/** Segment a [vnet | super-packet] into a 0xA5-poisoned slab, one segment per slot at +20. */
export function segmentAll(sp: Buffer): { hdrLen: number; slab: Buffer; lens: number[] } {
  const len = sp.length - VNET_HDR_LEN;
  const hdrLen = checkTcp4Gso(sp, 0, VNET_HDR_LEN, len);
  expect(hdrLen).toBeGreaterThan(0);
  const gso = getVnetGsoSize(sp, 0);
  const n = tcp4SegmentCount(len, hdrLen, gso);
  const slab = Buffer.alloc(n * SLOT, 0xa5);
  const before = Buffer.from(sp);
  const lens: number[] = [];
  for (let i = 0; i < n; i++) lens.push(writeTcp4Segment(sp, VNET_HDR_LEN, len, hdrLen, gso, i, slab, i * SLOT + HEAD));
  expect(sp.equals(before)).toBe(true); // the super-packet is not modified
  return { hdrLen, slab, lens };
}

export interface UdpSpec {
  src?: number;
  dst?: number;
  sport?: number;
  dport?: number;
  id?: number;
  ttl?: number;
  tos?: number;
  /** Flags + fragment offset word; default DF (0x4000). */
  frag?: number;
  ipOptions?: Buffer;
  payload: Buffer;
  /** 'full' (default): a correct checksum, a computed 0 sent as 0xffff (RFC 768); 'zero': none. */
  csum?: 'full' | 'zero';
  /** A UDP Length field other than the real one (the checksum covers the real bytes). */
  udpLen?: number;
}

/** A UDP/IPv4 datagram, 10.0.1.1:33333 -> 10.0.2.1:4433 by default. */
export function udpPacket(s: UdpSpec): Buffer {
  const ipOpts = s.ipOptions ?? Buffer.alloc(0);
  const ihl = 20 + ipOpts.length;
  const total = ihl + 8 + s.payload.length;
  const b = ipv4Packet(total, 17, ipOpts, { ...s, id: s.id ?? 0x2345 });
  b.writeUInt16BE(s.sport ?? 33333, ihl);
  b.writeUInt16BE(s.dport ?? 4433, ihl + 2);
  b.writeUInt16BE(s.udpLen ?? total - ihl, ihl + 4);
  s.payload.copy(b, ihl + 8);
  if (s.csum !== 'zero') b.writeUInt16BE(refL4Checksum(b, ihl, total - ihl, refPseudo(b, 0, 17, total - ihl)) || 0xffff, ihl + 6);
  return b;
}

/** n datagrams of one flow, `size` payload bytes each, IDs base.id (default 300) + i. */
export function udpFlow(n: number, size: number, base: Partial<UdpSpec> = {}, seed = 1): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) out.push(udpPacket({ ...base, id: ((base.id ?? 300) + i) & 0xffff, payload: payload(size, seed * 1000 + i) }));
  return out;
}

/**
 * The payload of `spec` with its last two bytes (at an even offset) chosen so that the datagram's
 * checksum computes to 0: sent as 0xffff, and a zero field (no checksum) verifies as well.
 */
export function zeroChecksumPayload(spec: UdpSpec): Buffer {
  const body = Buffer.from(spec.payload);
  expect(body.length % 2).toBe(0);
  body.writeUInt16BE(0, body.length - 2);
  const probe = udpPacket({ ...spec, payload: body, csum: 'zero' });
  const ihl = (probe[0]! & 15) * 4;
  body.writeUInt16BE(0xffff - refSum(probe, ihl, probe.length - ihl, refPseudo(probe, 0, 17, probe.length - ihl)), body.length - 2);
  return body;
}

/**
 * [vnet | super-packet] of a UDP_L4 super-packet as the kernel hands it over from a socket with
 * UDP_SEGMENT: one datagram of `spec` carrying all the payload, its UDP checksum field holding the
 * pseudo-header sum for the whole length (CHECKSUM_PARTIAL), the header NEEDS_CSUM, UDP_L4,
 * gso_size, csum_start = IP header length, csum_offset 6.
 */
export function udpSuperPacket(spec: UdpSpec, gsoSize: number): Buffer {
  const pkt = udpPacket(spec);
  const ihl = (pkt[0]! & 15) * 4;
  pkt.writeUInt16BE(refSum(Buffer.alloc(0), 0, 0, refPseudo(pkt, 0, 17, pkt.length - ihl)), ihl + 6);
  const b = Buffer.alloc(VNET_HDR_LEN + pkt.length);
  writeVnetHdr(b, 0, VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4, ihl + 8, gsoSize, ihl, 6);
  pkt.copy(b, VNET_HDR_LEN);
  return b;
}
