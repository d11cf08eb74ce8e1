/**
 * The ICMP errors ipipd writes (RFC 792, RFC 1191 §4, RFC 1812 §4.3.2.3) and when it may write
 * one (RFC 1122 §3.2.2). Packets: test/helpers/icmp-packets.ts; the quoted `INNER_1` is the
 * hand-derived ICMP echo request 10.0.1.1 -> 10.0.2.1 of test/helpers/tunnel-sides.ts.
 *
 * Every expected byte and checksum here is worked out by hand or by `refChecksum`, an
 * independent word-by-word implementation, never by the code under test.
 */
import { describe, expect, it } from 'vitest';
import { ICMP_ERROR_MAX, IPPROTO_ICMP, mayAnswerWithIcmpError, writeIcmpError } from '../../src/ipip/icmp.js';
import { hex, refChecksum } from '../helpers/packets.js';
import { icmp, ipv4, pattern, SENDER, TUN_ADDR } from '../helpers/icmp-packets.js';
import { INNER_1 } from '../helpers/tunnel-sides.js';

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
