/**
 * RFC 2003 decapsulation (Tunnel.decapsulate, underlay -> TUN): round trips from A to B, and ECN
 * on the way out (RFC 6040 §4.2), with the inner checksum patched incrementally (RFC 1624)
 * (topology and packets: test/helpers/tunnel-sides.ts).
 */
import { describe, expect, it } from 'vitest';
import {
  checkIPv4,
  computeHeaderChecksum,
  getChecksum,
  getDst,
  getFlagsFragment,
  getId,
  getProtocol,
  getSrc,
  getTos,
  getTotalLength,
  getTtl,
  internetChecksum,
  IPV4_OK,
  PacketResult,
  Verdict,
  VERDICT_NAMES,
  type VerdictName,
} from '../../src/ipip/index.js';
import { hex, rng } from '../helpers/packets.js';
import {
  A_LOCAL,
  B_LOCAL,
  encapEcn,
  inner,
  INNER_1,
  INNER_2,
  type InnerSpec,
  outer,
  place,
  refHeaderChecksum,
  sides,
} from '../helpers/tunnel-sides.js';

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
