/**
 * The TUN offloads (src/ipip/gso.ts): checksum completion, TSO segmentation, GRO coalescing.
 *
 * Packets are built here by hand (`tcpPacket`), and every checksum is checked by independent
 * RFC 1071 implementations: `refChecksum` (test/helpers/packets.ts) for IPv4 headers,
 * `refL4Checksum` over the pseudo-header, TCP/UDP header and payload. Output
 * buffers are poisoned with 0xA5 so that a byte written where it should not be shows.
 *
 *   segmentation:  [vnet | super-packet]  ->  slot k: [ 20 poison | segment k | poison ... ]
 *   coalescing:    slot j: [ 20 (outer header) | inner packet j ]  ...  [ pool: vnet | super-packet ... ]
 */
import { describe, expect, it } from 'vitest';
import { onesSum, onesSum32 } from '../../src/ipip/checksum.js';
import { refChecksum, rng } from '../helpers/packets.js';
import {
  TcpCoalescer,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_ECN,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_HDR_LEN,
  checkTcp4Gso,
  completeChecksum,
  getVnetCsumOffset,
  getVnetCsumStart,
  getVnetFlags,
  getVnetGsoSize,
  getVnetGsoType,
  getVnetHdrLen,
  tcp4SegmentCount,
  writeTcp4Segment,
  writeVnetHdr,
} from '../../src/ipip/gso.js';

// ---------------------------------------------------------------- helpers

