/**
 * Underlay -> TUN: coalescing TCP segments into TCPV4 super-packets (src/ipip/coalesce.ts),
 * round-tripped through the segmenter, and super-packets the underlay's GRO merged (`inGso`),
 * checked against the kernel's TCP split (`kernelTcpSegment`, test/helpers/offload-model.ts).
 */
import { describe, expect, it } from 'vitest';
import { refChecksum, rng } from '../helpers/packets.js';
import {
  ACK,
  CWR,
  ECE,
  FIN,
  HEAD,
  l4Check,
  payload,
  PSH,
  refPseudo,
  refSum,
  RST,
  segmentAll,
  SLOT,
  superPacket,
  SYN,
  tcpPacket,
  type TcpSpec,
  URG,
} from '../helpers/offload-packets.js';
import {
  asWritten,
  batch,
  expectSuper,
  flow,
  kernelTcpSegment,
  type Out,
  run,
  runGro,
  ZERO_VNET,
} from '../helpers/offload-model.js';
import { Coalescer, groSegmentSize, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_HDR_LEN } from '../../src/ipip/index.js';

describe('coalescing received segments (GRO)', () => {
  it('merges N segments of a flow into one super-packet (with timestamps)', () => {
    const segs = flow(5, 1448);
    segs[4] = tcpPacket({ ts: [100, 200], seq: 5000 + 4 * 1448, id: 104, flags: ACK | PSH, payload: payload(1448, 1004) });
    const out = run(segs);
    expect(out.length).toBe(1);
    expect(out[0]!.first).toBe(0);
    expectSuper(out[0]!, segs);
    expect(out[0]!.pkt[33]).toBe(ACK | PSH);
  });

  it('merges without TCP options, and a smaller last segment ends the super-packet', () => {
    const segs = flow(3, 1000, { ts: undefined });
    segs.push(tcpPacket({ seq: 5000 + 3000, id: 9, payload: payload(400, 77) }));
    segs.push(tcpPacket({ seq: 5000 + 3400, id: 10, payload: payload(1000, 78) }));
    const out = run(segs);
    expect(out.length).toBe(2);
    expectSuper(out[0]!, segs.slice(0, 4));
    expect(out[0]!.vnet.gsoSize).toBe(1000);
    expect(out[1]!.vnet).toEqual(ZERO_VNET);
    expect(out[1]!.pkt.equals(segs[4]!)).toBe(true);
  });

  it('writes a lone packet in place with a zero vnet header in the 10 bytes before it', () => {
    const p = tcpPacket({ payload: payload(100, 3) });
    const { buf, offs, lens, pool } = batch([p]);
    const c = new Coalescer(4);
    expect(c.coalesce(buf, offs, lens, 1, pool, buf.length)).toBe(1);
    expect(c.offs[0]).toBe(HEAD - VNET_HDR_LEN);
    expect(c.lens[0]).toBe(p.length + VNET_HDR_LEN);
    expect(buf.subarray(0, HEAD - VNET_HDR_LEN).every((x) => x === 0xa5)).toBe(true);
    expect(buf.subarray(HEAD - VNET_HDR_LEN, HEAD).equals(Buffer.alloc(VNET_HDR_LEN))).toBe(true);
    expect(buf.subarray(HEAD, HEAD + p.length).equals(p)).toBe(true);
    expect(buf.subarray(pool).every((x) => x === 0xa5)).toBe(true); // the pool is untouched
  });

  const cases: Array<[string, (segs: Buffer[]) => void]> = [
    ['a gap in the sequence numbers', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 5000 + 1001, payload: payload(1000, 2) }))],
    ['a different destination port', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, dport: 5202, payload: payload(1000, 2) }))],
    ['a different source address', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, src: 0x0a000102, payload: payload(1000, 2) }))],
    ['SYN', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | SYN, payload: payload(1000, 2) }))],
    ['FIN', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | FIN, payload: payload(1000, 2) }))],
    ['RST', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | RST, payload: payload(1000, 2) }))],
    ['URG', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | URG, payload: payload(1000, 2) }))],
    ['CWR', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | CWR, payload: payload(1000, 2) }))],
    ['ECE', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: ACK | ECE, payload: payload(1000, 2) }))],
    ['no ACK', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, flags: PSH, payload: payload(1000, 2) }))],
    ['a different timestamp', (s) => (s[1] = tcpPacket({ ts: [101, 200], seq: 6000, payload: payload(1000, 2) }))],
    ['no timestamp after one', (s) => (s[1] = tcpPacket({ seq: 6000, payload: payload(1000, 2) }))],
    ['other TCP options (SACK)', (s) => (s[1] = tcpPacket({ options: Buffer.from([1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2]), seq: 6000, payload: payload(1000, 2) }))],
    ['a different ACK number', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, ack: 778, payload: payload(1000, 2) }))],
    ['a different window', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, window: 503, payload: payload(1000, 2) }))],
    ['a different TTL', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, ttl: 63, payload: payload(1000, 2) }))],
    ['a different TOS (CE mark)', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, tos: 3, payload: payload(1000, 2) }))],
    ['a bigger segment after a smaller one', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, payload: payload(1001, 2) }))],
    ['DF clear', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, frag: 0, payload: payload(1000, 2) }))],
    ['IP options', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, ipOptions: Buffer.from([1, 1, 1, 0]), payload: payload(1000, 2) }))],
    ['no payload (a pure ACK)', (s) => (s[1] = tcpPacket({ ts: [100, 200], seq: 6000, payload: Buffer.alloc(0) }))],
    ['a bad TCP checksum', (s) => (s[1]![60] ^= 1)],
    ['PSH on the first', (s) => (s[0] = tcpPacket({ ts: [100, 200], seq: 5000, flags: ACK | PSH, payload: payload(1000, 1) }))],
  ];
  for (const [what, mutate] of cases) {
    it(`does not merge across ${what}`, () => {
      const segs = flow(2, 1000);
      mutate(segs);
      const out = run(segs);
      expect(out.length).toBe(2);
      out.forEach((o, x) => {
        expect(o.vnet, what).toEqual(ZERO_VNET);
        expect(o.segments).toBe(1);
        expect(o.first).toBe(x);
        expect(o.pkt.equals(segs[x]!)).toBe(true);
      });
    });
  }

  it('does not merge into a first segment whose checksum is bad, and merges what follows it', () => {
    const segs = flow(3, 1000);
    segs[0]![100] ^= 0x40;
    const out = run(segs);
    expect(out.map((o) => o.segments)).toEqual([1, 2]);
    expect(out[0]!.pkt.equals(segs[0]!)).toBe(true);
    expectSuper(out[1]!, segs.slice(1));
  });

  it('keeps flows apart in a mixed batch and preserves the order within each flow', () => {
    const a = flow(4, 1000, { sport: 1111 }, 1);
    const b = flow(3, 1200, { sport: 2222, seq: 99 }, 2);
    const icmp = Buffer.from(tcpPacket({ payload: payload(56, 4) }));
    icmp[9] = 1; // not TCP any more (checksums do not matter for this one)
    const ack = tcpPacket({ sport: 5201, dport: 40000, src: 0x0a000201, dst: 0x0a000101, payload: Buffer.alloc(0) });
    const syn = tcpPacket({ sport: 3333, flags: SYN, payload: Buffer.alloc(0) });
    const mixed = [a[0]!, b[0]!, icmp, a[1]!, a[2]!, b[1]!, ack, b[2]!, a[3]!, syn];
    const out = run(mixed);
    expect(out.map((o) => o.first)).toEqual([0, 1, 2, 6, 9]);
    expectSuper(out[0]!, a);
    expectSuper(out[1]!, b);
    for (const x of [2, 3, 4]) {
      expect(out[x]!.vnet).toEqual(ZERO_VNET);
      expect(out[x]!.pkt.equals(mixed[out[x]!.first]!)).toBe(true);
    }
  });

  it('a segment of the same flow that does not follow ends the super-packet and starts the next', () => {
    const segs = flow(6, 1000);
    const retrans = tcpPacket({ ts: [100, 200], seq: 5000, id: 7, payload: payload(1000, 1000) }); // a retransmission of the first
    const out = run([segs[0]!, segs[1]!, retrans, segs[2]!]);
    expect(out.map((o) => o.segments)).toEqual([2, 1, 1]);
  });

  it('stops before 65535 bytes', () => {
    const segs = flow(50, 1448);
    const out = run(segs, 200_000);
    // 20 + 32 + 45 * 1448 = 65212 <= 65535 < 65212 + 1448
    expect(out.map((o) => o.segments)).toEqual([45, 5]);
    expectSuper(out[0]!, segs.slice(0, 45));
    expectSuper(out[1]!, segs.slice(45));
    for (const o of out) expect(o.pkt.length).toBeLessThanOrEqual(65535);
  });

  it('writes the segments as they came when the pool is too small', () => {
    const segs = flow(3, 1000);
    const out = run(segs, 100);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 1], [1, 1], [2, 1]]);
    out.forEach((o, x) => expect(o.pkt.equals(segs[x]!)).toBe(true));
  });
});

