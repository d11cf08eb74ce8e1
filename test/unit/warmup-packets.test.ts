/**
 * The synthetic packets of the data path's JIT warm-up (src/dataplane/warmup.ts); the flows it
 * picks for them are in warmup-flows.test.ts, the procedure run for real in warmup.test.ts.
 *
 * Flow of this file:
 *   1. `writeWarmPacket`: every field and checksum of each kind, checked with references that
 *      share no code with src/ipip (`refChecksum`, `refPseudo`), into a buffer poisoned with 0xA5
 *      at a non-zero offset; the partial form holds the folded pseudo-header sum;
 *   2. `writeWarmVnet`: the virtio_net_hdr for none / NEEDS_CSUM / TCPV4 GSO, accepted by the
 *      real offload code (completeChecksum, checkTcp4Gso, writeTcp4Segment);
 *   3. `writeWarmOuter`: an outer header that `Tunnel.decapsulate` forwards, on the Tunnel of
 *      test/helpers/warmup-setup.ts.
 */
import { describe, expect, it } from 'vitest';
import { WARM_ICMP, WARM_TCP, WARM_UDP, writeWarmOuter, writeWarmPacket, writeWarmVnet } from '../../src/dataplane/warmup.js';
import {
  PacketResult,
  Verdict,
  VERDICT_NAMES,
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
} from '../../src/ipip/index.js';
import { ip, refChecksum } from '../helpers/packets.js';
import { TWO_PEERS, tunnelOf } from '../helpers/warmup-setup.js';

// ---------------------------------------------------------------- helpers

const POISON = 0xa5;
const LOCAL = ip('198.51.100.10');
const REMOTE = ip('203.0.113.1');

/** The pseudo-header sum for the IPv4 header at `at` (RFC 768 / RFC 9293 §3.1), not folded. */
function refPseudo(b: Buffer, at: number, proto: number, l4len: number): number {
  return b.readUInt16BE(at + 12) + b.readUInt16BE(at + 14) + b.readUInt16BE(at + 16) + b.readUInt16BE(at + 18) + proto + l4len;
}

/** Fold a sum to 16 bits (end-around carry), the slow way. */
function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** 0 when the UDP/TCP checksum of the IPv4 packet at `at` verifies (RFC 1071 over pseudo-header + segment). */
function l4Check(b: Buffer, at: number): number {
  const total = b.readUInt16BE(at + 2);
  const l4len = total - 20;
  let sum = refPseudo(b, at, b[at + 9]!, l4len);
  for (let i = 0; i < l4len; i += 2) sum += (b[at + 20 + i]! << 8) | (i + 1 < l4len ? b[at + 20 + i + 1]! : 0);
  return ~fold(sum) & 0xffff;
}

function poisoned(size: number): Buffer {
  return Buffer.alloc(size, POISON);
}

/** Every byte of `b` outside [from, to) is still poison. */
function untouchedOutside(b: Buffer, from: number, to: number): boolean {
  for (let i = 0; i < b.length; i++) if ((i < from || i >= to) && b[i] !== POISON) return false;
  return true;
}

const L4_HEADER = { [WARM_ICMP]: 8, [WARM_UDP]: 8, [WARM_TCP]: 32 } as Record<number, number>;
const PROTO = { [WARM_ICMP]: 1, [WARM_UDP]: 17, [WARM_TCP]: 6 } as Record<number, number>;
const KINDS = [
  ['ICMP', WARM_ICMP],
  ['UDP', WARM_UDP],
  ['TCP', WARM_TCP],
] as const;

// ---------------------------------------------------------------- 1. writeWarmPacket

