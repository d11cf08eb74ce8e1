/**
 * RFC 2003 encapsulation/decapsulation. The topology, in underlay addresses:
 *
 *   inside 10.0.1.0/24                                              inside 10.0.2.0/24
 *     [ host A  192.0.2.1 ] ------------ underlay ------------ [ host B  198.51.100.2 ]
 *        peers: B 198.51.100.2  10.0.2.0/24                       peers: A 192.0.2.1  10.0.1.0/24
 *               C 203.0.113.3   10.0.3.0/24, and (deliberately bad, for the loop rules)
 *                               198.51.100.0/24, 192.0.2.0/24
 *               D 100.64.0.4    100.64.0.0/16 (covers its own endpoint)
 *
 * A encapsulates what its TUN gives it; B decapsulates what A sent.
 */
import { describe, expect, it } from 'vitest';
import {
  IPV4_ERR_TOTAL_LENGTH,
  IPV4_OK,
  VERDICT_COUNT,
  VERDICT_DESCRIPTIONS,
  VERDICT_NAMES,
  PacketResult,
  Peer,
  Tunnel,
  Verdict,
  checkIPv4,
  computeHeaderChecksum,
  getChecksum,
  getDst,
  getFlagsFragment,
  getHeaderLength,
  getId,
  getIhl,
  getProtocol,
  getSrc,
  getTos,
  getTotalLength,
  getTtl,
  getVersion,
  internetChecksum,
  isDontFragment,
  type RouteLookup,
  type TunnelPolicy,
  type VerdictName,
} from '../../src/ipip/index.js';
import { hex, ip, refChecksum, rng } from '../helpers/packets.js';

// ---------------------------------------------------------------- helpers

/**
 * The reference for the outer ECN field (RFC 6040 §4.1 normal mode, as Linux's
 * INET_ECN_encapsulate): the inner ECN (low 2 bits of the TOS byte) copied, except that CE (11)
 * is sent as ECT(0) (10), so a congestion mark from before the tunnel is not counted twice.
 */
function encapEcn(innerTos: number): number {
  const ecn = innerTos & 0x03;
  return ecn === 0x03 ? 0x02 : ecn;
}

/** A linear-scan longest-prefix match: the reference the real PrefixTable is tested against. */
class LinearLpm<T> implements RouteLookup<T> {
  private readonly entries: { addr: number; mask: number; len: number; value: T }[] = [];
  add(prefix: string, value: T): this {
    const [a, l] = prefix.split('/');
    const len = Number(l);
    const mask = len === 0 ? 0 : -1 << (32 - len);
    this.entries.push({ addr: ip(a) & mask, mask, len, value });
    return this;
  }
  lookup(addr: number): T | undefined {
    let best: { len: number; value: T } | undefined;
    for (const e of this.entries) {
      if ((addr & e.mask) === e.addr && (best === undefined || e.len > best.len)) best = e;
    }
    return best?.value;
  }
}

const A_LOCAL = ip('192.0.2.1');
const B_LOCAL = ip('198.51.100.2');
const C_ENDPOINT = ip('203.0.113.3');
const D_ENDPOINT = ip('100.64.0.4');

interface Sides {
  a: Tunnel;
  b: Tunnel;
  peerB: Peer; // A's view of B
  peerC: Peer;
  peerD: Peer;
  peerA: Peer; // B's view of A
}

function sides(policy: Partial<Pick<TunnelPolicy, 'ttl' | 'tos' | 'df' | 'mtu'>> = {}, initialId = 0, idStep = 1): Sides {
  const peerB = new Peer({ index: 0, name: 'b', endpoint: B_LOCAL, initialId, idStep });
  const peerC = new Peer({ index: 1, name: 'c', endpoint: C_ENDPOINT });
  const peerD = new Peer({ index: 2, name: 'd', endpoint: D_ENDPOINT });
  const routesA = new LinearLpm<Peer>()
    .add('10.0.2.0/24', peerB)
    .add('10.0.3.0/24', peerC)
    .add('198.51.100.0/24', peerC)
    .add('192.0.2.0/24', peerC)
    .add('100.64.0.0/16', peerD);
  const p = { ttl: 64, tos: 'inherit', df: 'inherit', mtu: 1480, ...policy } as const;
  const a = new Tunnel({ local: A_LOCAL, routes: routesA, peers: [peerB, peerC, peerD], ...p });
  const peerA = new Peer({ index: 0, name: 'a', endpoint: A_LOCAL });
  const b = new Tunnel({ local: B_LOCAL, routes: new LinearLpm<Peer>().add('10.0.1.0/24', peerA), peers: [peerA], ...p });
  return { a, b, peerB, peerC, peerD, peerA };
}

interface InnerSpec {
  src?: string;
  dst?: string;
  ttl?: number;
  tos?: number;
  flags?: number;
  id?: number;
  protocol?: number;
  ihl?: number;
  payload?: number;
}

/** A valid inner IPv4 packet (options and payload filled with a pattern). */
function inner(spec: InnerSpec = {}): Buffer {
  const ihl = spec.ihl ?? 5;
  const hlen = ihl * 4;
  const total = hlen + (spec.payload ?? 8);
  const b = Buffer.alloc(total);
  for (let i = hlen; i < total; i++) b[i] = (i * 7 + 3) & 0xff;
  for (let i = 20; i < hlen; i++) b[i] = 0x01; // NOP options
  b[0] = 0x40 | ihl;
  b[1] = spec.tos ?? 0;
  b.writeUInt16BE(total, 2);
  b.writeUInt16BE(spec.id ?? 0x1234, 4);
  b.writeUInt16BE(spec.flags ?? 0x4000, 6);
  b[8] = spec.ttl ?? 63;
  b[9] = spec.protocol ?? 1;
  b.writeInt32BE(ip(spec.src ?? '10.0.1.1'), 12);
  b.writeInt32BE(ip(spec.dst ?? '10.0.2.1'), 16);
  b.writeUInt16BE(computeHeaderChecksum(b, 0), 10);
  return b;
}

