/**
 * The coalescer's test bench and the kernel's side of the offloads, for coalesce-*.test.ts:
 * `batch`/`bigBatch` lay packets out like the raw slab after decapsulation, `run`/`runGro`
 * coalesce them and `collect` copies every output packet out (`Out`); `expectSuper`,
 * `expectUdpSuper` and `expectAsCame` check an output against its inputs. Reference models of
 * what the kernel does with a super-packet written to a TUN, written from the kernel source and
 * sharing no code with src/ipip: `kernelUdpSegment` (__udp_gso_segment) and `kernelTcpSegment`
 * (tcp_gso_segment), which derive each segment's checksum from the super-packet's seed.
 *
 *   coalescing:    slot j: [ 20 (outer header) | inner packet j ]  ...  [ pool: vnet | super-packet ... ]
 */
import { expect } from 'vitest';
import { refChecksum } from './packets.js';
import {
  CWR,
  FIN,
  HEAD,
  l4Check,
  payload,
  PSH,
  refL4Checksum,
  refPseudo,
  refSum,
  SLOT,
  tcpPacket,
  type TcpSpec,
} from './offload-packets.js';
import {
  Coalescer,
  completeChecksum,
  getVnetCsumOffset,
  getVnetCsumStart,
  getVnetFlags,
  getVnetGsoSize,
  getVnetGsoType,
  getVnetHdrLen,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_ECN,
  VNET_GSO_TCPV4,
  VNET_GSO_UDP_L4,
  VNET_HDR_LEN,
  writeVnetHdr,
} from '../../src/ipip/index.js';

/** Lay packets out like the raw slab after decapsulation: slot j at j*SLOT, packet at +20. Pool after them. */
export function batch(pkts: Buffer[], poolSize = 70_000 * 2): { buf: Buffer; offs: Int32Array; lens: Int32Array; pool: number } {
  const buf = Buffer.alloc(pkts.length * SLOT + poolSize, 0xa5);
  const offs = new Int32Array(pkts.length);
  const lens = new Int32Array(pkts.length);
  pkts.forEach((p, j) => {
    expect(p.length).toBeLessThanOrEqual(SLOT - HEAD);
    p.copy(buf, j * SLOT + HEAD);
    offs[j] = j * SLOT + HEAD;
    lens[j] = p.length;
  });
  return { buf, offs, lens, pool: pkts.length * SLOT };
}

export interface Out {
  vnet: { flags: number; gsoType: number; hdrLen: number; gsoSize: number; csumStart: number; csumOffset: number };
  pkt: Buffer;
  segments: number;
  bytes: number;
  first: number;
  off: number;
}

/** Coalesce `pkts` as one batch (UDP too with `udp`) and copy every output packet out. */
export function run(pkts: Buffer[], poolSize?: number, udp = false): Out[] {
  const { buf, offs, lens, pool } = batch(pkts, poolSize);
  const c = new Coalescer(Math.max(64, pkts.length), udp);
  const n = c.coalesce(buf, offs, lens, pkts.length, pool, buf.length);
  return collect(c, n, buf);
}

/** Copy the `n` output packets of coalescer `c` out of `buf`. */
export function collect(c: Coalescer, n: number, buf: Buffer): Out[] {
  const out: Out[] = [];
  for (let x = 0; x < n; x++) {
    const h = c.offs[x]!;
    out.push({
      vnet: { flags: getVnetFlags(buf, h), gsoType: getVnetGsoType(buf, h), hdrLen: getVnetHdrLen(buf, h), gsoSize: getVnetGsoSize(buf, h), csumStart: getVnetCsumStart(buf, h), csumOffset: getVnetCsumOffset(buf, h) },
      pkt: Buffer.from(buf.subarray(h + VNET_HDR_LEN, h + c.lens[x]!)),
      segments: c.segments[x]!,
      bytes: c.bytes[x]!,
      first: c.first[x]!,
      off: h,
    });
  }
  return out;
}

