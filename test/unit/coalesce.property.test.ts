/**
 * Properties of coalescing (src/ipip/coalesce.ts). Over hostile batches (segments and datagrams
 * of a few flows, mutated field by field, each still a valid IPv4 datagram, which is what
 * decapsulation hands over, those larger than the TUN's MTU marked as the underlay's GRO output
 * the way receive.ts marks them): `coalesce` does not throw, writes only the 10 bytes before each
 * input, the inputs and its pool, reads nothing between the slots (the gaps are poisoned two
 * ways and the output must not change), and accounts for every input exactly once. And the
 * round trip: a TCP or UDP super-packet segmented (segment.ts) then coalesced gives the
 * super-packet's bytes back.
 */
import { Buffer } from 'node:buffer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkIPv4,
  checkTcp4Gso,
  checkUdp4Gso,
  Coalescer,
  computeHeaderChecksum,
  getVnetGsoSize,
  groSegmentSize,
  IPV4_OK,
  tcp4SegmentCount,
  VNET_HDR_LEN,
  writeTcp4Segment,
  writeUdp4Segment,
} from '../../src/ipip/index.js';
import { mutate, mutations, params } from '../helpers/arbitraries.js';
import { ACK, HEAD, payload, PSH, SLOT, superPacket, tcpPacket, udpPacket, udpSuperPacket } from '../helpers/offload-packets.js';

const POOL = 70_000 * 2;

/** A segment or datagram of one of three flows, with a small payload and a sequence number that may follow. */
const member = fc
  .record({ udp: fc.boolean(), flow: fc.nat(2), step: fc.nat(3), size: fc.integer({ min: 1, max: 600 }), psh: fc.boolean(), id: fc.nat(5), ts: fc.boolean() })
  .map((s) => {
    const sport = 40000 + s.flow;
    const data = payload(s.size, s.flow * 7 + s.step);
    if (s.udp) return udpPacket({ sport, payload: data, id: s.id });
    return tcpPacket({ sport, seq: s.step * 600, payload: data, flags: s.psh ? ACK | PSH : ACK, id: s.id, ts: s.ts ? [5, 6] : undefined });
  });

/** A member mutated, then made a valid IPv4 datagram again (Total Length and header checksum). */
const hostile = fc.tuple(member, mutations, fc.boolean()).map(([p, m, keep]) => {
  if (keep) return p;
  const b = mutate(p, m.muts, m.cut, m.tail, null);
  if (b.length < 20 || b.length > SLOT - HEAD) return p;
  b[0] = 0x40 | Math.max(5, b[0] & 0x0f);
  b.writeUInt16BE(b.length, 2);
  if ((b[0] & 0x0f) * 4 > b.length) return p;
  b.writeUInt16BE(computeHeaderChecksum(b, 0), 10);
  return checkIPv4(b, 0, b.length, true) === IPV4_OK ? b : p;
});

interface Run {
  count: number;
  outs: string[];
  meta: number[];
  buf: Buffer;
}

/**
 * Lay `pkts` out as the raw slab after decapsulation (slot j at j*SLOT, packet at +HEAD), gaps and
 * pool filled with `fill`, and coalesce (`inGso`: the kernel-GRO marks, as receive.ts sets them).
 */
function coalesceWith(pkts: Buffer[], fill: number, udp: boolean, pool: number, inGso: Int32Array | null = null): Run {
  const buf = Buffer.alloc(pkts.length * SLOT + pool, fill);
  const offs = new Int32Array(pkts.length);
  const lens = new Int32Array(pkts.length);
  pkts.forEach((p, j) => {
    p.copy(buf, j * SLOT + HEAD);
    offs[j] = j * SLOT + HEAD;
    lens[j] = p.length;
  });
  const c = new Coalescer(64, udp);
  const count = c.coalesce(buf, offs, lens, pkts.length, pkts.length * SLOT, buf.length, inGso);
  const outs: string[] = [];
  const meta: number[] = [];
  const mine = new Uint8Array(buf.length); // 1: a byte coalesce may write
  pkts.forEach((p, j) => mine.fill(1, offs[j] - VNET_HDR_LEN, offs[j] + p.length));
  for (let x = 0; x < count; x++) {
    outs.push(buf.toString('hex', c.offs[x], c.offs[x] + c.lens[x]));
    meta.push(c.offs[x], c.lens[x], c.segments[x], c.bytes[x], c.first[x]);
    if (c.offs[x] >= pkts.length * SLOT) mine.fill(1, c.offs[x], c.offs[x] + c.lens[x]);
  }
  for (let i = 0; i < buf.length; i++) if (mine[i] === 0 && buf[i] !== fill) expect.fail(`coalesce wrote byte ${i}, outside every input and output`);
  // Every input accounted for once: the outputs' segments and bytes add up to the inputs'.
  expect(meta.filter((_, i) => i % 5 === 2).reduce((a, b) => a + b, 0)).toBe(pkts.length);
  expect(meta.filter((_, i) => i % 5 === 3).reduce((a, b) => a + b, 0)).toBe(pkts.reduce((a, p) => a + p.length, 0));
  return { count, outs, meta, buf };
}