/** Places `packet` at `off` in a buffer poisoned with 0xA5 (plus `tail` poisoned bytes). */
function place(packet: Buffer, off: number, tail = 5): Buffer {
  const b = Buffer.alloc(off + packet.length + tail, 0xa5);
  packet.copy(b, off);
  return b;
}

interface OuterSpec {
  /** Outer TOS byte (default 0: DSCP 0, not-ECT). */
  tos?: number;
  src?: number;
  dst?: number;
  protocol?: number;
  ttl?: number;
  ihl?: number;
  totalDelta?: number;
}

/** An outer datagram around `payload`, built independently of Tunnel (valid checksum). */
function outer(payload: Buffer, spec: OuterSpec = {}): Buffer {
  const ihl = spec.ihl ?? 5;
  const hlen = ihl * 4;
  const b = Buffer.alloc(hlen + payload.length);
  b[0] = 0x40 | ihl;
  b[1] = spec.tos ?? 0;
  b.writeUInt16BE(b.length + (spec.totalDelta ?? 0), 2);
  b.writeUInt16BE(0x4000, 6);
  b[8] = spec.ttl ?? 64;
  b[9] = spec.protocol ?? 4;
  b.writeInt32BE(spec.src ?? A_LOCAL, 12);
  b.writeInt32BE(spec.dst ?? B_LOCAL, 16);
  for (let i = 20; i < hlen; i++) b[i] = 0x01;
  payload.copy(b, hlen);
  b.writeUInt16BE(computeHeaderChecksum(b, 0), 10);
  return b;
}

/** Recompute the header checksum of the header at `off` after a deliberate corruption. */
function refix(b: Buffer, off = 0): Buffer {
  b.writeUInt16BE(computeHeaderChecksum(b, off), off + 10);
  return b;
}

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
    ]);
    expect(VERDICT_COUNT).toBe(19);
    expect(Verdict.ecn_drop).toBe(18);
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

// ---------------------------------------------------------------- byte vectors

// Derived by hand (see the sums in the comments), not by running the code under test.
// Inner: ICMP echo request 10.0.1.1 -> 10.0.2.1, ID 0x1234, DF, TTL 63, total 28.
//   header sum 4500+001c+1234+4000+3f01+0a00+0101+0a00+0201 = ed53, checksum ~ed53 = 12ac
//   ICMP: 0800+0001+0001 = 0802, checksum f7fd
const INNER_1 = hex('45 00 00 1c 12 34 40 00 3f 01 12 ac 0a 00 01 01 0a 00 02 01  08 00 f7 fd 00 01 00 01');
// Outer, policy ttl 64 / tos inherit / df inherit, first ID 0: 192.0.2.1 -> 198.51.100.2.
//   sum 4500+0030+0000+4000+4004+c000+0201+c633+6402 = 2b16a -> b16c, checksum 4e93
const OUTER_1 = hex('45 00 00 30 00 00 40 00 40 04 4e 93 c0 00 02 01 c6 33 64 02');

// Inner: UDP 10.0.1.7:12345 -> 10.0.2.9:53, TOS b9 (DSCP 46, ECN 01), no DF, TTL 17, ID 7.
//   sum 45b9+001c+0007+0000+1111+0a00+0107+0a00+0209 = 6dfd, checksum 9202
const INNER_2 = hex('45 b9 00 1c 00 07 00 00 11 11 92 02 0a 00 01 07 0a 00 02 09  30 39 00 35 00 08 00 00');
// Outer, policy ttl inherit / tos 0x28 / df always, ID 0xfffe. A fixed tos fixes only the DSCP
// (upper 6 bits); the ECN field still comes from the inner (RFC 6040 §4.1, Linux
// INET_ECN_encapsulate): DSCP 0x28 | inner ECN 01 (ECT(1), not CE so copied as is) = 0x29.
//   sum 4529+0030+fffe+4000+1104+c000+0201+c633+6402 = 38291 -> 8294, checksum 7d6b
// (before RFC 6040 the whole byte was fixed: TOS 0x28, checksum 7d6c; the +1 in the TOS word is
// the -1 in the checksum).
const OUTER_2 = hex('45 29 00 30 ff fe 40 00 11 04 7d 6b c0 00 02 01 c6 33 64 02');

