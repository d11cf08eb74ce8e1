/**
 * ICMP errors: the ones ipipd writes (RFC 792, RFC 1191 §4, RFC 1812 §4.3.2.3), when it may write
 * one (RFC 1122 §3.2.2), and what an error from a router inside the tunnel means (RFC 2003 §4).
 *
 *   inner sender 10.0.1.1 --TUN 10.0.1.254-- [ A 192.0.2.1 ] ---- router 203.0.113.254 ---- [ B 198.51.100.2 ]
 *
 * A encapsulated a packet from 10.0.1.1 to B; the router sends A an ICMP error quoting A's outer
 * header (src 192.0.2.1, proto 4), the inner header and 8 bytes of inner data.
 *
 * Every expected byte and checksum here is worked out by hand or by `refChecksum` below, an
 * independent word-by-word implementation, never by the code under test.
 */
import { describe, expect, it } from 'vitest';
import {
  ICMP_ERROR_MAX,
  IPPROTO_ICMP,
  IcmpQuote,
  UnderlayIcmp,
  classifyUnderlayIcmp,
  mayAnswerWithIcmpError,
  plateauBelow,
  writeIcmpError,
} from '../../src/ipip/icmp.js';
import { hex, ip, refChecksum } from '../helpers/packets.js';

// ---------------------------------------------------------------- helpers

/** Writes the header checksum of the IPv4 header at `off` (field zeroed first). */
function fixIp(b: Buffer, off = 0): Buffer {
  b.writeUInt16BE(0, off + 10);
  b.writeUInt16BE(refChecksum(b, off, (b[off] & 0x0f) * 4), off + 10);
  return b;
}

interface IpSpec {
  src?: string | number;
  dst?: string | number;
  protocol?: number;
  flags?: number;
  tos?: number;
  ttl?: number;
  id?: number;
}

/** An IPv4 datagram (IHL 5) carrying `payload`, valid header checksum. */
function ipv4(payload: Buffer, spec: IpSpec = {}): Buffer {
  const addr = (a: string | number | undefined, d: string) => (typeof a === 'number' ? a : ip(a ?? d));
  const b = Buffer.alloc(20 + payload.length);
  b[0] = 0x45;
  b[1] = spec.tos ?? 0;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(spec.id ?? 0x1234, 4);
  b.writeUInt16BE(spec.flags ?? 0x4000, 6);
  b[8] = spec.ttl ?? 64;
  b[9] = spec.protocol ?? 17;
  b.writeInt32BE(addr(spec.src, '10.0.1.1'), 12);
  b.writeInt32BE(addr(spec.dst, '10.0.2.1'), 16);
  payload.copy(b, 20);
  return fixIp(b);
}

/** An ICMP message: type, code, 4-byte rest word, body; valid ICMP checksum. */
function icmp(type: number, code: number, rest: number, body: Buffer): Buffer {
  const m = Buffer.alloc(8 + body.length);
  m[0] = type;
  m[1] = code;
  m.writeUInt32BE(rest >>> 0, 4);
  body.copy(m, 8);
  m.writeUInt16BE(refChecksum(m, 0, m.length), 2);
  return m;
}

function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + 5) & 0xff;
  return b;
}

// Hand-derived inner packet (the one in tunnel.test.ts): ICMP echo request 10.0.1.1 -> 10.0.2.1,
// ID 0x1234, DF, TTL 63, total 28. Header sum ed53 -> checksum 12ac; ICMP 0802 -> checksum f7fd.
const INNER_1 = hex('45 00 00 1c 12 34 40 00 3f 01 12 ac 0a 00 01 01 0a 00 02 01  08 00 f7 fd 00 01 00 01');

const TUN_ADDR = ip('10.0.1.254');
const SENDER = ip('10.0.1.1');
const A_LOCAL = ip('192.0.2.1');
const B_LOCAL = ip('198.51.100.2');
const ROUTER = ip('203.0.113.254');

// ---------------------------------------------------------------- writeIcmpError