describe('writeWarmPacket', () => {
  for (const [name, kind] of KINDS) {
    for (const off of [0, 36, 37]) {
      it(`${name} at offset ${off}: IPv4 header, L4 header and checksums, payload; nothing written outside`, () => {
        const payload = 100;
        const id = 0x12345; // only the low 16 bits go into the header
        const seq = 0x9abcdef0; // past 2^31: written as the same 32 bits
        const b = poisoned(off + 400);
        const len = writeWarmPacket(b, off, kind, LOCAL, REMOTE, payload, id, seq, false);
        const l4 = L4_HEADER[kind]!;
        expect(len).toBe(20 + l4 + payload);
        expect(untouchedOutside(b, off, off + len)).toBe(true);
        // IPv4 (RFC 791): version 4, IHL 5, TOS 0, total length, ID, DF, TTL 64, protocol.
        expect(b[off]).toBe(0x45);
        expect(b[off + 1]).toBe(0);
        expect(b.readUInt16BE(off + 2)).toBe(len);
        expect(b.readUInt16BE(off + 4)).toBe(0x2345);
        expect(b.readUInt16BE(off + 6)).toBe(0x4000);
        expect(b[off + 8]).toBe(64);
        expect(b[off + 9]).toBe(PROTO[kind]);
        expect(b.readInt32BE(off + 12)).toBe(LOCAL);
        expect(b.readInt32BE(off + 16)).toBe(REMOTE);
        expect(refChecksum(b, off, 20)).toBe(0);
        const t = off + 20;
        if (kind === WARM_ICMP) {
          // RFC 792 echo request: type 8, code 0, identifier, sequence number; checksum over the message.
          expect([b[t], b[t + 1]]).toEqual([8, 0]);
          expect(b.readUInt16BE(t + 4)).toBe(0x2345);
          expect(b.readUInt16BE(t + 6)).toBe(seq & 0xffff);
          expect(refChecksum(b, t, l4 + payload)).toBe(0);
        } else {
          expect(b.readUInt16BE(t)).toBe(40000);
          expect(b.readUInt16BE(t + 2)).toBe(5201);
          expect(b.readUInt16BE(t + (kind === WARM_UDP ? 6 : 16))).not.toBe(0);
          expect(l4Check(b, off)).toBe(0);
        }
        if (kind === WARM_UDP) expect(b.readUInt16BE(t + 4)).toBe(8 + payload);
        if (kind === WARM_TCP) {
          expect(b.readUInt32BE(t + 4)).toBe(seq);
          expect(b.readUInt32BE(t + 8)).toBe(0x10000);
          expect(b[t + 12]).toBe(8 << 4); // data offset 8 words: 20 + the 12-byte timestamp option
          expect(b[t + 13]).toBe(0x10 | 0x08); // ACK, PSH (a short segment)
          expect(b.readUInt16BE(t + 14)).toBe(0xffff);
          expect(b.readUInt16BE(t + 18)).toBe(0); // urgent pointer
          // Linux's layout (RFC 7323 Appendix A): NOP, NOP, kind 8, length 10, TSval, TSecr.
          expect([...b.subarray(t + 20, t + 24)]).toEqual([1, 1, 8, 10]);
          expect(b.readUInt32BE(t + 24)).toBe(0x01020304);
          expect(b.readUInt32BE(t + 28)).toBe(0x05060708);
        }
        for (let i = 0; i < payload; i++) expect(b[t + l4 + i]).toBe((i * 7 + id) & 0xff);
      });
    }
  }

  it('a full-sized TCP segment carries ACK without PSH', () => {
    const b = poisoned(2000);
    const len = writeWarmPacket(b, 20, WARM_TCP, LOCAL, REMOTE, 1400, 1, 1, false);
    expect(len).toBe(1452);
    expect(b[20 + 20 + 13]).toBe(0x10);
    expect(l4Check(b, 20)).toBe(0);
  });

  for (const [name, kind] of [['UDP', WARM_UDP], ['TCP', WARM_TCP]] as const) {
    it(`${name} partial: the checksum field holds the folded pseudo-header sum, which completeChecksum completes`, () => {
      for (const payload of [1, 64, 1400]) {
        const b = poisoned(1600);
        const off = 30;
        const len = writeWarmPacket(b, off, kind, LOCAL, REMOTE, payload, 7, 1000, true);
        expect(untouchedOutside(b, off, off + len)).toBe(true);
        expect(refChecksum(b, off, 20)).toBe(0);
        const csumAt = off + 20 + (kind === WARM_UDP ? 6 : 16);
        expect(b.readUInt16BE(csumAt)).toBe(fold(refPseudo(b, off, PROTO[kind]!, len - 20)));
        // What the kernel does with it for CHECKSUM_PARTIAL: the result verifies.
        expect(completeChecksum(b, off, len, 20, kind === WARM_UDP ? 6 : 16)).toBe(true);
        expect(l4Check(b, off)).toBe(0);
      }
    });
  }

  it('ICMP ignores `partial` (its checksum is always complete)', () => {
    const a = poisoned(200);
    const b = poisoned(200);
    writeWarmPacket(a, 0, WARM_ICMP, LOCAL, REMOTE, 56, 3, 4, false);
    writeWarmPacket(b, 0, WARM_ICMP, LOCAL, REMOTE, 56, 3, 4, true);
    expect(b.equals(a)).toBe(true);
  });

  it('the UDP checksum field is never 0 (RFC 768: 0 means "none"); a computed 0 goes out as 0xffff', () => {
    const b = Buffer.alloc(200);
    let ones = 0;
    // The source's low 16 bits walk through every value, and so does the sum: one of them makes
    // the computed checksum 0.
    for (let k = 0; k < 0x10000; k++) {
      const src = ip('10.1.0.0') | k;
      writeWarmPacket(b, 0, WARM_UDP, src, REMOTE, 20, 5, 0, false);
      const c = b.readUInt16BE(26);
      if (c === 0 || l4Check(b, 0) !== 0) throw new Error(`source ${src}: UDP checksum field ${c}`);
      if (c === 0xffff) ones++;
    }
    expect(ones).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------- 2. writeWarmVnet

describe('writeWarmVnet', () => {
  const OFF = 64;

  it('a complete packet (or any ICMP) gets the all-zero header, written in the 10 bytes before it', () => {
    for (const [kind, partial] of [[WARM_ICMP, false], [WARM_ICMP, true], [WARM_UDP, false], [WARM_TCP, false]] as const) {
      const b = poisoned(OFF + 200);
      writeWarmVnet(b, OFF, kind, partial, 0);
      expect([...b.subarray(OFF - 10, OFF)]).toEqual(new Array(10).fill(0));
      expect(untouchedOutside(b, OFF - 10, OFF)).toBe(true);
    }
  });

  for (const [name, kind, csumOffset] of [['UDP', WARM_UDP, 6], ['TCP', WARM_TCP, 16]] as const) {
    it(`${name} partial: NEEDS_CSUM, no GSO, csum_start 20, csum_offset ${csumOffset}`, () => {
      const b = poisoned(OFF + 200);
      const len = writeWarmPacket(b, OFF, kind, LOCAL, REMOTE, 100, 1, 1, true);
      writeWarmVnet(b, OFF, kind, true, 0);
      const h = OFF - 10;
      expect(getVnetFlags(b, h)).toBe(1);
      expect(getVnetGsoType(b, h)).toBe(0);
      expect(getVnetHdrLen(b, h)).toBe(0);
      expect(getVnetGsoSize(b, h)).toBe(0);
      expect(getVnetCsumStart(b, h)).toBe(20);
      expect(getVnetCsumOffset(b, h)).toBe(csumOffset);
      expect(untouchedOutside(b, h, OFF + len)).toBe(true);
      expect(completeChecksum(b, OFF, len, getVnetCsumStart(b, h), getVnetCsumOffset(b, h))).toBe(true);
      expect(l4Check(b, OFF)).toBe(0);
    });
  }

  it('a TCP super-packet: NEEDS_CSUM, GSO TCPV4, hdr_len 52, gso_size; it segments into valid segments', () => {
    const gso = 1400;
    const b = poisoned(OFF + 12000);
    const len = writeWarmPacket(b, OFF, WARM_TCP, LOCAL, REMOTE, 8 * gso, 5, 0x7ffff000, true);
    writeWarmVnet(b, OFF, WARM_TCP, true, gso);
    const h = OFF - 10;
    expect(getVnetFlags(b, h)).toBe(1);
    expect(getVnetGsoType(b, h)).toBe(1);
    expect(getVnetHdrLen(b, h)).toBe(52);
    expect(getVnetGsoSize(b, h)).toBe(gso);
    expect(getVnetCsumStart(b, h)).toBe(20);
    expect(getVnetCsumOffset(b, h)).toBe(16);
    // The real offload code takes it as the kernel's: 8 segments, each with verifying checksums.
    expect(checkTcp4Gso(b, h, OFF, len)).toBe(52);
    expect(tcp4SegmentCount(len, 52, gso)).toBe(8);
    const out = Buffer.alloc(2000);
    for (let s = 0; s < 8; s++) {
      const segLen = writeTcp4Segment(b, OFF, len, 52, gso, s, out, 20);
      expect(segLen).toBe(52 + gso);
      expect(refChecksum(out, 20, 20)).toBe(0);
      expect(l4Check(out, 20)).toBe(0);
      expect(out.readUInt32BE(20 + 24)).toBe((0x7ffff000 + s * gso) >>> 0);
    }
  });
});

// ---------------------------------------------------------------- 3. writeWarmOuter

describe('writeWarmOuter', () => {
  it('wraps an inner packet in an outer IPIP header that decapsulate forwards (and encapsulate the reverse)', () => {
    const { tunnel, peers } = tunnelOf(TWO_PEERS);
    for (const [name, kind] of KINDS) {
      for (const [peer, remote] of [[peers[0]!, ip('203.0.113.1')], [peers[1]!, ip('10.9.0.1')]] as const) {
        const off = 64;
        const b = poisoned(off + 1600);
        const len = writeWarmPacket(b, off + 20, kind, remote, LOCAL, 1000, 9, 1, false);
        const total = writeWarmOuter(b, off, len, peer.endpoint, tunnel.local, 0x1abcd);
        expect(total, name).toBe(len + 20);
        expect(untouchedOutside(b, off, off + total)).toBe(true);
        expect(b[off]).toBe(0x45);
        expect(b.readUInt16BE(off + 2)).toBe(total);
        expect(b.readUInt16BE(off + 4)).toBe(0xabcd);
        expect(b.readUInt16BE(off + 6)).toBe(0x4000);
        expect(b[off + 8]).toBe(64);
        expect(b[off + 9]).toBe(4);
        expect(b.readInt32BE(off + 12)).toBe(peer.endpoint);
        expect(b.readInt32BE(off + 16)).toBe(ip('192.0.2.1'));
        expect(refChecksum(b, off, 20)).toBe(0);
        const r = new PacketResult();
        expect(VERDICT_NAMES[tunnel.decapsulate(b, off, total, r)]).toBe('forward');
        expect([r.offset, r.length, r.peer]).toEqual([off + 20, len, peer]);

        // The TUN -> underlay direction of the same flow is forwarded too.
        const t = poisoned(off + 1600);
        const tl = writeWarmPacket(t, off, kind, LOCAL, remote, 1000, 9, 1, false);
        expect(tunnel.encapsulate(t, off, tl, r)).toBe(Verdict.forward);
        expect(r.peer).toBe(peer);
      }
    }
  });

  it('is refused when the outer source is not the peer that owns the inner source', () => {
    const { tunnel, peers } = tunnelOf(TWO_PEERS);
    const b = poisoned(1600);
    const len = writeWarmPacket(b, 20, WARM_UDP, ip('203.0.113.1'), LOCAL, 64, 1, 1, false);
    const total = writeWarmOuter(b, 0, len, peers[1]!.endpoint, tunnel.local, 1);
    expect(VERDICT_NAMES[tunnel.decapsulate(b, 0, total, new PacketResult())]).toBe('spoofed_source');
  });
});
