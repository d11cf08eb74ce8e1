/**
 * Properties of segmentation (src/ipip/segment.ts) over hostile input: a virtio_net_hdr and
 * packet of random bytes, or a valid TCP or UDP super-packet mutated field by field (header
 * included). For every input the checks (`checkTcp4Gso`, `checkUdp4Gso`, `completeChecksum`,
 * `groSegmentSize`) do not throw, read only the slot (test/helpers/guarded.ts) and return one
 * answer in range; when a check accepts, every segment is written inside its own slot of
 * hdrLen + gso_size bytes, and the segments carry the super-packet's payload in order.
 */
import { Buffer } from 'node:buffer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkTcp4Gso,
  checkUdp4Gso,
  completeChecksum,
  getVnetGsoSize,
  groSegmentSize,
  tcp4SegmentCount,
  VNET_HDR_LEN,
  writeTcp4Segment,
  writeUdp4Segment,
} from '../../src/ipip/index.js';
import { mutate, mutations, params } from '../helpers/arbitraries.js';
import { expectGuards, inSlot, lay } from '../helpers/guarded.js';
import { ACK, PSH, superPacket, tcpPacket, udpSuperPacket } from '../helpers/offload-packets.js';

/** A valid TCP super-packet: any payload size, gso size, IDs, timestamp option or not. */
const tcpSuper = fc
  .record({ pay: fc.integer({ min: 1, max: 3000 }), gso: fc.integer({ min: 1, max: 1448 }), id: fc.nat(0xffff), seq: fc.integer(), ts: fc.boolean(), psh: fc.boolean(), seed: fc.nat() })
  .map((s) => {
    const payload = Buffer.alloc(s.pay, s.seed & 0xff);
    const pkt = tcpPacket({ payload, id: s.id, seq: s.seq, ts: s.ts ? [1, 2] : undefined, flags: s.psh ? ACK | PSH : ACK, csum: 'partial' });
    return superPacket(pkt, s.gso);
  });

/** A valid UDP super-packet (UDP_L4). */
const udpSuper = fc
  .record({ pay: fc.integer({ min: 1, max: 3000 }), gso: fc.integer({ min: 1, max: 1472 }), id: fc.nat(0xffff), seed: fc.nat() })
  .map((s) => udpSuperPacket({ payload: Buffer.alloc(s.pay, s.seed & 0xff), id: s.id }, s.gso));

/** [vnet | packet]: random bytes, or a valid super-packet mutated (vnet header too), with a wrong length sometimes. */
const fromTun = fc.oneof(
  fc.uint8Array({ minLength: VNET_HDR_LEN, maxLength: 200 }).map((u) => Buffer.from(u)),
  fc.tuple(fc.oneof(tcpSuper, udpSuper), mutations).map(([p, m]) => mutate(p, m.muts, m.cut, m.tail, m.fix ? VNET_HDR_LEN : null)),
).filter((b) => b.length >= VNET_HDR_LEN);

/** What a check says about a slot: the header length, in range. */
function expectHdrLen(hdrLen: number, len: number): void {
  expect(Number.isInteger(hdrLen) && hdrLen >= 0 && hdrLen < Math.max(len, 1)).toBe(true);
}

/** Write every segment of an accepted super-packet into its own guarded slot; return their payloads joined. */
function segmentEach(buf: Buffer, off: number, len: number, hdrLen: number, gso: number, udp: boolean): Buffer {
  const n = tcp4SegmentCount(len, hdrLen, gso);
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const slot = lay(new Uint8Array(hdrLen + gso), 0xa5, 0xa5);
    const w = udp ? writeUdp4Segment(buf, off, len, hdrLen, gso, i, slot.buf, slot.start) : writeTcp4Segment(buf, off, len, hdrLen, gso, i, slot.buf, slot.start);
    expectGuards(slot, hdrLen + gso, 0xa5, 0xa5, `segment ${i}`);
    expect(w).toBeGreaterThan(hdrLen);
    expect(w).toBeLessThanOrEqual(hdrLen + gso);
    expect(slot.buf.readUInt16BE(slot.start + 2)).toBe(w); // its own Total Length
    parts.push(Buffer.from(slot.buf.subarray(slot.start + hdrLen, slot.start + w)));
  }
  return Buffer.concat(parts);
}

describe('segmentation on any bytes', () => {
  it('the checks never throw, read only the slot and answer a header length in range; accepted ones segment inside their slots', () => {
    fc.assert(
      fc.property(fromTun, (slot) => {
        const len = slot.length - VNET_HDR_LEN;
        const { result } = inSlot(slot, (l) => [checkTcp4Gso(l.buf, l.start, l.start + VNET_HDR_LEN, len), checkUdp4Gso(l.buf, l.start, l.start + VNET_HDR_LEN, len)], undefined, 'check');
        const [tcp, udp] = result;
        expectHdrLen(tcp, len);
        expectHdrLen(udp, len);
        expect(tcp === 0 || udp === 0).toBe(true); // one verdict: never both kinds
        const hdrLen = tcp || udp;
        if (hdrLen === 0) return;
        const gso = getVnetGsoSize(slot, 0);
        expect(gso).toBeGreaterThan(0);
        if (gso > 4096) return; // the data path refuses a segment larger than its slot before writing
        const { result: data } = inSlot(slot, (l) => segmentEach(l.buf, l.start + VNET_HDR_LEN, len, hdrLen, gso, udp > 0), (d) => d.toString('hex'), 'segment');
        expect(data.equals(slot.subarray(VNET_HDR_LEN + hdrLen))).toBe(true); // the payload, in order, nothing more
      }),
      params(),
    );
  });

  it('completeChecksum writes only its two bytes inside the packet, for any csum_start and csum_offset', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: -2, max: 0xffff }), fc.integer({ min: -2, max: 0xffff }), (u, start, offset) => {
        const { result, after } = inSlot(u, (l) => completeChecksum(l.buf, l.start, u.length, start, offset), undefined, 'completeChecksum');
        let changed = 0;
        for (let i = 0; i < u.length; i++) if (after[i] !== u[i]) changed++;
        if (!result) expect(changed).toBe(0);
        else {
          expect(start + offset + 2).toBeLessThanOrEqual(u.length);
          expect(changed).toBeLessThanOrEqual(2);
        }
      }),
      params(),
    );
  });

  it('groSegmentSize reads only the packet and answers 0 or a size below the MTU; what it accepts is cut into TUN-MTU slots', () => {
    const decapsulated = fc.oneof(
      fc.uint8Array({ minLength: 20, maxLength: 200 }).map((u) => Buffer.from(u)),
      fc.tuple(tcpSuper, mutations).map(([b, m]) => mutate(b.subarray(VNET_HDR_LEN), m.muts, m.cut, m.tail, m.fix ? 0 : null)),
    );
    fc.assert(
      fc.property(decapsulated, fc.integer({ min: 68, max: 1500 }), (u, mtu) => {
        const { result: gso } = inSlot(u, (l) => groSegmentSize(l.buf, l.start, u.length, mtu), undefined, 'groSegmentSize');
        expect(Number.isInteger(gso) && gso >= 0 && gso < mtu).toBe(true);
        if (gso === 0 || u.length <= mtu) return;
        // As receive.ts cuts it for a TUN without offloads: segments of at most the TUN's MTU.
        const hdrLen = mtu - gso;
        const { result: data } = inSlot(u, (l) => segmentEach(l.buf, l.start, u.length, hdrLen, gso, false), (d) => d.toString('hex'), 'gro re-segment');
        expect(data.equals(u.subarray(hdrLen))).toBe(true);
      }),
      params(),
    );
  });
});
