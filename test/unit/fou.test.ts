/**
 * FOU (src/ipip/fou.ts): IPIP over UDP as Linux's `ip fou add port P ipproto 4` puts it on the
 * wire. The topology of test/helpers/tunnel-sides.ts with A's peer B and B's peer A on FOU, and
 * on B one more peer E that stays plain IPIP:
 *
 *   [ A 192.0.2.1 ] ==== UDP to 5555, payload = the inner packet ==== [ B 198.51.100.2 ]
 *
 * What is checked: encapsulating for a FOU peer writes nothing (the kernel's UDP socket adds
 * the outer IPv4 and UDP headers: the poisoned headroom stays), the MTU toward it is 8 bytes
 * less; every verdict `decapsulateFou` returns, first failing check first; a UDP quote in an
 * underlay ICMP error is classified (byte vector built by hand); the source-port hash is stable
 * per flow and ignores what changes from packet to packet.
 */
import { describe, expect, it } from 'vitest';
import {
  ENCAP_FOU,
  ENCAP_IPIP,
  FOU_ENCAP_LEN,
  FOU_OVERHEAD,
  PacketResult,
  Peer,
  Tunnel,
  Verdict,
  classifyUnderlayIcmp,
  fouFlowHash,
  fouSourceIndex,
  IcmpQuote,
  UnderlayIcmp,
  type VerdictName,
} from '../../src/ipip/index.js';
import { hex, ip } from '../helpers/packets.js';
import { A_LOCAL, B_LOCAL, E_ENDPOINT, INNER_1, LinearLpm, fouSides, inner, place } from '../helpers/tunnel-sides.js';
import { icmp, ipv4, placed, ROUTER } from '../helpers/icmp-packets.js';

/** fouFlowHash of TCP 10.0.1.1:40000 -> 10.0.2.1:443. */
const PINNED_HASH = -2020646982;

describe('FOU wire format', () => {
  it('constants: 8 bytes of UDP beyond IPIP, 28 in all', () => {
    expect(FOU_OVERHEAD).toBe(8);
    expect(FOU_ENCAP_LEN).toBe(28);
  });

  it('encapsulate for a FOU peer forwards the inner packet as it is and writes no byte', () => {
    const { a, peerB } = fouSides();
    const buf = place(INNER_1, 20);
    const before = Buffer.from(buf);
    const out = new PacketResult();
    expect(a.encapsulate(buf, 20, INNER_1.length, out)).toBe(Verdict.forward);
    expect(out).toMatchObject({ offset: 20, length: 28, peer: peerB });
    // The headroom stays poisoned (0xA5): the kernel writes the outer IPv4 and UDP headers.
    expect(buf.equals(before)).toBe(true);
    expect(buf.subarray(20, 48)).toEqual(hex('45 00 00 1c 12 34 40 00 3f 01 12 ac 0a 00 01 01 0a 00 02 01  08 00 f7 fd 00 01 00 01'));
    // No outer IPv4 Identification is used up: the kernel numbers the UDP datagrams.
    expect(peerB.nextId).toBe(0);
  });

  it('the outer TOS for the kernel: DSCP copied, ECN copied except CE sent as ECT(0) (RFC 6040 §4.1)', () => {
    const { a } = fouSides();
    const out = new PacketResult();
    for (const [innerTos, outerTos] of [[0x00, 0x00], [0xb8, 0xb8], [0xb9, 0xb9], [0xba, 0xba], [0xbb, 0xba]] as const) {
      const p = inner({ tos: innerTos });
      expect(a.encapsulate(place(p, 20), 20, p.length, out)).toBe(Verdict.forward);
      expect(out.tos).toBe(outerTos);
    }
  });

  it('the tunnel MTU toward a FOU peer is 8 bytes less: 1472 fits, 1473 is too big', () => {
    const { a, peerB } = fouSides();
    expect(a.mtuFor(peerB)).toBe(1472);
    const out = new PacketResult();
    const fits = inner({ payload: 1452 });
    expect(a.encapsulate(place(fits, 20), 20, fits.length, out)).toBe(Verdict.forward);
    const big = inner({ payload: 1453 });
    expect(a.encapsulate(place(big, 20), 20, big.length, out)).toBe(Verdict.too_big);
    // A learned path MTU below that wins, as for IPIP.
    peerB.mtu = 1400;
    expect(a.mtuFor(peerB)).toBe(1400);
  });

  it('policy fouMtu (the underlay MTU - 28, when the TUN MTU already left room) sets the limit instead', () => {
    const peer = new Peer({ index: 0, name: 'b', endpoint: B_LOCAL, encap: ENCAP_FOU });
    const t = new Tunnel({ local: A_LOCAL, routes: new LinearLpm<Peer>().add('10.0.2.0/24', peer), peers: [peer], ttl: 64, tos: 'inherit', df: 'inherit', mtu: 1472, fouMtu: 1472 });
    expect(t.mtuFor(peer)).toBe(1472);
    expect(() => new Tunnel({ ...t, routes: t.routes, peers: [peer], fouMtu: 1473 })).toThrow(/fouMtu/);
    expect(() => new Tunnel({ ...t, routes: t.routes, peers: [peer], fouMtu: 67 })).toThrow(/fouMtu/);
  });

  it('Peer refuses an unknown encap', () => {
    expect(() => new Peer({ index: 0, name: 'x', endpoint: 1, encap: 7 })).toThrow(RangeError);
  });
});

