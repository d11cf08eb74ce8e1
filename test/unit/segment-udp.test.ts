/**
 * TUN -> underlay offloads for UDP (src/ipip/segment.ts): validating a UDP_L4 super-packet
 * (`checkUdp4Gso`) and cutting it into datagrams (`writeUdp4Segment`), checked against the
 * reference model of the kernel's split (`kernelUdpSegment`, test/helpers/offload-model.ts).
 */
import { describe, expect, it } from 'vitest';
import { refChecksum } from '../helpers/packets.js';
import {
  HEAD,
  l4Check,
  payload,
  SLOT,
  udpPacket,
  type UdpSpec,
  udpSuperPacket,
  zeroChecksumPayload,
} from '../helpers/offload-packets.js';
import { referenceUdpSplit } from '../helpers/offload-model.js';
import {
  checkUdp4Gso,
  getVnetCsumStart,
  getVnetGsoSize,
  VNET_GSO_ECN,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_GSO_UDP_L4,
  VNET_HDR_LEN,
  writeUdp4Segment,
} from '../../src/ipip/index.js';

describe('checkUdp4Gso (validating a UDP_L4 super-packet)', () => {
  const good = (): Buffer => udpSuperPacket({ payload: payload(3500, 11) }, 1000);
  const ok = (b: Buffer): number => checkUdp4Gso(b, 0, VNET_HDR_LEN, b.length - VNET_HDR_LEN);

  it('accepts a super-packet as the kernel writes it and returns IP + UDP header length', () => {
    expect(ok(good())).toBe(28);
    // Without DF, and with one payload byte after the headers.
    expect(ok(udpSuperPacket({ payload: payload(3500, 11), frag: 0 }, 1000))).toBe(28);
    expect(ok(udpSuperPacket({ payload: Buffer.from([7]) }, 1000))).toBe(28);
    // At an offset in a larger buffer (vnet header right before the packet).
    const sp = good();
    const big = Buffer.alloc(sp.length + 100, 0xa5);
    sp.copy(big, 37);
    expect(checkUdp4Gso(big, 37, 37 + VNET_HDR_LEN, sp.length - VNET_HDR_LEN)).toBe(28);
    // IP options: csum_start is the IP header length (24), the header length 32.
    const opt = Buffer.from([0x94, 0x04, 0x00, 0x00]);
    const withOpt = udpSuperPacket({ payload: payload(2000, 12), ipOptions: opt }, 700);
    expect(getVnetCsumStart(withOpt, 0)).toBe(24);
    expect(ok(withOpt)).toBe(32);
    withOpt.writeUInt16LE(20, 6);
    expect(ok(withOpt), 'csum_start 20 with a 24-byte IP header').toBe(0);
  });

  it('rejects what is not a UDP_L4 super-packet it can cut', () => {
    const cases: Array<[string, (b: Buffer) => void]> = [
      ['gso type NONE', (b) => (b[1] = VNET_GSO_NONE)],
      ['gso type TCPV4', (b) => (b[1] = VNET_GSO_TCPV4)],
      ['gso type UDP (UFO, 3)', (b) => (b[1] = 3)],
      ['gso type TCPV6', (b) => (b[1] = 4)],
      ['gso type UDP_L4 | ECN', (b) => (b[1] = VNET_GSO_UDP_L4 | VNET_GSO_ECN)],
      ['no NEEDS_CSUM', (b) => (b[0] = 0)],
      ['DATA_VALID instead of NEEDS_CSUM', (b) => (b[0] = 2)],
      ['gso_size 0', (b) => b.writeUInt16LE(0, 4)],
      ['IPv6', (b) => (b[10] = 0x65)],
      ['version 0', (b) => (b[10] = 0x05)],
      ['IHL 4', (b) => (b[10] = 0x44)],
      ['IHL 0', (b) => (b[10] = 0x40)],
      ['total length < read length', (b) => b.writeUInt16BE(b.length - VNET_HDR_LEN - 1, 12)],
      ['total length > read length', (b) => b.writeUInt16BE(b.length - VNET_HDR_LEN + 1, 12)],
      ['TCP', (b) => (b[19] = 6)],
      ['ICMP', (b) => (b[19] = 1)],
      ['MF set', (b) => b.writeUInt16BE(0x2000, 16)],
      ['MF and DF set', (b) => b.writeUInt16BE(0x6000, 16)],
      ['fragment offset', (b) => b.writeUInt16BE(0x4001, 16)],
      ['fragment offset without DF', (b) => b.writeUInt16BE(0x1fff, 16)],
      ['csum_start 24', (b) => b.writeUInt16LE(24, 6)],
      ['csum_start 0', (b) => b.writeUInt16LE(0, 6)],
      ['csum_offset 16 (TCP)', (b) => b.writeUInt16LE(16, 8)],
      ['csum_offset 0', (b) => b.writeUInt16LE(0, 8)],
    ];
    for (const [what, mutate] of cases) {
      const b = good();
      mutate(b);
      expect(ok(b), what).toBe(0);
    }
    // Headers only, no payload; a read shorter than the headers.
    expect(ok(udpSuperPacket({ payload: Buffer.alloc(0) }, 1000)), 'no payload').toBe(0);
    expect(checkUdp4Gso(good(), 0, VNET_HDR_LEN, 28), 'read of 28 bytes').toBe(0);
    expect(checkUdp4Gso(good(), 0, VNET_HDR_LEN, 20), 'read of 20 bytes').toBe(0);
  });
});