describe('segment then coalesce gives back the super-packet (seeded random)', () => {
  it('round-trips byte for byte', () => {
    const r = rng(2003);
    for (let k = 0; k < 150; k++) {
      const gso = 200 + (r() % 1300);
      const ts = r() % 2 === 0;
      const hdr = 40 + (ts ? 12 : 0);
      const maxSegs = Math.min(60, Math.floor((65535 - hdr) / gso));
      const len = 1 + (r() % (gso * maxSegs));
      const psh = r() % 2 === 0;
      const spec: TcpSpec = { seq: r() | 0, ack: r() | 0, id: r() & 0xffff, window: r() & 0xffff, ttl: 1 + (r() % 255), tos: r() & 0xfc, flags: ACK | (psh ? PSH : 0), payload: payload(len, k), csum: 'partial' };
      if (ts) spec.ts = [r(), r()];
      const orig = tcpPacket(spec);
      const sp = superPacket(orig, gso);
      const { slab, lens } = segmentAll(sp);
      const segs = lens.map((l, i) => Buffer.from(slab.subarray(i * SLOT + HEAD, i * SLOT + HEAD + l)));
      segs.forEach((s, i) => expect(l4Check(s, 0), `k=${k} segment ${i}`).toBe(0));
      const out = run(segs, 70_000);
      expect(out.length, `k=${k}`).toBe(1);
      if (segs.length === 1) {
        expect(out[0]!.vnet).toEqual(ZERO_VNET);
        expect(out[0]!.pkt.subarray(hdr).equals(orig.subarray(hdr))).toBe(true);
      } else {
        // The same vnet header and the same bytes as the super-packet the kernel handed over.
        expect(Buffer.concat([Buffer.alloc(VNET_HDR_LEN), out[0]!.pkt]).subarray(VNET_HDR_LEN).equals(orig), `k=${k}`).toBe(true);
        expect(out[0]!.vnet).toEqual({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: hdr, gsoSize: gso, csumStart: 20, csumOffset: 16 });
      }
    }
  });
});