export const ZERO_VNET = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };

/** n segments of one flow, `size` payload bytes each, consecutive sequence numbers. */
export function flow(n: number, size: number, base: Partial<TcpSpec> = {}, seed = 1): Buffer[] {
  const out: Buffer[] = [];
  let seq = base.seq ?? 5000;
  for (let i = 0; i < n; i++) {
    out.push(tcpPacket({ ts: [100, 200], ...base, seq, id: 100 + i, payload: payload(size, seed * 1000 + i) }));
    seq = (seq + size) | 0;
  }
  return out;
}

/** Check a merged super-packet against its segments: headers, payload, vnet header, checksum seed. */
export function expectSuper(o: Out, segs: Buffer[]): void {
  const thl = (segs[0]![32]! >> 4) * 4;
  const hdr = 20 + thl;
  const data = Buffer.concat(segs.map((s) => s.subarray(hdr)));
  expect(o.segments).toBe(segs.length);
  expect(o.bytes).toBe(segs.reduce((a, s) => a + s.length, 0));
  expect(o.vnet).toEqual({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: hdr, gsoSize: segs[0]!.length - hdr, csumStart: 20, csumOffset: 16 });
  expect(o.pkt.length).toBe(hdr + data.length);
  expect(o.pkt.subarray(hdr).equals(data)).toBe(true);
  // IPv4: the first segment's header with the new length and checksum.
  expect(o.pkt.readUInt16BE(2)).toBe(o.pkt.length);
  expect(refChecksum(o.pkt, 0, 20)).toBe(0);
  const first = segs[0]!;
  const last = segs[segs.length - 1]!;
  for (const at of [0, 1, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19]) expect(o.pkt[at], `IP byte ${at}`).toBe(first[at]);
  // TCP: the first segment's header, flags of the last one, checksum = pseudo-header sum.
  for (let at = 20; at < hdr; at++) if (at !== 33 && at !== 36 && at !== 37) expect(o.pkt[at], `TCP byte ${at}`).toBe(first[at]);
  expect(o.pkt[33]).toBe(last[33]);
  expect(o.pkt.readUInt16BE(36)).toBe(refSum(Buffer.alloc(0), 0, 0, refPseudo(o.pkt, 0, 6, o.pkt.length - 20)));
  // Completing that partial checksum, as the kernel would, gives a valid TCP checksum.
  const done = Buffer.from(o.pkt);
  expect(completeChecksum(done, 0, done.length, 20, 16)).toBe(true);
  expect(l4Check(done, 0)).toBe(0);
}

/** One's complement 16-bit addition (the kernel's csum16_add). */
export function csum16Add(a: number, b: number): number {
  const s = a + b;
  return (s & 0xffff) + (s >>> 16);
}

/**
 * A reference model of what the kernel does with a UDP_L4 super-packet written to a TUN
 * (virtio_net_hdr_to_skb, then inet_gso_segment and __udp_gso_segment), written from the kernel
 * source and sharing no code with src/ipip. It checks what the kernel requires (NEEDS_CSUM,
 * csum_start/offset at the UDP checksum, more payload than one gso_size) and cuts the payload
 * into gso_size chunks, the last one shorter, each behind a copy of the IPv4 and UDP headers
 * with its own Total Length, ID first + i, header checksum and UDP Length. The UDP checksum is
 * derived as __udp_gso_segment does, from the super-packet's checksum field (which must hold the
 * pseudo-header sum for the whole length): csum16_add(csum16_sub(check, len), newlen), then
 * completed over the segment, a 0 sent as 0xffff. A wrong seed in the super-packet therefore
 * gives segments with wrong checksums, which `l4Check` catches here.
 */
