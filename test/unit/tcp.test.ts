/**
 * The TCP header view (src/ipip/tcp.ts): a known header parsed field by field, the fields the
 * offload path writes built into a buffer poisoned with 0xA5, at non-zero offsets, and the
 * pseudo-header sum (STYLE rule 14).
 */
import { describe, expect, it } from 'vitest';
import {
  IPPROTO_TCP,
  TCP_ACK,
  TCP_CSUM_OFFSET,
  TCP_CWR,
  TCP_ECE,
  TCP_FIN,
  TCP_MIN_HEADER,
  TCP_OFF_ACK,
  TCP_OFF_CHECKSUM,
  TCP_OFF_DATA_OFFSET,
  TCP_OFF_DST_PORT,
  TCP_OFF_FLAGS,
  TCP_OFF_SEQ,
  TCP_OFF_SRC_PORT,
  TCP_OFF_URGENT,
  TCP_OFF_WINDOW,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  TCP_TIMESTAMP_HEADER,
  TCP_TIMESTAMP_WORD,
  TCP_URG,
  getTcpFlags,
  getTcpHeaderLength,
  getTcpSeq,
  setTcpChecksum,
  setTcpFlags,
  setTcpSeq,
  tcpPseudoSum,
} from '../../src/ipip/tcp.js';

/**
 * A TCP header with Linux's timestamp option: 40000 -> 5201, seq 0xfffffc00, ack 0x01020304,
 * data offset 8 (32 bytes), ACK+PSH, window 1234, checksum 0xbeef, NOP NOP TS 0x11223344 0x55667788.
 */
const HDR = Buffer.from('9c401451 fffffc00 01020304 801804d2 beef0000 0101080a 11223344 55667788'.replace(/ /g, ''), 'hex');

describe('TCP header view (RFC 9293 §3.1)', () => {
  it('offsets and flags are those of the RFC diagram', () => {
    expect([TCP_OFF_SRC_PORT, TCP_OFF_DST_PORT, TCP_OFF_SEQ, TCP_OFF_ACK, TCP_OFF_DATA_OFFSET, TCP_OFF_FLAGS, TCP_OFF_WINDOW, TCP_OFF_CHECKSUM, TCP_OFF_URGENT]).toEqual([
      0, 2, 4, 8, 12, 13, 14, 16, 18,
    ]);
    expect([TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR]).toEqual([1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80]);
    expect([TCP_MIN_HEADER, TCP_TIMESTAMP_HEADER, TCP_CSUM_OFFSET, IPPROTO_TCP]).toEqual([20, 32, 16, 6]);
    expect(TCP_TIMESTAMP_WORD).toBe(HDR.readInt32BE(20)); // NOP NOP kind 8 length 10
  });

  it('parses the known header, at offset 0 and at a non-zero offset', () => {
    for (const t of [0, 41]) {
      const b = Buffer.alloc(t + HDR.length + 3, 0xa5);
      HDR.copy(b, t);
      expect(getTcpSeq(b, t), `t ${t}`).toBe(0xfffffc00 | 0); // signed int32
      expect(getTcpSeq(b, t)).toBe(b.readInt32BE(t + 4));
      expect(getTcpHeaderLength(b, t)).toBe(32);
      expect(getTcpFlags(b, t)).toBe(TCP_ACK | TCP_PSH);
    }
    const plain = Buffer.from(HDR);
    plain[TCP_OFF_DATA_OFFSET] = 0x5f; // data offset 5, the reserved bits set: ignored
    expect(getTcpHeaderLength(plain, 0)).toBe(20);
  });

  it('writes Sequence Number, flags and Checksum byte for byte into a poisoned buffer', () => {
    const t = 13;
    const b = Buffer.alloc(t + HDR.length + 5, 0xa5);
    // The bytes the setters do not own, copied in; theirs left poisoned until set.
    HDR.copy(b, t);
    b.fill(0xa5, t + TCP_OFF_SEQ, t + TCP_OFF_SEQ + 4);
    b[t + TCP_OFF_FLAGS] = 0xa5;
    b.fill(0xa5, t + TCP_OFF_CHECKSUM, t + TCP_OFF_CHECKSUM + 2);
    setTcpSeq(b, t, 0xfffffc00); // uint32 form accepted too
    setTcpFlags(b, t, TCP_ACK | TCP_PSH);
    setTcpChecksum(b, t, 0xbeef);
    expect(b.equals(Buffer.concat([Buffer.alloc(t, 0xa5), HDR, Buffer.alloc(5, 0xa5)]))).toBe(true);
    setTcpSeq(b, t, -1024);
    expect(b.readUInt32BE(t + TCP_OFF_SEQ)).toBe(0xfffffc00);
    setTcpSeq(b, t, 0x7fffffff + 1); // a sum past 2^31 wraps like the kernel's u32
    expect(getTcpSeq(b, t)).toBe(-0x80000000);
  });

  it('tcpPseudoSum: source, destination, zero, protocol, TCP length (not folded)', () => {
    const ip = Buffer.alloc(5 + 20, 0xa5);
    ip.writeUInt32BE(0x0a000101, 5 + 12); // 10.0.1.1
    ip.writeUInt32BE(0x0a000201, 5 + 16); // 10.0.2.1
    expect(tcpPseudoSum(ip, 5, IPPROTO_TCP, 132)).toBe(0x0a00 + 0x0101 + 0x0a00 + 0x0201 + 6 + 132);
    ip.writeUInt32BE(0xffffffff, 5 + 12);
    ip.writeUInt32BE(0xffffffff, 5 + 16);
    expect(tcpPseudoSum(ip, 5, 17, 0xffff)).toBe(4 * 0xffff + 17 + 0xffff); // at most 0x4ffff + 17
  });
});
