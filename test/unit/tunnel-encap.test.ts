/**
 * RFC 2003 encapsulation (Tunnel.encapsulate, TUN -> underlay): byte vectors, the outer ID
 * sequence per peer (io.queues), ECN on the way in (RFC 6040 §4.1), the loop check before the
 * route look-up
 * (topology and packets: test/helpers/tunnel-sides.ts).
 */
import { describe, expect, it } from 'vitest';
import {
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
  IPV4_ERR_TOTAL_LENGTH,
  IPV4_OK,
  isDontFragment,
  PacketResult,
  Peer,
  Tunnel,
  Verdict,
  VERDICT_NAMES,
} from '../../src/ipip/index.js';
import { refChecksum } from '../helpers/packets.js';
import {
  A_LOCAL,
  B_LOCAL,
  inner,
  INNER_1,
  INNER_2,
  INNER_CE,
  LinearLpm,
  OUTER_1,
  OUTER_2,
  OUTER_CE,
  place,
  sides,
} from '../helpers/tunnel-sides.js';

// ---------------------------------------------------------------- byte vectors

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
