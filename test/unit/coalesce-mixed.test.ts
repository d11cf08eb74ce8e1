/**
 * Underlay -> TUN: TCP and UDP flows mixed in seeded random batches, coalesced
 * (src/ipip/coalesce.ts) and split again by the kernel's reference models: every flow's packets
 * come back in order, byte for byte.
 */
import { describe, expect, it } from 'vitest';
import { rng } from '../helpers/packets.js';
import { HEAD, payload, segmentAll, SLOT, tcpPacket, udpPacket } from '../helpers/offload-packets.js';
import { flowKey, kernelUdpSegment, type Out, run, withoutId, ZERO_VNET } from '../helpers/offload-model.js';
import { VNET_GSO_TCPV4, VNET_GSO_UDP_L4, VNET_HDR_LEN, writeVnetHdr } from '../../src/ipip/index.js';

describe('UDP coalescing against the kernel split (seeded random)', () => {
  /** What the kernel makes of output packet o: the segments of a super-packet, or the packet itself. */
  function delivered(o: Out): Buffer[] {
    if (o.vnet.gsoType === VNET_GSO_UDP_L4) return kernelUdpSegment(o);
    if (o.vnet.gsoType === VNET_GSO_TCPV4) {
      const sp = Buffer.alloc(VNET_HDR_LEN + o.pkt.length);
      writeVnetHdr(sp, 0, o.vnet.flags, o.vnet.gsoType, o.vnet.hdrLen, o.vnet.gsoSize, o.vnet.csumStart, o.vnet.csumOffset);
      o.pkt.copy(sp, VNET_HDR_LEN);
      const { slab, lens } = segmentAll(sp);
      return lens.map((l, i) => Buffer.from(slab.subarray(i * SLOT + HEAD, i * SLOT + HEAD + l)));
    }
    expect(o.vnet).toEqual(ZERO_VNET);
    return [o.pkt];
  }

  interface FlowState {
    udp: boolean;
    sport: number;
    dport: number;
    size: number;
    df: boolean;
    ttl: number;
    tos: number;
    id: number;
    /** DF datagrams with random IDs (compared but for ID); else consecutive IDs. */
    randomIds: boolean;
    seq: number;
  }

  it("gives back every flow's packets in order, byte for byte, and sum(segments) == n", () => {
    const r = rng(6202);
    const SIZES = [1, 7, 64, 100, 512, 1200, 1472, 2000];
    const merged = { udp: 0, tcp: 0 };
    let maxSegs = 0;
    for (let k = 0; k < 400; k++) {
      const nFlows = 1 + (r() % 6);
      const flows: FlowState[] = Array.from({ length: nFlows }, (_, f) => ({
        udp: r() % 5 !== 0,
        sport: 1000 + f,
        dport: 53,
        size: SIZES[r() % SIZES.length]!,
        df: r() % 3 !== 0,
        ttl: 64,
        tos: 0,
        id: r() & 0xffff,
        randomIds: r() % 4 === 0,
        seq: r() | 0,
      }));
      // A TCP flow takes the ports of the UDP flow before it, when there is one.
      for (let g = 1; g < nFlows; g++) if (!flows[g]!.udp && flows[g - 1]!.udp) flows[g]!.sport = flows[g - 1]!.sport;
      const n = 1 + (r() % 64);
      const pkts: Buffer[] = [];
      const idsMatter: boolean[] = [];
      let f = 0;
      for (let j = 0; j < n; j++) {
        if (r() % 10 >= 7) f = r() % nFlows; // runs of one flow, interleaved with others
        const fl = flows[f]!;
        const ev = r() % 100;
        if (!fl.udp) {
          const size = Math.min(fl.size, 1448);
          const pay = ev < 10 ? 1 + (r() % size) : size;
          pkts.push(tcpPacket({ sport: fl.sport, dport: fl.dport, seq: fl.seq, id: fl.id, ts: [5, 6], payload: payload(pay, k * 100 + j) }));
          idsMatter.push(true);
          fl.seq = (fl.seq + pay) | 0;
          fl.id = (fl.id + 1) & 0xffff;
          continue;
        }
        // Changes within a flow: each may close a super-packet, none may reorder the flow.
        if (ev < 8) fl.size = SIZES[r() % SIZES.length]!;
        else if (ev < 10) fl.ttl = 1 + (r() % 255);
        else if (ev < 12) fl.tos = r() & 0xff;
        else if (ev < 14) fl.df = !fl.df;
        else if (ev < 16 && !fl.df && !fl.randomIds) fl.id = (fl.id + 1 + (r() % 3)) & 0xffff; // an ID gap
        const pay = ev >= 16 && ev < 24 ? 1 + (r() % fl.size) : fl.size; // sometimes smaller
        const id = fl.randomIds ? r() & 0xffff : fl.id;
        const p = udpPacket({ sport: fl.sport, dport: fl.dport, frag: fl.df ? 0x4000 : 0, ttl: fl.ttl, tos: fl.tos, id, payload: payload(pay, k * 100 + j) });
        if (ev >= 24 && ev < 27) p[p.length - 1] ^= 0x20; // a corrupted datagram
        pkts.push(p);
        idsMatter.push(!(fl.df && fl.randomIds));
        fl.id = (fl.id + 1) & 0xffff;
        // Now and then a packet of the same flow that is never merged: no checksum, a first
        // fragment, IP options, no payload. It must end the flow's super-packet (the flow stays
        // in order); the one with IP options is keyed apart by the check below.
        if (j + 1 < n && r() % 12 === 0) {
          const kind = r() % 4;
          const q = udpPacket({
            sport: fl.sport,
            dport: 53,
            payload: payload(kind === 3 ? 0 : 50, j),
            csum: kind === 0 ? 'zero' : 'full',
            frag: kind === 1 ? 0x2000 : 0x4000,
            ipOptions: kind === 2 ? Buffer.from([1, 1, 1, 0]) : undefined,
          });
          pkts.push(q);
          idsMatter.push(true);
          j++;
        }
      }
      const out = run(pkts, undefined, true);
      // Every input packet is in exactly one output, outputs in the order of their first packet.
      expect(out.reduce((a, o) => a + o.segments, 0), `k=${k}`).toBe(pkts.length);
      expect(out.reduce((a, o) => a + o.bytes, 0), `k=${k}`).toBe(pkts.reduce((a, p) => a + p.length, 0));
      for (let x = 1; x < out.length; x++) expect(out[x]!.first).toBeGreaterThan(out[x - 1]!.first);
      // Per flow, what the kernel delivers is what came in, in the same order.
      const want = new Map<string, Array<[Buffer, boolean]>>();
      pkts.forEach((p, j) => {
        const key = p[0] === 0x45 ? flowKey(p) : `opts ${j}`;
        want.set(key, [...(want.get(key) ?? []), [p, idsMatter[j]!]]);
      });
      const got = new Map<string, Buffer[]>();
      for (const o of out) {
        const segs = delivered(o);
        expect(segs.length, `k=${k}`).toBe(o.segments);
        expect(segs.reduce((a, s) => a + s.length, 0), `k=${k}`).toBe(o.bytes);
        if (o.vnet.gsoType === VNET_GSO_UDP_L4) {
          merged.udp++;
          maxSegs = Math.max(maxSegs, o.segments);
        } else if (o.vnet.gsoType === VNET_GSO_TCPV4) merged.tcp++;
        for (const s of segs) {
          const key = s[0] === 0x45 ? flowKey(s) : `opts ${o.first}`;
          got.set(key, [...(got.get(key) ?? []), s]);
        }
      }
      expect([...got.keys()].sort(), `k=${k}`).toEqual([...want.keys()].sort());
      for (const [key, list] of want) {
        const g = got.get(key)!;
        expect(g.length, `k=${k} flow ${key}`).toBe(list.length);
        list.forEach(([p, exact], i) => {
          const same = exact ? g[i]!.equals(p) : withoutId(g[i]!).equals(withoutId(p));
          expect(same, `k=${k} flow ${key} packet ${i}`).toBe(true);
        });
      }
    }
    // The random mixes did exercise merging, up to long super-packets.
    expect(merged.udp).toBeGreaterThan(1000);
    expect(merged.tcp).toBeGreaterThan(50);
    expect(maxSegs).toBeGreaterThanOrEqual(16);
  });
});