describe('encapsulate: byte vectors', () => {
  it('the hand-derived inner packet is valid', () => {
    expect(checkIPv4(INNER_1, 0, INNER_1.length, true)).toBe(IPV4_OK);
    expect(checkIPv4(INNER_2, 0, INNER_2.length, true)).toBe(IPV4_OK);
    expect(internetChecksum(INNER_1, 20, 8)).toBe(0);
    expect(checkIPv4(OUTER_1, 0, 20, true)).toBe(IPV4_ERR_TOTAL_LENGTH); // claims 48 bytes, 20 present
    expect(checkIPv4(OUTER_1, 0, 20, false)).toBe(IPV4_ERR_TOTAL_LENGTH);
  });

  it('writes the outer header in front, byte for byte, into a poisoned buffer', () => {
    const { a, peerB } = sides();
    const off = 20 + 7;
    const buf = place(INNER_1, off);
    const out = new PacketResult();
    expect(a.encapsulate(buf, off, INNER_1.length, out)).toBe(Verdict.forward);
    const expected = Buffer.concat([Buffer.alloc(7, 0xa5), OUTER_1, INNER_1, Buffer.alloc(5, 0xa5)]);
    expect(buf.toString('hex')).toBe(expected.toString('hex'));
    expect(out.offset).toBe(7);
    expect(out.length).toBe(48);
    expect(out.peer).toBe(peerB);
    expect(peerB.nextId).toBe(1);
  });

  it('parses every field of the encapsulated packet', () => {
    const { a } = sides();
    const buf = place(INNER_1, 20, 0);
    const out = new PacketResult();
    a.encapsulate(buf, 20, INNER_1.length, out);
    const o = out.offset;
    expect(checkIPv4(buf, o, out.length, true)).toBe(IPV4_OK);
    expect(getVersion(buf, o)).toBe(4);
    expect(getIhl(buf, o)).toBe(5);
    expect(getHeaderLength(buf, o)).toBe(20);
    expect(getTos(buf, o)).toBe(0);
    expect(getTotalLength(buf, o)).toBe(48);
    expect(getId(buf, o)).toBe(0);
    expect(getFlagsFragment(buf, o)).toBe(0x4000);
    expect(getTtl(buf, o)).toBe(64);
    expect(getProtocol(buf, o)).toBe(4);
    expect(getChecksum(buf, o)).toBe(0x4e93);
    expect(getSrc(buf, o)).toBe(A_LOCAL);
    expect(getDst(buf, o)).toBe(B_LOCAL);
    expect(buf.subarray(o + 20).equals(INNER_1)).toBe(true);
  });

  it('fixed DSCP (ECN from the inner), inherited TTL, DF always; the ID wraps at 16 bits', () => {
    const { a, peerB } = sides({ ttl: 'inherit', tos: 0x28, df: 'always' }, 0xfffe);
    const off = 20;
    const buf = place(INNER_2, off, 0);
    const out = new PacketResult();
    expect(a.encapsulate(buf, off, INNER_2.length, out)).toBe(Verdict.forward);
    expect(buf.subarray(0, 20).toString('hex')).toBe(OUTER_2.toString('hex'));
    expect(buf.subarray(20).equals(INNER_2)).toBe(true);
    expect(peerB.nextId).toBe(0xffff);
    a.encapsulate(buf, off, INNER_2.length, out);
    expect(getId(buf, 0)).toBe(0xffff);
    a.encapsulate(buf, off, INNER_2.length, out);
    expect(getId(buf, 0)).toBe(0);
    expect(peerB.nextId).toBe(1);
    expect(computeHeaderChecksum(buf, 0)).toBe(getChecksum(buf, 0));
  });

  it('copies TOS (ECN included) and leaves DF clear when the inner has none', () => {
    const { a } = sides();
    const buf = place(INNER_2, 20, 0);
    const out = new PacketResult();
    expect(a.encapsulate(buf, 20, INNER_2.length, out)).toBe(Verdict.forward);
    expect(getTos(buf, 0)).toBe(0xb9);
    expect(isDontFragment(buf, 0)).toBe(false);
    expect(getFlagsFragment(buf, 0)).toBe(0);
    expect(getTtl(buf, 0)).toBe(64);
    expect(checkIPv4(buf, 0, 48, true)).toBe(IPV4_OK);
  });

  it('an inner fragment is encapsulated as is (MF/offset stay inside; outer has neither)', () => {
    const { a } = sides();
    const frag = inner({ flags: 0x2000 | 0x00b9, payload: 16 });
    const buf = place(frag, 20, 0);
    const out = new PacketResult();
    expect(a.encapsulate(buf, 20, frag.length, out)).toBe(Verdict.forward);
    expect(getFlagsFragment(buf, 0)).toBe(0);
    expect(buf.subarray(20).equals(frag)).toBe(true);
  });
});

// ---------------------------------------------------------------- round trips