describe('writeUdp4Segment (cutting a UDP_L4 super-packet into datagrams)', () => {
  /** N = 5 datagrams: 4 of 1000 bytes and a last one of 321, the first ID 0xfffe (wraps). */
  const GSO = 1000;
  const PAY = 4 * GSO + 321;

  /**
   * Cut the super-packet `sp` (placed at `at` in a 0xA5-poisoned buffer) into its datagrams,
   * into that same buffer after it (`same`) or into a separate poisoned slab, one per slot at +20;
   * check the poison around each and that the super-packet is not modified. Returns the datagrams.
   */
  function cut(sp: Buffer, at: number, same: boolean): Buffer[] {
    const len = sp.length - VNET_HDR_LEN;
    const region = at + sp.length + 13; // an odd gap: the slots are not aligned
    const buf = Buffer.alloc(region + (same ? 8 * SLOT : 0), 0xa5);
    sp.copy(buf, at);
    const off = at + VNET_HDR_LEN;
    const hdrLen = checkUdp4Gso(buf, at, off, len);
    expect(hdrLen).toBeGreaterThan(0);
    const gso = getVnetGsoSize(buf, at);
    const n = Math.ceil((len - hdrLen) / gso);
    const out = same ? buf : Buffer.alloc(n * SLOT, 0xa5);
    const base = same ? region : 0;
    const got: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const o = base + i * SLOT + HEAD;
      const l = writeUdp4Segment(buf, off, len, hdrLen, gso, i, out, o);
      expect(l, `length of datagram ${i}`).toBe(hdrLen + Math.min(gso, len - hdrLen - i * gso));
      got.push(Buffer.from(out.subarray(o, o + l)));
    }
    for (let i = 0; i < n; i++) {
      const o = base + i * SLOT + HEAD;
      expect(out.subarray(base + i * SLOT, o).every((x) => x === 0xa5), `headroom ${i}`).toBe(true);
      expect(out.subarray(o + got[i]!.length, base + (i + 1) * SLOT).every((x) => x === 0xa5), `tail ${i}`).toBe(true);
    }
    expect(buf.subarray(0, at).every((x) => x === 0xa5), 'before the super-packet').toBe(true);
    expect(buf.subarray(at, at + sp.length).equals(sp), 'the super-packet is not modified').toBe(true);
    expect(buf.subarray(at + sp.length, region).every((x) => x === 0xa5), 'gap after the super-packet').toBe(true);
    return got;
  }

  for (const df of [true, false]) {
    for (const same of [false, true]) {
      for (const at of [0, 37]) {
        it(`${df ? 'DF' : 'no DF'}, out ${same ? '=== buf' : '!== buf'}, header at ${at}: every datagram equals the kernel's split, checksums verify, IDs increment`, () => {
          const data = payload(PAY, 21);
          const spec: UdpSpec = { payload: data, id: 0xfffe, frag: df ? 0x4000 : 0, ttl: 61, tos: 0xb8, sport: 50000, dport: 443 };
          const sp = udpSuperPacket(spec, GSO);
          const segs = cut(sp, at, same);
          const ref = referenceUdpSplit(sp);
          expect(segs.map((s) => s.length)).toEqual([1028, 1028, 1028, 1028, 349]);
          expect(ref.length).toBe(5);
          segs.forEach((seg, i) => {
            expect(seg.equals(ref[i]!), `datagram ${i} byte for byte`).toBe(true);
            // And field by field, with independent checksums.
            expect(seg[0]).toBe(0x45);
            expect(seg[1]).toBe(0xb8);
            expect(seg.readUInt16BE(2)).toBe(seg.length);
            expect(seg.readUInt16BE(4), `ID of datagram ${i}`).toBe((0xfffe + i) & 0xffff);
            expect(seg.readUInt16BE(6)).toBe(df ? 0x4000 : 0);
            expect([seg[8], seg[9]]).toEqual([61, 17]);
            expect(refChecksum(seg, 0, 20), `IP checksum of datagram ${i}`).toBe(0);
            expect([seg.readUInt16BE(20), seg.readUInt16BE(22), seg.readUInt16BE(24)]).toEqual([50000, 443, seg.length - 20]);
            expect(seg.subarray(28).equals(data.subarray(i * GSO, Math.min((i + 1) * GSO, PAY)))).toBe(true);
            expect(seg.readUInt16BE(26)).not.toBe(0);
            expect(l4Check(seg, 0), `UDP checksum of datagram ${i}`).toBe(0);
            // Built from scratch, the datagram the sender meant.
            expect(seg.equals(udpPacket({ ...spec, id: (0xfffe + i) & 0xffff, payload: data.subarray(i * GSO, Math.min((i + 1) * GSO, PAY)) }))).toBe(true);
          });
        });
      }
    }
  }

  it('writes a datagram whose checksum computes to 0 as 0xffff (RFC 768), in the middle and last', () => {
    for (const [i, last] of [[2, false], [4, true]] as const) {
      const data = payload(PAY, 22);
      const chunkLen = last ? 321 - 1 : GSO; // even, for zeroChecksumPayload
      const d = last ? payload(PAY - 1, 22) : data;
      const chunk = zeroChecksumPayload({ payload: d.subarray(i * GSO, i * GSO + chunkLen) });
      chunk.copy(d, i * GSO);
      const sp = udpSuperPacket({ payload: d, id: 100 }, GSO);
      for (const same of [false, true]) {
        const segs = cut(sp, 5, same);
        const ref = referenceUdpSplit(sp);
        expect(segs.length).toBe(5);
        expect(segs[i]!.readUInt16BE(26), `datagram ${i}`).toBe(0xffff);
        expect(l4Check(segs[i]!, 0)).toBe(0);
        segs.forEach((s, k) => {
          expect(s.equals(ref[k]!), `datagram ${k} byte for byte`).toBe(true);
          expect(l4Check(s, 0)).toBe(0);
          expect(s.readUInt16BE(4)).toBe(100 + k);
        });
      }
    }
  });

  it('cuts 64 datagrams of 1000 bytes and exactly gso_size multiples (no short last one)', () => {
    const sp = udpSuperPacket({ payload: payload(64 * 1000, 23), frag: 0, id: 7 }, 1000);
    const segs = cut(sp, 0, false);
    const ref = referenceUdpSplit(sp);
    expect(segs.length).toBe(64);
    segs.forEach((s, i) => {
      expect(s.length).toBe(1028);
      expect(s.equals(ref[i]!), `datagram ${i}`).toBe(true);
    });
  });

  it('keeps IP options in every datagram (header length 32)', () => {
    const opt = Buffer.from([0x94, 0x04, 0x00, 0x00]);
    const data = payload(1500, 24);
    const spec: UdpSpec = { payload: data, ipOptions: opt, id: 9 };
    const sp = udpSuperPacket(spec, 700);
    const segs = cut(sp, 0, false);
    expect(segs.map((s) => s.length)).toEqual([732, 732, 132]);
    segs.forEach((s, i) => {
      expect(s[0]).toBe(0x46);
      expect(s.subarray(20, 24).equals(opt)).toBe(true);
      expect(refChecksum(s, 0, 24)).toBe(0);
      expect(s.readUInt16BE(28)).toBe(s.length - 24);
      expect(l4Check(s, 0)).toBe(0);
      expect(s.equals(udpPacket({ ...spec, id: 9 + i, payload: data.subarray(i * 700, Math.min((i + 1) * 700, 1500)) }))).toBe(true);
    });
  });
});
