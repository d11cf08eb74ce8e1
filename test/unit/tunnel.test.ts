/**
 * Tunnel and Peer as objects: the caller-owned PacketResult, the per-peer fields the core leaves
 * alone, construction and policy checks, soft state across a reload
 * (topology and packets: test/helpers/tunnel-sides.ts).
 */
import { describe, expect, it } from 'vitest';
import { PacketResult, Peer, Tunnel, type TunnelPolicy, Verdict } from '../../src/ipip/index.js';
import { ip } from '../helpers/packets.js';
import {
  A_LOCAL,
  B_LOCAL,
  C_ENDPOINT,
  D_ENDPOINT,
  inner,
  INNER_1,
  outer,
  place,
  policyOf,
  sides,
} from '../helpers/tunnel-sides.js';

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
