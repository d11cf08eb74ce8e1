/**
 * The data path's JIT warm-up (src/dataplane/warmup.ts): the synthetic packets, the flows it
 * picks for them, and the procedure run for real.
 *
 * Flow of this file:
 *   1. `writeWarmPacket`: every field and checksum of each kind, checked with references that
 *      share no code with src/ipip (`refChecksum`, `refPseudo`), into a buffer poisoned with 0xA5
 *      at a non-zero offset; the partial form holds the folded pseudo-header sum;
 *   2. `writeWarmVnet`: the virtio_net_hdr for none / NEEDS_CSUM / TCPV4 GSO, accepted by the
 *      real offload code (completeChecksum, checkTcp4Gso, writeTcp4Segment);
 *   3. `writeWarmOuter`: an outer header that `Tunnel.decapsulate` forwards;
 *   4. `warmUpFlows` on configs from `parseConfig`;
 *   5. `warmUp` with a real Tunnel and Dataplane, over FIFOs standing in for the TUN and raw
 *      fds, with a recording I/O (test/helpers/recording-io.ts) that hands every call to the
 *      native binding:
 *
 *        warmUp --> onTunBatch --encapsulate--> sendRaw(DISCARD_FD)   raw FIFO: stays empty
 *               --> onRawBatch --decapsulate--> writeTun(DISCARD_FD)  TUN FIFO: stays empty
 *        afterwards: fds back (a real write reaches the FIFO), peers and their figures as
 *        before, counters 0
 *
 * Needs the native addon (build/Release/ipipd_native.node), as `npm ci` builds it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/logger.js';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { COUNTER_NAMES } from '../../src/dataplane/figures.js';
import { buildTunnel } from '../../src/dataplane/queue.js';
import { HEADROOM } from '../../src/dataplane/slabs.js';
import { WARM_ICMP, WARM_TCP, WARM_UDP, warmUp, warmUpFlows, writeWarmOuter, writeWarmPacket, writeWarmVnet } from '../../src/dataplane/warmup.js';
import {
  PacketResult,
  Verdict,
  VERDICT_NAMES,
  checkTcp4Gso,
  completeChecksum,
  getVnetCsumOffset,
  getVnetCsumStart,
  getVnetFlags,
  getVnetGsoSize,
  getVnetGsoType,
  getVnetHdrLen,
  tcp4SegmentCount,
  writeTcp4Segment,
  type Peer,
  type Tunnel,
} from '../../src/ipip/index.js';
import { Fifos, drain } from '../helpers/fifos.js';
import { ip, refChecksum } from '../helpers/packets.js';
import { RecordingIo } from '../helpers/recording-io.js';

// ---------------------------------------------------------------- helpers

const POISON = 0xa5;
const LOCAL = ip('198.51.100.10');
const REMOTE = ip('203.0.113.1');

/** The pseudo-header sum for the IPv4 header at `at` (RFC 768 / RFC 9293 §3.1), not folded. */
function refPseudo(b: Buffer, at: number, proto: number, l4len: number): number {
  return b.readUInt16BE(at + 12) + b.readUInt16BE(at + 14) + b.readUInt16BE(at + 16) + b.readUInt16BE(at + 18) + proto + l4len;
}

/** Fold a sum to 16 bits (end-around carry), the slow way. */
function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** 0 when the UDP/TCP checksum of the IPv4 packet at `at` verifies (RFC 1071 over pseudo-header + segment). */
function l4Check(b: Buffer, at: number): number {
  const total = b.readUInt16BE(at + 2);
  const l4len = total - 20;
  let sum = refPseudo(b, at, b[at + 9]!, l4len);
  for (let i = 0; i < l4len; i += 2) sum += (b[at + 20 + i]! << 8) | (i + 1 < l4len ? b[at + 20 + i + 1]! : 0);
  return ~fold(sum) & 0xffff;
}

function poisoned(size: number): Buffer {
  return Buffer.alloc(size, POISON);
}

/** Every byte of `b` outside [from, to) is still poison. */
function untouchedOutside(b: Buffer, from: number, to: number): boolean {
  for (let i = 0; i < b.length; i++) if ((i < from || i >= to) && b[i] !== POISON) return false;
  return true;
}

