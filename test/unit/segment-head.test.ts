/**
 * `writeTcp4SegmentHead` (src/ipip/segment.ts): a TSO segment's headers written alone, its
 * payload left in the super-packet (the FOU send path sends the two as two pieces). The headers
 * plus the payload where `tcp4SegmentPayload` says must be byte for byte what
 * `writeTcp4Segment` writes, the checksum right by the independent RFC 1071 of the helpers, and
 * nothing written past the headers (output poisoned with 0xA5).
 *
 *   super-packet: [IP | TCP | payload 0 | payload 1 | ... ]        segment slot: [IP | TCP ]0xA5...
 *                              ^ tcp4SegmentPayload(i)                         = writeTcp4Segment's headers
 */
import { describe, expect, it } from 'vitest';
import { ACK, CWR, FIN, l4Check, payload, PSH, tcpPacket, type TcpSpec } from '../helpers/offload-packets.js';
import { rng } from '../helpers/packets.js';
import { tcp4SegmentCount, tcp4SegmentPayload, writeTcp4Segment, writeTcp4SegmentHead } from '../../src/ipip/index.js';

const OFF = 20;
const SLOT = 2048;

/** The super-packet of `spec` at OFF in a buffer with room for its segments after it. */
function place(spec: TcpSpec): { buf: Buffer; len: number; hdrLen: number; slots: number } {
  const p = tcpPacket({ ...spec, csum: 'partial' });
  const hdrLen = 20 + (p[32]! >> 4) * 4;
  const buf = Buffer.alloc(OFF + p.length + 64 * SLOT, 0xa5);
  p.copy(buf, OFF);
  return { buf, len: p.length, hdrLen, slots: OFF + ((p.length + 63) & ~63) + 64 };
}

function check(spec: TcpSpec, gso: number): void {
  const { buf, len, hdrLen, slots } = place(spec);
  const count = tcp4SegmentCount(len, hdrLen, gso);
  const before = Buffer.from(buf.subarray(OFF, OFF + len));
  const ref = Buffer.alloc(SLOT, 0xa5);
  for (let i = 0; i < count; i++) {
    const o = slots + i * SLOT;
    const total = writeTcp4SegmentHead(buf, OFF, len, hdrLen, gso, i, buf, o);
    expect(writeTcp4Segment(buf, OFF, len, hdrLen, gso, i, ref, 0)).toBe(total);
    // The headers alone in the slot, nothing after them.
    expect(buf.subarray(o, o + hdrLen).equals(ref.subarray(0, hdrLen))).toBe(true);
    expect(buf.subarray(o + hdrLen, o + SLOT).every((x) => x === 0xa5)).toBe(true);
    // With the payload from the super-packet: the whole segment, its checksum right.
    const pay = tcp4SegmentPayload(OFF, hdrLen, gso, i);
    const seg = Buffer.concat([buf.subarray(o, o + hdrLen), buf.subarray(pay, pay + total - hdrLen)]);
    expect(seg.equals(ref.subarray(0, total))).toBe(true);
    expect(l4Check(seg, 0)).toBe(0);
  }
  // The super-packet itself is not touched.
  expect(buf.subarray(OFF, OFF + len).equals(before)).toBe(true);
}

describe('writeTcp4SegmentHead', () => {
  it('writes what writeTcp4Segment writes, but the payload (timestamps, FIN+PSH+CWR, a short last segment)', () => {
    check({ ts: [7, 9], seq: 0xfffff000, flags: ACK | PSH | FIN | CWR, payload: payload(5 * 1448 + 333, 1) }, 1448);
  });

  it('without options, an odd-sized last segment, and any segment size (seeded random)', () => {
    check({ flags: ACK, payload: payload(3 * 1000 + 1, 2) }, 1000);
    const u = rng(16);
    // rng gives uint32s: a float in [0, 1).
    const r = (): number => u() / 0x100000000;
    for (let t = 0; t < 40; t++) {
      const gso = 1 + Math.floor(r() * 1460);
      const n = 1 + Math.floor(r() * 20);
      const extra = Math.floor(r() * gso);
      const flags = ACK | (r() < 0.5 ? PSH : 0) | (r() < 0.3 ? FIN : 0) | (r() < 0.3 ? CWR : 0);
      const spec: TcpSpec = { seq: u() | 0, flags, payload: payload(Math.min(n * gso + extra, 60_000), t + 3) };
      if (r() < 0.5) spec.ts = [t, t + 1];
      check(spec, gso);
    }
  });
});