describe('writeIcmpError', () => {
  // Frag Needed, MTU 1380 (0x0564), from the TUN address to the inner sender, ID 0xbeef, quoting
  // INNER_1 (28 bytes). Total 20 + 8 + 28 = 56 (0x38).
  //   IP sum 4500+0038+beef+0000+4001+0a00+01fe+0a00+0101 = 15b27 -> 5b28, checksum a4d7
  //   ICMP sum 0304+0000+0000+0564 + (INNER_1's words: a valid header and a valid ICMP message,
  //   each summing to ffff -> ffff) = 0868 + ffff = 10867 -> 0868, checksum f797
  const EXPECTED = hex(
    '45 00 00 38 be ef 00 00 40 01 a4 d7 0a 00 01 fe 0a 00 01 01' + // IPv4: TTL 64, proto 1, DF clear
      '03 04 f7 97 00 00 05 64' + // type 3 code 4, checksum, unused 0000 | next-hop MTU 0564
      '45 00 00 1c 12 34 40 00 3f 01 12 ac 0a 00 01 01 0a 00 02 01 08 00 f7 fd 00 01 00 01',
  );

  it('Frag Needed (MTU 1380): byte for byte into a poisoned buffer at a non-zero offset', () => {
    const o = 13;
    const out = Buffer.alloc(o + ICMP_ERROR_MAX + 7, 0xa5);
    // The quote sits at a non-zero offset of its own buffer, with poison around it.
    const q = Buffer.concat([Buffer.alloc(9, 0xa5), INNER_1, Buffer.alloc(4, 0xa5)]);
    const n = writeIcmpError(out, o, 3, 4, 1380, TUN_ADDR, SENDER, 0xbeef, q, 9, 28);
    expect(n).toBe(56);
    const expected = Buffer.concat([Buffer.alloc(o, 0xa5), EXPECTED, Buffer.alloc(out.length - o - 56, 0xa5)]);
    expect(out.toString('hex')).toBe(expected.toString('hex'));
  });

  it('both checksums verify by independent recomputation; every header field as specified', () => {
    const out = Buffer.alloc(600, 0xa5);
    const n = writeIcmpError(out, 20, 3, 4, 0x564, TUN_ADDR, SENDER, 0x1beef, INNER_1, 0, 28);
    expect(refChecksum(out, 20, 20)).toBe(0);
    expect(refChecksum(out, 40, n - 20)).toBe(0);
    expect(out[20]).toBe(0x45);
    expect(out[21]).toBe(0); // TOS
    expect(out.readUInt16BE(22)).toBe(n);
    expect(out.readUInt16BE(24)).toBe(0xbeef); // ID truncated to 16 bits
    expect(out.readUInt16BE(26)).toBe(0); // no DF, no MF, offset 0
    expect(out[28]).toBe(64); // TTL
    expect(out[29]).toBe(IPPROTO_ICMP);
    expect(out.readInt32BE(32)).toBe(TUN_ADDR);
    expect(out.readInt32BE(36)).toBe(SENDER);
  });

  it('a 1400-byte quote is cut so that the error is exactly 576 bytes', () => {
    const big = pattern(1400, 3);
    const o = 5;
    const out = Buffer.alloc(o + 700, 0xa5);
    const n = writeIcmpError(out, o, 11, 0, 0, TUN_ADDR, SENDER, 7, big, 0, 1400);
    expect(n).toBe(576);
    expect(out.readUInt16BE(o + 2)).toBe(576);
    expect(out[o + 8]).toBe(64);
    expect(out[o + 9]).toBe(1);
    expect([out[o + 20], out[o + 21]]).toEqual([11, 0]);
    expect(out.readUInt32BE(o + 24)).toBe(0);
    // 576 - 20 - 8 = 548 bytes of the original, the first ones.
    expect(out.subarray(o + 28, o + 576).equals(big.subarray(0, 548))).toBe(true);
    expect(out.subarray(0, o).every((x) => x === 0xa5)).toBe(true);
    expect(out.subarray(o + 576).every((x) => x === 0xa5)).toBe(true); // nothing past 576
    expect(refChecksum(out, o, 20)).toBe(0);
    expect(refChecksum(out, o + 20, 556)).toBe(0);
  });

  it('quotes of every length 0..560 (odd ones pad the checksum) verify and stop at 576', () => {
    const src = pattern(560, 9);
    for (let len = 0; len <= 560; len++) {
      const out = Buffer.alloc(3 + 600, 0xa5);
      const n = writeIcmpError(out, 3, 3, 1, 0, TUN_ADDR, SENDER, len, src, 0, len);
      const quoted = Math.min(len, 548);
      expect(n, `len ${len}`).toBe(28 + quoted);
      expect(refChecksum(out, 3 + 20, n - 20), `len ${len}`).toBe(0);
      expect(refChecksum(out, 3, 20), `len ${len}`).toBe(0);
      expect(out[3 + n], `len ${len}`).toBe(0xa5);
    }
  });

  it('writes the whole 32-bit rest word (e.g. Parameter Problem pointer in the top byte)', () => {
    const out = Buffer.alloc(600, 0xa5);
    writeIcmpError(out, 0, 12, 0, 0x14000000, TUN_ADDR, SENDER, 0, INNER_1, 0, 28);
    expect(out.subarray(20, 28).toString('hex')).toBe(`0c00${out.subarray(22, 24).toString('hex')}14000000`);
    writeIcmpError(out, 0, 3, 4, 0xffffffff, TUN_ADDR, SENDER, 0, INNER_1, 0, 28);
    expect(out.readUInt32BE(24)).toBe(0xffffffff);
    expect(refChecksum(out, 20, 36)).toBe(0);
  });
});