/** RFC 1071 by the book: the folded sum of `len` bytes (odd byte padded) plus `initial` (a pseudo-header sum). */
function refSum(b: Buffer, off: number, len: number, initial = 0): number {
  let sum = initial;
  for (let i = 0; i < len; i += 2) sum += (b[off + i]! << 8) | (i + 1 < len ? b[off + i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}
/** The transport checksum value over `len` bytes plus a pseudo-header sum; 0 when they include a correct one. */
function refL4Checksum(b: Buffer, off: number, len: number, pseudo: number): number {
  return ~refSum(b, off, len, pseudo) & 0xffff;
}
/** The pseudo-header sum for the IPv4 header at `ip` (not folded). */
function refPseudo(b: Buffer, ip: number, proto: number, l4len: number): number {
  return b.readUInt16BE(ip + 12) + b.readUInt16BE(ip + 14) + b.readUInt16BE(ip + 16) + b.readUInt16BE(ip + 18) + proto + l4len;
}
/** 0 when the TCP/UDP checksum of the IPv4 packet at `ip` verifies. */
function l4Check(b: Buffer, ip: number): number {
  const hl = (b[ip] & 15) * 4;
  const total = b.readUInt16BE(ip + 2);
  return refL4Checksum(b, ip + hl, total - hl, refPseudo(b, ip, b[ip + 9]!, total - hl));
}

const ACK = 0x10;
const PSH = 0x08;
const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const URG = 0x20;
const CWR = 0x80;
const ECE = 0x40;

interface TcpSpec {
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

/** A TCP/IPv4 packet, 10.0.1.1:40000 -> 10.0.2.1:5201 by default. */
function tcpPacket(s: TcpSpec): Buffer {
  const ipOpts = s.ipOptions ?? Buffer.alloc(0);
  const opts = s.options ?? (s.ts ? Buffer.from([1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0]) : Buffer.alloc(0));
  if (s.ts && !s.options) {
    opts.writeUInt32BE(s.ts[0] >>> 0, 4);
    opts.writeUInt32BE(s.ts[1] >>> 0, 8);
  }
  const ihl = 20 + ipOpts.length;
  const thl = 20 + opts.length;
  const total = ihl + thl + s.payload.length;
  const b = Buffer.alloc(total);
  b[0] = 0x40 | (ihl >> 2);
  b[1] = s.tos ?? 0;
  b.writeUInt16BE(total, 2);
  b.writeUInt16BE(s.id ?? 0x1234, 4);
  b.writeUInt16BE(s.frag ?? 0x4000, 6);
  b[8] = s.ttl ?? 64;
  b[9] = 6;
  b.writeInt32BE(s.src ?? 0x0a000101, 12);
  b.writeInt32BE(s.dst ?? 0x0a000201, 16);
  ipOpts.copy(b, 20);
  b.writeUInt16BE(refChecksum(b, 0, ihl), 10);
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

function payload(len: number, seed: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = r() & 0xff;
  return b;
}

/** [vnet header | packet] with the header of a TCPV4 super-packet as Linux writes it. */
function superPacket(pkt: Buffer, gsoSize: number, gsoType = VNET_GSO_TCPV4): Buffer {
  const ihl = (pkt[0] & 15) * 4;
  const thl = (pkt[ihl + 12] >> 4) * 4;
  const b = Buffer.alloc(VNET_HDR_LEN + pkt.length);
  writeVnetHdr(b, 0, VNET_F_NEEDS_CSUM, gsoType, ihl + thl, gsoSize, ihl, 16);
  pkt.copy(b, VNET_HDR_LEN);
  return b;
}

const SLOT = 2048;
const HEAD = 20;

/** Segment a [vnet | super-packet] into a 0xA5-poisoned slab, one segment per slot at +20. */
function segmentAll(sp: Buffer): { hdrLen: number; slab: Buffer; lens: number[] } {
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

// ---------------------------------------------------------------- checksums

describe('onesSum32', () => {
  it('equals onesSum for every alignment, length and initial value (seeded random)', () => {
    const r = rng(42);
    const big = Buffer.alloc(80_000);
    for (let i = 0; i < big.length; i++) big[i] = r() & 0xff;
    const views = [big, big.subarray(1), big.subarray(2), big.subarray(3)];
    for (let k = 0; k < 3000; k++) {
      const v = views[k & 3]!;
      const len = k < 200 ? k : r() % 70_000;
      const off = r() % (v.length - len);
      const init = k % 5 === 0 ? 0 : r() & 0xffff;
      expect(onesSum32(v, off, len, init), `k=${k} off=${off} len=${len}`).toBe(onesSum(v, off, len, init));
    }
    // All-0xff data: the sum is 0xffff, never the "-0" 0.
    const ff = Buffer.alloc(4096, 0xff);
    expect(onesSum32(ff, 0, 4096, 0)).toBe(0xffff);
  });
});

describe('completeChecksum (NEEDS_CSUM without GSO)', () => {
  it('finishes a TCP checksum from the pseudo-header sum', () => {
    const p = tcpPacket({ ts: [1, 2], payload: payload(1001, 3), flags: ACK | PSH, csum: 'partial' });
    const full = tcpPacket({ ts: [1, 2], payload: payload(1001, 3), flags: ACK | PSH });
    expect(p.equals(full)).toBe(false);
    const b = Buffer.alloc(p.length + 7, 0xa5);
    p.copy(b, 7);
    expect(completeChecksum(b, 7, p.length, 20, 16)).toBe(true);
    expect(b.subarray(7).equals(full)).toBe(true);
    expect(l4Check(b, 7)).toBe(0);
    expect(b.subarray(0, 7).equals(Buffer.alloc(7, 0xa5))).toBe(true);
  });

  it('finishes a UDP checksum, and sends a computed 0 as 0xffff (RFC 768)', () => {
    const mk = (data: Buffer): Buffer => {
      const total = 28 + data.length;
      const b = Buffer.alloc(total);
      b[0] = 0x45;
      b.writeUInt16BE(total, 2);
      b[8] = 64;
      b[9] = 17;
      b.writeUInt32BE(0xc6336401, 12);
      b.writeUInt32BE(0xcb00710a, 16);
      b.writeUInt16BE(refChecksum(b, 0, 20), 10);
      b.writeUInt16BE(5353, 20);
      b.writeUInt16BE(53, 22);
      b.writeUInt16BE(total - 20, 24);
      data.copy(b, 28);
      b.writeUInt16BE(refSum(Buffer.alloc(0), 0, 0, refPseudo(b, 0, 17, total - 20)), 26);
      return b;
    };
    const p = mk(payload(333, 9));
    expect(completeChecksum(p, 0, p.length, 20, 6)).toBe(true);
    expect(l4Check(p, 0)).toBe(0);
    expect(p.readUInt16BE(26)).toBe(refL4Checksum(mk(payload(333, 9)).fill(0, 26, 28), 20, p.length - 20, refPseudo(p, 0, 17, p.length - 20)) || 0xffff);
    // Data whose checksum comes out 0: two bytes chosen to make the whole sum 0xffff (the
    // field holds the pseudo-header sum, so summing from the UDP header on covers it).
    const q = mk(Buffer.alloc(2));
    q.writeUInt16BE(0xffff - refSum(q, 20, q.length - 20), 28);
    expect(refSum(q, 20, q.length - 20)).toBe(0xffff);
    expect(completeChecksum(q, 0, q.length, 20, 6)).toBe(true);
    expect(q.readUInt16BE(26)).toBe(0xffff);
    expect(l4Check(q, 0)).toBe(0);
  });

  it('refuses a checksum field outside the packet and leaves the bytes alone', () => {
    const p = tcpPacket({ payload: payload(10, 1), csum: 'partial' });
    const copy = Buffer.from(p);
    expect(completeChecksum(p, 0, p.length, 20, p.length)).toBe(false);
    expect(completeChecksum(p, 0, p.length, p.length - 1, 0)).toBe(false);
    expect(p.equals(copy)).toBe(true);
  });
});

// ---------------------------------------------------------------- TSO

describe('segmenting a TCP super-packet (TSO)', () => {
  const data = payload(3000, 7);
  const spec: TcpSpec = { seq: 0xfffffc00, ack: 0x01020304, ts: [0x11223344, 0x55667788], flags: ACK | PSH | FIN | CWR, id: 0xfffe, ttl: 63, tos: 0x02, window: 1234, payload: data, csum: 'partial' };
  const sp = superPacket(tcpPacket(spec), 1000, VNET_GSO_TCPV4 | VNET_GSO_ECN);

  it('validates the super-packet and counts 3 segments of 1000 bytes', () => {
    expect(checkTcp4Gso(sp, 0, VNET_HDR_LEN, sp.length - VNET_HDR_LEN)).toBe(52);
    expect(tcp4SegmentCount(sp.length - VNET_HDR_LEN, 52, 1000)).toBe(3);
    expect(tcp4SegmentCount(52 + 3001, 52, 1000)).toBe(4);
    expect(tcp4SegmentCount(52 + 1, 52, 1000)).toBe(1);
  });

  it('writes every segment with its own IP and TCP fields and correct checksums', () => {
    const { slab, lens } = segmentAll(sp);
    expect(lens).toEqual([1052, 1052, 1052]);
    for (let i = 0; i < 3; i++) {
      const o = i * SLOT + HEAD;
      // Poison around the segment is intact.
      expect(slab.subarray(i * SLOT, o).equals(Buffer.alloc(HEAD, 0xa5)), `headroom ${i}`).toBe(true);
      expect(slab.subarray(o + lens[i]!, (i + 1) * SLOT).every((x) => x === 0xa5), `tail ${i}`).toBe(true);
      const seg = slab.subarray(o, o + lens[i]!);
      // IPv4: everything as in the super-packet except length, ID and checksum.
      expect(seg[0]).toBe(0x45);
      expect(seg[1]).toBe(0x02);
      expect(seg.readUInt16BE(2)).toBe(1052);
      expect(seg.readUInt16BE(4)).toBe((0xfffe + i) & 0xffff); // wraps
      expect(seg.readUInt16BE(6)).toBe(0x4000);
      expect(seg[8]).toBe(63);
      expect(seg[9]).toBe(6);
      expect(seg.readUInt32BE(12)).toBe(0x0a000101);
      expect(seg.readUInt32BE(16)).toBe(0x0a000201);
      expect(refChecksum(seg, 0, 20)).toBe(0);
      // TCP
      expect(seg.readUInt16BE(20)).toBe(40000);
      expect(seg.readUInt16BE(22)).toBe(5201);
      expect(seg.readUInt32BE(24)).toBe((0xfffffc00 + i * 1000) % 2 ** 32); // wraps past 2^32
      expect(seg.readUInt32BE(28)).toBe(0x01020304);
      expect(seg[32]).toBe(0x80);
      const flags = seg[33]!;
      expect(flags & ACK).toBe(ACK);
      expect(flags & (PSH | FIN), `PSH/FIN on segment ${i}`).toBe(i === 2 ? PSH | FIN : 0);
      expect(flags & CWR, `CWR on segment ${i}`).toBe(i === 0 ? CWR : 0);
      expect(seg.readUInt16BE(34)).toBe(1234);
      expect(seg.subarray(40, 52).equals(Buffer.from([1, 1, 8, 10, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]))).toBe(true);
      expect(seg.subarray(52).equals(data.subarray(i * 1000, (i + 1) * 1000))).toBe(true);
      expect(l4Check(seg, 0), `TCP checksum of segment ${i}`).toBe(0);
      // And equal to a segment built from scratch.
      const ref = tcpPacket({ ...spec, seq: (0xfffffc00 + i * 1000) | 0, id: (0xfffe + i) & 0xffff, flags: ACK | (i === 2 ? PSH | FIN : 0) | (i === 0 ? CWR : 0), payload: data.subarray(i * 1000, (i + 1) * 1000), csum: 'full' });
      expect(seg.equals(ref), `segment ${i} byte for byte`).toBe(true);
    }
  });

  it("writes the same segments into a region of the super-packet's own buffer (the data path's layout)", () => {
    const { slab, lens } = segmentAll(sp);
    const len = sp.length - VNET_HDR_LEN;
    const region = 4096; // segments after the super-packet, as txBuf = [TUN slab | segment region]
    const one = Buffer.alloc(region + 3 * SLOT, 0xa5);
    sp.copy(one, 0);
    for (let i = 0; i < 3; i++) {
      expect(writeTcp4Segment(one, VNET_HDR_LEN, len, 52, 1000, i, one, region + i * SLOT + HEAD)).toBe(lens[i]);
    }
    expect(one.subarray(region).equals(slab)).toBe(true);
    expect(one.subarray(0, sp.length).equals(sp)).toBe(true);
  });

  it('makes a smaller last segment, and keeps IP options in every segment', () => {
    const opt = Buffer.from([0x94, 0x04, 0x00, 0x00]); // Router Alert (copied)
    const p = tcpPacket({ payload: payload(2500, 5), ipOptions: opt, flags: ACK | PSH, csum: 'partial' });
    const s2 = superPacket(p, 1200);
    const { hdrLen, slab, lens } = segmentAll(s2);
    expect(hdrLen).toBe(44);
    expect(lens).toEqual([1244, 1244, 144]);
    for (let i = 0; i < 3; i++) {
      const seg = slab.subarray(i * SLOT + HEAD, i * SLOT + HEAD + lens[i]!);
      expect(seg[0]).toBe(0x46);
      expect(seg.subarray(20, 24).equals(opt)).toBe(true);
      expect(refChecksum(seg, 0, 24)).toBe(0);
      expect(l4Check(seg, 0)).toBe(0);
      expect(seg[24 + 13]).toBe(i === 2 ? ACK | PSH : ACK);
    }
  });

  it('rejects what is not a TCPV4 super-packet it can cut', () => {
    const good = tcpPacket({ payload: payload(3000, 1), csum: 'partial' });
    const ok = (b: Buffer): number => checkTcp4Gso(b, 0, VNET_HDR_LEN, b.length - VNET_HDR_LEN);
    expect(ok(superPacket(good, 1000))).toBe(40);
    const cases: Array<[string, (b: Buffer) => void]> = [
      ['gso type NONE', (b) => (b[1] = VNET_GSO_NONE)],
      ['gso type TCPV6', (b) => (b[1] = 4)],
      ['no NEEDS_CSUM', (b) => (b[0] = 0)],
      ['gso_size 0', (b) => b.writeUInt16LE(0, 4)],
      ['csum_start not the IP header length', (b) => b.writeUInt16LE(24, 6)],
      ['csum_offset not 16', (b) => b.writeUInt16LE(6, 8)],
      ['IPv6', (b) => (b[10] = 0x60)],
      ['IHL 4', (b) => (b[10] = 0x44)],
      ['total length != read length', (b) => b.writeUInt16BE(3039, 12)],
      ['UDP', (b) => (b[19] = 17)],
      ['MF set', (b) => b.writeUInt16BE(0x6000, 16)],
      ['fragment offset', (b) => b.writeUInt16BE(0x0001, 16)],
      ['TCP data offset 4', (b) => (b[10 + 32] = 0x40)],
    ];
    for (const [what, mutate] of cases) {
      const b = superPacket(good, 1000);
      mutate(b);
      expect(ok(b), what).toBe(0);
    }
    // Headers only, no payload.
    expect(ok(superPacket(tcpPacket({ payload: Buffer.alloc(0), csum: 'partial' }), 1000))).toBe(0);
    expect(checkTcp4Gso(superPacket(good, 1000), 0, VNET_HDR_LEN, 30)).toBe(0);
  });
});

// ---------------------------------------------------------------- GRO

/** Lay packets out like the raw slab after decapsulation: slot j at j*SLOT, packet at +20. Pool after them. */
function batch(pkts: Buffer[], poolSize = 70_000 * 2): { buf: Buffer; offs: Int32Array; lens: Int32Array; pool: number } {
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

interface Out {
  vnet: { flags: number; gsoType: number; hdrLen: number; gsoSize: number; csumStart: number; csumOffset: number };
  pkt: Buffer;
  segments: number;
  bytes: number;
  first: number;
  off: number;
}

function run(pkts: Buffer[], poolSize?: number): Out[] {
  const { buf, offs, lens, pool } = batch(pkts, poolSize);
  const c = new TcpCoalescer(64);
  const n = c.coalesce(buf, offs, lens, pkts.length, pool, buf.length);
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

const ZERO_VNET = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };

/** n segments of one flow, `size` payload bytes each, consecutive sequence numbers. */
function flow(n: number, size: number, base: Partial<TcpSpec> = {}, seed = 1): Buffer[] {
  const out: Buffer[] = [];
  let seq = base.seq ?? 5000;
  for (let i = 0; i < n; i++) {
    out.push(tcpPacket({ ts: [100, 200], ...base, seq, id: 100 + i, payload: payload(size, seed * 1000 + i) }));
    seq = (seq + size) | 0;
  }
  return out;
}

/** Check a merged super-packet against its segments: headers, payload, vnet header, checksum seed. */
function expectSuper(o: Out, segs: Buffer[]): void {
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

describe('coalescing received segments (GRO)', () => {
  it('merges N segments of a flow into one super-packet (with timestamps)', () => {
    const segs = flow(5, 1448);
    segs[4] = tcpPacket({ ts: [100, 200], seq: 5000 + 4 * 1448, id: 104, flags: ACK | PSH, payload: payload(1448, 1004) });
    const out = run(segs);
    expect(out.length).toBe(1);
    expect(out[0]!.first).toBe(0);
    expectSuper(out[0]!, segs);
    expect(out[0]!.pkt[33]).toBe(ACK | PSH);
  });

  it('merges without TCP options, and a smaller last segment ends the super-packet', () => {
    const segs = flow(3, 1000, { ts: undefined });
    segs.push(tcpPacket({ seq: 5000 + 3000, id: 9, payload: payload(400, 77) }));
    segs.push(tcpPacket({ seq: 5000 + 3400, id: 10, payload: payload(1000, 78) }));
    const out = run(segs);
    expect(out.length).toBe(2);
    expectSuper(out[0]!, segs.slice(0, 4));
    expect(out[0]!.vnet.gsoSize).toBe(1000);
    expect(out[1]!.vnet).toEqual(ZERO_VNET);
    expect(out[1]!.pkt.equals(segs[4]!)).toBe(true);
  });

  it('writes a lone packet in place with a zero vnet header in the 10 bytes before it', () => {
    const p = tcpPacket({ payload: payload(100, 3) });
    const { buf, offs, lens, pool } = batch([p]);
    const c = new TcpCoalescer(4);
    expect(c.coalesce(buf, offs, lens, 1, pool, buf.length)).toBe(1);
    expect(c.offs[0]).toBe(HEAD - VNET_HDR_LEN);
    expect(c.lens[0]).toBe(p.length + VNET_HDR_LEN);
    expect(buf.subarray(0, HEAD - VNET_HDR_LEN).every((x) => x === 0xa5)).toBe(true);
    expect(buf.subarray(HEAD - VNET_HDR_LEN, HEAD).equals(Buffer.alloc(VNET_HDR_LEN))).toBe(true);
    expect(buf.subarray(HEAD, HEAD + p.length).equals(p)).toBe(true);
    expect(buf.subarray(pool).every((x) => x === 0xa5)).toBe(true); // the pool is untouched
  });

  const cases: Array<[string, (segs: Buffer[]) => void]> = [
    ['a gap in the sequence numbers', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 5000 + 1001, payload: payload(1000, 2) }))],
    ['a different destination port', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, dport: 5202, payload: payload(1000, 2) }))],
    ['a different source address', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, src: 0x0a000102, payload: payload(1000, 2) }))],
    ['SYN', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | SYN, payload: payload(1000, 2) }))],
    ['FIN', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | FIN, payload: payload(1000, 2) }))],
    ['RST', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | RST, payload: payload(1000, 2) }))],
    ['URG', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | URG, payload: payload(1000, 2) }))],
    ['CWR', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | CWR, payload: payload(1000, 2) }))],
    ['ECE', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | ECE, payload: payload(1000, 2) }))],
    ['no ACK', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: PSH, payload: payload(1000, 2) }))],
    ['a different timestamp', (s) => (s[1] = tcpPacket({ ts: [101, 200], seq: 6000, payload: payload(1000, 2) }))],
    ['no timestamp after one', (s) => (s[1] = tcpPacket({ seq: 6000, payload: payload(1000, 2) }))],
    ['other TCP options (SACK)', (s) => (s[1] = tcpPacket({ options: Buffer.from([1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2]), seq: 6000, payload: payload(1000, 2) }))],
    ['a different ACK number', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, ack: 778, payload: payload(1000, 2) }))],
    ['a different window', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, window: 503, payload: payload(1000, 2) }))],
    ['a different TTL', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, ttl: 63, payload: payload(1000, 2) }))],
    ['a different TOS (CE mark)', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, tos: 3, payload: payload(1000, 2) }))],
    ['a bigger segment after a smaller one', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, payload: payload(1001, 2) }))],
    ['DF clear', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, frag: 0, payload: payload(1000, 2) }))],
    ['IP options', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, ipOptions: Buffer.from([1, 1, 1, 0]), payload: payload(1000, 2) }))],
    ['no payload (a pure ACK)', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, payload: Buffer.alloc(0) }))],
    ['a bad TCP checksum', (s) => (s[1]![60] ^= 1)],
    ['PSH on the first', (s) => (s[0] = tcpPacket({ ts: [100, 200], seq: 5000, flags: ACK | PSH, payload: payload(1000, 1) }))],
  ];
  for (const [what, mutate] of cases) {
    it(`does not merge across ${what}`, () => {
      const segs = flow(2, 1000);
      mutate(segs);
      const out = run(segs);
      expect(out.length).toBe(2);
      out.forEach((o, x) => {
        expect(o.vnet, what).toEqual(ZERO_VNET);
        expect(o.segments).toBe(1);
        expect(o.first).toBe(x);
        expect(o.pkt.equals(segs[x]!)).toBe(true);
      });
    });
  }

  it('does not merge into a first segment whose checksum is bad, and merges what follows it', () => {
    const segs = flow(3, 1000);
    segs[0]![100] ^= 0x40;
    const out = run(segs);
    expect(out.map((o) => o.segments)).toEqual([1, 2]);
    expect(out[0]!.pkt.equals(segs[0]!)).toBe(true);
    expectSuper(out[1]!, segs.slice(1));
  });

  it('keeps flows apart in a mixed batch and preserves the order within each flow', () => {
    const a = flow(4, 1000, { sport: 1111 }, 1);
    const b = flow(3, 1200, { sport: 2222, seq: 99 }, 2);
    const icmp = Buffer.from(tcpPacket({ payload: payload(56, 4) }));
    icmp[9] = 1; // not TCP any more (checksums do not matter for this one)
    const ack = tcpPacket({ sport: 5201, dport: 40000, src: 0x0a000201, dst: 0x0a000101, payload: Buffer.alloc(0) });
    const syn = tcpPacket({ sport: 3333, flags: SYN, payload: Buffer.alloc(0) });
    const mixed = [a[0]!, b[0]!, icmp, a[1]!, a[2]!, b[1]!, ack, b[2]!, a[3]!, syn];
    const out = run(mixed);
    expect(out.map((o) => o.first)).toEqual([0, 1, 2, 6, 9]);
    expectSuper(out[0]!, a);
    expectSuper(out[1]!, b);
    for (const x of [2, 3, 4]) {
      expect(out[x]!.vnet).toEqual(ZERO_VNET);
      expect(out[x]!.pkt.equals(mixed[out[x]!.first]!)).toBe(true);
    }
  });

  it('a segment of the same flow that does not follow ends the super-packet and starts the next', () => {
    const segs = flow(6, 1000);
    const retrans = tcpPacket({ ts: [100, 200], seq: 5000, id: 7, payload: payload(1000, 1000) }); // a retransmission of the first
    const out = run([segs[0]!, segs[1]!, retrans, segs[2]!]);
    expect(out.map((o) => o.segments)).toEqual([2, 1, 1]);
  });

  it('stops before 65535 bytes', () => {
    const segs = flow(50, 1448);
    const out = run(segs, 200_000);
    // 20 + 32 + 45 * 1448 = 65212 <= 65535 < 65212 + 1448
    expect(out.map((o) => o.segments)).toEqual([45, 5]);
    expectSuper(out[0]!, segs.slice(0, 45));
    expectSuper(out[1]!, segs.slice(45));
    for (const o of out) expect(o.pkt.length).toBeLessThanOrEqual(65535);
  });

  it('writes the segments as they came when the pool is too small', () => {
    const segs = flow(3, 1000);
    const out = run(segs, 100);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 1], [1, 1], [2, 1]]);
    out.forEach((o, x) => expect(o.pkt.equals(segs[x]!)).toBe(true));
  });
});