describe('Coalescer on hostile batches', () => {
  it('never throws, writes only its own bytes, reads nothing between the slots, accounts for every input', () => {
    fc.assert(
      fc.property(fc.array(hostile, { minLength: 1, maxLength: 24 }), fc.boolean(), fc.oneof(fc.constant(POOL), fc.nat(4000)), fc.integer({ min: 68, max: 700 }), (pkts, udp, pool, tunMtu) => {
        // What the underlay's GRO would have merged (larger than the TUN's MTU): marked as receive.ts marks it.
        const inGso = Int32Array.from(pkts, (p) => (p.length > tunMtu ? groSegmentSize(p, 0, p.length, tunMtu) : 0));
        const a = coalesceWith(pkts, 0xa5, udp, pool, inGso);
        const b = coalesceWith(pkts, 0x5a, udp, pool, inGso);
        expect(b.count).toBe(a.count);
        expect(b.meta).toEqual(a.meta);
        expect(b.outs).toEqual(a.outs);
        expect(a.count).toBeGreaterThanOrEqual(1);
        expect(a.count).toBeLessThanOrEqual(pkts.length);
      }),
      params(),
    );
  });
});

/** Segment [vnet | super-packet] with src/ipip; the segments as separate buffers. */
function segments(sp: Buffer, udp: boolean): Buffer[] {
  const len = sp.length - VNET_HDR_LEN;
  const hdrLen = udp ? checkUdp4Gso(sp, 0, VNET_HDR_LEN, len) : checkTcp4Gso(sp, 0, VNET_HDR_LEN, len);
  expect(hdrLen).toBeGreaterThan(0);
  const gso = getVnetGsoSize(sp, 0);
  const out: Buffer[] = [];
  for (let i = 0; i < tcp4SegmentCount(len, hdrLen, gso); i++) {
    const seg = Buffer.alloc(hdrLen + gso);
    const w = udp ? writeUdp4Segment(sp, VNET_HDR_LEN, len, hdrLen, gso, i, seg, 0) : writeTcp4Segment(sp, VNET_HDR_LEN, len, hdrLen, gso, i, seg, 0);
    out.push(seg.subarray(0, w));
  }
  return out;
}

describe('segment then coalesce', () => {
  it('gives the super-packet back byte for byte (TCP with DF, ACK or ACK+PSH, with or without timestamps; UDP with DF)', () => {
    const spec = fc
      .record({ udp: fc.boolean(), n: fc.integer({ min: 2, max: 40 }), gso: fc.integer({ min: 1, max: 1400 }), last: fc.nat(1399), id: fc.nat(0xffff), seq: fc.integer(), ts: fc.boolean(), psh: fc.boolean(), seed: fc.nat() })
      .map((s) => ({ ...s, pay: (s.n - 1) * s.gso + 1 + (s.last % s.gso) }));
    fc.assert(
      fc.property(spec, (s) => {
        const data = payload(s.pay, s.seed);
        const sp = s.udp
          ? udpSuperPacket({ payload: data, id: s.id }, s.gso)
          : superPacket(tcpPacket({ payload: data, id: s.id, seq: s.seq, ts: s.ts ? [9, 8] : undefined, flags: s.psh ? ACK | PSH : ACK, csum: 'partial' }), s.gso);
        const segs = segments(sp, s.udp);
        expect(segs.length).toBe(s.n);
        const run = coalesceWith(segs, 0xa5, s.udp, POOL);
        expect(run.count).toBe(1);
        const back = Buffer.from(run.outs[0]!, 'hex');
        // The same virtio_net_hdr and packet: IDs, flags and the checksum field (the
        // pseudo-header sum, CHECKSUM_PARTIAL) included.
        expect(back.toString('hex')).toBe(sp.toString('hex'));
      }),
      params(300),
    );
  });
});
