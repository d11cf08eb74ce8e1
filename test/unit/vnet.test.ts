/**
 * The virtio_net_hdr view (src/ipip/vnet.ts): a known header parsed field by field, built byte
 * for byte into a buffer poisoned with 0xA5, at a non-zero offset (STYLE rule 14).
 */
import { describe, expect, it } from 'vitest';
import {
  VNET_F_DATA_VALID,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_ECN,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_GSO_TCPV6,
  VNET_GSO_UDP,
  VNET_GSO_UDP_L4,
  VNET_HDR_LEN,
  VNET_OFF_CSUM_OFFSET,
  VNET_OFF_CSUM_START,
  VNET_OFF_FLAGS,
  VNET_OFF_GSO_SIZE,
  VNET_OFF_GSO_TYPE,
  VNET_OFF_HDR_LEN,
  getVnetCsumOffset,
  getVnetCsumStart,
  getVnetFlags,
  getVnetGsoSize,
  getVnetGsoType,
  getVnetHdrLen,
  writeVnetHdr,
  writeVnetHdrNone,
} from '../../src/ipip/vnet.js';

/**
 * A TCPV4 super-packet's header as Linux writes it for a TCP/IPv4 flow with timestamps:
 * NEEDS_CSUM, TCPV4, hdr_len 52, gso_size 1448, csum_start 20, csum_offset 16 (little-endian).
 */
const TSO = Buffer.from('01 01 34 00 a8 05 14 00 10 00'.replace(/ /g, ''), 'hex');

describe('virtio_net_hdr view (include/uapi/linux/virtio_net.h)', () => {
  it('offsets and values are those of the kernel header', () => {
    expect(VNET_HDR_LEN).toBe(10);
    expect([VNET_OFF_FLAGS, VNET_OFF_GSO_TYPE, VNET_OFF_HDR_LEN, VNET_OFF_GSO_SIZE, VNET_OFF_CSUM_START, VNET_OFF_CSUM_OFFSET]).toEqual([0, 1, 2, 4, 6, 8]);
    expect([VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID]).toEqual([1, 2]);
    expect([VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_UDP, VNET_GSO_TCPV6, VNET_GSO_UDP_L4, VNET_GSO_ECN]).toEqual([0, 1, 3, 4, 5, 0x80]);
  });

  it('parses every field of a known header, at offset 0 and at a non-zero offset', () => {
    for (const off of [0, 37]) {
      const b = Buffer.alloc(off + VNET_HDR_LEN + 5, 0xa5);
      TSO.copy(b, off);
      expect(getVnetFlags(b, off), `off ${off}`).toBe(VNET_F_NEEDS_CSUM);
      expect(getVnetGsoType(b, off)).toBe(VNET_GSO_TCPV4);
      expect(getVnetHdrLen(b, off)).toBe(52);
      expect(getVnetGsoSize(b, off)).toBe(1448);
      expect(getVnetCsumStart(b, off)).toBe(20);
      expect(getVnetCsumOffset(b, off)).toBe(16);
    }
  });

  it('builds the known header byte for byte into a poisoned buffer, touching nothing around it', () => {
    const off = 13;
    const b = Buffer.alloc(off + VNET_HDR_LEN + 5, 0xa5);
    writeVnetHdr(b, off, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 52, 1448, 20, 16);
    expect(b.equals(Buffer.concat([Buffer.alloc(off, 0xa5), TSO, Buffer.alloc(5, 0xa5)]))).toBe(true);
  });

  it('round-trips 16-bit fields at their limits (little-endian, both bytes)', () => {
    const b = Buffer.alloc(VNET_HDR_LEN + 3, 0xa5);
    writeVnetHdr(b, 3, VNET_F_DATA_VALID, VNET_GSO_UDP_L4 | VNET_GSO_ECN, 0xffff, 0x0100, 0x00ff, 0xfffe);
    expect(b.subarray(3).equals(Buffer.from('02 85 ff ff 00 01 ff 00 fe ff'.replace(/ /g, ''), 'hex'))).toBe(true);
    expect([getVnetFlags(b, 3), getVnetGsoType(b, 3), getVnetHdrLen(b, 3), getVnetGsoSize(b, 3), getVnetCsumStart(b, 3), getVnetCsumOffset(b, 3)]).toEqual([
      2, 0x85, 0xffff, 0x100, 0xff, 0xfffe,
    ]);
  });

  it('writeVnetHdrNone zeroes exactly the 10 bytes of the header', () => {
    const b = Buffer.alloc(7 + VNET_HDR_LEN + 7, 0xa5);
    writeVnetHdrNone(b, 7);
    expect(b.equals(Buffer.concat([Buffer.alloc(7, 0xa5), Buffer.alloc(VNET_HDR_LEN), Buffer.alloc(7, 0xa5)]))).toBe(true);
    expect([getVnetFlags(b, 7), getVnetGsoType(b, 7), getVnetHdrLen(b, 7), getVnetGsoSize(b, 7), getVnetCsumStart(b, 7), getVnetCsumOffset(b, 7)]).toEqual([0, 0, 0, 0, 0, 0]);
  });
});
