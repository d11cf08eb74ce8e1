/**
 * The verdict enum, and every verdict encapsulate and decapsulate can return, each from a packet
 * built to fail exactly one check
 * (topology and packets: test/helpers/tunnel-sides.ts).
 */
import { describe, expect, it } from 'vitest';
import {
  PacketResult,
  Peer,
  Tunnel,
  Verdict,
  VERDICT_COUNT,
  VERDICT_DESCRIPTIONS,
  VERDICT_NAMES,
  type VerdictName,
} from '../../src/ipip/index.js';
import { hex, ip } from '../helpers/packets.js';
import {
  inner,
  INNER_1,
  LinearLpm,
  outer,
  place,
  policyOf,
  refix,
  type Sides,
  sides,
} from '../helpers/tunnel-sides.js';

// ---------------------------------------------------------------- verdicts

describe('verdict enum', () => {
  it('has exactly the agreed names, in order, dense from 0', () => {
    expect(VERDICT_NAMES).toEqual([
      'forward',
      'malformed',
      'bad_checksum',
      'not_ipip',
      'not_for_us',
      'unknown_peer',
      'inner_malformed',
      'inner_bad_checksum',
      'spoofed_source',
      'bad_destination',
      'ttl_expired',
      'not_ipv4',
      'no_route',
      'too_big',
      'loop',
      'truncated',
      'tun_write_error',
      'socket_write_error',
      // Appended (never inserted: values are counter indexes and README rows) for RFC 6040
      // decapsulation: outer CE over a not-ECT inner packet.
      'ecn_drop',
      // Appended for FOU (src/ipip/fou.ts): a datagram to the FOU port from a peer that is not fou.
      'not_fou_peer',
    ]);
    expect(VERDICT_COUNT).toBe(20);
    expect(Verdict.ecn_drop).toBe(18);
    expect(Verdict.not_fou_peer).toBe(19);
    VERDICT_NAMES.forEach((name, i) => expect(Verdict[name]).toBe(i));
    expect(Object.keys(Verdict)).toEqual(VERDICT_NAMES);
    expect(Object.keys(VERDICT_DESCRIPTIONS)).toEqual(VERDICT_NAMES);
    for (const name of VERDICT_NAMES) {
      expect(VERDICT_DESCRIPTIONS[name]).toMatch(/^\S.*\.$/);
      expect(VERDICT_DESCRIPTIONS[name]).not.toContain('\n');
    }
  });

  it('is frozen', () => {
    expect(Object.isFrozen(Verdict)).toBe(true);
    expect(Object.isFrozen(VERDICT_NAMES)).toBe(true);
    expect(Object.isFrozen(VERDICT_DESCRIPTIONS)).toBe(true);
  });
});

// ---------------------------------------------------------------- every verdict

interface Case {
  name: string;
  verdict: VerdictName;
  dir: 'encap' | 'decap';
  /** Returns buffer, offset and length; may adjust the tunnels (e.g. a peer's MTU). */
  make: (s: Sides) => [Buffer, number, number];
}

/** An encap case: the inner packet at offset 20. */
function enc(name: string, verdict: VerdictName, pkt: () => Buffer, setup?: (s: Sides) => void): Case {
  return {
    name,
    verdict,
    dir: 'encap',
    make: (s) => {
      setup?.(s);
      const p = pkt();
      return [place(p, 20), 20, p.length];
    },
  };
}

/** A decap case: the datagram at offset 9. */
function dec(name: string, verdict: VerdictName, wire: () => Buffer): Case {
  return {
    name,
    verdict,
    dir: 'decap',
    make: () => {
      const w = wire();
      return [place(w, 9), 9, w.length];
    },
  };
}