export function kernelUdpSegment(o: Out): Buffer[] {
  expect(o.vnet.flags).toBe(VNET_F_NEEDS_CSUM);
  expect(o.vnet.gsoType).toBe(VNET_GSO_UDP_L4);
  expect(o.vnet.csumStart).toBe(20);
  expect(o.vnet.csumOffset).toBe(6);
  expect(o.vnet.hdrLen).toBe(28);
  const mss = o.vnet.gsoSize;
  const pkt = o.pkt;
  expect(pkt[0]).toBe(0x45);
  expect(pkt[9]).toBe(17);
  expect(pkt.readUInt16BE(2)).toBe(pkt.length);
  expect(pkt.length).toBeLessThanOrEqual(65535);
  expect(refChecksum(pkt, 0, 20)).toBe(0);
  expect(pkt.readUInt16BE(6) & 0x3fff).toBe(0); // MF clear, offset 0
  const ulen = pkt.readUInt16BE(24);
  expect(ulen).toBe(pkt.length - 20);
  const data = pkt.subarray(28);
  expect(mss).toBeGreaterThan(0);
  expect(data.length).toBeGreaterThan(mss); // __udp_gso_segment: -EINVAL for one segment or less
  const n = Math.ceil(data.length / mss);
  expect(n).toBeLessThanOrEqual(64); // UDP_GRO_CNT_MAX
  const check = pkt.readUInt16BE(26);
  const id0 = pkt.readUInt16BE(4);
  const segs: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const chunk = data.subarray(i * mss, Math.min((i + 1) * mss, data.length));
    const seg = Buffer.alloc(28 + chunk.length);
    pkt.copy(seg, 0, 0, 28);
    chunk.copy(seg, 28);
    seg.writeUInt16BE(seg.length, 2);
    seg.writeUInt16BE((id0 + i) & 0xffff, 4);
    seg.writeUInt16BE(0, 10);
    seg.writeUInt16BE(refChecksum(seg, 0, 20), 10);
    const newLen = 8 + chunk.length;
    seg.writeUInt16BE(newLen, 24);
    seg.writeUInt16BE(csum16Add(csum16Add(check, ~ulen & 0xffff), newLen), 26);
    seg.writeUInt16BE(refL4Checksum(seg, 20, newLen, 0) || 0xffff, 26);
    expect(l4Check(seg, 0), `UDP checksum of segment ${i}`).toBe(0);
    segs.push(seg);
  }
  return segs;
}

/** A copy of an IPv4 packet with its ID and header checksum zeroed (what DF makes meaningless). */
export function withoutId(p: Buffer): Buffer {
  const b = Buffer.from(p);
  b.fill(0, 4, 6);
  b.fill(0, 10, 12);
  return b;
}

/**
 * Check a UDP super-packet against its datagrams: the vnet header, the bytes (the first
 * datagram's headers with Total Length, header checksum, UDP Length and the pseudo-header sum
 * for the whole, then every payload), and the kernel's split, which must give the datagrams back
 * byte for byte (`ids: 'any'`: but for ID and header checksum, for DF datagrams whose IDs are
 * not consecutive).
 */
export function expectUdpSuper(o: Out, dgrams: Buffer[], ids: 'exact' | 'any' = 'exact'): void {
  const first = dgrams[0]!;
  const data = Buffer.concat(dgrams.map((d) => d.subarray(28)));
  expect(o.segments).toBe(dgrams.length);
  expect(o.bytes).toBe(dgrams.reduce((a, d) => a + d.length, 0));
  expect(o.vnet).toEqual({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_UDP_L4, hdrLen: 28, gsoSize: first.length - 28, csumStart: 20, csumOffset: 6 });
  expect(o.pkt.length).toBe(28 + data.length);
  const hdr = Buffer.from(first.subarray(0, 28));
  hdr.writeUInt16BE(o.pkt.length, 2);
  hdr.writeUInt16BE(0, 10);
  hdr.writeUInt16BE(refChecksum(hdr, 0, 20), 10);
  hdr.writeUInt16BE(o.pkt.length - 20, 24);
  hdr.writeUInt16BE(refSum(Buffer.alloc(0), 0, 0, refPseudo(o.pkt, 0, 17, o.pkt.length - 20)), 26);
  expect(o.pkt.subarray(0, 28).equals(hdr), 'IPv4 + UDP header').toBe(true);
  expect(o.pkt.subarray(28).equals(data), 'payloads').toBe(true);
  expect(refChecksum(o.pkt, 0, 20)).toBe(0);
  // Completing the partial checksum over the whole (no split) gives a valid UDP checksum.
  const done = Buffer.from(o.pkt);
  expect(completeChecksum(done, 0, done.length, 20, 6)).toBe(true);
  expect(l4Check(done, 0)).toBe(0);
  // The kernel's split gives the datagrams back.
  const segs = kernelUdpSegment(o);
  expect(segs.length).toBe(dgrams.length);
  segs.forEach((s, i) => {
    if (ids === 'exact') expect(s.equals(dgrams[i]!), `datagram ${i} byte for byte`).toBe(true);
    else expect(withoutId(s).equals(withoutId(dgrams[i]!)), `datagram ${i} but for ID`).toBe(true);
  });
}

