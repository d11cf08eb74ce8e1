/**
 * TUN -> underlay offloads for TCP (src/ipip/segment.ts): completing a NEEDS_CSUM checksum,
 * cutting a TCPV4 super-packet into segments (TSO), and the segment size for cutting again what
 * the underlay's GRO merged (`groSegmentSize`). Packets from test/helpers/offload-packets.ts;
 * checksums checked by the independent RFC 1071 there; output slabs poisoned with 0xA5.
 */
import { describe, expect, it } from 'vitest';
import { refChecksum } from '../helpers/packets.js';
import {
  ACK,
  CWR,
  FIN,
  HEAD,
  l4Check,
  payload,
  PSH,
  refL4Checksum,
  refPseudo,
  refSum,
  segmentAll,
  SLOT,
  superPacket,
  tcpPacket,
  type TcpSpec,
} from '../helpers/offload-packets.js';
import {
  checkTcp4Gso,
  completeChecksum,
  groSegmentSize,
  tcp4SegmentCount,
  VNET_GSO_ECN,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_HDR_LEN,
  writeTcp4Segment,
} from '../../src/ipip/index.js';

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

describe('groSegmentSize (a decapsulated packet the underlay GRO merged)', () => {
  const big = (spec: Partial<TcpSpec> = {}, size = 20_000): Buffer => tcpPacket({ ts: [1, 2], payload: payload(size, 5), csum: 'partial', ...spec });

  it('gives the TUN MTU less the IP and TCP headers (options included)', () => {
    const p = big();
    expect(groSegmentSize(p, 0, p.length, 1480)).toBe(1480 - 52);
    expect(groSegmentSize(p, 0, p.length, 1280)).toBe(1280 - 52);
    const q = big({ ts: undefined });
    expect(groSegmentSize(q, 0, q.length, 1480)).toBe(1440);
    // Other TCP options (SACK): the header length is read, not assumed.
    const r = big({ ts: undefined, options: Buffer.from([1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 1, 0]) });
    expect(groSegmentSize(r, 0, r.length, 1480)).toBe(1480 - 56);
    // At an offset in a poisoned buffer, nothing written.
    const b = Buffer.alloc(p.length + 37, 0xa5);
    p.copy(b, 37);
    const before = Buffer.from(b);
    expect(groSegmentSize(b, 37, p.length, 1480)).toBe(1428);
    expect(b.equals(before)).toBe(true);
  });

  it('accepts what GRO may merge: DF clear, PSH/FIN (the last segment), one payload byte, a 64 KiB packet', () => {
    for (const [what, p] of [
      ['DF clear', big({ frag: 0 })],
      ['ACK+PSH+FIN', big({ flags: ACK | PSH | FIN })],
      ['one payload byte', big({}, 1)],
      ['65535 bytes', big({}, 65535 - 52)],
    ] as const) {
      expect(groSegmentSize(p, 0, p.length, 1480), what).toBe(1428);
    }
  });

  it('refuses what is not a TCP/IPv4 super-packet it can cut (0)', () => {
    const good = big();
    const cases: Array<[string, Buffer, number?, number?]> = [
      ['IP options (IHL 6)', big({ ipOptions: Buffer.from([1, 1, 1, 0]) })],
      ['IPv6 version nibble', (() => { const b = big(); b[0] = 0x65; return b; })()],
      ['UDP', (() => { const b = big(); b[9] = 17; return b; })()],
      ['ICMP', (() => { const b = big(); b[9] = 1; return b; })()],
      ['MF set', big({ frag: 0x6000 })],
      ['a fragment offset', big({ frag: 0x4001 })],
      ['a later fragment without DF', big({ frag: 0x00b9 })],
      ['TCP data offset 4 (< 20 bytes)', (() => { const b = big(); b[32] = 0x40; return b; })()],
      ['TCP data offset 0', (() => { const b = big(); b[32] = 0x00; return b; })()],
      ['a TCP header longer than the packet', (() => { const b = big({ ts: undefined }, 10); b[32] = 0xf0; return b; })()],
      ['no payload (headers only)', big({}, 0)],
      ['no payload, no options', big({ ts: undefined }, 0)],
      ['shorter than IP + TCP headers', good, 39],
      ['a TUN MTU no larger than the headers', good, good.length, 52],
      ['a TUN MTU of 0', good, good.length, 0],
    ];
    for (const [what, p, len, mtu] of cases) expect(groSegmentSize(p, 0, len ?? p.length, mtu ?? 1480), what).toBe(0);
    // The smallest TUN MTU that leaves a segment: one payload byte.
    expect(groSegmentSize(good, 0, good.length, 53)).toBe(1);
  });
});
