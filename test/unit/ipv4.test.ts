import { describe, expect, it } from 'vitest';
import {
  FLAG_DF,
  FLAG_MF,
  FRAG_OFFSET_MASK,
  IPV4_ERR_CHECKSUM,
  IPV4_ERR_HEADER_LENGTH,
  IPV4_ERR_IHL,
  IPV4_ERR_SHORT,
  IPV4_ERR_TOTAL_LENGTH,
  IPV4_ERR_VERSION,
  IPV4_MIN_HEADER,
  IPV4_OK,
  OFF_CHECKSUM,
  OFF_DST,
  OFF_FLAGS_FRAG,
  OFF_ID,
  OFF_PROTOCOL,
  OFF_SRC,
  OFF_TOS,
  OFF_TOTAL_LENGTH,
  OFF_TTL,
  OFF_VERSION_IHL,
  checkIPv4,
  computeHeaderChecksum,
  getChecksum,
  getDst,
  getFlagsFragment,
  getFragmentOffset,
  getHeaderLength,
  getId,
  getIhl,
  getProtocol,
  getSrc,
  getTos,
  getTotalLength,
  getTtl,
  getVersion,
  isDontFragment,
  isFragment,
  isIPv4NoOptions,
  isMoreFragments,
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
} from '../../src/ipip/ipv4.js';

/**
 * The classic example header (e.g. Wikipedia "Internet checksum"): UDP 192.168.0.1 ->
 * 192.168.0.199, total length 115, DF, TTL 64, checksum 0xb861.
 */
const CLASSIC = Buffer.from('45 00 00 73 00 00 40 00 40 11 b8 61 c0 a8 00 01 c0 a8 00 c7'.replace(/ /g, ''), 'hex');

/** a.b.c.d as the signed int32 the accessors return. */
function ip(a: number, b: number, c: number, d: number): number {
  return (a << 24) | (b << 16) | (c << 8) | d;
}

/** The classic header followed by its 95 payload bytes (zeros), at `off` in a buffer of 0xA5. */
function classicDatagram(off: number): Buffer {
  const b = Buffer.alloc(off + 115 + 7, 0xa5);
  b.fill(0, off, off + 115);
  CLASSIC.copy(b, off);
  return b;
}