describe('round trips', () => {
  it('A encapsulates, B decapsulates: identical inner bytes at the same offset', () => {
    const { a, b, peerA, peerB } = sides();
    const out = new PacketResult();
    for (const off of [20, 21, 64, 2048 - 1500]) {
      for (const pkt of [INNER_1, INNER_2, inner({ ihl: 15, payload: 1000 }), inner({ payload: 0 })]) {
        const buf = place(pkt, off, 3);
        expect(a.encapsulate(buf, off, pkt.length, out)).toBe(Verdict.forward);
        expect(out.peer).toBe(peerB);
        const outerOff = out.offset;
        const outerLen = out.length;
        const snapshot = Buffer.from(buf);
        expect(b.decapsulate(buf, outerOff, outerLen, out)).toBe(Verdict.forward);
        expect(out.offset).toBe(off);
        expect(out.length).toBe(pkt.length);
        expect(out.peer).toBe(peerA);
        expect(buf.subarray(out.offset, out.offset + out.length).equals(pkt)).toBe(true);
        expect(buf.equals(snapshot)).toBe(true); // decapsulate writes nothing
      }
    }
  });

  it('decapsulates at an offset unrelated to where it was encapsulated', () => {
    const { a, b } = sides();
    const out = new PacketResult();
    const buf = place(INNER_1, 20);
    a.encapsulate(buf, 20, INNER_1.length, out);
    const wire = Buffer.from(buf.subarray(out.offset, out.offset + out.length));
    const rx = place(wire, 333);
    expect(b.decapsulate(rx, 333, wire.length, out)).toBe(Verdict.forward);
    expect(out.offset).toBe(353);
    expect(rx.subarray(353, 353 + out.length).equals(INNER_1)).toBe(true);
  });

  it('accepts an outer IHL > 5 (options) and ignores bytes past the outer total length', () => {
    const { b, peerA } = sides();
    const out = new PacketResult();
    const wire = outer(INNER_1, { ihl: 7 });
    expect(b.decapsulate(place(wire, 0), 0, wire.length, out)).toBe(Verdict.forward);
    expect([out.offset, out.length, out.peer]).toEqual([28, 28, peerA]);
    const padded = Buffer.concat([wire, Buffer.alloc(6, 0x00)]); // link-layer padding
    expect(b.decapsulate(place(padded, 4), 4, padded.length, out)).toBe(Verdict.forward);
    expect([out.offset, out.length]).toEqual([32, 28]);
  });

  it('checksum equals full recomputation for every one of the 65536 outer IDs (all carry cases)', () => {
    // The ID sweeps every 16-bit value, so the per-packet sum hits every residue, including
    // the rare ones where the first fold carries again.
    for (const policy of [{}, { ttl: 'inherit', tos: 0xff, df: 'always' }] as const) {
      const { a, peerB } = sides(policy);
      const out = new PacketResult();
      // tos 0xfc: not-ECT; 0xff: CE, sent as ECT(0), so the ECN rewrite is in the swept sum too.
      for (const tos of [0xfc, 0xff]) {
        const pkt = inner({ tos, ttl: 0xff, payload: 1400 });
        const buf = place(pkt, 20, 0);
        let bad = 0;
        for (let id = 0; id < 0x10000; id++) {
          a.encapsulate(buf, 20, pkt.length, out);
          if (getChecksum(buf, 0) !== computeHeaderChecksum(buf, 0)) bad++;
        }
        expect(bad).toBe(0);
        expect(getTos(buf, 0)).toBe(0xfc | encapEcn(tos));
        expect(peerB.nextId).toBe(0);
      }
    }
  });

  it('seeded random headers and policies: checksum equals full recomputation, fields as the policy says', () => {
    const r = rng(2003);
    const out = new PacketResult();
    for (let round = 0; round < 60; round++) {
      const policy = {
        ttl: r() % 3 === 0 ? ('inherit' as const) : 1 + (r() % 255),
        tos: r() % 3 === 0 ? ('inherit' as const) : r() & 0xff,
        df: r() % 2 === 0 ? ('inherit' as const) : ('always' as const),
        mtu: 1480,
      };
      const startId = r() & 0xffff;
      const { a, b, peerB } = sides(policy, startId);
      for (let n = 0; n < 100; n++) {
        const flags = r() % 2 === 0 ? 0x4000 : r() % 2 === 0 ? 0 : 0x2000 | (r() & 0x1fff);
        const spec: InnerSpec = {
          src: `10.0.1.${r() & 0xff}`,
          dst: `10.0.2.${r() & 0xff}`,
          ttl: 1 + (r() % 255),
          tos: r() & 0xff,
          flags,
          id: r() & 0xffff,
          protocol: r() & 0xff,
          ihl: 5 + (r() % 11),
          payload: r() % 1400,
        };
        const pkt = inner(spec);
        if (pkt.length > 1480) continue;
        const off = 20 + (r() % 40);
        const buf = place(pkt, off, r() % 4);
        const expectedId = peerB.nextId;
        expect(a.encapsulate(buf, off, pkt.length, out)).toBe(Verdict.forward);
        const o = out.offset;
        expect(o).toBe(off - 20);
        expect(getChecksum(buf, o)).toBe(computeHeaderChecksum(buf, o));
        expect(internetChecksum(buf, o, 20)).toBe(0);
        expect(checkIPv4(buf, o, out.length, true)).toBe(IPV4_OK);
        expect(buf[o]).toBe(0x45);
        // DSCP: the inner's or the fixed value's upper 6 bits; ECN: always the inner's, CE -> ECT(0).
        const dscp = (policy.tos === 'inherit' ? spec.tos! : policy.tos) & 0xfc;
        expect(getTos(buf, o)).toBe(dscp | encapEcn(spec.tos!));
        expect(getTtl(buf, o)).toBe(policy.ttl === 'inherit' ? spec.ttl : policy.ttl);
        expect(getFlagsFragment(buf, o)).toBe(policy.df === 'always' || (flags & 0x4000) !== 0 ? 0x4000 : 0);
        expect(getId(buf, o)).toBe(expectedId);
        expect(getTotalLength(buf, o)).toBe(pkt.length + 20);
        expect(getProtocol(buf, o)).toBe(4);
        expect(getSrc(buf, o)).toBe(A_LOCAL);
        expect(getDst(buf, o)).toBe(B_LOCAL);
        expect(buf.subarray(off, off + pkt.length).equals(pkt)).toBe(true);
        expect(b.decapsulate(buf, o, out.length, out)).toBe(Verdict.forward);
        expect([out.offset, out.length]).toEqual([off, pkt.length]);
      }
    }
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

function policyOf(t: Tunnel): TunnelPolicy {
  return { local: t.local, routes: t.routes, peers: t.peers, ttl: t.ttl, tos: t.tos, df: t.df, mtu: t.mtu };
}

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
    expect([...covered].sort()).toEqual(VERDICT_NAMES.filter((n) => !ioOnly.includes(n)).sort());
    // Both directions reach forward, truncated, malformed, ttl_expired, loop.
    for (const v of ['forward', 'truncated', 'malformed', 'ttl_expired', 'loop', 'inner_malformed'] as VerdictName[]) {
      expect(CASES.some((c) => c.dir === 'encap' && c.verdict === v)).toBe(true);
      expect(CASES.some((c) => c.dir === 'decap' && c.verdict === v)).toBe(true);
    }
  });
});

// ---------------------------------------------------------------- result object and peers

describe('PacketResult', () => {
  it('is the caller\'s object, overwritten by every call', () => {
    const { a, b, peerB, peerA } = sides();
    const out = new PacketResult();
    const buf = place(INNER_1, 20);
    expect(a.encapsulate(buf, 20, 28, out)).toBe(Verdict.forward);
    expect([out.offset, out.length, out.peer]).toEqual([0, 48, peerB]);
    const keep = out;
    // A drop before the peer is known clears it.
    expect(a.encapsulate(buf, 20, -1, out)).toBe(Verdict.truncated);
    expect(out).toBe(keep);
    expect([out.offset, out.length, out.peer]).toEqual([20, -1, null]);
    // A drop after the peer is known names it (for per-peer drop counters / ICMP).
    const big = inner({ payload: 1461 });
    expect(a.encapsulate(place(big, 20), 20, big.length, out)).toBe(Verdict.too_big);
    expect(out.peer).toBe(peerB);
    expect(a.mtuFor(out.peer!)).toBe(1480);
    const spoof = outer(inner({ src: '10.0.9.1' }));
    expect(b.decapsulate(place(spoof, 0), 0, spoof.length, out)).toBe(Verdict.spoofed_source);
    expect([out.offset, out.length, out.peer]).toEqual([0, spoof.length, peerA]);
    expect(b.decapsulate(place(spoof, 0), 0, 5, out)).toBe(Verdict.malformed);
    expect(out.peer).toBe(null);
  });

  it('core touches no per-peer state but the outer ID (the data path keeps the figures, src/dataplane/figures.ts)', () => {
    const { a, b, peerB, peerA } = sides();
    const out = new PacketResult();
    const buf = place(INNER_1, 20);
    const before = [peerA, peerB].map((p) => ({ ...p }));
    a.encapsulate(buf, 20, 28, out);
    b.decapsulate(buf, out.offset, out.length, out);
    expect({ ...peerA }).toEqual(before[0]);
    expect({ ...peerB }).toEqual({ ...before[1], nextId: before[1]!.nextId + 1 });
  });

  it('keeps the timestamp field a double from the start (no shape change later)', () => {
    const { peerA } = sides();
    expect(Object.is(peerA.pmtuLearnedAt, -0)).toBe(true);
    expect(JSON.stringify({ t: peerA.pmtuLearnedAt })).toBe('{"t":0}');
  });
});