describe('decapsulateFou: every verdict, first failing check first', () => {
  const cases: { name: string; verdict: VerdictName; src?: number; tos?: number; len?: number; pkt: () => Buffer }[] = [
    { name: 'a valid packet from A', verdict: 'forward', pkt: () => INNER_1 },
    { name: 'length -1 (did not fit the slot)', verdict: 'truncated', len: -1, pkt: () => INNER_1 },
    { name: 'length past the end of the buffer', verdict: 'malformed', len: 40, pkt: () => INNER_1 },
    { name: 'from an address that is no peer', verdict: 'unknown_peer', src: ip('203.0.113.66'), pkt: () => INNER_1 },
    { name: 'from peer E, whose encap is ipip', verdict: 'not_fou_peer', src: E_ENDPOINT, pkt: () => inner({ src: '10.0.5.1' }) },
    { name: 'unknown peer with a broken inner header: the peer is checked first', verdict: 'unknown_peer', src: ip('203.0.113.66'), pkt: () => INNER_1.subarray(0, 10) },
    { name: 'payload shorter than an IPv4 header', verdict: 'inner_malformed', pkt: () => INNER_1.subarray(0, 19) },
    { name: 'trailing bytes after the inner datagram', verdict: 'inner_malformed', pkt: () => Buffer.concat([INNER_1, Buffer.from([0])]) },
    {
      name: 'inner checksum wrong',
      verdict: 'inner_bad_checksum',
      pkt: () => {
        const p = Buffer.from(INNER_1);
        p[15] ^= 1;
        return p;
      },
    },
    { name: 'inner TTL 0', verdict: 'ttl_expired', pkt: () => inner({ ttl: 0 }) },
    { name: "inner destination is A's endpoint", verdict: 'loop', pkt: () => inner({ dst: '192.0.2.1' }) },
    { name: "inner source outside A's prefixes", verdict: 'spoofed_source', pkt: () => inner({ src: '10.0.9.1' }) },
    { name: "inner source inside E's prefix (another peer's)", verdict: 'spoofed_source', pkt: () => inner({ src: '10.0.5.1' }) },
    { name: 'inner destination back into the tunnel', verdict: 'bad_destination', pkt: () => inner({ dst: '10.0.5.9' }) },
    { name: 'outer CE over a not-ECT inner packet', verdict: 'ecn_drop', tos: 0x03, pkt: () => inner({ tos: 0xb8 }) },
  ];
  for (const c of cases) {
    it(`${c.name}: ${c.verdict}`, () => {
      const { b } = fouSides();
      const p = c.pkt();
      const buf = place(p, 20);
      const out = new PacketResult();
      const v = b.decapsulateFou(buf, 20, c.len ?? p.length, c.src ?? A_LOCAL, c.tos ?? 0, out);
      expect(v).toBe(Verdict[c.verdict]);
      if (c.verdict === 'forward') expect(out).toMatchObject({ offset: 20, length: p.length });
    });
  }

  it('outer CE over an ECT(0) inner packet marks the inner CE and fixes its checksum (RFC 6040)', () => {
    const { b } = fouSides();
    const p = inner({ tos: 0xba });
    const buf = place(p, 20);
    const out = new PacketResult();
    expect(b.decapsulateFou(buf, 20, p.length, A_LOCAL, 0x03, out)).toBe(Verdict.forward);
    expect(buf[21]).toBe(0xbb);
    const fixed = inner({ tos: 0xbb });
    expect(buf.subarray(20, 20 + p.length).equals(fixed)).toBe(true);
  });

  it('plain IPIP from a FOU peer is still taken on the raw socket (as a Linux ipip device with encap fou does)', () => {
    const { b, peerA } = fouSides();
    const out = new PacketResult();
    const w = ipv4(INNER_1, { src: A_LOCAL, dst: B_LOCAL, protocol: 4 });
    expect(b.decapsulate(place(w, 0), 0, w.length, out)).toBe(Verdict.forward);
    expect(out.peer).toBe(peerA);
  });
});

