/**
 * The two-host topology and the packets of the Tunnel tests (tunnel*.test.ts), built
 * independently of src/ipip. In underlay addresses:
 *
 *   inside 10.0.1.0/24                                              inside 10.0.2.0/24
 *     [ host A  192.0.2.1 ] ------------ underlay ------------ [ host B  198.51.100.2 ]
 *        peers: B 198.51.100.2  10.0.2.0/24                       peers: A 192.0.2.1  10.0.1.0/24
 *               C 203.0.113.3   10.0.3.0/24, and (deliberately bad, for the loop rules)
 *                               198.51.100.0/24, 192.0.2.0/24
 *               D 100.64.0.4    100.64.0.0/16 (covers its own endpoint)
 *
 * A encapsulates what its TUN gives it; B decapsulates what A sent.
 *
 * `sides` builds both Tunnels (`fouSides`: the same two with FOU between them, and on B a peer
 * E 203.0.113.5, 10.0.5.0/24, that stays plain IPIP); `inner`/`outer` build packets, `place` puts one at an offset in a
 * buffer poisoned with 0xA5; `INNER_1`, `OUTER_1` and the others are byte vectors derived by hand.
 */
import { computeHeaderChecksum, ENCAP_FOU, ENCAP_IPIP, Peer, type RouteLookup, Tunnel, type TunnelPolicy } from '../../src/ipip/index.js';
import { hex, ip } from './packets.js';

/**
 * The reference for the outer ECN field (RFC 6040 §4.1 normal mode, as Linux's
 * INET_ECN_encapsulate): the inner ECN (low 2 bits of the TOS byte) copied, except that CE (11)
 * is sent as ECT(0) (10), so a congestion mark from before the tunnel is not counted twice.
 */
export function encapEcn(innerTos: number): number {
  const ecn = innerTos & 0x03;
  return ecn === 0x03 ? 0x02 : ecn;
}