describe('Peer and Tunnel construction', () => {
  it('precomputes the outer partial sum of the fixed fields', () => {
    const { peerB } = sides({ ttl: 64, tos: 0x28, df: 'always' });
    // 4528 + 4000 + 4004 + c000 + 0201 + c633 + 6402, folded
    let sum = 0x4528 + 0x4000 + 0x4004 + 0xc000 + 0x0201 + 0xc633 + 0x6402;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    expect(peerB.outerSum).toBe(sum);
    expect([peerB.outerSrc, peerB.outerTos, peerB.outerTtl, peerB.outerFlags]).toEqual([A_LOCAL, 0x28, 64, 0x4000]);
  });

  it('finds peers by endpoint (negative and positive int32)', () => {
    const { a, peerB, peerC, peerD } = sides();
    expect(a.peerByEndpoint(B_LOCAL)).toBe(peerB);
    expect(a.peerByEndpoint(C_ENDPOINT)).toBe(peerC);
    expect(a.peerByEndpoint(D_ENDPOINT)).toBe(peerD);
    expect(a.peerByEndpoint(ip('100.64.0.5'))).toBe(null);
    expect(a.peerByEndpoint(A_LOCAL)).toBe(null);
    expect(a.isTunnelAddress(A_LOCAL)).toBe(true);
    expect(a.isTunnelAddress(D_ENDPOINT)).toBe(true);
    expect(a.isTunnelAddress(ip('10.0.2.1'))).toBe(false);
    expect(Object.isFrozen(a)).toBe(true);
  });

  it('rejects inconsistent policies', () => {
    const { a } = sides();
    const base = policyOf(a);
    const bad: [string, Partial<TunnelPolicy>][] = [
      ['ttl 0', { ttl: 0 }],
      ['ttl 256', { ttl: 256 }],
      ['tos 256', { tos: 256 }],
      ['mtu 67', { mtu: 67 }],
      ['mtu 65516', { mtu: 65516 }],
      ['local not int32', { local: 0xc0000201 }],
      ['index out of place', { peers: [a.peers[1], a.peers[0]] }],
      ['endpoint is local', { local: B_LOCAL }],
      ['shared endpoint', { peers: [a.peers[0], new Peer({ index: 1, name: 'dup', endpoint: B_LOCAL })] }],
    ];
    for (const [name, change] of bad) expect(() => new Tunnel({ ...base, ...change }), name).toThrow(RangeError);
    expect(() => new Peer({ index: 0, name: 'x', endpoint: 2 ** 31 })).toThrow(RangeError);
    expect(() => new Peer({ index: 0, name: 'x', endpoint: 1, mtu: 65516 })).toThrow(RangeError);
    expect(() => new Peer({ index: 0, name: 'x', endpoint: 1, initialId: 0x10000 })).toThrow(RangeError);
  });

  it('inheritSoftState carries the ID sequence across a reload, not the MTU (figures: test/unit/figures.test.ts)', () => {
    const old = new Peer({ index: 3, name: 'b', endpoint: B_LOCAL, mtu: 1400, initialId: 77 });
    const fresh = new Peer({ index: 0, name: 'b', endpoint: B_LOCAL, mtu: 1480 });
    fresh.inheritSoftState(old);
    expect([fresh.nextId, fresh.mtu]).toEqual([77, 1480]);
  });
});

// ---------------------------------------------------------------- outer ID step (io.queues)

// With several data-path queues each queue has its own Peer copies; a queue's IDs toward one
// endpoint are start + k * idStep (mod 2^16), idStep a power of two, so each queue keeps one
// residue class mod idStep (src/daemon/setup.ts `queueIds` gives each queue its own).

/** The outer ID of consecutive encapsulations of `pkt` toward peer B, read from the wire bytes. */
function wireIds(a: Tunnel, pkt: Buffer, count: number, onPacket?: (buf: Buffer, o: number) => void): number[] {
  const out = new PacketResult();
  const buf = place(pkt, 20, 0);
  const ids: number[] = [];
  let notForwarded = 0;
  for (let k = 0; k < count; k++) {
    if (a.encapsulate(buf, 20, pkt.length, out) !== Verdict.forward) notForwarded++;
    ids.push((buf[out.offset + 4]! << 8) | buf[out.offset + 5]!); // Identification, RFC 791 octets 4-5
    onPacket?.(buf, out.offset);
  }
  expect(notForwarded).toBe(0);
  return ids;
}