// ---------------------------------------------------------------- GRO on the underlay device

/*
 * With GRO on the underlay device, Linux merges IPIP-encapsulated TCP segments before the raw
 * socket sees them (ipip_offload): the decapsulated packet is a TCP/IPv4 super-packet of up to
 * 64 KiB, inner Total Length over all of it, its TCP checksum field the pseudo-header sum
 * (tcp4_gro_complete), the MSS it was merged by unknown. `groSegmentSize` picks the segment size
 * for the TUN, and the coalescer (`inGso`) writes it behind a TCPV4 header, in place.
 *
 *   raw slab:  [ 20 (outer) | segment A0 ] [ 20 | A1 ] [ 10 poison | vnet | GRO'd super-packet ... ] ...
 */

describe('coalescing with super-packets from the underlay GRO (inGso)', () => {
  const MSS = 1480 - 52;
  /** A GRO'd super-packet of the flow of `flow()`: timestamp [100, 200], `n` bytes from `seq`. */
  const gro = (seq: number, n: number, spec: Partial<TcpSpec> = {}, seed = 77): Buffer =>
    tcpPacket({ ts: [100, 200], seq, id: 900, payload: payload(n, seed), csum: 'partial', ...spec });
  const GRO_VNET = { flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: 52, gsoSize: MSS, csumStart: 20, csumOffset: 16 };

  /** Output o is the GRO'd super-packet `g` (input `index`), with its checksum field the pseudo-header sum. */
  function expectGro(o: Out, g: Buffer, index: number): void {
    expect(o.vnet).toEqual(GRO_VNET);
    expect(o.segments).toBe(1);
    expect(o.bytes).toBe(g.length);
    expect(o.first).toBe(index);
    expect(o.pkt.length).toBe(g.length);
    // Every byte as it came but the TCP checksum field: the pseudo-header sum for its length.
    for (const [a, b] of [[0, 36], [38, g.length]] as const) expect(o.pkt.subarray(a, b).equals(g.subarray(a, b)), `bytes ${a}-${b}`).toBe(true);
    expect(o.pkt.readUInt16BE(36)).toBe(refSum(Buffer.alloc(0), 0, 0, refPseudo(g, 0, 6, g.length - 20)));
  }

  it('writes a GRO\'d super-packet alone in place behind a TCPV4 header, which the kernel cuts into correct segments', () => {
    // 45 segments of 1448 as a sender with a 1500-byte path would make them; cut again at 1428.
    const g = gro(0xffff0000, 45 * 1448, { flags: ACK | PSH });
    expect(g.length).toBe(65212);
    expect(groSegmentSize(g, 0, g.length, 1480)).toBe(MSS);
    const { out, buf, offs, pool } = runGro([g], [MSS]);
    expect(out.length).toBe(1);
    const o = out[0]!;
    expectGro(o, g, 0);
    expect(o.pkt.equals(g)).toBe(true); // the field held the pseudo-header sum already
    // In place: the vnet header in the 10 bytes before the packet; the 10 before that and the pool untouched.
    expect(o.off).toBe(offs[0]! - VNET_HDR_LEN);
    expect(buf.subarray(0, HEAD - VNET_HDR_LEN).every((x) => x === 0xa5)).toBe(true);
    expect(buf.subarray(pool).every((x) => x === 0xa5)).toBe(true);

    // The data path's own segmenter (segmentAll): 46 segments of at most the TUN MTU, checksums good, payload whole.
    const { hdrLen, slab, lens } = segmentAll(asWritten(o));
    expect(hdrLen).toBe(52);
    expect(lens.length).toBe(Math.ceil((45 * 1448) / MSS));
    const mine = lens.map((l, i) => Buffer.from(slab.subarray(i * SLOT + HEAD, i * SLOT + HEAD + l)));
    mine.forEach((s, i) => {
      expect(s.length, `segment ${i}`).toBeLessThanOrEqual(1480);
      expect(l4Check(s, 0), `TCP checksum of segment ${i}`).toBe(0);
      expect(refChecksum(s, 0, 20), `IP checksum of segment ${i}`).toBe(0);
    });
    expect(Buffer.concat(mine.map((s) => s.subarray(52))).equals(g.subarray(52))).toBe(true);
    // The kernel's segmentation (checksums derived from the seed in the field) gives the same bytes.
    const kernel = kernelTcpSegment(o);
    expect(kernel.length).toBe(mine.length);
    kernel.forEach((s, i) => {
      expect(l4Check(s, 0), `kernel: TCP checksum of segment ${i}`).toBe(0);
      expect(s.equals(mine[i]!), `segment ${i} byte for byte`).toBe(true);
      // And equal to the segment built from scratch (seq wraps past 2^32; PSH on the last only).
      const last = i === kernel.length - 1;
      const ref = tcpPacket({ ts: [100, 200], seq: (0xffff0000 + i * MSS) | 0, id: 900 + i, flags: last ? ACK | PSH : ACK, payload: g.subarray(52 + i * MSS, Math.min(52 + (i + 1) * MSS, g.length)) });
      expect(s.equals(ref), `segment ${i} from scratch`).toBe(true);
    });
  });

  it('rewrites the TCP checksum field to the pseudo-header sum whatever it held', () => {
    const want = gro(5000, 20_000);
    for (const [what, field] of [['garbage', 0xdead], ['zero', 0], ['0xffff', 0xffff], ['a full checksum', tcpPacket({ ts: [100, 200], seq: 5000, id: 900, payload: payload(20_000, 77) }).readUInt16BE(36)]] as const) {
      const g = Buffer.from(want);
      g.writeUInt16BE(field, 36);
      const { out } = runGro([g], [MSS]);
      expect(out.length, what).toBe(1);
      expectGro(out[0]!, want, 0);
      expect(out[0]!.pkt.equals(want), what).toBe(true);
      kernelTcpSegment(out[0]!).forEach((s, i) => expect(l4Check(s, 0), `${what}: segment ${i}`).toBe(0));
    }
  });

  it('takes the gso_size it is given, and the header length of the packet (no timestamp)', () => {
    const g = tcpPacket({ seq: 1, payload: payload(10_000, 3), csum: 'partial' });
    const { out } = runGro([g], [1000]);
    expect(out[0]!.vnet).toEqual({ ...GRO_VNET, hdrLen: 40, gsoSize: 1000 });
    const segs = kernelTcpSegment(out[0]!);
    expect(segs.map((s) => s.length)).toEqual(Array(10).fill(1040));
    segs.forEach((s, i) => expect(l4Check(s, 0), `segment ${i}`).toBe(0));
  });

  it('A0, A1, a GRO\'d super-packet of A, A3, A4: [super(A0, A1)], [GRO\'d], [super(A3, A4)], in order', () => {
    const a = flow(2, 1000); // seq 5000, 6000
    const g = gro(7000, 20 * 1000);
    const after = flow(2, 1000, { seq: 27_000 }, 3);
    const { out } = runGro([a[0]!, a[1]!, g, after[0]!, after[1]!], [0, 0, MSS, 0, 0]);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 2], [2, 1], [3, 2]]);
    expectSuper(out[0]!, a);
    expectGro(out[1]!, g, 2);
    expectSuper(out[2]!, after);
    // What the kernel delivers: the flow's bytes in order.
    const delivered = [...kernelTcpSegment(out[0]!), ...kernelTcpSegment(out[1]!), ...kernelTcpSegment(out[2]!)];
    const seqs = delivered.map((s) => s.readUInt32BE(24));
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]!, `segment ${i}`).toBe(seqs[i - 1]! + delivered[i - 1]!.length - 52);
    const want = Buffer.concat([...a, g, ...after].map((p) => p.subarray(52)));
    expect(Buffer.concat(delivered.map((s) => s.subarray(52))).equals(want)).toBe(true);
  });

  it('the GRO\'d super-packet closes its flow: a segment after it that continues A1 does not join A0, A1', () => {
    // The GRO'd one holds a retransmission of earlier bytes, so A3 continues A1's sequence
    // numbers: were the flow left open, A3 would join super(A0, A1) and reach the TUN first.
    const a = flow(4, 1000); // seq 5000 ... 8000
    const g = gro(1000, 4 * 1000);
    const { out } = runGro([a[0]!, a[1]!, g, a[2]!, a[3]!], [0, 0, MSS, 0, 0]);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 2], [2, 1], [3, 2]]);
    expectSuper(out[0]!, a.slice(0, 2));
    expectGro(out[1]!, g, 2);
    expectSuper(out[2]!, a.slice(2));
  });

  it("a GRO'd super-packet of another flow (other port, or the reverse direction) does not close this flow", () => {
    const b = flow(4, 1000, { sport: 2222 }, 2);
    const others: Array<[string, Buffer]> = [
      ['another source port', gro(7000, 20_000, { sport: 1111 })],
      ['the reverse direction', gro(7000, 20_000, { sport: 5201, dport: 2222, src: 0x0a000201, dst: 0x0a000101 })],
      ['another destination address', gro(7000, 20_000, { sport: 2222, dst: 0x0a000202 })],
    ];
    for (const [what, g] of others) {
      const { out } = runGro([b[0]!, b[1]!, g, b[2]!, b[3]!], [0, 0, MSS, 0, 0]);
      expect(out.map((o) => [o.first, o.segments]), what).toEqual([[0, 4], [2, 1]]);
      expectSuper(out[0]!, b);
      expectGro(out[1]!, g, 2);
    }
  });

  it("two GRO'd super-packets in a row, then segments: each written as it is, the segments merged after them", () => {
    const g1 = gro(5000, 30_000, {}, 1);
    const g2 = gro(35_000, 30_000, {}, 2);
    const a = flow(3, 1000, { seq: 65_000 }, 4);
    const { out } = runGro([g1, g2, ...a], [MSS, MSS, 0, 0, 0]);
    expect(out.map((o) => [o.first, o.segments])).toEqual([[0, 1], [1, 1], [2, 3]]);
    expectGro(out[0]!, g1, 0);
    expectGro(out[1]!, g2, 1);
    expectSuper(out[2]!, a);
  });

  it('with inGso all 0 (or null) the output is what it was without it', () => {
    const a = flow(4, 1000, { sport: 1111 }, 1);
    const b = flow(3, 1200, { sport: 2222, seq: 99 }, 2);
    const mixed = [a[0]!, b[0]!, a[1]!, a[2]!, b[1]!, b[2]!, a[3]!];
    const plain = run(mixed);
    const zero = runGro(mixed, mixed.map(() => 0)).out;
    expect(zero.map((o) => [o.first, o.segments, o.vnet])).toEqual(plain.map((o) => [o.first, o.segments, o.vnet]));
    zero.forEach((o, x) => expect(o.pkt.equals(plain[x]!.pkt)).toBe(true));
  });
});