const CASES: Case[] = [
  // ---- encapsulate (host A) ----
  enc('encap: a valid packet', 'forward', () => INNER_1),
  { name: 'encap: length -1 from the I/O layer', verdict: 'truncated', dir: 'encap', make: () => [place(INNER_1, 20), 20, -1] },
  { name: 'encap: less than 20 bytes of headroom', verdict: 'malformed', dir: 'encap', make: () => [place(INNER_1, 19), 19, 28] },
  { name: 'encap: length past the end of the buffer', verdict: 'malformed', dir: 'encap', make: () => [place(INNER_1, 20, 0), 20, 29] },
  { name: 'encap: negative length other than -1', verdict: 'malformed', dir: 'encap', make: () => [place(INNER_1, 20), 20, -2] },
  enc('encap: empty read', 'inner_malformed', () => Buffer.alloc(0)),
  enc('encap: IPv6 packet', 'not_ipv4', () => hex('60 00 00 00 00 08 3a 40' + '20010db8'.padEnd(32, '0') + 'fe80'.padEnd(32, '0') + '8000000000000000')),
  enc('encap: version 0', 'not_ipv4', () => Buffer.from([0x05, 0, 0, 20])),
  enc('encap: IPv4 shorter than 20 bytes', 'inner_malformed', () => INNER_1.subarray(0, 19)),
  enc('encap: IHL 4', 'inner_malformed', () => {
    const p = Buffer.from(INNER_1);
    p[0] = 0x44;
    return p;
  }),
  enc('encap: total length < len', 'inner_malformed', () => Buffer.concat([INNER_1, Buffer.from([0])])),
  enc('encap: total length > len', 'inner_malformed', () => INNER_1.subarray(0, 27)),
  enc('encap: IHL 15 but total 28', 'inner_malformed', () => {
    const p = Buffer.from(INNER_1);
    p[0] = 0x4f;
    return p;
  }),
  enc('encap: TTL 0', 'ttl_expired', () => inner({ ttl: 0 })),
  enc('encap: no peer owns 8.8.8.8', 'no_route', () => inner({ dst: '8.8.8.8' })),
  enc('encap: 10.0.1.0/24 is not routed into the tunnel on A', 'no_route', () => inner({ dst: '10.0.1.9' })),
  {
    name: 'encap: stale route table returns a peer not in this tunnel',
    verdict: 'no_route',
    dir: 'encap',
    make: (s) => {
      const stranger = new Peer({ index: 0, name: 'stale', endpoint: ip('203.0.113.200') });
      s.a = new Tunnel({ ...policyOf(s.a), routes: new LinearLpm<Peer>().add('0.0.0.0/0', stranger) });
      return [place(INNER_1, 20), 20, 28];
    },
  },
  enc('encap: inner source is our underlay address', 'loop', () => inner({ src: '192.0.2.1' })),
  enc("encap: inner source is the chosen peer's endpoint", 'loop', () => inner({ src: '198.51.100.2' })),
  enc("encap: inner destination is the peer's own endpoint (D covers it)", 'loop', () => inner({ dst: '100.64.0.4' })),
  enc("encap: inner destination is another peer's endpoint", 'loop', () => inner({ dst: '198.51.100.2' })),
  enc('encap: inner destination is our underlay address', 'loop', () => inner({ dst: '192.0.2.1' })),
  // The destination loop check runs before the route look-up: C's endpoint 203.0.113.3 is in no
  // prefix of A's table (a hand-made kernel route could still send it into the TUN).
  enc("encap: inner destination is C's endpoint, which no prefix covers", 'loop', () => inner({ dst: '203.0.113.3' })),
  enc('encap: destination loop with an unroutable source', 'loop', () => inner({ src: '8.8.8.8', dst: '203.0.113.3' })),
  // ... while the source loop check needs the chosen peer, so it comes after the route.
  enc('encap: inner source is our underlay address but no route', 'no_route', () => inner({ src: '192.0.2.1', dst: '8.8.8.8' })),
  enc("encap: inner source is C's endpoint on the way to B (only the chosen peer's counts)", 'forward', () => inner({ src: '203.0.113.3' })),
  enc('encap: 1481 bytes, tunnel MTU 1480', 'too_big', () => inner({ payload: 1461 })),
  enc('encap: 1480 bytes fits exactly', 'forward', () => inner({ payload: 1460 })),
  enc('encap: larger than the learned per-peer MTU', 'too_big', () => inner({ payload: 1381 }), (s) => (s.peerB.mtu = 1400)),
  enc('encap: the learned per-peer MTU exactly', 'forward', () => inner({ payload: 1380 }), (s) => (s.peerB.mtu = 1400)),
  enc('encap: too big without DF too (the raw socket never fragments)', 'too_big', () => inner({ flags: 0, payload: 1461 })),
  // First failing check wins:
  enc('encap: 4 bytes of IPv6: the version is checked before any length', 'not_ipv4', () => hex('60000000')),
  enc('encap: TTL 0 and no route', 'ttl_expired', () => inner({ ttl: 0, dst: '8.8.8.8' })),
  enc('encap: loop and too big', 'loop', () => inner({ src: '192.0.2.1', payload: 2000 })),

  // ---- decapsulate (host B) ----
  dec('decap: a valid IPIP packet from A', 'forward', () => outer(INNER_1)),
  { name: 'decap: length -1 from the I/O layer', verdict: 'truncated', dir: 'decap', make: () => [place(outer(INNER_1), 9), 9, -1] },
  { name: 'decap: length past the end of the buffer', verdict: 'malformed', dir: 'decap', make: () => [place(outer(INNER_1), 9, 0), 9, 49] },
  dec('decap: shorter than 20 bytes', 'malformed', () => outer(INNER_1).subarray(0, 19)),
  dec('decap: outer version 6', 'malformed', () => {
    const w = outer(INNER_1);
    w[0] = 0x65;
    return refix(w);
  }),
  dec('decap: outer IHL 4', 'malformed', () => {
    const w = outer(INNER_1);
    w[0] = 0x44;
    return w;
  }),
  dec('decap: outer total length > received', 'malformed', () => outer(INNER_1, { totalDelta: 1 })),
  dec('decap: outer total length < header length', 'malformed', () => {
    const w = outer(INNER_1);
    w.writeUInt16BE(16, 2);
    return refix(w);
  }),
  dec('decap: outer checksum wrong', 'bad_checksum', () => {
    const w = outer(INNER_1);
    w[11] ^= 0x40;
    return w;
  }),
  dec('decap: outer TTL changed without checksum update', 'bad_checksum', () => {
    const w = outer(INNER_1);
    w[8]--;
    return w;
  }),
  dec('decap: outer protocol 41 (6in4)', 'not_ipip', () => outer(INNER_1, { protocol: 41 })),
  dec('decap: outer protocol 1 (ICMP)', 'not_ipip', () => outer(INNER_1, { protocol: 1 })),
  dec('decap: outer destination is another host', 'not_for_us', () => outer(INNER_1, { dst: ip('198.51.100.3') })),
  dec('decap: outer source is not a peer (CVE-2020-10136)', 'unknown_peer', () => outer(INNER_1, { src: ip('203.0.113.66') })),
  dec('decap: outer payload shorter than 20 bytes', 'inner_malformed', () => outer(INNER_1.subarray(0, 19))),
  dec('decap: inner version 6', 'inner_malformed', () => {
    const p = Buffer.from(INNER_1);
    p[0] = 0x65;
    return outer(refix(p));
  }),
  dec('decap: inner IHL 4', 'inner_malformed', () => {
    const p = Buffer.from(INNER_1);
    p[0] = 0x44;
    return outer(p);
  }),
  dec('decap: inner total length > outer payload', 'inner_malformed', () => outer(INNER_1.subarray(0, 27))),
  dec('decap: trailing bytes after the inner datagram', 'inner_malformed', () => outer(Buffer.concat([INNER_1, Buffer.from([0, 0])]))),
  dec('decap: inner checksum wrong', 'inner_bad_checksum', () => {
    const p = Buffer.from(INNER_1);
    p[15] ^= 1;
    return outer(p);
  }),
  dec('decap: inner TTL 0', 'ttl_expired', () => outer(inner({ ttl: 0 }))),
  dec("decap: inner source outside A's prefixes", 'spoofed_source', () => outer(inner({ src: '10.0.9.1' }))),
  dec("decap: inner source in B's own inside network", 'spoofed_source', () => outer(inner({ src: '10.0.2.7' }))),
  dec("decap: inner destination is in A's prefix (back into the tunnel)", 'bad_destination', () => outer(inner({ dst: '10.0.1.5' }))),
  dec('decap: inner destination is our own underlay address', 'loop', () => outer(inner({ dst: '198.51.100.2' }))),
  dec("decap: inner destination is A's endpoint", 'loop', () => outer(inner({ dst: '192.0.2.1' }))),
  // RFC 6040 §4.2: outer CE (11) cannot be passed on to a not-ECT inner packet.
  dec('decap: outer CE over a not-ECT inner packet', 'ecn_drop', () => outer(inner({ tos: 0xb8 }), { tos: 0x03 })),
  dec('decap: outer ECT(0) over a not-ECT inner packet', 'forward', () => outer(inner({ tos: 0xb8 }), { tos: 0x02 })),
  dec('decap: outer CE over an inner CE packet (nothing to write)', 'forward', () => outer(inner({ tos: 0xbb }), { tos: 0x03 })),
  // First failing check wins:
  dec('decap: bad checksum and unknown peer', 'bad_checksum', () => {
    const w = outer(INNER_1, { src: ip('203.0.113.66') });
    w[10] ^= 1;
    return w;
  }),
  dec('decap: not for us and unknown peer', 'not_for_us', () => outer(INNER_1, { src: ip('203.0.113.66'), dst: ip('10.9.9.9') })),
  dec('decap: unknown peer with a broken inner packet', 'unknown_peer', () => outer(INNER_1.subarray(0, 5), { src: ip('203.0.113.66') })),
  dec('decap: TTL 0 and spoofed', 'ttl_expired', () => outer(inner({ ttl: 0, src: '10.0.9.1' }))),
  dec('decap: spoofed and bad destination', 'spoofed_source', () => outer(inner({ src: '10.0.9.1', dst: '10.0.1.5' }))),
  dec('decap: spoofed and CE over not-ECT', 'spoofed_source', () => outer(inner({ src: '10.0.9.1' }), { tos: 0x03 })),
  dec('decap: loop and CE over not-ECT', 'loop', () => outer(inner({ dst: '198.51.100.2' }), { tos: 0x03 })),
  dec('decap: inner TTL 0 and CE over not-ECT', 'ttl_expired', () => outer(inner({ ttl: 0 }), { tos: 0x03 })),
];