describe('encapsulate: outer ID advances by peer.idStep', () => {
  it('Peer takes a power of two 1..32768 as idStep (default 1) and rejects anything else', () => {
    expect(new Peer({ index: 0, name: 'x', endpoint: 1 }).idStep).toBe(1);
    for (const ok of [1, 2, 4, 8, 16, 1024, 0x8000]) expect(new Peer({ index: 0, name: 'x', endpoint: 1, idStep: ok }).idStep).toBe(ok);
    for (const bad of [0, 3, 6, 7, 12, 0x10000, 0x20000, 1.5, -2, -1, NaN, Infinity]) {
      expect(() => new Peer({ index: 0, name: 'x', endpoint: 1, idStep: bad }), String(bad)).toThrow(RangeError);
      expect(() => new Peer({ index: 0, name: 'x', endpoint: 1, idStep: bad }), String(bad)).toThrow(/idStep/);
    }
  });

  it('IDs on the wire go start, start+step, ... mod 2^16, in one residue class mod step, each header checksum valid', () => {
    const pkt = inner({ tos: 0xb9, ttl: 0x80, payload: 40 });
    // Starts next to the wrap (so it happens within a few packets), in the middle, and at 0.
    for (const step of [1, 2, 4, 8, 0x8000]) {
      for (const start of [0xffff, 0xfffd, 0xfff3, 0x7fff, 0]) {
        const { a, peerB } = sides({}, start, step);
        let bad = 0;
        const ids = wireIds(a, pkt, 40, (buf, o) => {
          // RFC 1071 the slow way (test/helpers), not the code under test: 0 = the header verifies.
          if (refChecksum(buf, o, 20) !== 0) bad++;
        });
        expect(bad, `step ${step} start ${start}`).toBe(0);
        const model = ids.map((_, k) => (start + k * step) % 0x10000);
        expect(ids, `step ${step} start ${start}`).toEqual(model);
        expect(ids.every((id) => id % step === start % step)).toBe(true);
        expect(peerB.nextId).toBe((start + 40 * step) % 0x10000);
      }
    }
  });

  it('the wrap itself: 0xfffe with step 4 goes 0xfffe, 2, 6 (not 0x10002, not 0 or 1)', () => {
    const { a } = sides({}, 0xfffe, 4);
    expect(wireIds(a, INNER_1, 3)).toEqual([0xfffe, 2, 6]);
  });

  it('each step: 65536/step distinct IDs, then the same sequence again', () => {
    const pkt = inner({ payload: 0 });
    for (const step of [1, 2, 8, 64, 0x8000]) {
      const start = 0xfffb;
      const period = 0x10000 / step;
      const { a, peerB } = sides({}, start, step);
      const ids = wireIds(a, pkt, period + 3);
      expect(new Set(ids.slice(0, period)).size, `step ${step}`).toBe(period);
      expect(ids.slice(period)).toEqual(ids.slice(0, 3));
      expect(peerB.nextId).toBe((start + 3 * step) & 0xffff);
    }
  });

  it('the step is per peer: another peer of the same Tunnel keeps counting by its own', () => {
    const { a, peerB, peerC } = sides({}, 10, 8);
    const out = new PacketResult();
    const toB = place(INNER_1, 20, 0);
    const toC = place(inner({ dst: '10.0.3.1' }), 20, 0);
    const seen: [string, number][] = [];
    for (let k = 0; k < 3; k++) {
      for (const [name, buf] of [['b', toB], ['c', toC]] as const) {
        expect(a.encapsulate(buf, 20, buf.length - 20, out)).toBe(Verdict.forward);
        seen.push([name, buf.readUInt16BE(out.offset + 4)]);
      }
    }
    expect(seen).toEqual([['b', 10], ['c', 0], ['b', 18], ['c', 1], ['b', 26], ['c', 2]]);
    expect([peerB.nextId, peerC.nextId]).toEqual([34, 3]);
  });

  it('a packet that is not forwarded takes no ID', () => {
    const { a, peerB } = sides({ mtu: 100 }, 500, 4);
    const out = new PacketResult();
    const big = inner({ payload: 200 });
    expect(a.encapsulate(place(big, 20, 0), 20, big.length, out)).toBe(Verdict.too_big);
    expect(peerB.nextId).toBe(500);
    expect(wireIds(a, INNER_1, 2)).toEqual([500, 504]);
  });

  it('inheritSoftState keeps nextId (not re-based), and the new peer goes on by its own step', () => {
    // A tunnel toward B alone, as a reload would build it around a new Peer.
    const tunnelFor = (p: Peer): Tunnel =>
      new Tunnel({ local: A_LOCAL, routes: new LinearLpm<Peer>().add('10.0.2.0/24', p), peers: [p], ttl: 64, tos: 'inherit', df: 'inherit', mtu: 1480 });
    const old = new Peer({ index: 0, name: 'b', endpoint: B_LOCAL, initialId: 0xfff9, idStep: 4 });
    expect(wireIds(tunnelFor(old), INNER_1, 2)).toEqual([0xfff9, 0xfffd]);
    expect(old.nextId).toBe(1);
    const fresh = new Peer({ index: 0, name: 'b', endpoint: B_LOCAL, initialId: 0x1234, idStep: 4 });
    fresh.inheritSoftState(old);
    expect(fresh.nextId).toBe(1);
    expect(fresh.idStep).toBe(4);
    // The sequence continues where the old peer left it, in the same residue class (1 mod 4).
    expect(wireIds(tunnelFor(fresh), INNER_1, 3)).toEqual([1, 5, 9]);
    expect(fresh.nextId).toBe(13);
  });
});

// ---------------------------------------------------------------- ECN (RFC 6040, as Linux)

// Byte vectors, by hand. INNER_1 with TOS bb (DSCP 46 EF, ECN 11 = CE):
//   header sum ed53 + 00bb = ee0e, checksum ~ee0e = 11f1
const INNER_CE = hex('45 bb 00 1c 12 34 40 00 3f 01 11 f1 0a 00 01 01 0a 00 02 01  08 00 f7 fd 00 01 00 01');
// Outer under the default policy (tos inherit): DSCP copied (b8), CE sent as ECT(0) (10) -> ba.
//   OUTER_1's sum b16c + 00ba = b226, checksum ~b226 = 4dd9
const OUTER_CE = hex('45 ba 00 30 00 00 40 00 40 04 4d d9 c0 00 02 01 c6 33 64 02');