// ---------------------------------------------------------------- mayAnswerWithIcmpError

describe('mayAnswerWithIcmpError (RFC 1122 §3.2.2)', () => {
  const udp = pattern(16);
  const may = (d: Buffer) => mayAnswerWithIcmpError(d, 0, d.length);
  const mayAt = (d: Buffer) => {
    const b = Buffer.concat([Buffer.alloc(11, 0xa5), d, Buffer.alloc(3, 0xa5)]);
    return mayAnswerWithIcmpError(b, 11, d.length);
  };

  it('a plain unicast UDP datagram may be answered (at offset 0 and at a non-zero offset)', () => {
    expect(may(ipv4(udp))).toBe(true);
    expect(mayAt(ipv4(udp))).toBe(true);
  });

  it.each([
    ['unfragmented, DF', 0x4000, true],
    ['unfragmented, no DF', 0x0000, true],
    ['first fragment (MF, offset 0)', 0x2000, true],
    ['middle fragment (MF, offset 1)', 0x2001, false],
    ['last fragment (offset 185, no MF)', 0x00b9, false],
    ['fragment at the largest offset', 0x1fff, false],
    ['offset 0x100 (only the high byte of the field set)', 0x0100, false],
  ])('%s -> %s', (_n, flags, expected) => {
    expect(may(ipv4(udp, { flags }))).toBe(expected);
    expect(mayAt(ipv4(udp, { flags }))).toBe(expected);
  });

  it.each([
    ['echo request 8', 8, true],
    ['echo reply 0', 0, true],
    ['timestamp 13', 13, true],
    ['destination unreachable 3', 3, false],
    ['source quench 4', 4, false],
    ['redirect 5', 5, false],
    ['time exceeded 11', 11, false],
    ['parameter problem 12', 12, false],
  ])('ICMP %s -> %s', (_n, type, expected) => {
    const d = ipv4(icmp(type, 0, 0, pattern(28)), { protocol: 1 });
    expect(may(d)).toBe(expected);
    expect(mayAt(d)).toBe(expected);
    // The same type byte in a UDP datagram means nothing.
    expect(may(ipv4(icmp(type, 0, 0, pattern(28)), { protocol: 17 }))).toBe(true);
  });

  it('an ICMP datagram too short to show its type is not answered', () => {
    const d = ipv4(Buffer.alloc(0), { protocol: 1 });
    expect(may(d)).toBe(false);
    expect(mayAt(d)).toBe(false);
    expect(may(ipv4(Buffer.from([8]), { protocol: 1 }))).toBe(true); // one byte is enough: echo
  });

  it.each([
    ['0.0.0.0', false],
    ['127.0.0.1', false],
    ['127.255.255.254', false],
    ['224.0.0.1', false],
    ['239.255.255.250', false],
    ['240.0.0.1', false], // class E
    ['255.255.255.255', false],
    ['0.0.0.1', true], // not the zero address
    ['126.255.255.255', true],
    ['128.0.0.1', true],
    ['223.255.255.255', true],
    ['10.0.1.1', true],
  ])('source %s -> %s', (src, expected) => {
    expect(may(ipv4(udp, { src }))).toBe(expected);
    expect(mayAt(ipv4(udp, { src }))).toBe(expected);
  });

  it.each([
    ['224.0.0.5', false],
    ['239.1.2.3', false],
    ['255.255.255.255', false],
    ['240.0.0.1', false],
    ['223.255.255.255', true],
    ['10.0.2.1', true],
  ])('destination %s -> %s', (dst, expected) => {
    expect(may(ipv4(udp, { dst }))).toBe(expected);
    expect(mayAt(ipv4(udp, { dst }))).toBe(expected);
  });
});