describe('every verdict', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const s = sides();
    const [buf, off, len] = c.make(s);
    const before = Buffer.from(buf);
    const out = new PacketResult();
    out.peer = s.peerC; // stale contents must be overwritten
    out.offset = 12345;
    const v = c.dir === 'encap' ? s.a.encapsulate(buf, off, len, out) : s.b.decapsulate(buf, off, len, out);
    expect(VERDICT_NAMES[v]).toBe(c.verdict);
    if (v !== Verdict.forward) {
      expect(buf.equals(before)).toBe(true); // a drop writes nothing
      expect(out.offset).toBe(off);
      expect(out.length).toBe(len);
    } else if (c.dir === 'encap') {
      // Only the 20 bytes of headroom changed.
      expect(buf.subarray(off).equals(before.subarray(off))).toBe(true);
      expect(buf.subarray(0, off - 20).equals(before.subarray(0, off - 20))).toBe(true);
    } else {
      expect(buf.equals(before)).toBe(true);
    }
  });

  it('covers every verdict the core can return', () => {
    const covered = new Set(CASES.map((c) => c.verdict));
    const ioOnly: VerdictName[] = ['tun_write_error', 'socket_write_error'];
    // not_fou_peer comes only from decapsulateFou, whose verdicts test/unit/fou.test.ts covers.
    const fouOnly: VerdictName[] = ['not_fou_peer'];
    expect([...covered].sort()).toEqual(VERDICT_NAMES.filter((n) => !ioOnly.includes(n) && !fouOnly.includes(n)).sort());
    // Both directions reach forward, truncated, malformed, ttl_expired, loop.
    for (const v of ['forward', 'truncated', 'malformed', 'ttl_expired', 'loop', 'inner_malformed'] as VerdictName[]) {
      expect(CASES.some((c) => c.dir === 'encap' && c.verdict === v)).toBe(true);
      expect(CASES.some((c) => c.dir === 'decap' && c.verdict === v)).toBe(true);
    }
  });
});