/** A packet written as it came: zero vnet header, one segment, the same bytes. */
export function expectAsCame(o: Out, pkt: Buffer, index: number, what = ''): void {
  expect(o.vnet, what).toEqual(ZERO_VNET);
  expect(o.segments, what).toBe(1);
  expect(o.bytes, what).toBe(pkt.length);
  expect(o.first, what).toBe(index);
  expect(o.pkt.equals(pkt), what).toBe(true);
}

/** A 4-tuple + protocol key for an IPv4 packet without options. */
export function flowKey(p: Buffer): string {
  return `${p[9]} ${p.subarray(12, 24).toString('hex')}`;
}

/** Like `batch`, for packets of any size up to 65535: each slot as large as its packet needs. */
export function bigBatch(pkts: Buffer[], poolSize = 70_000 * 2): { buf: Buffer; offs: Int32Array; lens: Int32Array; pool: number } {
  const slots = pkts.map((p) => Math.max(SLOT, (HEAD + p.length + 63) & ~63));
  const pool = slots.reduce((a, s) => a + s, 0);
  const buf = Buffer.alloc(pool + poolSize, 0xa5);
  const offs = new Int32Array(pkts.length);
  const lens = new Int32Array(pkts.length);
  let at = 0;
  pkts.forEach((p, j) => {
    p.copy(buf, at + HEAD);
    offs[j] = at + HEAD;
    lens[j] = p.length;
    at += slots[j]!;
  });
  return { buf, offs, lens, pool };
}

/** Coalesce `pkts` as one batch with `inGso` (per packet: gso_size of a GRO'd super-packet, or 0). */
export function runGro(pkts: Buffer[], inGso: number[], poolSize?: number): { out: Out[]; buf: Buffer; offs: Int32Array; pool: number } {
  const { buf, offs, lens, pool } = bigBatch(pkts, poolSize);
  const c = new Coalescer(Math.max(64, pkts.length));
  const n = c.coalesce(buf, offs, lens, pkts.length, pool, buf.length, Int32Array.from(inGso));
  return { out: collect(c, n, buf), buf, offs, pool };
}

/** [vnet | packet] of an output packet, as the TUN reads it. */
export function asWritten(o: Out): Buffer {
  const b = Buffer.alloc(VNET_HDR_LEN + o.pkt.length);
  writeVnetHdr(b, 0, o.vnet.flags, o.vnet.gsoType, o.vnet.hdrLen, o.vnet.gsoSize, o.vnet.csumStart, o.vnet.csumOffset);
  o.pkt.copy(b, VNET_HDR_LEN);
  return b;
}