// ---------------------------------------------------------------- classifyUnderlayIcmp

/** Our outer packet as A sent it: 192.0.2.1 -> B, proto 4, around an inner UDP datagram. */
function ourOuter(innerFlags = 0x4000, innerPayload = 1372, outerSpec: IpSpec = {}): Buffer {
  const inner = ipv4(pattern(innerPayload, 2), { src: '10.0.1.1', dst: '10.0.2.1', flags: innerFlags, ttl: 63, id: 0x4242 });
  return ipv4(inner, { src: A_LOCAL, dst: B_LOCAL, protocol: 4, flags: 0x4000, id: 0x0007, ...outerSpec });
}

/**
 * The router's error about `orig`, quoting its first `quoteLen` bytes (RFC 792: header + 8
 * bytes at least; RFC 1812 routers quote more), from 203.0.113.254 to A.
 */
function routerError(type: number, code: number, rest: number, orig: Buffer, quoteLen: number): Buffer {
  return ipv4(icmp(type, code, rest, orig.subarray(0, quoteLen)), { src: ROUTER, dst: A_LOCAL, protocol: 1, ttl: 250, flags: 0 });
}

/** Places `d` at offset 17 of a poisoned buffer with 6 bytes after it; returns [buf, off, len]. */
function placed(d: Buffer): [Buffer, number, number] {
  return [Buffer.concat([Buffer.alloc(17, 0xa5), d, Buffer.alloc(6, 0xa5)]), 17, d.length];
}