describe('underlay ICMP quoting a FOU packet', () => {
  // A's FOU packet as the kernel sent it: IPv4 (proto 17) 192.0.2.1 -> 198.51.100.2, UDP
  // 40000 -> 5555, length 8 + 1400, then the inner packet (DF). By hand:
  //   UDP header 9c 40 15 b3 05 80 00 00 (checksum not checked by a quote)
  function fouOuter(dport = 5555): Buffer {
    const innerPkt = inner({ payload: 1380, flags: 0x4000 });
    const udp = Buffer.concat([hex(`9c 40 ${(dport >> 8).toString(16).padStart(2, '0')} ${(dport & 0xff).toString(16).padStart(2, '0')} 05 80 00 00`), innerPkt]);
    return ipv4(udp, { src: A_LOCAL, dst: B_LOCAL, protocol: 17, flags: 0x4000 });
  }
  const error = (orig: Buffer, quote: number): Buffer => ipv4(icmp(3, 4, 1400, orig.subarray(0, quote)), { src: ROUTER, dst: A_LOCAL, protocol: 1, ttl: 250, flags: 0 });

  it('Frag Needed quoting UDP to the FOU port: ours, fou, the inner packet after the UDP header', () => {
    const orig = fouOuter();
    expect(orig.length).toBe(1428);
    const [buf, off, len] = placed(error(orig, 20 + 8 + 28));
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q, 5555)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.fou).toBe(true);
    expect(q.endpoint).toBe(B_LOCAL);
    expect(q.outerLength).toBe(1428);
    // router IP 20 + ICMP 8 + our IPv4 20 + UDP 8
    expect(q.innerOffset).toBe(off + 56);
    expect(q.innerLength).toBe(28);
    expect(q.innerDf).toBe(true);
  });

  it('a quote of UDP to another port, or any UDP without FOU, is not ours', () => {
    const q = new IcmpQuote();
    const [b1, o1, l1] = placed(error(fouOuter(53), 56));
    expect(classifyUnderlayIcmp(b1, o1, l1, A_LOCAL, q, 5555)).toBe(UnderlayIcmp.notOurs);
    const [b2, o2, l2] = placed(error(fouOuter(), 56));
    expect(classifyUnderlayIcmp(b2, o2, l2, A_LOCAL, q)).toBe(UnderlayIcmp.notOurs);
  });

  it('a quote cut inside the UDP header is not ours', () => {
    const q = new IcmpQuote();
    const [b, o, l] = placed(error(fouOuter(), 24));
    expect(classifyUnderlayIcmp(b, o, l, A_LOCAL, q, 5555)).toBe(UnderlayIcmp.notOurs);
  });
});

describe('source port: a hash of the inner flow', () => {
  const tcp = (o: { sport?: number; dport?: number; id?: number; ttl?: number; payload?: number; flags?: number; src?: string }): Buffer => {
    const p = inner({ protocol: 6, payload: o.payload ?? 40, id: o.id ?? 1, ttl: o.ttl ?? 63, flags: o.flags ?? 0x4000, src: o.src ?? '10.0.1.1' });
    p.writeUInt16BE(o.sport ?? 40000, 20);
    p.writeUInt16BE(o.dport ?? 443, 22);
    return p;
  };

  it('is the same for every packet of a flow, whatever its ID, TTL, length and payload', () => {
    const h = fouFlowHash(tcp({}), 0);
    expect(fouFlowHash(tcp({ id: 999, ttl: 5, payload: 1200 }), 0)).toBe(h);
    const shifted = Buffer.concat([Buffer.alloc(7, 0xa5), tcp({})]);
    expect(fouFlowHash(shifted, 7)).toBe(h);
    // Pinned: a change to the hash moves every flow to another source port on upgrade.
    expect(h).toBe(PINNED_HASH);
  });

  it('differs between flows, and spreads them over the sockets', () => {
    const seen = new Set<number>();
    const counts = new Array<number>(8).fill(0);
    for (let port = 1000; port < 3000; port++) {
      const h = fouFlowHash(tcp({ sport: port }), 0);
      seen.add(h);
      const i = fouSourceIndex(h, 8);
      expect(i).toBeGreaterThanOrEqual(0);
      expect(i).toBeLessThan(8);
      counts[i]++;
    }
    expect(seen.size).toBe(2000);
    // 2000 flows over 8 sockets: each gets a fair share (binomial, 250 +- 5 sigma).
    for (const c of counts) expect(c).toBeGreaterThan(180);
    expect(fouFlowHash(tcp({ dport: 444 }), 0)).not.toBe(fouFlowHash(tcp({}), 0));
    expect(fouFlowHash(tcp({ src: '10.0.1.2' }), 0)).not.toBe(fouFlowHash(tcp({}), 0));
  });

  it('fragments hash by addresses and protocol only, so all fragments of a packet take one port', () => {
    const first = tcp({ flags: 0x2000 }); // MF, offset 0
    const later = tcp({ flags: 0x0005, sport: 1, dport: 2 }); // offset 40, no ports in it
    expect(fouFlowHash(first, 0)).toBe(fouFlowHash(later, 0));
    expect(fouFlowHash(first, 0)).not.toBe(fouFlowHash(tcp({}), 0));
  });

  it('one socket: always index 0', () => {
    expect(fouSourceIndex(-1, 1)).toBe(0);
    expect(fouSourceIndex(0x7fffffff, 1)).toBe(0);
  });
});