/** A linear-scan longest-prefix match: the reference the real PrefixTable is tested against. */
export class LinearLpm<T> implements RouteLookup<T> {
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

export const A_LOCAL = ip('192.0.2.1');
export const B_LOCAL = ip('198.51.100.2');
export const C_ENDPOINT = ip('203.0.113.3');
export const D_ENDPOINT = ip('100.64.0.4');

export interface Sides {
  a: Tunnel;
  b: Tunnel;
  peerB: Peer; // A's view of B
  peerC: Peer;
  peerD: Peer;
  peerA: Peer; // B's view of A
}

export function sides(policy: Partial<Pick<TunnelPolicy, 'ttl' | 'tos' | 'df' | 'mtu'>> = {}, initialId = 0, idStep = 1): Sides {
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

export const E_ENDPOINT = ip('203.0.113.5');

/** A and B with each other as FOU peers, and on B one more peer E (10.0.5.0/24) on plain IPIP. */
export function fouSides(): { a: Tunnel; b: Tunnel; peerB: Peer; peerA: Peer; peerE: Peer } {
  const peerB = new Peer({ index: 0, name: 'b', endpoint: B_LOCAL, encap: ENCAP_FOU });
  const a = new Tunnel({ local: A_LOCAL, routes: new LinearLpm<Peer>().add('10.0.2.0/24', peerB), peers: [peerB], ttl: 64, tos: 'inherit', df: 'inherit', mtu: 1480 });
  const peerA = new Peer({ index: 0, name: 'a', endpoint: A_LOCAL, encap: ENCAP_FOU });
  const peerE = new Peer({ index: 1, name: 'e', endpoint: E_ENDPOINT, encap: ENCAP_IPIP });
  const routes = new LinearLpm<Peer>().add('10.0.1.0/24', peerA).add('10.0.5.0/24', peerE);
  const b = new Tunnel({ local: B_LOCAL, routes, peers: [peerA, peerE], ttl: 64, tos: 'inherit', df: 'inherit', mtu: 1480 });
  return { a, b, peerB, peerA, peerE };
}

export interface InnerSpec {
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
export function inner(spec: InnerSpec = {}): Buffer {
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
export function place(packet: Buffer, off: number, tail = 5): Buffer {
  const b = Buffer.alloc(off + packet.length + tail, 0xa5);
  packet.copy(b, off);
  return b;
}

export interface OuterSpec {
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
export function outer(payload: Buffer, spec: OuterSpec = {}): Buffer {
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
export function refix(b: Buffer, off = 0): Buffer {
  b.writeUInt16BE(computeHeaderChecksum(b, off), off + 10);
  return b;
}

// ---------------------------------------------------------------- byte vectors

// Derived by hand (see the sums in the comments), not by running the code under test.
// Inner: ICMP echo request 10.0.1.1 -> 10.0.2.1, ID 0x1234, DF, TTL 63, total 28.
//   header sum 4500+001c+1234+4000+3f01+0a00+0101+0a00+0201 = ed53, checksum ~ed53 = 12ac
//   ICMP: 0800+0001+0001 = 0802, checksum f7fd
export const INNER_1 = hex('45 00 00 1c 12 34 40 00 3f 01 12 ac 0a 00 01 01 0a 00 02 01  08 00 f7 fd 00 01 00 01');
// Outer, policy ttl 64 / tos inherit / df inherit, first ID 0: 192.0.2.1 -> 198.51.100.2.
//   sum 4500+0030+0000+4000+4004+c000+0201+c633+6402 = 2b16a -> b16c, checksum 4e93
export const OUTER_1 = hex('45 00 00 30 00 00 40 00 40 04 4e 93 c0 00 02 01 c6 33 64 02');

// Inner: UDP 10.0.1.7:12345 -> 10.0.2.9:53, TOS b9 (DSCP 46, ECN 01), no DF, TTL 17, ID 7.
//   sum 45b9+001c+0007+0000+1111+0a00+0107+0a00+0209 = 6dfd, checksum 9202
export const INNER_2 = hex('45 b9 00 1c 00 07 00 00 11 11 92 02 0a 00 01 07 0a 00 02 09  30 39 00 35 00 08 00 00');
// Outer, policy ttl inherit / tos 0x28 / df always, ID 0xfffe. A fixed tos fixes only the DSCP
// (upper 6 bits); the ECN field still comes from the inner (RFC 6040 §4.1, Linux
// INET_ECN_encapsulate): DSCP 0x28 | inner ECN 01 (ECT(1), not CE so copied as is) = 0x29.
//   sum 4529+0030+fffe+4000+1104+c000+0201+c633+6402 = 38291 -> 8294, checksum 7d6b
// (before RFC 6040 the whole byte was fixed: TOS 0x28, checksum 7d6c; the +1 in the TOS word is
// the -1 in the checksum).
export const OUTER_2 = hex('45 29 00 30 ff fe 40 00 11 04 7d 6b c0 00 02 01 c6 33 64 02');

// Byte vectors, by hand. INNER_1 with TOS bb (DSCP 46 EF, ECN 11 = CE):
//   header sum ed53 + 00bb = ee0e, checksum ~ee0e = 11f1
export const INNER_CE = hex('45 bb 00 1c 12 34 40 00 3f 01 11 f1 0a 00 01 01 0a 00 02 01  08 00 f7 fd 00 01 00 01');
// Outer under the default policy (tos inherit): DSCP copied (b8), CE sent as ECT(0) (10) -> ba.
//   OUTER_1's sum b16c + 00ba = b226, checksum ~b226 = 4dd9
export const OUTER_CE = hex('45 ba 00 30 00 00 40 00 40 04 4d d9 c0 00 02 01 c6 33 64 02');

/** Independent header checksum: 16-bit words with the checksum field skipped, folded, complemented. */
export function refHeaderChecksum(b: Buffer, off: number): number {
  const hl = (b[off] & 0x0f) * 4;
  let sum = 0;
  for (let i = 0; i < hl; i += 2) if (i !== 10) sum += b.readUInt16BE(off + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The policy a Tunnel was built from (to build another with one field changed). */
export function policyOf(t: Tunnel): TunnelPolicy {
  return { local: t.local, routes: t.routes, peers: t.peers, ttl: t.ttl, tos: t.tos, df: t.df, mtu: t.mtu };
}
