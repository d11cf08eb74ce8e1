/**
 * Underlay -> TUN: coalescing UDP datagrams into UDP_L4 super-packets (src/ipip/coalesce.ts,
 * `udp = true`), each checked against the reference model of the kernel's split
 * (`kernelUdpSegment`, test/helpers/offload-model.ts), which must give the datagrams back.
 */
import { describe, expect, it } from 'vitest';
import { refChecksum, rng } from '../helpers/packets.js';
import {
  HEAD,
  l4Check,
  payload,
  refPseudo,
  refSum,
  tcpPacket,
  udpFlow,
  udpPacket,
  type UdpSpec,
  zeroChecksumPayload,
} from '../helpers/offload-packets.js';
import {
  batch,
  expectAsCame,
  expectSuper,
  expectUdpSuper,
  flow,
  kernelUdpSegment,
  run,
  withoutId,
} from '../helpers/offload-model.js';
import {
  Coalescer,
  getVnetCsumOffset,
  getVnetCsumStart,
  getVnetFlags,
  getVnetGsoSize,
  getVnetGsoType,
  getVnetHdrLen,
  UDP_GRO_MAX_SEGMENTS,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_UDP_L4,
  VNET_HDR_LEN,
} from '../../src/ipip/index.js';

describe('coalescing received UDP datagrams (UDP GRO, udp = true)', () => {
  it('merges N same-size datagrams of a flow into one UDP_L4 super-packet, which the kernel splits back byte for byte', () => {
    const d = udpFlow(8, 1200, { id: 0xfffc }); // DF, consecutive IDs (wrapping)
    const { buf, offs, lens, pool } = batch(d);
    const c = new Coalescer(64, true);
    expect(c.udp).toBe(true);
    expect(c.coalesce(buf, offs, lens, d.length, pool, buf.length)).toBe(1);
    // Built in the pool, the IP header 16-byte aligned, nothing written around it.
    const h = c.offs[0]!;
    expect(h).toBeGreaterThanOrEqual(pool);
    expect((h + VNET_HDR_LEN) % 16).toBe(0);
    expect(c.lens[0]).toBe(VNET_HDR_LEN + 28 + 8 * 1200);
    expect(buf.subarray(pool, h).every((x) => x === 0xa5)).toBe(true);
    expect(buf.subarray(h + c.lens[0]!).every((x) => x === 0xa5)).toBe(true);
    expect([c.segments[0], c.bytes[0], c.first[0]]).toEqual([8, 8 * 1228, 0]);
    // The fields one by one.
    const sp = buf.subarray(h + VNET_HDR_LEN, h + c.lens[0]!);
    expect(getVnetFlags(buf, h)).toBe(VNET_F_NEEDS_CSUM);
    expect(getVnetGsoType(buf, h)).toBe(VNET_GSO_UDP_L4);
    expect(getVnetHdrLen(buf, h)).toBe(28);
    expect(getVnetGsoSize(buf, h)).toBe(1200);
    expect(getVnetCsumStart(buf, h)).toBe(20);
    expect(getVnetCsumOffset(buf, h)).toBe(6);
    expect(sp.readUInt16BE(2)).toBe(28 + 9600); // IPv4 Total Length
    expect(sp.readUInt16BE(4)).toBe(0xfffc); // the first datagram's ID
    expect(sp.readUInt16BE(6)).toBe(0x4000);
    expect(refChecksum(sp, 0, 20)).toBe(0);
    expect(sp.readUInt16BE(24)).toBe(8 + 9600); // UDP Length: the whole
    expect(sp.readUInt16BE(26)).toBe(refSum(Buffer.alloc(0), 0, 0, refPseudo(sp, 0, 17, 8 + 9600))); // pseudo-header sum, folded
    expect(sp.subarray(0, 20).equals(Buffer.concat([d[0]!.subarray(0, 2), sp.subarray(2, 4), d[0]!.subarray(4, 10), sp.subarray(10, 12), d[0]!.subarray(12, 20)]))).toBe(true);
    // Header + concatenated payloads, and the kernel's split gives every datagram back.
    const out = run(d, undefined, true);
    expect(out.length).toBe(1);
    expectUdpSuper(out[0]!, d);
  });

  it('without DF merges only consecutive IDs, and the split gives the datagrams back exactly', () => {
    const d = udpFlow(5, 700, { frag: 0, id: 0xfffe, ttl: 17, tos: 0xb8 });
    const out = run(d, undefined, true);
    expect(out.length).toBe(1);
    expectUdpSuper(out[0]!, d);
    expect(out[0]!.pkt.readUInt16BE(6)).toBe(0);
  });

  it('with DF merges datagrams whose IDs are unrelated; the split differs from them only in ID and header checksum', () => {
    const r = rng(77);
    const d = udpFlow(6, 512).map((p) => {
      const q = Buffer.from(p);
      q.writeUInt16BE(r() & 0xffff, 4);
      q.writeUInt16BE(0, 10);
      q.writeUInt16BE(refChecksum(q, 0, 20), 10);
      return q;
    });
    const out = run(d, undefined, true);
    expect(out.length).toBe(1);
    expectUdpSuper(out[0]!, d, 'any');
    expect(out[0]!.pkt.readUInt16BE(4)).toBe(d[0]!.readUInt16BE(4));
  });

  it('keeps a checksum that computes to 0 as 0xffff through the merge and the split', () => {
    const d = udpFlow(3, 300);
    d[1] = udpPacket({ id: 301, payload: zeroChecksumPayload({ id: 301, payload: payload(300, 555) }) });
    expect(d[1]!.readUInt16BE(26)).toBe(0xffff);
    expect(l4Check(d[1]!, 0)).toBe(0);
    const out = run(d, undefined, true);
    expect(out.length).toBe(1);
    expectUdpSuper(out[0]!, d);
  });

  it('writes a lone datagram in place with a zero vnet header in the 10 bytes before it', () => {
    const p = udpPacket({ payload: payload(100, 3) });
    const { buf, offs, lens, pool } = batch([p]);
    const c = new Coalescer(4, true);
    expect(c.coalesce(buf, offs, lens, 1, pool, buf.length)).toBe(1);
    expect(c.offs[0]).toBe(HEAD - VNET_HDR_LEN);
    expect(c.lens[0]).toBe(p.length + VNET_HDR_LEN);
    expect([c.segments[0], c.bytes[0], c.first[0]]).toEqual([1, p.length, 0]);
    expect(buf.subarray(0, HEAD - VNET_HDR_LEN).every((x) => x === 0xa5)).toBe(true);
    expect(buf.subarray(HEAD - VNET_HDR_LEN, HEAD).equals(Buffer.alloc(VNET_HDR_LEN))).toBe(true);
    expect(buf.subarray(HEAD, HEAD + p.length).equals(p)).toBe(true);
    expect(buf.subarray(pool).every((x) => x === 0xa5)).toBe(true); // the pool is untouched
  });

  it('a smaller datagram joins and closes the super-packet; a larger one after it starts the next', () => {
    const d = udpFlow(3, 1000);
    d.push(udpPacket({ id: 303, payload: payload(400, 77) }));
    d.push(...udpFlow(2, 1000, { id: 304 }, 2));
    const out = run(d, undefined, true);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 4], [4, 2]]);
    expectUdpSuper(out[0]!, d.slice(0, 4));
    expect(out[0]!.vnet.gsoSize).toBe(1000);
    expect(kernelUdpSegment(out[0]!).map((s) => s.length)).toEqual([1028, 1028, 1028, 428]);
    expectUdpSuper(out[1]!, d.slice(4));
  });

  it('a larger datagram does not join: it ends the super-packet and heads the next', () => {
    const d = [...udpFlow(2, 600), ...udpFlow(3, 601, { id: 302 }, 2)];
    const out = run(d, undefined, true);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 2], [2, 3]]);
    expectUdpSuper(out[0]!, d.slice(0, 2));
    expectUdpSuper(out[1]!, d.slice(2));
    // A smaller datagram after a smaller one: the first smaller one already closed it.
    const e = [...udpFlow(2, 600), udpPacket({ id: 302, payload: payload(100, 5) }), udpPacket({ id: 303, payload: payload(100, 6) })];
    const out2 = run(e, undefined, true);
    expect(out2.map((o) => [o.first, o.segments])).toEqual([[0, 3], [3, 1]]);
    expectUdpSuper(out2[0]!, e.slice(0, 3));
    expectAsCame(out2[1]!, e[3]!, 3);
  });

  const NO_DF = { frag: 0 };
  const cases: Array<[string, (d: Buffer[]) => void]> = [
    ['a different source port', (d) => (d[1] = udpPacket({ id: 301, sport: 33334, payload: payload(800, 2) }))],
    ['a different destination port', (d) => (d[1] = udpPacket({ id: 301, dport: 4434, payload: payload(800, 2) }))],
    ['a different source address', (d) => (d[1] = udpPacket({ id: 301, src: 0x0a000102, payload: payload(800, 2) }))],
    ['a different destination address', (d) => (d[1] = udpPacket({ id: 301, dst: 0x0a000202, payload: payload(800, 2) }))],
    ['a different TTL', (d) => (d[1] = udpPacket({ id: 301, ttl: 63, payload: payload(800, 2) }))],
    ['a different TOS (CE mark)', (d) => (d[1] = udpPacket({ id: 301, tos: 3, payload: payload(800, 2) }))],
    ['a different TOS (DSCP)', (d) => (d[1] = udpPacket({ id: 301, tos: 0xb8, payload: payload(800, 2) }))],
    ['DF, then no DF', (d) => (d[1] = udpPacket({ id: 301, ...NO_DF, payload: payload(800, 2) }))],
    ['no DF, then DF', (d) => (d[0] = udpPacket({ id: 300, ...NO_DF, payload: payload(800, 1) }))],
    ['a zero checksum on the second', (d) => (d[1] = udpPacket({ id: 301, csum: 'zero', payload: payload(800, 2) }))],
    ['a zero checksum on the first', (d) => (d[0] = udpPacket({ id: 300, csum: 'zero', payload: payload(800, 1) }))],
    // Data that sums to 0xffff: a zero field verifies, and only the "no checksum" rule keeps it out.
    ['a zero checksum on data that verifies with it', (d) => (d[1] = udpPacket({ id: 301, csum: 'zero', payload: zeroChecksumPayload({ id: 301, payload: payload(800, 2) }) }))],
    ['a zero checksum on a first datagram whose data verifies with it', (d) => (d[0] = udpPacket({ id: 300, csum: 'zero', payload: zeroChecksumPayload({ id: 300, payload: payload(800, 1) }) }))],
    ['a bad checksum on the second', (d) => (d[1]![100] ^= 0x10)],
    ['a bad checksum on the first', (d) => (d[0]![100] ^= 0x10)],
    ['MF set (a first fragment)', (d) => (d[1] = udpPacket({ id: 301, frag: 0x2000, payload: payload(800, 2) }))],
    ['DF and MF set', (d) => (d[1] = udpPacket({ id: 301, frag: 0x6000, payload: payload(800, 2) }))],
    ['a fragment offset', (d) => (d[1] = udpPacket({ id: 301, frag: 0x0001, payload: payload(800, 2) }))],
    ['a first datagram that is a fragment', (d) => (d[0] = udpPacket({ id: 300, frag: 0x2000, payload: payload(800, 1) }))],
    ['IP options (IHL 6)', (d) => (d[1] = udpPacket({ id: 301, ipOptions: Buffer.from([1, 1, 1, 0]), payload: payload(800, 2) }))],
    ['IP options on the first', (d) => (d[0] = udpPacket({ id: 300, ipOptions: Buffer.from([0x94, 4, 0, 0]), payload: payload(800, 1) }))],
    ['a UDP Length shorter than the IP payload', (d) => (d[1] = udpPacket({ id: 301, udpLen: 800, payload: payload(800, 2) }))],
    ['a UDP Length longer than the IP payload', (d) => (d[1] = udpPacket({ id: 301, udpLen: 809, payload: payload(800, 2) }))],
    ['no payload', (d) => (d[1] = udpPacket({ id: 301, payload: Buffer.alloc(0) }))],
    ['a bigger datagram', (d) => (d[1] = udpPacket({ id: 301, payload: payload(801, 2) }))],
    ['IDs not consecutive without DF', (d) => {
      d[0] = udpPacket({ id: 300, ...NO_DF, payload: payload(800, 1) });
      d[1] = udpPacket({ id: 302, ...NO_DF, payload: payload(800, 2) });
    }],
    ['the same ID twice without DF', (d) => {
      d[0] = udpPacket({ id: 300, ...NO_DF, payload: payload(800, 1) });
      d[1] = udpPacket({ id: 300, ...NO_DF, payload: payload(800, 2) });
    }],
    ['TCP with the same addresses and ports', (d) => (d[1] = tcpPacket({ sport: 33333, dport: 4433, ts: [1, 2], payload: payload(800, 2) }))],
  ];
  for (const [what, mutate] of cases) {
    it(`does not merge datagrams across ${what}`, () => {
      const d = udpFlow(2, 800);
      mutate(d);
      const out = run(d, undefined, true);
      expect(out.length, what).toBe(2);
      out.forEach((o, x) => expectAsCame(o, d[x]!, x, what));
    });
  }

  // A packet of a flow with an open super-packet that cannot be merged itself (a pure ACK, no
  // checksum, a fragment, IP options, no payload) is written where it is and closes the
  // super-packet (Coalescer.closeFlowOf, Linux GRO's flush), so the flow's next packet does not
  // join it and reach the TUN first.
  it('keeps a TCP flow in order across a segment of it that cannot be merged (a pure ACK)', () => {
    const segs = flow(4, 1000);
    const ack = tcpPacket({ ts: [100, 200], seq: 5000 + 2000, id: 150, payload: Buffer.alloc(0) });
    const out = run([segs[0]!, segs[1]!, ack, segs[2]!, segs[3]!]);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 2], [2, 1], [3, 2]]);
    expectSuper(out[0]!, segs.slice(0, 2));
    expect(out[1]!.pkt.equals(ack)).toBe(true);
    expectSuper(out[2]!, segs.slice(2));
  });

  it('keeps a flow in order across a datagram of it that cannot be merged', () => {
    const kinds: Array<[string, Partial<UdpSpec>]> = [
      ['no checksum', { csum: 'zero' }],
      ['no payload', { payload: Buffer.alloc(0) }],
      ['IP options', { ipOptions: Buffer.from([1, 1, 1, 0]) }],
      ['MF set', { frag: 0x6000 }],
    ];
    for (const [what, spec] of kinds) {
      const d = udpFlow(3, 400);
      d[1] = udpPacket({ id: 301, payload: payload(400, 2), ...spec });
      const out = run(d, undefined, true);
      const seen = out.flatMap((o) => (o.vnet.gsoType === VNET_GSO_UDP_L4 ? kernelUdpSegment(o) : [o.pkt]));
      expect(seen.map((p) => d.findIndex((q) => withoutId(q).equals(withoutId(p)))), what).toEqual([0, 1, 2]);
    }
  });

  it('writes a member with a bad checksum as it came; the super-packets around it stay correct', () => {
    const d = udpFlow(5, 900);
    d[2]![500] ^= 0x01;
    const out = run(d, undefined, true);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 2], [2, 1], [3, 2]]);
    expectUdpSuper(out[0]!, d.slice(0, 2));
    expectAsCame(out[1]!, d[2]!, 2);
    expectUdpSuper(out[2]!, d.slice(3));
  });

  it('does not merge into a head whose checksum is bad, and merges what follows it', () => {
    const d = udpFlow(4, 900);
    d[0]![28] ^= 0x80;
    const out = run(d, undefined, true);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 1], [1, 3]]);
    expectAsCame(out[0]!, d[0]!, 0);
    expectUdpSuper(out[1]!, d.slice(1));
  });

  it(`merges at most ${UDP_GRO_MAX_SEGMENTS} datagrams: 65 make 64 + 1`, () => {
    expect(UDP_GRO_MAX_SEGMENTS).toBe(64);
    const d = udpFlow(65, 100, { frag: 0 });
    const out = run(d, undefined, true);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 64], [64, 1]]);
    expectUdpSuper(out[0]!, d.slice(0, 64));
    expectAsCame(out[1]!, d[64]!, 64);
    // 130: 64 + 64 + 2, the third without DF continuing the ID sequence (first + position).
    const e = udpFlow(130, 10, { frag: 0 });
    const out2 = run(e, undefined, true);
    expect(out2.map((o) => [o.first, o.segments])).toEqual([[0, 64], [64, 64], [128, 2]]);
    expectUdpSuper(out2[1]!, e.slice(64, 128));
    expectUdpSuper(out2[2]!, e.slice(128));
  });

  it('stops before 65535 bytes: exactly 65535 merges, one byte more does not', () => {
    // 28 + 32 * 2000 = 64028; a last datagram of 1507 makes exactly 65535.
    const d = [...udpFlow(32, 2000), udpPacket({ id: 332, payload: payload(1507, 9) })];
    const out = run(d, 200_000, true);
    expect(out.map((o) => o.segments)).toEqual([33]);
    expect(out[0]!.pkt.length).toBe(65535);
    expectUdpSuper(out[0]!, d);
    const e = [...udpFlow(32, 2000), udpPacket({ id: 332, payload: payload(1508, 9) })];
    const out2 = run(e, 200_000, true);
    expect(out2.map((o) => [o.first, o.segments])).toEqual([[0, 32], [32, 1]]);
    expectUdpSuper(out2[0]!, e.slice(0, 32));
    expectAsCame(out2[1]!, e[32]!, 32);
    // Large datagrams of one size: 32 per super-packet (a 33rd would make 66028).
    const f = udpFlow(40, 2000, { frag: 0, id: 7 });
    const out3 = run(f, 200_000, true);
    expect(out3.map((o) => [o.first, o.segments])).toEqual([[0, 32], [32, 8]]);
    expectUdpSuper(out3[0]!, f.slice(0, 32));
    expectUdpSuper(out3[1]!, f.slice(32));
  });

  it('writes the datagrams as they came when the pool is too small', () => {
    const d = udpFlow(3, 1000);
    const out = run(d, 100, true);
    expect(out.length).toBe(3);
    out.forEach((o, x) => expectAsCame(o, d[x]!, x));
  });

  it('with udp = false (the default) writes every UDP datagram as it came', () => {
    expect(new Coalescer(4).udp).toBe(false);
    const d = udpFlow(6, 1000);
    const out = run(d);
    expect(out.length).toBe(6);
    out.forEach((o, x) => expectAsCame(o, d[x]!, x));
  });

  it('coalesces TCP and UDP flows with the same ports independently, in the order of their first packets', () => {
    const t = flow(4, 1000, { sport: 33333, dport: 4433 });
    const u = udpFlow(5, 700);
    const v = udpFlow(3, 64, { sport: 5353, dport: 53 }, 3);
    const lone = udpPacket({ sport: 1, dport: 2, payload: payload(40, 8) });
    const mixed = [u[0]!, t[0]!, u[1]!, v[0]!, t[1]!, t[2]!, u[2]!, v[1]!, lone, u[3]!, t[3]!, v[2]!, u[4]!];
    for (const udp of [true, false]) {
      const out = run(mixed, undefined, udp);
      if (udp) {
        expect(out.map((o) => o.first)).toEqual([0, 1, 3, 8]);
        expect(out.map((o) => o.segments)).toEqual([5, 4, 3, 1]);
        expect(out.reduce((a, o) => a + o.segments, 0)).toBe(mixed.length);
        expect(out.map((o) => o.bytes)).toEqual([5 * 728, 4 * 1052, 3 * 92, lone.length]);
        expectUdpSuper(out[0]!, u);
        expectSuper(out[1]!, t);
        expectUdpSuper(out[2]!, v);
        expectAsCame(out[3]!, lone, 8);
      } else {
        // TCP still merged; every UDP datagram as it came, where it was.
        expect(out.map((o) => o.first)).toEqual([0, 1, 2, 3, 6, 7, 8, 9, 11, 12]);
        expectSuper(out[1]!, t);
        for (const o of out) if (o.first !== 1) expectAsCame(o, mixed[o.first]!, o.first);
      }
    }
  });

  it('keeps 8 flows open at once (TCP and UDP together); a ninth closes the oldest', () => {
    const flows = Array.from({ length: 9 }, (_, f) => udpFlow(3, 200, { sport: 2000 + f }, 10 + f));
    const rr = (k: number): Buffer[] => [0, 1, 2].flatMap((i) => flows.slice(0, k).map((fl) => fl[i]!));
    const out8 = run(rr(8), undefined, true);
    expect(out8.map((o) => o.segments)).toEqual(Array(8).fill(3));
    out8.forEach((o, f) => expectUdpSuper(o, flows[f]!));
    // Round robin over 9: every flow is closed before its next datagram comes.
    const out9 = run(rr(9), undefined, true);
    expect(out9.length).toBe(27);
    out9.forEach((o, x) => expectAsCame(o, rr(9)[x]!, x));
  });
});