describe('ECN on encapsulation (RFC 6040 §4.1)', () => {
  it('byte vector: an inner CE packet gets an ECT(0) outer header; the inner keeps CE', () => {
    const { a } = sides();
    const buf = place(INNER_CE, 20 + 3);
    const out = new PacketResult();
    expect(a.encapsulate(buf, 23, INNER_CE.length, out)).toBe(Verdict.forward);
    const expected = Buffer.concat([Buffer.alloc(3, 0xa5), OUTER_CE, INNER_CE, Buffer.alloc(5, 0xa5)]);
    expect(buf.toString('hex')).toBe(expected.toString('hex'));
  });

  // Inner TOS = DSCP 18 (0x48) | ECN; expected outer TOS worked out by hand per row:
  // the DSCP is the inner's (inherit) or the policy's upper 6 bits; the ECN is the inner's with
  // CE (11) -> ECT(0) (10). A fixed tos with ECN bits set (0x2b) contributes only 0x28.
  const rows: [string, number | 'inherit', number, number][] = [
    // policy  , fixed tos , inner TOS, outer TOS
    ['inherit', 'inherit', 0x48, 0x48], // not-ECT -> not-ECT
    ['inherit', 'inherit', 0x49, 0x49], // ECT(1)  -> ECT(1)
    ['inherit', 'inherit', 0x4a, 0x4a], // ECT(0)  -> ECT(0)
    ['inherit', 'inherit', 0x4b, 0x4a], // CE      -> ECT(0)
    ['fixed b8', 0xb8, 0x48, 0xb8],
    ['fixed b8', 0xb8, 0x49, 0xb9],
    ['fixed b8', 0xb8, 0x4a, 0xba],
    ['fixed b8', 0xb8, 0x4b, 0xba],
    ['fixed 2b', 0x2b, 0x48, 0x28], // the configured ECN bits 11 are not sent
    ['fixed 2b', 0x2b, 0x49, 0x29],
    ['fixed 2b', 0x2b, 0x4a, 0x2a],
    ['fixed 2b', 0x2b, 0x4b, 0x2a],
    ['fixed 00', 0, 0xff, 0x02], // DSCP 63 replaced by 0, CE -> ECT(0)
    ['inherit', 'inherit', 0xff, 0xfe],
  ];
  it.each(rows)('policy %s (%s): inner TOS %i -> outer TOS %i', (_n, tos, innerTos, outerTos) => {
    for (const ttl of [64, 'inherit'] as const) {
      const { a, b } = sides({ tos, ttl });
      const pkt = inner({ tos: innerTos, payload: 33 });
      const buf = place(pkt, 41);
      const out = new PacketResult();
      expect(a.encapsulate(buf, 41, pkt.length, out)).toBe(Verdict.forward);
      expect(getTos(buf, out.offset)).toBe(outerTos);
      expect(internetChecksum(buf, out.offset, 20)).toBe(0); // full recomputation over the header
      expect(getChecksum(buf, out.offset)).toBe(computeHeaderChecksum(buf, out.offset));
      expect(buf.subarray(41, 41 + pkt.length).equals(pkt)).toBe(true); // inner TOS untouched
      // The outer is never CE, so the exit point hands back the inner unchanged.
      const snapshot = Buffer.from(buf);
      expect(b.decapsulate(buf, out.offset, out.length, out)).toBe(Verdict.forward);
      expect(buf.equals(snapshot)).toBe(true);
    }
  });

  it('a fixed tos is bound as its DSCP only (template and partial sum)', () => {
    const { peerB } = sides({ tos: 0x2b, ttl: 64, df: 'always' });
    let sum = 0x4528 + 0x4000 + 0x4004 + 0xc000 + 0x0201 + 0xc633 + 0x6402;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    expect(peerB.outerTos).toBe(0x28);
    expect(peerB.outerSum).toBe(sum);
  });
});