const L4_HEADER = { [WARM_ICMP]: 8, [WARM_UDP]: 8, [WARM_TCP]: 32 } as Record<number, number>;
const PROTO = { [WARM_ICMP]: 1, [WARM_UDP]: 17, [WARM_TCP]: 6 } as Record<number, number>;
const KINDS = [
  ['ICMP', WARM_ICMP],
  ['UDP', WARM_UDP],
  ['TCP', WARM_TCP],
] as const;

const TWO_PEERS = `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
  - { name: h3, endpoint: 192.0.2.3, prefixes: [203.0.113.128/25, 10.9.0.0/16] }
`;

// ---------------------------------------------------------------- 1. writeWarmPacket

describe('writeWarmPacket', () => {
  for (const [name, kind] of KINDS) {
    for (const off of [0, 36, 37]) {
      it(`${name} at offset ${off}: IPv4 header, L4 header and checksums, payload; nothing written outside`, () => {
        const payload = 100;
        const id = 0x12345; // only the low 16 bits go into the header
        const seq = 0x9abcdef0; // past 2^31: written as the same 32 bits
        const b = poisoned(off + 400);
        const len = writeWarmPacket(b, off, kind, LOCAL, REMOTE, payload, id, seq, false);
        const l4 = L4_HEADER[kind]!;
        expect(len).toBe(20 + l4 + payload);
        expect(untouchedOutside(b, off, off + len)).toBe(true);
        // IPv4 (RFC 791): version 4, IHL 5, TOS 0, total length, ID, DF, TTL 64, protocol.
        expect(b[off]).toBe(0x45);
        expect(b[off + 1]).toBe(0);
        expect(b.readUInt16BE(off + 2)).toBe(len);
        expect(b.readUInt16BE(off + 4)).toBe(0x2345);
        expect(b.readUInt16BE(off + 6)).toBe(0x4000);
        expect(b[off + 8]).toBe(64);
        expect(b[off + 9]).toBe(PROTO[kind]);
        expect(b.readInt32BE(off + 12)).toBe(LOCAL);
        expect(b.readInt32BE(off + 16)).toBe(REMOTE);
        expect(refChecksum(b, off, 20)).toBe(0);
        const t = off + 20;
        if (kind === WARM_ICMP) {
          // RFC 792 echo request: type 8, code 0, identifier, sequence number; checksum over the message.
          expect([b[t], b[t + 1]]).toEqual([8, 0]);
          expect(b.readUInt16BE(t + 4)).toBe(0x2345);
          expect(b.readUInt16BE(t + 6)).toBe(seq & 0xffff);
          expect(refChecksum(b, t, l4 + payload)).toBe(0);
        } else {
          expect(b.readUInt16BE(t)).toBe(40000);
          expect(b.readUInt16BE(t + 2)).toBe(5201);
          expect(b.readUInt16BE(t + (kind === WARM_UDP ? 6 : 16))).not.toBe(0);
          expect(l4Check(b, off)).toBe(0);
        }
        if (kind === WARM_UDP) expect(b.readUInt16BE(t + 4)).toBe(8 + payload);
        if (kind === WARM_TCP) {
          expect(b.readUInt32BE(t + 4)).toBe(seq);
          expect(b.readUInt32BE(t + 8)).toBe(0x10000);
          expect(b[t + 12]).toBe(8 << 4); // data offset 8 words: 20 + the 12-byte timestamp option
          expect(b[t + 13]).toBe(0x10 | 0x08); // ACK, PSH (a short segment)
          expect(b.readUInt16BE(t + 14)).toBe(0xffff);
          expect(b.readUInt16BE(t + 18)).toBe(0); // urgent pointer
          // Linux's layout (RFC 7323 Appendix A): NOP, NOP, kind 8, length 10, TSval, TSecr.
          expect([...b.subarray(t + 20, t + 24)]).toEqual([1, 1, 8, 10]);
          expect(b.readUInt32BE(t + 24)).toBe(0x01020304);
          expect(b.readUInt32BE(t + 28)).toBe(0x05060708);
        }
        for (let i = 0; i < payload; i++) expect(b[t + l4 + i]).toBe((i * 7 + id) & 0xff);
      });
    }
  }

  it('a full-sized TCP segment carries ACK without PSH', () => {
    const b = poisoned(2000);
    const len = writeWarmPacket(b, 20, WARM_TCP, LOCAL, REMOTE, 1400, 1, 1, false);
    expect(len).toBe(1452);
    expect(b[20 + 20 + 13]).toBe(0x10);
    expect(l4Check(b, 20)).toBe(0);
  });

  for (const [name, kind] of [['UDP', WARM_UDP], ['TCP', WARM_TCP]] as const) {
    it(`${name} partial: the checksum field holds the folded pseudo-header sum, which completeChecksum completes`, () => {
      for (const payload of [1, 64, 1400]) {
        const b = poisoned(1600);
        const off = 30;
        const len = writeWarmPacket(b, off, kind, LOCAL, REMOTE, payload, 7, 1000, true);
        expect(untouchedOutside(b, off, off + len)).toBe(true);
        expect(refChecksum(b, off, 20)).toBe(0);
        const csumAt = off + 20 + (kind === WARM_UDP ? 6 : 16);
        expect(b.readUInt16BE(csumAt)).toBe(fold(refPseudo(b, off, PROTO[kind]!, len - 20)));
        // What the kernel does with it for CHECKSUM_PARTIAL: the result verifies.
        expect(completeChecksum(b, off, len, 20, kind === WARM_UDP ? 6 : 16)).toBe(true);
        expect(l4Check(b, off)).toBe(0);
      }
    });
  }

  it('ICMP ignores `partial` (its checksum is always complete)', () => {
    const a = poisoned(200);
    const b = poisoned(200);
    writeWarmPacket(a, 0, WARM_ICMP, LOCAL, REMOTE, 56, 3, 4, false);
    writeWarmPacket(b, 0, WARM_ICMP, LOCAL, REMOTE, 56, 3, 4, true);
    expect(b.equals(a)).toBe(true);
  });

  it('the UDP checksum field is never 0 (RFC 768: 0 means "none"); a computed 0 goes out as 0xffff', () => {
    const b = Buffer.alloc(200);
    let ones = 0;
    // The source's low 16 bits walk through every value, and so does the sum: one of them makes
    // the computed checksum 0.
    for (let k = 0; k < 0x10000; k++) {
      const src = ip('10.1.0.0') | k;
      writeWarmPacket(b, 0, WARM_UDP, src, REMOTE, 20, 5, 0, false);
      const c = b.readUInt16BE(26);
      if (c === 0 || l4Check(b, 0) !== 0) throw new Error(`source ${src}: UDP checksum field ${c}`);
      if (c === 0xffff) ones++;
    }
    expect(ones).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------- 2. writeWarmVnet

describe('writeWarmVnet', () => {
  const OFF = 64;

  it('a complete packet (or any ICMP) gets the all-zero header, written in the 10 bytes before it', () => {
    for (const [kind, partial] of [[WARM_ICMP, false], [WARM_ICMP, true], [WARM_UDP, false], [WARM_TCP, false]] as const) {
      const b = poisoned(OFF + 200);
      writeWarmVnet(b, OFF, kind, partial, 0);
      expect([...b.subarray(OFF - 10, OFF)]).toEqual(new Array(10).fill(0));
      expect(untouchedOutside(b, OFF - 10, OFF)).toBe(true);
    }
  });

  for (const [name, kind, csumOffset] of [['UDP', WARM_UDP, 6], ['TCP', WARM_TCP, 16]] as const) {
    it(`${name} partial: NEEDS_CSUM, no GSO, csum_start 20, csum_offset ${csumOffset}`, () => {
      const b = poisoned(OFF + 200);
      const len = writeWarmPacket(b, OFF, kind, LOCAL, REMOTE, 100, 1, 1, true);
      writeWarmVnet(b, OFF, kind, true, 0);
      const h = OFF - 10;
      expect(getVnetFlags(b, h)).toBe(1);
      expect(getVnetGsoType(b, h)).toBe(0);
      expect(getVnetHdrLen(b, h)).toBe(0);
      expect(getVnetGsoSize(b, h)).toBe(0);
      expect(getVnetCsumStart(b, h)).toBe(20);
      expect(getVnetCsumOffset(b, h)).toBe(csumOffset);
      expect(untouchedOutside(b, h, OFF + len)).toBe(true);
      expect(completeChecksum(b, OFF, len, getVnetCsumStart(b, h), getVnetCsumOffset(b, h))).toBe(true);
      expect(l4Check(b, OFF)).toBe(0);
    });
  }

  it('a TCP super-packet: NEEDS_CSUM, GSO TCPV4, hdr_len 52, gso_size; it segments into valid segments', () => {
    const gso = 1400;
    const b = poisoned(OFF + 12000);
    const len = writeWarmPacket(b, OFF, WARM_TCP, LOCAL, REMOTE, 8 * gso, 5, 0x7ffff000, true);
    writeWarmVnet(b, OFF, WARM_TCP, true, gso);
    const h = OFF - 10;
    expect(getVnetFlags(b, h)).toBe(1);
    expect(getVnetGsoType(b, h)).toBe(1);
    expect(getVnetHdrLen(b, h)).toBe(52);
    expect(getVnetGsoSize(b, h)).toBe(gso);
    expect(getVnetCsumStart(b, h)).toBe(20);
    expect(getVnetCsumOffset(b, h)).toBe(16);
    // The real offload code takes it as the kernel's: 8 segments, each with verifying checksums.
    expect(checkTcp4Gso(b, h, OFF, len)).toBe(52);
    expect(tcp4SegmentCount(len, 52, gso)).toBe(8);
    const out = Buffer.alloc(2000);
    for (let s = 0; s < 8; s++) {
      const segLen = writeTcp4Segment(b, OFF, len, 52, gso, s, out, 20);
      expect(segLen).toBe(52 + gso);
      expect(refChecksum(out, 20, 20)).toBe(0);
      expect(l4Check(out, 20)).toBe(0);
      expect(out.readUInt32BE(20 + 24)).toBe((0x7ffff000 + s * gso) >>> 0);
    }
  });
});

// ---------------------------------------------------------------- 3. writeWarmOuter

describe('writeWarmOuter', () => {
  const config = parseConfig(TWO_PEERS);

  it('wraps an inner packet in an outer IPIP header that decapsulate forwards (and encapsulate the reverse)', () => {
    const { tunnel, peers } = buildTunnel(config, 1480);
    for (const [name, kind] of KINDS) {
      for (const [peer, remote] of [[peers[0]!, ip('203.0.113.1')], [peers[1]!, ip('10.9.0.1')]] as const) {
        const off = 64;
        const b = poisoned(off + 1600);
        const len = writeWarmPacket(b, off + 20, kind, remote, LOCAL, 1000, 9, 1, false);
        const total = writeWarmOuter(b, off, len, peer.endpoint, tunnel.local, 0x1abcd);
        expect(total, name).toBe(len + 20);
        expect(untouchedOutside(b, off, off + total)).toBe(true);
        expect(b[off]).toBe(0x45);
        expect(b.readUInt16BE(off + 2)).toBe(total);
        expect(b.readUInt16BE(off + 4)).toBe(0xabcd);
        expect(b.readUInt16BE(off + 6)).toBe(0x4000);
        expect(b[off + 8]).toBe(64);
        expect(b[off + 9]).toBe(4);
        expect(b.readInt32BE(off + 12)).toBe(peer.endpoint);
        expect(b.readInt32BE(off + 16)).toBe(ip('192.0.2.1'));
        expect(refChecksum(b, off, 20)).toBe(0);
        const r = new PacketResult();
        expect(VERDICT_NAMES[tunnel.decapsulate(b, off, total, r)]).toBe('forward');
        expect([r.offset, r.length, r.peer]).toEqual([off + 20, len, peer]);

        // The TUN -> underlay direction of the same flow is forwarded too.
        const t = poisoned(off + 1600);
        const tl = writeWarmPacket(t, off, kind, LOCAL, remote, 1000, 9, 1, false);
        expect(tunnel.encapsulate(t, off, tl, r)).toBe(Verdict.forward);
        expect(r.peer).toBe(peer);
      }
    }
  });

  it('is refused when the outer source is not the peer that owns the inner source', () => {
    const { tunnel, peers } = buildTunnel(config, 1480);
    const b = poisoned(1600);
    const len = writeWarmPacket(b, 20, WARM_UDP, ip('203.0.113.1'), LOCAL, 64, 1, 1, false);
    const total = writeWarmOuter(b, 0, len, peers[1]!.endpoint, tunnel.local, 1);
    expect(VERDICT_NAMES[tunnel.decapsulate(b, 0, total, new PacketResult())]).toBe('spoofed_source');
  });
});

// ---------------------------------------------------------------- 4. warmUpFlows

describe('warmUpFlows', () => {
  const flowsOf = (text: string): { c: Config; tunnel: Tunnel; peers: Peer[]; flows: ReturnType<typeof warmUpFlows> } => {
    const c = parseConfig(text);
    const { tunnel, peers } = buildTunnel(c, 1480);
    return { c, tunnel, peers, flows: warmUpFlows(c, tunnel) };
  };

  it('one flow per peer: remote in its first prefix (host part 1), local = the TUN address', () => {
    const { tunnel, peers, flows } = flowsOf(TWO_PEERS);
    expect(flows).toEqual([
      { endpoint: ip('192.0.2.2'), remote: ip('203.0.113.1'), local: ip('198.51.100.0') },
      { endpoint: ip('192.0.2.3'), remote: ip('203.0.113.129'), local: ip('198.51.100.0') },
    ]);
    flows.forEach((f, i) => {
      expect(tunnel.routes.lookup(f.remote)).toBe(peers[i]);
      expect(f.endpoint).toBe(peers[i]!.endpoint);
      expect(tunnel.routes.lookup(f.local)).toBeUndefined();
      expect(tunnel.isTunnelAddress(f.local)).toBe(false);
      expect(tunnel.isTunnelAddress(f.remote)).toBe(false);
    });
  });

  it('a TUN address with host bits (an interface address) is used as it is', () => {
    const { flows } = flowsOf(TWO_PEERS.replace('198.51.100.0/32', '198.51.100.1/25'));
    expect(flows.map((f) => f.local)).toEqual([ip('198.51.100.1'), ip('198.51.100.1')]);
  });

  it('without a TUN address: the first candidate routed to no peer and not an endpoint', () => {
    const base = `
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
`;
    expect(flowsOf(`tun: { name: ipip0 }\n${base}`).flows).toEqual([{ endpoint: ip('192.0.2.2'), remote: ip('203.0.113.1'), local: ip('10.0.0.1') }]);
    // 10.0.0.1 and 100.64.0.1 are routed to peers: the next candidate.
    const { flows, tunnel } = flowsOf(`
tun: { name: ipip0 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [10.0.0.0/8] }
  - { name: h3, endpoint: 192.0.2.3, prefixes: [100.64.0.0/10] }
`);
    expect(flows.map((f) => f.local)).toEqual([ip('198.18.0.1'), ip('198.18.0.1')]);
    expect(flows.map((f) => f.remote)).toEqual([ip('10.0.0.1'), ip('100.64.0.1')]);
    expect(tunnel.routes.lookup(ip('198.18.0.1'))).toBeUndefined();
  });

  it('an underlay address among the candidates is skipped (it is no inner address)', () => {
    const { flows } = flowsOf(`
tun: { name: ipip0 }
underlay: { address: 10.0.0.1 }
peers:
  - { name: h2, endpoint: 10.0.0.2, prefixes: [203.0.113.0/25] }
`);
    expect(flows.map((f) => f.local)).toEqual([ip('100.64.0.1')]);
  });

  it('/32 and /31 prefixes: the prefix address itself', () => {
    const { flows } = flowsOf(`
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.7/32] }
  - { name: h3, endpoint: 192.0.2.3, prefixes: [203.0.113.10/31] }
  - { name: h4, endpoint: 192.0.2.4, prefixes: [203.0.113.12/30] }
`);
    expect(flows.map((f) => f.remote)).toEqual([ip('203.0.113.7'), ip('203.0.113.10'), ip('203.0.113.13')]);
  });

  it('a peer whose only prefix is shadowed by a more specific prefix of another peer gets no flow', () => {
    const { flows, peers, tunnel } = flowsOf(`
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: wide, endpoint: 192.0.2.2, prefixes: [203.0.113.0/24] }
  - { name: narrow, endpoint: 192.0.2.3, prefixes: [203.0.113.0/25] }
`);
    // Overlapping (not identical) prefixes are accepted by the config; LPM gives .1 to "narrow".
    expect(tunnel.routes.lookup(ip('203.0.113.1'))).toBe(peers[1]);
    expect(flows).toEqual([{ endpoint: ip('192.0.2.3'), remote: ip('203.0.113.1'), local: ip('198.51.100.0') }]);
  });

  it('a shadowed first prefix is skipped for the next one that routes to the peer', () => {
    const { flows } = flowsOf(`
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: wide, endpoint: 192.0.2.2, prefixes: [203.0.113.0/24, 10.1.0.0/16] }
  - { name: narrow, endpoint: 192.0.2.3, prefixes: [203.0.113.0/25] }
`);
    expect(flows).toEqual([
      { endpoint: ip('192.0.2.2'), remote: ip('10.1.0.1'), local: ip('198.51.100.0') },
      { endpoint: ip('192.0.2.3'), remote: ip('203.0.113.1'), local: ip('198.51.100.0') },
    ]);
  });

  it('no usable local address (every candidate routed to a peer): no flows at all', () => {
    const { flows } = flowsOf(`
tun: { name: ipip0 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [10.0.0.0/8, 100.64.0.0/10, 198.18.0.0/15, 172.16.0.0/12, 192.168.0.0/16] }
`);
    expect(flows).toEqual([]);
  });
});

// ---------------------------------------------------------------- 5. warmUp

/** The sum of the batch sizes warmUp uses over `rounds` rounds, as warmup.ts cycles them. */
function warmBatchTotal(rounds: number, batch: number): number {
  const sizes = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 64];
  let total = 0;
  for (let r = 0; r < rounds; r++) total += Math.min(batch, sizes[r % sizes.length]!);
  return total;
}

describe.each([
  { offload: false, udpGro: false },
  { offload: true, udpGro: true },
])('warmUp (offload $offload)', ({ offload, udpGro }) => {
  const NOW = 1_700_000_123_456;
  const BATCH = 64;
  // The TUN and raw fds: FIFOs.
  const fifos = new Fifos('ipipd-warmup-');

  beforeAll(() => {
    fifos.setUp();
  });
  afterAll(() => {
    fifos.remove();
  });
  afterEach(() => {
    fifos.closeAll();
  });

  /** Everything the warm-up may touch about peer `p`: its own fields and its figures. */
  const peerState = (dp: Dataplane, p: Peer): unknown[] => {
    const f = dp.figures.peers;
    const i = p.index;
    return [p.nextId, f.txPackets[i], f.txBytes[i], f.rxPackets[i], f.rxBytes[i], f.lastRxAt[i], f.unreachableAt[i], f.unreachableReason[i], p.mtu, p.pmtuLearnedAt];
  };

  /** Every peer field and figure exactly as in `before` (`Object.is`: the -0 of pmtuLearnedAt too). */
  function expectPeersAsBefore(dp: Dataplane, peers: Peer[], before: unknown[][]): void {
    const after = peers.map((p) => peerState(dp, p));
    for (let i = 0; i < peers.length; i++) {
      before[i]!.forEach((v, j) => expect(Object.is(after[i]![j], v), `peer ${i} field ${j}: ${String(after[i]![j])} vs ${String(v)}`).toBe(true));
    }
  }

  function setup(text = TWO_PEERS): { c: Config; tunnel: Tunnel; peers: Peer[]; dp: Dataplane; io: RecordingIo; tunFd: number; rawFd: number } {
    const c = parseConfig(text);
    const { tunnel, peers } = buildTunnel(c, 1480);
    const tunFd = fifos.fifo();
    const rawFd = fifos.fifo();
    const io = new RecordingIo();
    const dp = new Dataplane({
      tunFd,
      rawFd,
      icmpFd: -1,
      tunnel,
      batch: BATCH,
      tunMtu: 1480,
      underlayMax: 1540,
      icmpSource: c.tun.address!.addr,
      icmpRate: 1000,
      icmpBurst: 50,
      log: createLogger('silent'),
      now: () => NOW,
      offload,
      udpGro,
      io,
    });
    return { c, tunnel, peers, dp, io, tunFd, rawFd };
  }

  it('runs the real data path into the discard fd only, then leaves counters, drops, errors and peers as they were', () => {
    const { c, tunnel, peers, dp, io, tunFd, rawFd } = setup();
    // Soft state a running daemon could have: all of it must come back exactly.
    const p = peers[0]!;
    const f = dp.figures.peers;
    p.nextId = 0xfff0; // wraps during the warm-up
    f.txPackets[0] = 5;
    f.txBytes[0] = 500;
    f.rxPackets[0] = 7;
    f.rxBytes[0] = 700;
    f.lastRxAt[0] = NOW - 60_000;
    f.unreachableAt[0] = NOW - 1000; // a packet from the peer would clear it
    f.unreachableReason[0] = 'host unreachable from 192.0.2.126';
    const before = peers.map((x) => peerState(dp, x));

    const flows = warmUpFlows(c, tunnel);
    expect(flows).toHaveLength(2);
    const rounds = 2000; // what the daemon runs
    const got = warmUp(dp, flows, rounds);
    const perWay = warmBatchTotal(rounds, BATCH);
    expect(got).toBeGreaterThan(0);
    expect(got).toBe(2 * perWay);

    // Everything went to the discard fd, every packet was taken (none failed the slab check),
    // and the synthetic traffic was forwarded, not dropped: one call per batch and direction.
    const calls = io.calls;
    expect(calls.filter((x) => x.fd !== io.DISCARD_FD)).toEqual([]);
    expect(calls.filter((x) => x.failed !== 0)).toEqual([]);
    const sends = calls.filter((x) => x.fn === 'sendRaw');
    const writes = calls.filter((x) => x.fn === 'writeTun');
    expect(sends).toHaveLength(rounds);
    expect(writes).toHaveLength(rounds);
    const sent = sends.reduce((s, x) => s + x.done, 0);
    const written = writes.reduce((s, x) => s + x.done, 0);
    if (offload) {
      // Super-packets go out as 8 segments each; received runs are coalesced before the write.
      expect(sent).toBeGreaterThan(perWay);
      expect(written).toBeLessThan(perWay);
    } else {
      expect(sent).toBe(perWay);
      expect(written).toBe(perWay);
    }

    // Nothing reached the real fds.
    expect(drain(tunFd)).toBe('EAGAIN');
    expect(drain(rawFd)).toBe('EAGAIN');

    // The status report starts from zero.
    expect(dp.figures.counters.every((v) => v === 0)).toBe(true);
    expect(dp.figures.drops.every((v) => v === 0)).toBe(true);
    expect(dp.figures.lastErrors).toEqual({});
    const snap = dp.snapshot();
    expect(Object.keys(snap.counters)).toEqual([...COUNTER_NAMES]);
    expect(Object.values(snap.counters).every((v) => v === 0)).toBe(true);
    expect(Object.values(snap.drops).every((v) => v === 0)).toBe(true);

    // Every peer and its figures exactly as before; the untouched peer's figures still 0.
    expectPeersAsBefore(dp, peers, before);
    expect([f.txPackets[1], f.txBytes[1], f.rxPackets[1], f.rxBytes[1], f.lastRxAt[1], f.unreachableAt[1]]).toEqual([0, 0, 0, 0, 0, 0]);
    dp.close();
  });

  it('puts the real fds back: a packet after the warm-up goes to the TUN fd, a send to the raw fd', () => {
    const { c, tunnel, peers, dp, tunFd } = setup();
    warmUp(dp, warmUpFlows(c, tunnel), 50);
    // The data path's own batch handlers, as the Readers would call them.
    const { rxBuf, rawLens, txBuf, tunLens } = dp.slabs;
    const inner = writeWarmPacket(rxBuf, 20, WARM_UDP, ip('203.0.113.5'), ip('198.51.100.10'), 32, 77, 0, false);
    const expected = Buffer.from(rxBuf.subarray(20, 20 + inner));
    rawLens[0] = writeWarmOuter(rxBuf, 0, inner, peers[0]!.endpoint, tunnel.local, 1);
    dp.receive.onRawBatch(1);
    const tunGot = drain(tunFd);
    expect(Buffer.isBuffer(tunGot)).toBe(true);
    // Offload mode writes a (zero) virtio_net_hdr in front of each packet.
    const vnet = offload ? 10 : 0;
    expect([...(tunGot as Buffer).subarray(0, vnet)]).toEqual(new Array(vnet).fill(0));
    expect((tunGot as Buffer).subarray(vnet).equals(expected)).toBe(true);
    expect(dp.snapshot().counters.rx_packets).toBe(1);
    expect(dp.figures.peers.rxPackets[0]).toBe(1);
    expect(dp.figures.peers.lastRxAt[0]).toBe(NOW);

    // A raw send to a FIFO fails (ENOTSOCK): proof that the real raw fd is back, not the discard fd.
    const off = HEADROOM;
    const len = writeWarmPacket(txBuf, off, WARM_ICMP, ip('198.51.100.10'), ip('203.0.113.5'), 56, 1, 1, false);
    if (offload) txBuf.fill(0, off - 10, off);
    tunLens[0] = len + vnet;
    dp.send.onTunBatch(1);
    expect(dp.snapshot().drops.socket_write_error).toBe(1);
    expect(dp.figures.lastErrors.underlaySend).toBe('ENOTSOCK');
    dp.close();
  });

  it('with no flows, 0 rounds or negative rounds: returns 0 and touches nothing', () => {
    const { c, tunnel, peers, dp, io, tunFd, rawFd } = setup();
    dp.figures.counters[0] = 3;
    dp.figures.drops[1] = 4;
    dp.figures.lastErrors.tunRead = 'EIO';
    peers[0]!.nextId = 1234;
    const before = peers.map((p) => peerState(dp, p));
    expect(warmUp(dp, [], 2000)).toBe(0);
    expect(warmUp(dp, warmUpFlows(c, tunnel), 0)).toBe(0);
    expect(warmUp(dp, warmUpFlows(c, tunnel), -1)).toBe(0);
    expect(io.calls).toEqual([]);
    expect(dp.figures.counters[0]).toBe(3);
    expect(dp.figures.drops[1]).toBe(4);
    expect(dp.figures.lastErrors).toEqual({ tunRead: 'EIO' });
    expectPeersAsBefore(dp, peers, before);
    expect(drain(tunFd)).toBe('EAGAIN');
    expect(drain(rawFd)).toBe('EAGAIN');
    dp.close();
  });

  it('a peer with a small MTU: warm packets are sized to its path, so every one is forwarded', () => {
    // Toward a 1000-byte tunnel the full-sized TCP segments are 1000 bytes (payload 948), the
    // super-packets cut at 948: nothing is too big, no ICMP answer is written.
    const { c, tunnel, peers, dp, io, tunFd, rawFd } = setup(TWO_PEERS.replace('prefixes: [203.0.113.0/25] }', 'prefixes: [203.0.113.0/25], mtu: 1000 }'));
    expect(tunnel.mtuFor(peers[0]!)).toBe(1000);
    const before = peers.map((p) => peerState(dp, p));
    // What was counted by the time of each write (the last one: just before the reset).
    let drops = -1;
    let forwarded = -1;
    io.onCall = () => {
      drops = dp.figures.drops.reduce((s, x) => s + x, 0);
      forwarded = dp.figures.counters[COUNTER_NAMES.indexOf('tx_packets')]!;
    };
    expect(warmUp(dp, warmUpFlows(c, tunnel), 200)).toBe(2 * warmBatchTotal(200, BATCH));
    expect(drops).toBe(0);
    expect(forwarded).toBeGreaterThan(0);
    expect(io.calls.filter((x) => x.fd !== io.DISCARD_FD || x.failed !== 0)).toEqual([]);
    // One writeTun per underlay batch: no ICMP answers.
    expect(io.calls.filter((x) => x.fn === 'writeTun').length).toBe(200);
    expect(dp.figures.counters.every((v) => v === 0)).toBe(true);
    expect(dp.figures.drops.every((v) => v === 0)).toBe(true);
    expect(dp.figures.lastErrors).toEqual({});
    expectPeersAsBefore(dp, peers, before);
    expect(drain(tunFd)).toBe('EAGAIN');
    expect(drain(rawFd)).toBe('EAGAIN');
    dp.close();
  });

  it('a batch smaller than the largest warm-up batch: sizes are capped at it', () => {
    const c = parseConfig(TWO_PEERS);
    const { tunnel } = buildTunnel(c, 1480);
    const io = new RecordingIo();
    const dp = new Dataplane({
      tunFd: fifos.fifo(), rawFd: fifos.fifo(), icmpFd: -1, tunnel, batch: 4, tunMtu: 1480, underlayMax: 1540,
      icmpSource: 1, icmpRate: 1000, icmpBurst: 50, log: createLogger('silent'), offload, udpGro, io,
    });
    expect(warmUp(dp, warmUpFlows(c, tunnel), 22)).toBe(2 * warmBatchTotal(22, 4));
    expect(io.calls.filter((x) => x.fd !== io.DISCARD_FD || x.failed !== 0)).toEqual([]);
    expect(dp.figures.counters.every((v) => v === 0)).toBe(true);
    dp.close();
  });
});