/**
 * A reference model of what the kernel does with a TCPV4 super-packet written to a TUN
 * (virtio_net_hdr_to_skb, then inet_gso_segment and tcp_gso_segment), written from the kernel
 * source and sharing no code with src/ipip. It checks what the kernel requires
 * (NEEDS_CSUM, csum_start/offset at the TCP checksum, more payload than one gso_size) and cuts
 * the payload into gso_size chunks, the last one shorter, each behind a copy of the IPv4 and TCP
 * headers with its own Total Length, ID first + i, header checksum and sequence number; FIN and
 * PSH stay on the last segment only, CWR on the first only. The TCP checksum is derived as
 * tcp_gso_segment does, from the super-packet's checksum field (which must hold the
 * pseudo-header sum for the whole TCP length): csum16_add(csum16_sub(check, len), newlen), then
 * completed over the segment (skb_checksum_help). A wrong seed gives segments whose checksums
 * fail `l4Check`.
 */
export function kernelTcpSegment(o: Out): Buffer[] {
  const pkt = o.pkt;
  const ihl = (pkt[0]! & 15) * 4;
  const thl = (pkt[ihl + 12]! >> 4) * 4;
  const hdr = ihl + thl;
  expect(o.vnet.flags).toBe(VNET_F_NEEDS_CSUM);
  expect(o.vnet.gsoType & ~VNET_GSO_ECN).toBe(VNET_GSO_TCPV4);
  expect(o.vnet.csumStart).toBe(ihl);
  expect(o.vnet.csumOffset).toBe(16);
  expect(pkt[0]! >> 4).toBe(4);
  expect(pkt[9]).toBe(6);
  expect(pkt.readUInt16BE(2)).toBe(pkt.length);
  expect(refChecksum(pkt, 0, ihl)).toBe(0);
  expect(pkt.readUInt16BE(6) & 0x3fff).toBe(0); // MF clear, offset 0
  const mss = o.vnet.gsoSize;
  const data = pkt.subarray(hdr);
  expect(mss).toBeGreaterThan(0);
  expect(data.length).toBeGreaterThan(mss); // tcp_gso_segment: one segment or less is passed on as it is
  const n = Math.ceil(data.length / mss);
  const tcpLen = pkt.length - ihl;
  const check = pkt.readUInt16BE(ihl + 16);
  const id0 = pkt.readUInt16BE(4);
  const seq0 = pkt.readUInt32BE(ihl + 4);
  const flags = pkt[ihl + 13]!;
  const segs: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const chunk = data.subarray(i * mss, Math.min((i + 1) * mss, data.length));
    const seg = Buffer.alloc(hdr + chunk.length);
    pkt.copy(seg, 0, 0, hdr);
    chunk.copy(seg, hdr);
    seg.writeUInt16BE(seg.length, 2);
    seg.writeUInt16BE((id0 + i) & 0xffff, 4);
    seg.writeUInt16BE(0, 10);
    seg.writeUInt16BE(refChecksum(seg, 0, ihl), 10);
    seg.writeUInt32BE((seq0 + i * mss) % 2 ** 32, ihl + 4);
    let f = flags;
    if (i < n - 1) f &= ~(FIN | PSH);
    if (i > 0) f &= ~CWR;
    seg[ihl + 13] = f;
    const newLen = thl + chunk.length;
    seg.writeUInt16BE(csum16Add(csum16Add(check, ~tcpLen & 0xffff), newLen), ihl + 16);
    seg.writeUInt16BE(refL4Checksum(seg, ihl, newLen, 0), ihl + 16);
    segs.push(seg);
  }
  return segs;
}

/** The reference split (`kernelUdpSegment`) of a [vnet | super-packet] (IHL 5). */
export function referenceUdpSplit(sp: Buffer): Buffer[] {
  const h = 0;
  return kernelUdpSegment({
    vnet: { flags: getVnetFlags(sp, h), gsoType: getVnetGsoType(sp, h), hdrLen: getVnetHdrLen(sp, h), gsoSize: getVnetGsoSize(sp, h), csumStart: getVnetCsumStart(sp, h), csumOffset: getVnetCsumOffset(sp, h) },
    pkt: Buffer.from(sp.subarray(VNET_HDR_LEN)),
    segments: 0,
    bytes: 0,
    first: 0,
    off: 0,
  });
}