describe('segment then coalesce gives back the super-packet (seeded random)', () => {
  it('round-trips byte for byte', () => {
    const r = rng(2003);
    for (let k = 0; k < 150; k++) {
      const gso = 200 + (r() % 1300);
      const ts = r() % 2 === 0;
      const hdr = 40 + (ts ? 12 : 0);
      const maxSegs = Math.min(60, Math.floor((65535 - hdr) / gso));
      const len = 1 + (r() % (gso * maxSegs));
      const psh = r() % 2 === 0;
      const spec: TcpSpec = { seq: r() | 0, ack: r() | 0, id: r() & 0xffff, window: r() & 0xffff, ttl: 1 + (r() % 255), tos: r() & 0xfc, flags: ACK | (psh ? PSH : 0), payload: payload(len, k), csum: 'partial' };
      if (ts) spec.ts = [r(), r()];
      const orig = tcpPacket(spec);
      const sp = superPacket(orig, gso);
      const { slab, lens } = segmentAll(sp);
      const segs = lens.map((l, i) => Buffer.from(slab.subarray(i * SLOT + HEAD, i * SLOT + HEAD + l)));
      segs.forEach((s, i) => expect(l4Check(s, 0), `k=${k} segment ${i}`).toBe(0));
      const out = run(segs, 70_000);
      expect(out.length, `k=${k}`).toBe(1);
      if (segs.length === 1) {
        expect(out[0]!.vnet).toEqual(ZERO_VNET);
        expect(out[0]!.pkt.subarray(hdr).equals(orig.subarray(hdr))).toBe(true);
      } else {
        // The same vnet header and the same bytes as the super-packet the kernel handed over.
        expect(Buffer.concat([Buffer.alloc(VNET_HDR_LEN), out[0]!.pkt]).subarray(VNET_HDR_LEN).equals(orig), `k=${k}`).toBe(true);
        expect(out[0]!.vnet).toEqual({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: hdr, gsoSize: gso, csumStart: 20, csumOffset: 16 });
      }
    }
  });
});