/** Independent header checksum: 16-bit words with the checksum field skipped, folded, complemented. */
function refHeaderChecksum(b: Buffer, off: number): number {
  const hl = (b[off] & 0x0f) * 4;
  let sum = 0;
  for (let i = 0; i < hl; i += 2) if (i !== 10) sum += b.readUInt16BE(off + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

describe('ECN on decapsulation (RFC 6040 §4.2, as Linux INET_ECN_decapsulate)', () => {
  // By hand: INNER_1 with TOS 02 (ECT(0)): sum ed53 + 0002 = ed55, checksum 12aa. Under an outer
  // CE it leaves as TOS 03 (CE): sum ed56, checksum 12a9.
  const INNER_ECT0 = hex('45 02 00 1c 12 34 40 00 3f 01 12 aa 0a 00 01 01 0a 00 02 01  08 00 f7 fd 00 01 00 01');
  const INNER_ECT0_CE = hex('45 03 00 1c 12 34 40 00 3f 01 12 a9 0a 00 01 01 0a 00 02 01  08 00 f7 fd 00 01 00 01');

  it('byte vector: outer CE marks an ECT(0) inner CE, checksum patched; nothing else written', () => {
    const { b, peerA } = sides();
    const wire = outer(INNER_ECT0, { tos: 0x03 });
    const buf = place(wire, 11);
    const out = new PacketResult();
    expect(b.decapsulate(buf, 11, wire.length, out)).toBe(Verdict.forward);
    expect([out.offset, out.length, out.peer]).toEqual([31, 28, peerA]);
    const expected = Buffer.concat([Buffer.alloc(11, 0xa5), wire.subarray(0, 20), INNER_ECT0_CE, Buffer.alloc(5, 0xa5)]);
    expect(buf.toString('hex')).toBe(expected.toString('hex'));
  });

  // Inner TOS = DSCP 46 (0xb8) | inner ECN; outer TOS = DSCP 8 (0x20) | outer ECN. The outer
  // DSCP is never copied in. Expected per the brief (Linux): only an outer CE changes anything;
  // over not-ECT it is a drop, over ECT(0)/ECT(1) the inner becomes CE, over CE nothing to do.
  const NOT = 0, ECT1 = 1, ECT0 = 2, CE = 3;
  const rows: [string, number, string, number, VerdictName, number][] = [];
  const ecnName = ['not-ECT', 'ECT(1)', 'ECT(0)', 'CE'];
  const table: Record<number, Record<number, [VerdictName, number]>> = {
    [NOT]: { [NOT]: ['forward', 0xb8], [ECT1]: ['forward', 0xb9], [ECT0]: ['forward', 0xba], [CE]: ['forward', 0xbb] },
    [ECT0]: { [NOT]: ['forward', 0xb8], [ECT1]: ['forward', 0xb9], [ECT0]: ['forward', 0xba], [CE]: ['forward', 0xbb] },
    [ECT1]: { [NOT]: ['forward', 0xb8], [ECT1]: ['forward', 0xb9], [ECT0]: ['forward', 0xba], [CE]: ['forward', 0xbb] },
    [CE]: { [NOT]: ['ecn_drop', 0xb8], [ECT1]: ['forward', 0xbb], [ECT0]: ['forward', 0xbb], [CE]: ['forward', 0xbb] },
  };
  for (const o of [NOT, ECT0, ECT1, CE]) {
    for (const i of [NOT, ECT1, ECT0, CE]) rows.push([ecnName[o], o, ecnName[i], i, ...table[o][i]]);
  }
  it.each(rows)('outer %s (%i) over inner %s (%i) -> %s, inner TOS %i', (_o, oEcn, _i, iEcn, verdict, innerTos) => {
    const { b } = sides();
    const pkt = inner({ tos: 0xb8 | iEcn, id: 0x5a5a, payload: 21 });
    const wire = outer(pkt, { tos: 0x20 | oEcn });
    const buf = place(wire, 7);
    const before = Buffer.from(buf);
    const out = new PacketResult();
    expect(VERDICT_NAMES[b.decapsulate(buf, 7, wire.length, out)]).toBe(verdict);
    const io = 7 + 20;
    expect(getTos(buf, io)).toBe(innerTos);
    // Checksum by full independent recomputation, and the header verifies.
    expect(getChecksum(buf, io)).toBe(refHeaderChecksum(buf, io));
    expect(checkIPv4(buf, io, pkt.length, true)).toBe(IPV4_OK);
    // Only the inner TOS byte and checksum may change, and only when the TOS did.
    const changed: number[] = [];
    for (let k = 0; k < buf.length; k++) if (buf[k] !== before[k]) changed.push(k - io);
    if (innerTos === (0xb8 | iEcn)) expect(changed).toEqual([]);
    else expect(changed.filter((k) => k !== 10 && k !== 11)).toEqual([1]);
    if (verdict === 'forward') expect([out.offset, out.length]).toEqual([io, pkt.length]);
    else expect([out.offset, out.length]).toEqual([7, wire.length]);
  });

  it('the incremental checksum equals full recomputation for every inner checksum value', () => {
    // Sweeping the inner ID through all 65536 values sweeps the inner header sum through every
    // residue: the resulting checksum takes every value but 0xffff (an IPv4 header sum is never
    // 0, since the version nibble is 4), 0x0000 included (RFC 1624 §3's -0 corner).
    const { b } = sides();
    const out = new PacketResult();
    for (const ecn of [ECT0, ECT1]) {
      const pkt = inner({ tos: 0x10 | ecn, payload: 4 });
      const wire = outer(pkt, { tos: 0x03 });
      const buf = place(wire, 0, 0);
      let bad = 0;
      const seen = new Set<number>();
      for (let id = 0; id < 0x10000; id++) {
        buf[21] = 0x10 | ecn; // reset the TOS the previous round marked
        buf.writeUInt16BE(id, 24);
        buf.writeUInt16BE(refHeaderChecksum(buf, 20), 30);
        if (b.decapsulate(buf, 0, buf.length, out) !== Verdict.forward || buf[21] !== (0x10 | CE)) bad++;
        const c = buf.readUInt16BE(30);
        seen.add(c);
        if (c !== refHeaderChecksum(buf, 20)) bad++;
      }
      expect(bad).toBe(0);
      expect(seen.size).toBe(0xffff);
      expect(seen.has(0x0000)).toBe(true);
      expect(seen.has(0xffff)).toBe(false);
    }
  });
});

// ---------------------------------------------------------------- loop before route

describe('encapsulate: the destination loop check comes before the route look-up', () => {
  // B's table has only 10.0.1.0/24, so neither tunnel address below is routed.
  it.each([
    ["B's own underlay address", '198.51.100.2'],
    ["A's endpoint (B's only peer)", '192.0.2.1'],
  ])('inner destination = %s with no route -> loop, not no_route', (_name, dst) => {
    const { b } = sides();
    const pkt = inner({ src: '10.0.2.1', dst });
    const buf = place(pkt, 20);
    const before = Buffer.from(buf);
    const out = new PacketResult();
    expect(VERDICT_NAMES[b.encapsulate(buf, 20, pkt.length, out)]).toBe('loop');
    expect(out.peer).toBe(null); // no route was looked up
    expect(buf.equals(before)).toBe(true);
  });

  it('a routable neighbour of the endpoint is forwarded, an unroutable one is no_route', () => {
    const { a, b, peerA } = sides();
    const out = new PacketResult();
    const ok = inner({ src: '10.0.2.1', dst: '10.0.1.1' });
    expect(b.encapsulate(place(ok, 20), 20, ok.length, out)).toBe(Verdict.forward);
    expect(out.peer).toBe(peerA);
    const near = inner({ src: '10.0.2.1', dst: '192.0.2.2' });
    expect(VERDICT_NAMES[b.encapsulate(place(near, 20), 20, near.length, out)]).toBe('no_route');
    // On A, 203.0.113.4 (next to C's endpoint) is unrouted, C's endpoint itself is a loop.
    const nearC = inner({ dst: '203.0.113.4' });
    expect(VERDICT_NAMES[a.encapsulate(place(nearC, 20), 20, nearC.length, out)]).toBe('no_route');
  });
});