describe('classifyUnderlayIcmp (RFC 2003 §4)', () => {
  it('Frag Needed (3/4) with MTU 1400: fragNeeded; every IcmpQuote field', () => {
    const orig = ourOuter();
    expect(orig.length).toBe(1412);
    const [buf, off, len] = placed(routerError(3, 4, 1400, orig, 20 + 20 + 8));
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.type).toBe(3);
    expect(q.code).toBe(4);
    expect(q.nextHopMtu).toBe(1400);
    expect(q.endpoint).toBe(B_LOCAL);
    expect(q.outerLength).toBe(1412); // from the quoted header, not the cut quote
    // router IP header 20 + ICMP header 8 + our outer header 20
    expect(q.innerOffset).toBe(off + 48);
    expect(q.innerLength).toBe(28); // inner header 20 + 8 data bytes
    expect(buf.subarray(q.innerOffset, q.innerOffset + q.innerLength).equals(orig.subarray(20, 48))).toBe(true);
    expect(q.innerDf).toBe(true);
  });

  it('Frag Needed about an inner packet without DF: innerDf false; a longer quote is all inner', () => {
    const orig = ourOuter(0x0000);
    const [buf, off, len] = placed(routerError(3, 4, 0x0000_0500, orig, 548));
    const q = new IcmpQuote();
    q.innerDf = true; // stale
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.nextHopMtu).toBe(1280);
    expect(q.innerDf).toBe(false);
    expect(q.innerOffset).toBe(off + 48);
    expect(q.innerLength).toBe(528);
  });

  it('Frag Needed from an old router (MTU 0): nextHopMtu 0, outerLength for the plateau guess', () => {
    const [buf, off, len] = placed(routerError(3, 4, 0, ourOuter(), 48));
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.nextHopMtu).toBe(0);
    expect(plateauBelow(q.outerLength)).toBe(1006);
  });

  it('a quote of only the outer header + 8 bytes: classified, but innerLength 0 (nothing to relay)', () => {
    const [buf, off, len] = placed(routerError(3, 4, 1400, ourOuter(), 28));
    const q = new IcmpQuote();
    q.innerLength = 99;
    q.innerDf = true;
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.endpoint).toBe(B_LOCAL);
    expect(q.nextHopMtu).toBe(1400);
    expect(q.innerLength).toBe(0);
    expect(q.innerDf).toBe(false);
  });

  it('a quote with 19 bytes of inner header: innerLength 0', () => {
    const [buf, off, len] = placed(routerError(3, 1, 0, ourOuter(), 39));
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.relayUnreachable);
    expect(q.innerLength).toBe(0);
  });

  it.each([
    ['3/0 net unreachable', 3, 0, UnderlayIcmp.relayUnreachable],
    ['3/1 host unreachable', 3, 1, UnderlayIcmp.relayUnreachable],
    ['3/2 protocol unreachable', 3, 2, UnderlayIcmp.relayUnreachable],
    ['3/13 administratively prohibited', 3, 13, UnderlayIcmp.relayUnreachable],
    ['11/0 TTL exceeded in transit', 11, 0, UnderlayIcmp.relayUnreachable],
    ['11/1 reassembly time exceeded', 11, 1, UnderlayIcmp.relayUnreachable],
    ['3/3 port unreachable', 3, 3, UnderlayIcmp.noRelay],
    ['3/5 source route failed', 3, 5, UnderlayIcmp.noRelay],
    ['5/0 redirect (net)', 5, 0, UnderlayIcmp.noRelay],
    ['5/1 redirect (host)', 5, 1, UnderlayIcmp.noRelay],
    ['4/0 source quench', 4, 0, UnderlayIcmp.noRelay],
    ['12/0 parameter problem', 12, 0, UnderlayIcmp.noRelay],
  ])('%s -> class %i, quote located', (_n, type, code, cls) => {
    const [buf, off, len] = placed(routerError(type, code, 0, ourOuter(), 48));
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(cls);
    expect([q.type, q.code, q.endpoint]).toEqual([type, code, B_LOCAL]);
    expect([q.innerOffset - off, q.innerLength, q.innerDf]).toEqual([48, 28, true]);
  });

  it('ignores bytes after the ICMP datagram (link padding) and uses its Total Length', () => {
    const e = routerError(3, 4, 1400, ourOuter(), 48);
    const padded = Buffer.concat([e, Buffer.alloc(10, 0)]);
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(padded, 0, padded.length, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.innerLength).toBe(28);
  });

  describe('notOurs', () => {
    const good = () => routerError(3, 4, 1400, ourOuter(), 48);
    const cases: [string, () => Buffer, number?][] = [
      ['echo reply quoting the same bytes', () => ipv4(icmp(0, 0, 0, ourOuter().subarray(0, 48)), { src: ROUTER, dst: A_LOCAL, protocol: 1 })],
      ['echo request', () => ipv4(icmp(8, 0, 0, ourOuter().subarray(0, 48)), { src: ROUTER, dst: A_LOCAL, protocol: 1 })],
      ['quoted protocol 17', () => routerError(3, 4, 1400, ourOuter(0x4000, 1372, { protocol: 17 }), 48)],
      ['quoted protocol 41', () => routerError(3, 4, 1400, ourOuter(0x4000, 1372, { protocol: 41 }), 48)],
      ['quoted source not local (B -> A traffic)', () => routerError(3, 4, 1400, ourOuter(0x4000, 1372, { src: B_LOCAL, dst: A_LOCAL }), 48)],
      ['quoted source another local-looking host', () => routerError(3, 4, 1400, ourOuter(0x4000, 1372, { src: '192.0.2.2' }), 48)],
      ['quoted header version 6', () => {
        const orig = Buffer.from(ourOuter());
        orig[0] = 0x65;
        return routerError(3, 4, 1400, orig, 48);
      }],
      ['quoted header IHL 4', () => {
        const orig = Buffer.from(ourOuter());
        orig[0] = 0x44;
        return routerError(3, 4, 1400, orig, 48);
      }],
      ['bad ICMP checksum', () => {
        const e = good();
        e[22] ^= 0x01;
        return e;
      }],
      ['ICMP body changed after the checksum', () => {
        const e = good();
        e[60] ^= 0x80;
        return e;
      }],
      ['bad outer IP checksum', () => {
        const e = good();
        e[10] ^= 0x01;
        return e;
      }],
      ['outer TTL changed without checksum update', () => {
        const e = good();
        e[8]--;
        return e;
      }],
      ['outer protocol 17 (not ICMP)', () => {
        const e = good();
        e[9] = 17;
        return fixIp(e);
      }],
      ['too short: ICMP header + 19 bytes of quote', () => routerError(3, 4, 1400, ourOuter(), 19)],
      ['too short: ICMP header only', () => routerError(3, 4, 1400, ourOuter(), 0)],
      ['too short: 19 bytes', () => good().subarray(0, 19)],
      ['received fewer bytes than the Total Length', () => good(), -1],
      ['outer version 6', () => {
        const e = good();
        e[0] = 0x65;
        return fixIp(e);
      }],
    ];
    it.each(cases)('%s', (_n, make, lenDelta = 0) => {
      const [buf, off, len] = placed(make());
      const q = new IcmpQuote();
      q.innerLength = 77;
      q.innerDf = true;
      expect(classifyUnderlayIcmp(buf, off, len + lenDelta, A_LOCAL, q)).toBe(UnderlayIcmp.notOurs);
      expect(q.innerLength).toBe(0);
      expect(q.innerDf).toBe(false);
    });

    it('the same error is ours only for the right local address', () => {
      const [buf, off, len] = placed(good());
      const q = new IcmpQuote();
      expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
      expect(classifyUnderlayIcmp(buf, off, len, B_LOCAL, q)).toBe(UnderlayIcmp.notOurs);
    });

    it('an impossible length from the I/O layer is not ours (no throw)', () => {
      const [buf, off, len] = placed(good());
      const q = new IcmpQuote();
      expect(classifyUnderlayIcmp(buf, off, -1, A_LOCAL, q)).toBe(UnderlayIcmp.notOurs);
      expect(classifyUnderlayIcmp(buf, off, buf.length, A_LOCAL, q)).toBe(UnderlayIcmp.notOurs); // past the end
      expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    });
  });
});

// ---------------------------------------------------------------- plateauBelow

describe('plateauBelow (RFC 1191 §5, plateau table of §7)', () => {
  it.each([
    [65535, 32000],
    [32001, 32000],
    [32000, 17914],
    [17915, 17914],
    [17914, 8166],
    [8166, 4352],
    [4352, 2002],
    [2002, 1492],
    [1500, 1492],
    [1493, 1492],
    [1492, 1006],
    [1412, 1006],
    [1006, 508],
    [576, 508],
    [508, 296],
    [296, 68],
    [69, 68],
    [68, 68], // never below the IPv4 minimum MTU
    [20, 68],
    [0, 68],
  ])('%i -> %i', (length, plateau) => {
    expect(plateauBelow(length)).toBe(plateau);
  });

  it('is strictly below the length whenever the length is above 68, and never below 68', () => {
    for (let l = 0; l <= 65535; l++) {
      const p = plateauBelow(l);
      if (p < 68 || (l > 68 && p >= l)) throw new Error(`plateauBelow(${l}) = ${p}`);
    }
  });
});
