/**
 * The UDP header view (src/ipip/udp.ts): a known header parsed, built byte for byte into a
 * buffer poisoned with 0xA5, at a non-zero offset (STYLE rule 14).
 */
import { describe, expect, it } from 'vitest';
import {
  IPPROTO_UDP,
  UDP_HEADER,
  UDP_OFF_CHECKSUM,
  UDP_OFF_LENGTH,
  getUdpChecksum,
  getUdpLength,
  setUdpChecksum,
  setUdpLength,
} from '../../src/ipip/udp.js';

/** 5353 -> 53, Length 16 (8 bytes of data), Checksum 0xfe12. */
const HDR = Buffer.from('14e90035 0010fe12'.replace(/ /g, ''), 'hex');

describe('UDP header view (RFC 768)', () => {
  it('offsets are those of the RFC diagram', () => {
    expect([UDP_HEADER, UDP_OFF_LENGTH, UDP_OFF_CHECKSUM, IPPROTO_UDP]).toEqual([8, 4, 6, 17]);
  });

  it('parses Length and Checksum, at offset 0 and at a non-zero offset', () => {
    for (const u of [0, 23]) {
      const b = Buffer.alloc(u + UDP_HEADER + 8, 0xa5);
      HDR.copy(b, u);
      expect(getUdpLength(b, u), `u ${u}`).toBe(16);
      expect(getUdpChecksum(b, u)).toBe(0xfe12);
    }
    // 0: the sender computed no checksum.
    expect(getUdpChecksum(Buffer.from('14e9003500100000', 'hex'), 0)).toBe(0);
  });

  it('writes Length and Checksum byte for byte into a poisoned buffer, touching nothing else', () => {
    const u = 11;
    const b = Buffer.alloc(u + UDP_HEADER + 4, 0xa5);
    HDR.copy(b, u, 0, UDP_OFF_LENGTH); // the ports: not the setters' part
    setUdpLength(b, u, 16);
    setUdpChecksum(b, u, 0xfe12);
    expect(b.equals(Buffer.concat([Buffer.alloc(u, 0xa5), HDR, Buffer.alloc(4, 0xa5)]))).toBe(true);
    setUdpLength(b, u, 0xffff);
    setUdpChecksum(b, u, 0xffff);
    expect([getUdpLength(b, u), getUdpChecksum(b, u)]).toEqual([0xffff, 0xffff]);
  });
});