describe('IPv4 header view (RFC 791 §3.1)', () => {
  it('offsets are those of the RFC 791 diagram', () => {
    expect([OFF_VERSION_IHL, OFF_TOS, OFF_TOTAL_LENGTH, OFF_ID, OFF_FLAGS_FRAG, OFF_TTL, OFF_PROTOCOL, OFF_CHECKSUM, OFF_SRC, OFF_DST]).toEqual([
      0, 1, 2, 4, 6, 8, 9, 10, 12, 16,
    ]);
    expect(IPV4_MIN_HEADER).toBe(20);
    expect([FLAG_DF, FLAG_MF, FRAG_OFFSET_MASK]).toEqual([0x4000, 0x2000, 0x1fff]);
  });

  it('parses every field of the classic header', () => {
    const b = classicDatagram(0);
    expect(checkIPv4(b, 0, 115, true)).toBe(IPV4_OK);
    expect(getVersion(b, 0)).toBe(4);
    expect(getIhl(b, 0)).toBe(5);
    expect(getHeaderLength(b, 0)).toBe(20);
    expect(getTos(b, 0)).toBe(0);
    expect(getTotalLength(b, 0)).toBe(115);
    expect(getId(b, 0)).toBe(0);
    expect(getFlagsFragment(b, 0)).toBe(0x4000);
    expect(isDontFragment(b, 0)).toBe(true);
    expect(isMoreFragments(b, 0)).toBe(false);
    expect(getFragmentOffset(b, 0)).toBe(0);
    expect(getTtl(b, 0)).toBe(64);
    expect(getProtocol(b, 0)).toBe(17);
    expect(getChecksum(b, 0)).toBe(0xb861);
    expect(getSrc(b, 0)).toBe(ip(192, 168, 0, 1));
    expect(getDst(b, 0)).toBe(ip(192, 168, 0, 199));
    // Signed int32, identical to readInt32BE (192.x is negative).
    expect(getSrc(b, 0)).toBe(b.readInt32BE(12));
    expect(getSrc(b, 0)).toBeLessThan(0);
    expect(computeHeaderChecksum(b, 0)).toBe(0xb861);
  });

  it('parses at a non-zero offset', () => {
    const b = classicDatagram(37);
    expect(checkIPv4(b, 37, 115, true)).toBe(IPV4_OK);
    expect(getTotalLength(b, 37)).toBe(115);
    expect(getDst(b, 37)).toBe(ip(192, 168, 0, 199));
    expect(getChecksum(b, 37)).toBe(0xb861);
  });

  it('builds the classic header byte for byte into a poisoned buffer', () => {
    const off = 13;
    const b = Buffer.alloc(off + 20 + 5, 0xa5);
    setVersionIhl(b, off, 4, 5);
    setTos(b, off, 0);
    setTotalLength(b, off, 115);
    setId(b, off, 0);
    setFlagsFragment(b, off, FLAG_DF);
    setTtl(b, off, 64);
    setProtocol(b, off, 17);
    setSrc(b, off, ip(192, 168, 0, 1));
    setDst(b, off, ip(192, 168, 0, 199));
    // The checksum field still holds poison (0xa5a5): computeHeaderChecksum must skip it.
    setChecksum(b, off, computeHeaderChecksum(b, off));
    const expected = Buffer.concat([Buffer.alloc(off, 0xa5), CLASSIC, Buffer.alloc(5, 0xa5)]);
    expect(b.equals(expected)).toBe(true);
  });

  it('setters and getters round-trip every field at a non-zero offset', () => {
    const off = 29;
    const b = Buffer.alloc(off + 24, 0xa5);
    setVersionIhl(b, off, 4, 6);
    setTos(b, off, 0xb8);
    setTotalLength(b, off, 0xfedc);
    setId(b, off, 0xbeef);
    setFlagsFragment(b, off, FLAG_MF | 0x1234);
    setTtl(b, off, 255);
    setProtocol(b, off, 4);
    setChecksum(b, off, 0x1357);
    setSrc(b, off, ip(255, 255, 255, 255));
    setDst(b, off, ip(10, 0, 0, 1) >>> 0); // uint32 form is accepted too
    expect(getVersion(b, off)).toBe(4);
    expect(getIhl(b, off)).toBe(6);
    expect(getHeaderLength(b, off)).toBe(24);
    expect(getTos(b, off)).toBe(0xb8);
    expect(getTotalLength(b, off)).toBe(0xfedc);
    expect(getId(b, off)).toBe(0xbeef);
    expect(isDontFragment(b, off)).toBe(false);
    expect(isMoreFragments(b, off)).toBe(true);
    expect(getFragmentOffset(b, off)).toBe(0x1234);
    expect(getTtl(b, off)).toBe(255);
    expect(getProtocol(b, off)).toBe(4);
    expect(getChecksum(b, off)).toBe(0x1357);
    expect(getSrc(b, off)).toBe(-1);
    expect(getDst(b, off)).toBe(ip(10, 0, 0, 1));
    // Bytes around the header are untouched (20 bytes written; the 4 option bytes too, untouched).
    expect(b.subarray(0, off).every((x) => x === 0xa5)).toBe(true);
    expect(b.subarray(off + 20).every((x) => x === 0xa5)).toBe(true);
  });

  it('isFragment: MF set or a fragment offset (a first fragment too); DF and the reserved bit are not', () => {
    const cases: [number, boolean][] = [
      [0x0000, false],
      [FLAG_DF, false],
      [0x8000, false], // reserved bit only
      [FLAG_MF, true], // first fragment: offset 0, MF
      [FLAG_DF | FLAG_MF, true],
      [0x0001, true], // last fragment: offset 8 bytes, no MF
      [FLAG_MF | FRAG_OFFSET_MASK, true],
      [0x0100, true], // offset bits in the high byte only
    ];
    for (const [word, fragment] of cases) {
      const b = classicDatagram(21);
      b.writeUInt16BE(word, 21 + OFF_FLAGS_FRAG);
      expect(isFragment(b, 21), `flags word 0x${word.toString(16)}`).toBe(fragment);
    }
    expect(isFragment(classicDatagram(0), 0)).toBe(false); // the classic header: DF only
  });

  it('isIPv4NoOptions: the first byte is 0x45, version 4 and IHL 5', () => {
    expect(isIPv4NoOptions(classicDatagram(0), 0)).toBe(true);
    expect(isIPv4NoOptions(classicDatagram(9), 9)).toBe(true);
    for (const first of [0x46, 0x4f, 0x44, 0x65, 0x55, 0x05]) {
      const b = classicDatagram(9);
      b[9] = first;
      expect(isIPv4NoOptions(b, 9), `0x${first.toString(16)}`).toBe(false);
    }
  });

  it('checksum covers options (IHL > 5)', () => {
    const b = Buffer.alloc(24);
    CLASSIC.copy(b);
    b[0] = 0x46;
    b.writeUInt16BE(24, 2);
    b.writeUInt32BE(0x01010100, 20); // NOP NOP NOP EOL
    setChecksum(b, 0, computeHeaderChecksum(b, 0));
    expect(checkIPv4(b, 0, 24, true)).toBe(IPV4_OK);
    b[21] = 0x00;
    expect(checkIPv4(b, 0, 24, true)).toBe(IPV4_ERR_CHECKSUM);
  });

  describe('checkIPv4 finds the first problem', () => {
    const cases: [string, (b: Buffer) => number, number][] = [
      ['ok', (b) => checkIPv4(b, 0, 115, true), IPV4_OK],
      ['ok with trailing bytes received (total < received)', (b) => checkIPv4(b, 0, 120, true), IPV4_OK],
      ['short: 19 bytes', (b) => checkIPv4(b, 0, 19, true), IPV4_ERR_SHORT],
      ['short: nothing', (b) => checkIPv4(b, 0, 0, true), IPV4_ERR_SHORT],
      ['version 6', (b) => ((b[0] = 0x65), checkIPv4(b, 0, 115, true)), IPV4_ERR_VERSION],
      ['version 0', (b) => ((b[0] = 0x05), checkIPv4(b, 0, 115, true)), IPV4_ERR_VERSION],
      ['IHL 4', (b) => ((b[0] = 0x44), checkIPv4(b, 0, 115, true)), IPV4_ERR_IHL],
      ['IHL 0', (b) => ((b[0] = 0x40), checkIPv4(b, 0, 115, true)), IPV4_ERR_IHL],
      ['total length 19 < header', (b) => (b.writeUInt16BE(19, 2), checkIPv4(b, 0, 115, true)), IPV4_ERR_HEADER_LENGTH],
      ['IHL 15 (60 bytes) > total 40', (b) => ((b[0] = 0x4f), b.writeUInt16BE(40, 2), checkIPv4(b, 0, 115, true)), IPV4_ERR_HEADER_LENGTH],
      ['total length > received', (b) => checkIPv4(b, 0, 114, true), IPV4_ERR_TOTAL_LENGTH],
      ['IHL 15 with only 40 bytes received', (b) => ((b[0] = 0x4f), b.writeUInt16BE(60, 2), checkIPv4(b, 0, 40, true)), IPV4_ERR_TOTAL_LENGTH],
      ['checksum off by one', (b) => (b.writeUInt16BE(0xb862, 10), checkIPv4(b, 0, 115, true)), IPV4_ERR_CHECKSUM],
      ['a bit flipped in the source', (b) => ((b[13] ^= 0x01), checkIPv4(b, 0, 115, true)), IPV4_ERR_CHECKSUM],
      ['checksum not verified when asked not to', (b) => (b.writeUInt16BE(0, 10), checkIPv4(b, 0, 115, false)), IPV4_OK],
    ];
    it.each(cases)('%s', (_name, run, expected) => {
      expect(run(classicDatagram(0))).toBe(expected);
    });
  });
});
