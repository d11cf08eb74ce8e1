/**
 * Outer IPv4 options on decapsulation (Tunnel.decapsulate, check 3). The kernel verifies the
 * outer header checksum before the raw socket sees a datagram (RFC 1122 §3.2.1.2, Linux
 * ip_rcv_core) and then, on local delivery, fills in Record Route and Timestamp options
 * (RFC 791 "Record Route", "Internet Timestamp") without recomputing it: the datagram the raw
 * socket hands over carries a stale checksum. So an outer header with options is taken on its
 * structure alone; one without options is still checked byte for byte.
 *
 * Byte vectors: B (198.51.100.2) receives from A (192.0.2.1) INNER_1 under an outer header of
 * IHL 7 or 8, built here by hand, as they leave A and as the kernel at B hands them over.
 */
import { describe, expect, it } from 'vitest';
import { computeHeaderChecksum, PacketResult, Verdict, VERDICT_NAMES } from '../../src/ipip/index.js';
import { hex } from '../helpers/packets.js';
import { INNER_1, place, sides } from '../helpers/tunnel-sides.js';

/**
 * As sent by A: IHL 7, total 56; Record Route (type 7, length 7, pointer 4: one empty slot),
 * then End of Option List. Checksum 0x4184 is correct for these bytes.
 */
const RR_SENT = hex(
  '47 00 00 38 00 00 40 00 40 04 41 84 c0 00 02 01 c6 33 64 02  07 07 04 00 00 00 00 00',
);
/** As B's kernel delivers it: the slot holds B's address, the pointer moved to 8; checksum unchanged. */
const RR_DELIVERED = hex(
  '47 00 00 38 00 00 40 00 40 04 41 84 c0 00 02 01 c6 33 64 02  07 07 08 c6 33 64 02 00',
);
/**
 * Timestamp (type 68, length 12, pointer 5, overflow 0 / flag 0 = timestamps only: two slots),
 * as sent and as delivered (first slot = ms since midnight UT, 0x0123abcd; pointer 9).
 */
const TS_SENT = hex(
  '48 00 00 3c 00 00 40 00 40 04 00 00 c0 00 02 01 c6 33 64 02  44 0c 05 00 00 00 00 00 00 00 00 00',
);
const TS_DELIVERED = hex(
  '48 00 00 3c 00 00 40 00 40 04 00 00 c0 00 02 01 c6 33 64 02  44 0c 09 00 01 23 ab cd 00 00 00 00',
);

/** `outerHeader` followed by INNER_1, the sent header's checksum written into both. */
function datagram(outerHeader: Buffer, checksumFrom: Buffer = outerHeader): Buffer {
  const sent = Buffer.from(checksumFrom);
  sent.writeUInt16BE(0, 10);
  const sum = computeHeaderChecksum(sent, 0);
  const h = Buffer.from(outerHeader);
  h.writeUInt16BE(sum, 10);
  return Buffer.concat([h, INNER_1]);
}

function decap(wire: Buffer): { verdict: string; offset: number; length: number; out: Buffer } {
  const { b } = sides();
  const off = 9;
  const buf = place(wire, off);
  const out = new PacketResult();
  const v = b.decapsulate(buf, off, wire.length, out);
  return { verdict: VERDICT_NAMES[v]!, offset: out.offset, length: out.length, out: buf.subarray(out.offset, out.offset + out.length) };
}

describe('decapsulate: outer header options (RFC 791 §3.1, RFC 1122 §3.2.1.8)', () => {
  it('the Record Route vector as sent has a correct checksum (0x4184)', () => {
    const h = Buffer.from(RR_SENT);
    h.writeUInt16BE(0, 10);
    expect(computeHeaderChecksum(h, 0)).toBe(0x4184);
  });

  it('Record Route as sent (checksum correct): forwards the inner packet unchanged', () => {
    const r = decap(datagram(RR_SENT));
    expect(r.verdict).toBe('forward');
    expect(r.offset).toBe(9 + 28);
    expect(r.length).toBe(INNER_1.length);
    expect(r.out.equals(INNER_1)).toBe(true);
  });

  it('Record Route filled in by the kernel (checksum stale): forwards, not bad_checksum', () => {
    const r = decap(datagram(RR_DELIVERED, RR_SENT));
    expect(r.verdict).toBe('forward');
    expect(r.out.equals(INNER_1)).toBe(true);
  });

  it('Timestamp filled in by the kernel (checksum stale): forwards', () => {
    const r = decap(datagram(TS_DELIVERED, TS_SENT));
    expect(r.verdict).toBe('forward');
    expect(r.offset).toBe(9 + 32);
    expect(r.out.equals(INNER_1)).toBe(true);
  });

  it('with options, the structure is still checked: IHL past the total length is malformed', () => {
    const w = datagram(RR_SENT);
    w.writeUInt16BE(24, 2); // total 24 < header 28
    expect(decap(w).verdict).toBe('malformed');
  });

  it('with options, protocol, destination and peer are still checked', () => {
    const w = datagram(RR_DELIVERED, RR_SENT);
    w[12] = 203; // outer source 203.0.2.1: nobody's endpoint
    expect(decap(w).verdict).toBe('unknown_peer');
    const x = datagram(RR_DELIVERED, RR_SENT);
    x[9] = 41;
    expect(decap(x).verdict).toBe('not_ipip');
  });

  it('without options a wrong checksum is still bad_checksum (bytes the kernel did not verify)', () => {
    const w = Buffer.concat([hex('45 00 00 30 00 00 40 00 40 04 4e 93 c0 00 02 01 c6 33 64 02'), INNER_1]);
    expect(decap(w).verdict).toBe('forward');
    w[11] ^= 0x40;
    expect(decap(w).verdict).toBe('bad_checksum');
    expect(Verdict.bad_checksum).toBeGreaterThan(0);
  });
});
