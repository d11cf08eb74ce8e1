/**
 * The coalescer on packets laid back to back, as the datagrams of a FOU UDP_GRO read are
 * (src/dataplane/receive.ts onFouBatch): every one after the first is marked IN_CRAMPED (the 10
 * bytes before it are the previous packet's). Merged ones are copied into the pool once (by
 * `writeSuper`); one written as it came is copied into the pool first, so that its zero vnet
 * header does not overwrite the end of the packet before it.
 *
 *   buf: [0xa5 ... | p0 | p1 | p2 | ... ]            [pool ............]
 *                    ^ room before      ^ IN_CRAMPED
 */
import { describe, expect, it } from 'vitest';
import { ACK, SYN, payload, tcpPacket } from '../helpers/offload-packets.js';
import { collect, expectSuper, flow, ZERO_VNET } from '../helpers/offload-model.js';
import { Coalescer, IN_CRAMPED, VNET_HDR_LEN } from '../../src/ipip/index.js';

const HEAD = 64;
const POOL = 70_000;

/** `pkts` back to back from HEAD, the pool after them; inGso marks all but the first IN_CRAMPED. */
function backToBack(pkts: Buffer[]): { buf: Buffer; offs: Int32Array; lens: Int32Array; gso: Int32Array; pool: number } {
  const total = pkts.reduce((a, p) => a + p.length, 0);
  const pool = HEAD + total + 64;
  const buf = Buffer.alloc(pool + POOL, 0xa5);
  const offs = new Int32Array(pkts.length);
  const lens = new Int32Array(pkts.length);
  const gso = new Int32Array(pkts.length);
  let o = HEAD;
  pkts.forEach((p, j) => {
    p.copy(buf, o);
    offs[j] = o;
    lens[j] = p.length;
    gso[j] = j === 0 ? 0 : IN_CRAMPED;
    o += p.length;
  });
  return { buf, offs, lens, gso, pool };
}

describe('coalescing packets laid back to back (IN_CRAMPED)', () => {
  it('merges a flow as usual, and copies a packet written alone into the pool, leaving its neighbours intact', () => {
    const segs = flow(3, 1000);
    const syn = tcpPacket({ seq: 1, flags: SYN, sport: 4000, payload: payload(0, 1) });
    const lone = tcpPacket({ seq: 9, flags: ACK, sport: 4001, payload: payload(300, 2) });
    const pkts = [...segs, syn, lone];
    const { buf, offs, lens, gso, pool } = backToBack(pkts);
    const c = new Coalescer(8);
    const n = c.coalesce(buf, offs, lens, pkts.length, pool, buf.length, gso);
    const out = collect(c, n, buf);
    expect(out.length).toBe(3);
    expectSuper(out[0]!, segs);
    expect(out[1]!.vnet).toEqual(ZERO_VNET);
    expect(out[1]!.pkt.equals(syn)).toBe(true);
    expect(out[2]!.vnet).toEqual(ZERO_VNET);
    expect(out[2]!.pkt.equals(lone)).toBe(true);
    // Both lone packets were copied into the pool, each behind its own header.
    expect(c.offs[1]).toBeGreaterThanOrEqual(pool);
    expect(c.offs[2]).toBeGreaterThanOrEqual(pool);
    // The input region is as it was: no header was written into a neighbour's bytes.
    expect(buf.subarray(HEAD, HEAD + pkts.reduce((a, p) => a + p.length, 0)).equals(Buffer.concat(pkts))).toBe(true);
  });

  it('writes the first packet (which has room before it) in place, as without marks', () => {
    const p0 = tcpPacket({ seq: 1, flags: ACK, sport: 4000, payload: payload(200, 3) });
    const p1 = tcpPacket({ seq: 1, flags: ACK, sport: 4001, payload: payload(200, 4) });
    const { buf, offs, lens, gso, pool } = backToBack([p0, p1]);
    const c = new Coalescer(4);
    expect(c.coalesce(buf, offs, lens, 2, pool, buf.length, gso)).toBe(2);
    expect(c.offs[0]).toBe(HEAD - VNET_HDR_LEN);
    expect(c.offs[1]).toBeGreaterThanOrEqual(pool);
    // p0's bytes survive: p1's header went to the pool, not into p0's last 10 bytes.
    expect(buf.subarray(HEAD, HEAD + p0.length).equals(p0)).toBe(true);
    expect(buf.subarray(c.offs[1]! + VNET_HDR_LEN, c.offs[1]! + VNET_HDR_LEN + p1.length).equals(p1)).toBe(true);
  });
});
