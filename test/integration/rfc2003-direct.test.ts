/**
 * RFC 2003 conformance between two directly connected hosts, with packets crafted by scapy
 * (test/fixtures/craft.py) and checked field by field twice: as decoded by sniff.py, and as
 * decoded by tshark from a tcpdump capture of the same interface (STYLE rule 16).
 *
 *   P-h1p1 pod A                P-h1 host A                          P-h2 host B                P-h2p1 pod B
 *   198.51.100.10 --- p1 [ipip0 198.51.100.0/32] ul0 192.0.2.1 ==== 192.0.2.2 ul0 [ipip0 203.0.113.0/32] p1 --- 203.0.113.10
 *                          ipipd (h1.yaml)              IPIP (proto 4)            ipipd (h2.yaml)
 *      craft.py on P-h1 sends into ipip0 (TUN side) or, as 192.0.2.1, onto ul0 (h2's underlay side).
 *
 * Checklist rows covered, in the order of the tests: tunnel MTU default (§5.1) and fresh peer
 * soft state (§5); outer header on encapsulation (§3.1: TTL, TOS with RFC 6040 ECN, DF, RFC 6864
 * ID); ECN on decapsulation (RFC 6040); inner TTL 0 at the entry (Time Exceeded) and at the exit
 * (silent); RFC 1122 §3.2.2 (no error about an error, a non-first fragment, a non-unicast
 * source) and the ICMP rate limit; Frag Needed from the tunnel lowers the peer MTU, a DF packet above it is answered
 * with Frag Needed (§5.1); without DF the inner packet is fragmented (RFC 791); loops (§3.2) in
 * both directions; drop accounting (every packet forwarded or dropped under one reason); and,
 * after a restart with another config, `encap.ttl: inherit` and a fixed `encap.tos`.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { editedConfig, startDaemon, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import {
  Capture,
  craft,
  dc,
  delta,
  icmp,
  ip,
  packetToolsMissing,
  quote,
  raw,
  settle,
  snapshot,
  tshark,
  udp,
  type DecodedIp,
  type Fields,
  type PacketSpec,
} from '../helpers/scapy.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';
import { integrationSkip } from '../helpers/skip.js';

const why = integrationSkip('RFC 2003 conformance tests (direct)', packetToolsMissing());

/** The counters the RFC 2003 §4/§5 work added; all start at 0. */
const NEW_COUNTERS = [
  'icmp_sent',
  'icmp_rate_limited',
  'icmp_not_sent',
  'fragmented_packets',
  'fragments_sent',
  'underlay_icmp_rx',
  'icmp_relayed',
  'icmp_not_relayed',
  'icmp_unrelayable',
  'icmp_not_ours',
  'pmtu_updates',
];

const sum = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.skipIf(why)('RFC 2003 between two directly connected hosts', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  let d1: RunningDaemon;

  /** An inner UDP packet pod A -> pod B (as if routed into h1's TUN), `extra` bytes of payload. */
  const innerUdp = (dport: number, fields: Fields = {}, extra = 24, count = 1): PacketSpec => ({
    layers: [ip({ src: A.address, dst: B.address, ttl: 40, ...fields }), udp(40000, dport), raw(extra)],
    count,
  });
  /** The same, wrapped by hand in an outer header 192.0.2.1 -> 192.0.2.2 (for h2's underlay side). */
  const ipip = (dport: number, outer: Fields = {}, inner: Fields = {}, count = 1): PacketSpec => ({
    layers: [ip({ src: h1.underlay, dst: h2.underlay, ...outer }), ip({ src: A.address, dst: B.address, ttl: 50, ...inner }), udp(40000, dport), raw(24)],
    count,
  });
  const byPort = (pkts: DecodedIp[], port: number): DecodedIp => {
    const p = pkts.find((x) => (x.inner ?? x).udp?.dport === port);
    if (!p) throw new Error(`no packet to port ${port} in ${JSON.stringify(pkts)}`);
    return p;
  };

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    h2 = topo.host(2);
    A = h1.pods[0]!;
    B = h2.pods[0]!;
    d1 = await startDaemon(topo, h1);
    await startDaemon(topo, h2);
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('§5.1/§5: the TUN MTU defaults to the underlay MTU - 20 and peer soft state starts clean', async () => {
    const link = JSON.parse((await topo.exec(h1.ns, ['ip', '-j', 'link', 'show', 'ipip0'])).stdout)[0];
    expect(link.mtu).toBe(1480);
    const s = await snapshot(h1);
    expect(s.tun.mtu).toBe(1480);
    expect(s.peers).toHaveLength(1);
    expect(s.peers[0]).toMatchObject({
      name: 'h2',
      mtu: 1480,
      baseMtu: 1480,
      pmtuLearnedSecondsAgo: null,
      reachable: true,
      unreachableReason: null,
      lastRxSecondsAgo: null,
    });
    for (const k of NEW_COUNTERS) expect(s.counters[k], k).toBe(0);
    expect(s.drops.ecn_drop).toBe(0);
  });

  test('§3.1 encapsulation: outer TTL 64, TOS copied with ECN as RFC 6040 (CE -> ECT(0)), DF copied, a new outer ID per packet (RFC 6864)', async () => {
    const cap = await Capture.start(topo, h1.ns, 'ul0', 'ip proto 4 and src host 192.0.2.1', 'encap-header');
    try {
      await craft(topo, h1.ns, [
        innerUdp(7201, { id: 0x7001 }), // two consecutive packets without DF
        innerUdp(7202, { id: 0x7002 }),
        innerUdp(7203, { flags: 'DF', tos: 0xb8 }), // EF, not-ECT
        innerUdp(7204, { tos: 0xb9 }), // ECT(1)
        innerUdp(7205, { tos: 0xba }), // ECT(0)
        innerUdp(7206, { tos: 0xbb }), // CE
      ]);
      await cap.waitFor(6, (p) => (p.inner?.udp?.dport ?? 0) >= 7201 && (p.inner?.udp?.dport ?? 0) <= 7206);
    } finally {
      await cap.stop();
    }
    const got = cap.packets;
    for (const p of got) {
      expect(p).toMatchObject({ proto: 4, src: h1.underlay, dst: h2.underlay, ttl: 64, cksumOk: true, mf: false, frag: 0 });
      expect(p.len).toBe(p.inner!.len + 20);
      // The inner header is carried unchanged.
      expect(p.inner).toMatchObject({ src: A.address, dst: B.address, ttl: 40, cksumOk: true });
    }
    const [p1, p2, p3, p4, p5, p6] = [7201, 7202, 7203, 7204, 7205, 7206].map((port) => byPort(got, port));
    expect([p1!.df, p2!.df, p3!.df]).toEqual([false, false, true]);
    expect(p1!.id).not.toBe(p2!.id);
    expect([p1, p3, p4, p5, p6].map((p) => [p!.tos, p!.inner!.tos])).toEqual([
      [0x00, 0x00],
      [0xb8, 0xb8],
      [0xb9, 0xb9],
      [0xba, 0xba],
      [0xba, 0xbb], // inner CE -> outer ECT(0); the inner keeps CE
    ]);

    const rows = tshark(cap.pcap, ['udp.dstport', 'ip.proto', 'ip.checksum.status', 'ip.ttl', 'ip.dsfield', 'ip.flags.df']);
    expect(rows).toHaveLength(6);
    const dsfield: Record<string, number[]> = {};
    for (const [port, proto, cks, ttl, ds] of rows) {
      expect(proto).toEqual(['4', '17']);
      expect(cks).toEqual(['1', '1']);
      expect(ttl).toEqual(['64', '40']);
      dsfield[port![0]!] = ds!.map((x) => Number(x));
    }
    expect(dsfield['7206']).toEqual([0xba, 0xbb]);
    expect(dsfield['7203']).toEqual([0xb8, 0xb8]);
  });

  test('RFC 6040 decapsulation: outer CE marks an ECT inner (checksum updated), drops a not-ECT one (ecn_drop); outer ECT changes nothing', async () => {
    // [port, outer TOS, inner TOS, inner TOS written to the TUN (null: dropped)]
    const cases: [number, number, number, number | null][] = [
      [7301, 0x03, 0xba, 0xbb], // CE over ECT(0) -> CE, DSCP kept
      [7302, 0x03, 0x01, 0x03], // CE over ECT(1) -> CE
      [7303, 0x03, 0x00, null], // CE over not-ECT -> drop
      [7304, 0x02, 0x00, 0x00], // ECT(0) over not-ECT -> unchanged
      [7305, 0x01, 0x02, 0x02], // ECT(1) over ECT(0) -> unchanged
      [7306, 0x03, 0x03, 0x03], // CE over CE -> CE
      [7307, 0x00, 0x02, 0x02], // not-ECT over ECT(0) -> unchanged
    ];
    const filter = 'udp and dst portrange 7301-7307';
    const [tunCap, podCap] = await Promise.all([
      Capture.start(topo, h2.ns, 'ipip0', filter, 'ecn-decap-tun'),
      Capture.start(topo, B.ns, 'eth0', filter, 'ecn-decap-pod'),
    ]);
    let d;
    try {
      const before = await snapshot(h2);
      await craft(topo, h1.ns, cases.map(([port, outer, inner]) => ipip(port, { tos: outer }, { tos: inner })));
      const after = await settle(h2, before, (x) => dc(x, 'underlay_rx_packets') >= cases.length);
      d = delta(before, after);
      await tunCap.waitFor(6);
      await podCap.waitFor(6);
      await sleep(200);
    } finally {
      await Promise.all([tunCap.stop(), podCap.stop()]);
    }
    expect(d.drops).toEqual({ ecn_drop: 1 });
    expect(dc(d, 'underlay_rx_packets')).toBe(7);
    expect(dc(d, 'rx_packets')).toBe(6);
    for (const [port, , , tos] of cases) {
      const onTun = tunCap.packets.filter((p) => p.udp?.dport === port);
      const inPod = podCap.packets.filter((p) => p.udp?.dport === port);
      if (tos === null) {
        expect(onTun, `port ${port}`).toEqual([]);
        expect(inPod, `port ${port}`).toEqual([]);
        continue;
      }
      // As written into the TUN (TTL untouched), and as the pod got it (one router hop later).
      expect(onTun.map((p) => [p.tos, p.ttl, p.cksumOk, p.udp!.cksumOk]), `port ${port}`).toEqual([[tos, 50, true, true]]);
      expect(inPod.map((p) => [p.tos, p.ttl, p.cksumOk]), `port ${port}`).toEqual([[tos, 49, true]]);
    }
    const rows = tshark(tunCap.pcap, ['udp.dstport', 'ip.dsfield.ecn', 'ip.checksum.status']);
    expect(rows.map(([port, ecn, cks]) => [Number(port![0]), Number(ecn![0]), cks![0]]).sort((a, b) => Number(a[0]) - Number(b[0]))).toEqual([
      [7301, 3, '1'],
      [7302, 3, '1'],
      [7304, 0, '1'],
      [7305, 2, '1'],
      [7306, 3, '1'],
      [7307, 2, '1'],
    ]);
  });

  test('inner TTL 0 from the TUN: dropped (ttl_expired) and answered with ICMP Time Exceeded from the TUN address', async () => {
    const cap = await Capture.start(topo, A.ns, 'eth0', 'icmp', 'ttl0-entry');
    let d;
    try {
      const before = await snapshot(h1);
      // Sent by host A itself, so no kernel decrements the TTL before the TUN.
      await craft(topo, h1.ns, [{ layers: [ip({ src: A.address, dst: B.address, ttl: 0, id: 0x1234 }), udp(40100, 7400), raw(32)] }]);
      d = delta(before, await settle(h1, before, (x) => (x.drops.ttl_expired ?? 0) >= 1));
      await cap.waitFor(1);
      await sleep(200);
    } finally {
      await cap.stop();
    }
    expect(d.drops).toEqual({ ttl_expired: 1 });
    expect([dc(d, 'tun_rx_packets'), dc(d, 'tx_packets'), dc(d, 'icmp_sent')]).toEqual([1, 0, 1]);
    expect(cap.packets).toHaveLength(1);
    const p = cap.packets[0]!;
    expect(p).toMatchObject({ src: h1.tunAddress, dst: A.address, proto: 1, cksumOk: true });
    expect(p.icmp).toMatchObject({ type: 11, code: 0, cksumOk: true, word2: 0, quoteBytes: 60 });
    expect(p.icmp!.quote).toMatchObject({ src: A.address, dst: B.address, ttl: 0, id: 0x1234, proto: 17, len: 60, cksumOk: true });
    expect(p.icmp!.quote!.udp).toMatchObject({ sport: 40100, dport: 7400 });

    const rows = tshark(cap.pcap, ['ip.src', 'icmp.type', 'icmp.code', 'icmp.checksum.status', 'ip.checksum.status', 'udp.dstport']);
    expect(rows).toEqual([[[h1.tunAddress, A.address], ['11'], ['0'], ['1'], ['1', '1'], ['7400']]]);
  });

  test('RFC 1122 §3.2.2: no ICMP error about an ICMP error, a non-first fragment, or a multicast/broadcast/loopback source (icmp_not_sent)', async () => {
    const ttl0 = (src: string, dport: number): PacketSpec => ({ layers: [ip({ src, dst: B.address, ttl: 0 }), udp(40101, dport), raw(8)] });
    const cap = await Capture.start(topo, h1.ns, 'ipip0', 'ip[8] = 0 or (icmp and src host 198.51.100.0)', 'rfc1122');
    let d;
    try {
      const before = await snapshot(h1);
      await craft(topo, h1.ns, [
        // An ICMP error (Host Unreachable) with TTL 0.
        { layers: [ip({ src: A.address, dst: B.address, ttl: 0 }), icmp({ type: 3, code: 1 }), quote([ip({ src: B.address, dst: A.address }), udp(7, 40102)])] },
        // A non-first fragment (offset 800 bytes) with TTL 0.
        { layers: [ip({ src: A.address, dst: B.address, ttl: 0, frag: 100, proto: 17 }), raw(40)] },
        ttl0('224.0.0.5', 7402),
        ttl0('255.255.255.255', 7403),
        ttl0('127.0.0.1', 7404),
      ]);
      d = delta(before, await settle(h1, before, (x) => dc(x, 'tun_rx_packets') >= 5));
      await cap.waitFor(5);
      await sleep(200);
    } finally {
      await cap.stop();
    }
    expect(d.drops).toEqual({ ttl_expired: 5 });
    expect([dc(d, 'icmp_not_sent'), dc(d, 'icmp_sent'), dc(d, 'icmp_rate_limited')]).toEqual([5, 0, 0]);
    // The TUN saw the five packets go in and no ICMP come out.
    expect(cap.packets.map((p) => [p.src, p.ttl])).toEqual([
      [A.address, 0],
      [A.address, 0],
      ['224.0.0.5', 0],
      ['255.255.255.255', 0],
      ['127.0.0.1', 0],
    ]);
    const rows = tshark(cap.pcap, ['ip.ttl', 'ip.checksum.status']);
    expect(rows.map(([ttl, cks]) => [ttl![0], cks![0]])).toEqual(Array(5).fill(['0', '1']));
  });

  test('ICMP errors are rate limited: 200 TTL-0 packets at once -> icmp_sent + icmp_rate_limited = 200, and the pod gets icmp_sent of them', async () => {
    const N = 200;
    const cap = await Capture.start(topo, A.ns, 'eth0', 'icmp[0] = 11', 'ratelimit');
    let d;
    try {
      const before = await snapshot(h1);
      await craft(topo, h1.ns, [{ layers: [ip({ src: A.address, dst: B.address, ttl: 0 }), udp(40103, 7405), raw(8)], count: N }]);
      d = delta(before, await settle(h1, before, (x) => dc(x, 'tun_rx_packets') >= N));
      await cap.waitFor(dc(d, 'icmp_sent'));
      await sleep(200);
    } finally {
      await cap.stop();
    }
    expect(d.drops).toEqual({ ttl_expired: N });
    expect(dc(d, 'icmp_sent') + dc(d, 'icmp_rate_limited')).toBe(N);
    // The default burst is 50 at 1000/s: a burst of 200 cannot all be answered.
    expect(dc(d, 'icmp_rate_limited')).toBeGreaterThan(0);
    expect(dc(d, 'icmp_sent')).toBeGreaterThanOrEqual(1);
    expect(cap.packets).toHaveLength(dc(d, 'icmp_sent'));
    const rows = tshark(cap.pcap, ['icmp.type', 'icmp.checksum.status']);
    expect(rows).toEqual(Array(dc(d, 'icmp_sent')).fill([['11'], ['1']]));
  });

  test('inner TTL 0 after decapsulation: dropped (ttl_expired) at the exit, no ICMP', async () => {
    const [tunCap, ulCap] = await Promise.all([
      Capture.start(topo, h2.ns, 'ipip0', 'icmp', 'ttl0-exit-tun'),
      Capture.start(topo, h2.ns, 'ul0', 'ip proto 4 and dst host 192.0.2.2', 'ttl0-exit-ul0'),
    ]);
    let d;
    try {
      const before = await snapshot(h2);
      await craft(topo, h1.ns, [ipip(7500, {}, { ttl: 0 })]);
      d = delta(before, await settle(h2, before, (x) => dc(x, 'underlay_rx_packets') >= 1));
      await ulCap.waitFor(1);
      await sleep(300);
    } finally {
      await Promise.all([tunCap.stop(), ulCap.stop()]);
    }
    expect(d.drops).toEqual({ ttl_expired: 1 });
    expect([dc(d, 'rx_packets'), dc(d, 'icmp_sent')]).toEqual([0, 0]);
    expect(tunCap.packets).toEqual([]);
    expect(tshark(ulCap.pcap, ['ip.proto', 'ip.ttl', 'ip.checksum.status'])).toEqual([[['4', '17'], ['64', '0'], ['1', '1']]]);
  });

  test('§5/§5.1: Frag Needed from inside the tunnel lowers the peer MTU to MTU - 20; a DF packet above it is dropped (too_big) and answered with Frag Needed from the TUN address', async () => {
    // A Fragmentation Needed (next-hop MTU 1300) about one of h1's outer packets, sent by h2 (the
    // only other node on this underlay), quoting outer header + inner header + 8 bytes and more.
    const before = await snapshot(h1);
    await craft(topo, h2.ns, [
      {
        layers: [
          ip({ src: h2.underlay, dst: h1.underlay }),
          icmp({ type: 3, code: 4, nexthopmtu: 1300 }),
          quote([
            ip({ src: h1.underlay, dst: h2.underlay, proto: 4, len: 1420, flags: 'DF', id: 0x4242 }),
            ip({ src: A.address, dst: B.address, proto: 17, len: 1400, flags: 'DF', ttl: 63 }),
            udp(40200, 7600, { len: 1380, chksum: 0x5555 }),
            raw(1372),
          ], 20 + 20 + 8 + 64),
        ],
      },
    ]);
    const learned = await settle(h1, before, (x) => dc(x, 'underlay_icmp_rx') >= 1);
    const d0 = delta(before, learned);
    expect([dc(d0, 'underlay_icmp_rx'), dc(d0, 'pmtu_updates')]).toEqual([1, 1]);
    expect(learned.peers[0]).toMatchObject({ mtu: 1280, baseMtu: 1480 });
    expect(learned.peers[0]!.pmtuLearnedSecondsAgo).toEqual(expect.any(Number));

    // Pod A pings with DF and 1400-byte packets: they fit the TUN (1480) but not the peer (1280).
    const cap = await Capture.start(topo, A.ns, 'eth0', 'icmp[0] = 3', 'too-big');
    let d;
    let ping;
    try {
      const b2 = await snapshot(h1);
      ping = await topo.exec(A.ns, ['ping', '-n', '-c', '1', '-W', '2', '-M', 'do', '-s', '1372', B.address]);
      d = delta(b2, await settle(h1, b2, (x) => (x.drops.too_big ?? 0) >= 1));
      await cap.waitFor(1);
    } finally {
      await cap.stop();
    }
    expect(ping.stdout).toMatch(/Frag needed and DF set \(mtu = 1280\)/);
    expect(d.drops).toEqual({ too_big: 1 });
    expect([dc(d, 'icmp_sent'), dc(d, 'tx_packets')]).toEqual([1, 0]);
    expect(cap.packets).toHaveLength(1);
    const p = cap.packets[0]!;
    // Error datagram: from the TUN address, 576 bytes at most (RFC 1812 §4.3.2.3), MTU in the
    // low 16 bits of the second word (RFC 1191), quoting the offending header and data.
    expect(p).toMatchObject({ src: h1.tunAddress, dst: A.address, proto: 1, len: 576, cksumOk: true });
    expect(p.icmp).toMatchObject({ type: 3, code: 4, mtu: 1280, word2: 1280, cksumOk: true, quoteBytes: 548 });
    expect(p.icmp!.quote).toMatchObject({ src: A.address, dst: B.address, proto: 1, len: 1400, df: true, cksumOk: true });
    expect(p.icmp!.quote!.icmp).toMatchObject({ type: 8 });
    const route = await topo.exec(A.ns, ['ip', 'route', 'get', B.address]);
    expect(route.stdout).toMatch(/mtu 1280/);

    // tshark decodes the quoted echo request too (its checksum unverifiable: cut): 3/4 then 8/0.
    const rows = tshark(cap.pcap, ['ip.src', 'icmp.type', 'icmp.code', 'icmp.mtu', 'icmp.checksum.status', 'ip.checksum.status']);
    expect(rows).toHaveLength(1);
    const [src, type, code, mtu, icmpCks, ipCks] = rows[0]!;
    expect([src, type, code, mtu, icmpCks![0], ipCks]).toEqual([[h1.tunAddress, A.address], ['3', '8'], ['4', '0'], ['1280'], '1', ['1', '1']]);
  });

  test('§5.1 without DF: a packet above the tunnel MTU is cut into inner fragments (RFC 791), each in its own outer header with its own ID; pod B reassembles', async () => {
    // Pod A learned 1280 in the test above and would fragment by itself: make it forget.
    expect((await topo.exec(A.ns, ['ip', 'route', 'flush', 'cache'])).code).toBe(0);
    expect((await topo.exec(A.ns, ['ip', 'route', 'get', B.address])).stdout).not.toMatch(/mtu 1280/);
    const cap = await Capture.start(topo, h1.ns, 'ul0', 'ip proto 4 and src host 192.0.2.1', 'inner-frag');
    let d1d;
    let d2d;
    let ping;
    try {
      const [b1, b2] = await Promise.all([snapshot(h1), snapshot(h2)]);
      ping = await topo.exec(A.ns, ['ping', '-n', '-c', '1', '-W', '3', '-M', 'dont', '-s', '1372', B.address]);
      d1d = delta(b1, await settle(h1, b1, (x) => dc(x, 'fragments_sent') >= 2));
      d2d = delta(b2, await snapshot(h2));
      await cap.waitFor(2);
    } finally {
      await cap.stop();
    }
    expect(ping.stdout).toMatch(/1 packets transmitted, 1 received/);
    expect(d1d.drops).toEqual({});
    expect([dc(d1d, 'fragmented_packets'), dc(d1d, 'fragments_sent'), dc(d1d, 'tx_packets'), dc(d1d, 'tun_rx_packets')]).toEqual([1, 2, 2, 1]);
    expect(dc(d2d, 'rx_packets')).toBe(2);
    const frags = cap.packets.filter((p) => p.inner?.src === A.address).sort((a, b) => a.inner!.frag - b.inner!.frag);
    expect(frags).toHaveLength(2);
    const [f0, f1] = frags as [DecodedIp, DecodedIp];
    for (const f of frags) {
      expect(f).toMatchObject({ proto: 4, df: false, mf: false, frag: 0, cksumOk: true });
      expect(f.len).toBe(f.inner!.len + 20);
      expect(f.inner!.len).toBeLessThanOrEqual(1280);
      expect(f.inner).toMatchObject({ dst: B.address, proto: 1, df: false, cksumOk: true, id: f0.inner!.id });
    }
    expect(f0.id).not.toBe(f1.id);
    expect([f0.inner!.mf, f0.inner!.frag, f1.inner!.mf]).toEqual([true, 0, false]);
    expect(f0.inner!.payloadBytes % 8).toBe(0);
    expect(f1.inner!.frag).toBe(f0.inner!.payloadBytes);
    expect(f0.inner!.payloadBytes + f1.inner!.payloadBytes).toBe(1380);

    const rows = tshark(cap.pcap, ['ip.proto', 'ip.flags.mf', 'ip.flags.df', 'ip.checksum.status'], 'ip.src == 198.51.100.10');
    expect(rows).toHaveLength(2);
    for (const [proto, mf, df, cks] of rows) {
      expect(proto![0]).toBe('4');
      expect(df).toEqual(['0', '0']);
      expect(mf![0]).toBe('0');
      expect(cks).toEqual(['1', '1']);
    }
    expect(rows.map((r) => r[1]![1])).toEqual(['1', '0']);
  });

  test('§3.2 loops from the TUN: inner source = our underlay address or the peer endpoint, inner destination = the peer endpoint or our underlay address -> dropped (loop)', async () => {
    const cap = await Capture.start(topo, h1.ns, 'ipip0', 'udp and dst portrange 7700-7703', 'loop-encap');
    let d;
    try {
      const before = await snapshot(h1);
      await craft(topo, h1.ns, [
        // What `ping -I 192.0.2.1 203.0.113.10` on host A would send into the TUN.
        { layers: [ip({ src: h1.underlay, dst: B.address }), udp(40300, 7700), raw(8)], count: 2 },
        { layers: [ip({ src: h2.underlay, dst: B.address }), udp(40300, 7702), raw(8)], count: 2 },
        // The kernel would deliver this one locally: written straight into the TUN instead.
        { layers: [ip({ src: A.address, dst: h1.underlay }), udp(40300, 7703), raw(8)], count: 2, iface: 'ipip0' },
      ]);
      // A hand-made route sends the peer's endpoint into the TUN.
      expect((await topo.exec(h1.ns, ['ip', 'route', 'add', `${h2.underlay}/32`, 'dev', 'ipip0'])).code).toBe(0);
      try {
        await craft(topo, h1.ns, [{ layers: [ip({ src: A.address, dst: h2.underlay }), udp(40300, 7701), raw(8)], count: 2 }]);
      } finally {
        await topo.exec(h1.ns, ['ip', 'route', 'del', `${h2.underlay}/32`, 'dev', 'ipip0']);
      }
      d = delta(before, await settle(h1, before, (x) => dc(x, 'tun_rx_packets') >= 8));
      await cap.waitFor(8);
    } finally {
      await cap.stop();
    }
    expect(d.drops).toEqual({ loop: 8 });
    expect([dc(d, 'tun_rx_packets'), dc(d, 'tx_packets')]).toEqual([8, 0]);
    const rows = tshark(cap.pcap, ['ip.src', 'ip.dst', 'ip.checksum.status']);
    expect(rows.map((r) => r.map((f) => f[0]))).toEqual([
      [h1.underlay, B.address, '1'],
      [h1.underlay, B.address, '1'],
      [h2.underlay, B.address, '1'],
      [h2.underlay, B.address, '1'],
      [A.address, h1.underlay, '1'],
      [A.address, h1.underlay, '1'],
      [A.address, h2.underlay, '1'],
      [A.address, h2.underlay, '1'],
    ]);
  });

  test('§3.2 loops after decapsulation: inner destination = an underlay endpoint (ours or the peer\'s) -> dropped (loop)', async () => {
    const cap = await Capture.start(topo, h2.ns, 'ul0', 'ip proto 4 and dst host 192.0.2.2', 'loop-decap-dst');
    let d;
    try {
      const before = await snapshot(h2);
      await craft(topo, h1.ns, [
        { layers: [ip({ src: h1.underlay, dst: h2.underlay }), ip({ src: A.address, dst: h2.underlay }), udp(40301, 7702), raw(8)] },
        { layers: [ip({ src: h1.underlay, dst: h2.underlay }), ip({ src: A.address, dst: h1.underlay }), udp(40301, 7703), raw(8)] },
      ]);
      d = delta(before, await settle(h2, before, (x) => dc(x, 'underlay_rx_packets') >= 2));
      await cap.waitFor(2);
    } finally {
      await cap.stop();
    }
    expect(d.drops).toEqual({ loop: 2 });
    expect(dc(d, 'rx_packets')).toBe(0);
    expect(tshark(cap.pcap, ['ip.dst', 'ip.checksum.status'])).toEqual([
      [[h2.underlay, h2.underlay], ['1', '1']],
      [[h2.underlay, h1.underlay], ['1', '1']],
    ]);
  });

  test('§3.2 loops after decapsulation: inner source = the peer\'s underlay endpoint -> dropped (loop)', async () => {
    const cap = await Capture.start(topo, h2.ns, 'ul0', 'ip proto 4 and dst host 192.0.2.2', 'loop-decap-src');
    let d;
    try {
      const before = await snapshot(h2);
      await craft(topo, h1.ns, [{ layers: [ip({ src: h1.underlay, dst: h2.underlay }), ip({ src: h1.underlay, dst: B.address }), udp(40302, 7704), raw(8)] }]);
      d = delta(before, await settle(h2, before, (x) => dc(x, 'underlay_rx_packets') >= 1));
      await cap.waitFor(1);
    } finally {
      await cap.stop();
    }
    expect(dc(d, 'rx_packets')).toBe(0);
    expect(tshark(cap.pcap, ['ip.src', 'ip.checksum.status'])).toEqual([[[h1.underlay, h1.underlay], ['1', '1']]]);
    expect(d.drops).toEqual({ loop: 1 });
  });

  test('drop accounting, TUN side: N good, N TTL 0, N loop, N no_route, N too big with DF -> tun_rx = forwarded + dropped, reason by reason', async () => {
    const N = 4;
    const cap = await Capture.start(topo, h1.ns, 'ul0', 'ip proto 4 and src host 192.0.2.1', 'accounting-tun');
    let d;
    try {
      const before = await snapshot(h1);
      // Nobody owns 203.0.113.128/25 in a two-host topology: a hand-made route sends it into the TUN.
      expect((await topo.exec(h1.ns, ['ip', 'route', 'add', '203.0.113.128/25', 'dev', 'ipip0'])).code).toBe(0);
      try {
        await craft(topo, h1.ns, [
          innerUdp(7800, {}, 16, N),
          innerUdp(7801, { ttl: 0 }, 16, N),
          { layers: [ip({ src: h1.underlay, dst: B.address }), udp(40400, 7802), raw(16)], count: N },
          { layers: [ip({ src: A.address, dst: '203.0.113.200' }), udp(40400, 7803), raw(16)], count: N },
          innerUdp(7804, { flags: 'DF' }, 1400 - 28, N), // the peer MTU is 1280 since the Frag Needed above
        ]);
      } finally {
        await topo.exec(h1.ns, ['ip', 'route', 'del', '203.0.113.128/25', 'dev', 'ipip0']);
      }
      d = delta(before, await settle(h1, before, (x) => dc(x, 'tun_rx_packets') >= 5 * N));
      await cap.waitFor(N, (p) => p.inner?.udp?.dport === 7800);
    } finally {
      await cap.stop();
    }
    expect(d.drops).toEqual({ ttl_expired: N, loop: N, no_route: N, too_big: N });
    expect(dc(d, 'tun_rx_packets')).toBe(5 * N);
    expect(dc(d, 'tx_packets')).toBe(N);
    expect(dc(d, 'tun_rx_packets')).toBe(dc(d, 'tx_packets') + sum(d.drops));
    // TTL 0 and too big are answered, one ICMP error each (within the default burst).
    expect(dc(d, 'icmp_sent')).toBe(2 * N);
    const good = cap.packets.filter((p) => p.inner?.udp?.dport !== undefined && p.inner.udp.dport >= 7800 && p.inner.udp.dport <= 7804);
    expect(good.map((p) => p.inner!.udp!.dport)).toEqual(Array(N).fill(7800));
    const rows = tshark(cap.pcap, ['udp.dstport', 'ip.checksum.status'], 'udp.dstport >= 7800 && udp.dstport <= 7804');
    expect(rows).toEqual(Array(N).fill([['7800'], ['1', '1']]));
  });

  test('drop accounting, underlay side: N good, N unknown peer, N spoofed source, N bad inner checksum, N inner TTL 0, N loop -> underlay_rx = rx + dropped, reason by reason', async () => {
    const N = 4;
    const cap = await Capture.start(topo, h2.ns, 'ul0', 'ip proto 4 and dst host 192.0.2.2', 'accounting-decap');
    let d;
    try {
      const before = await snapshot(h2);
      await craft(topo, h1.ns, [
        ipip(7900, {}, {}, N),
        ipip(7901, { src: '192.0.2.99' }, {}, N), // outer source no peer has (CVE-2020-10136)
        ipip(7902, {}, { src: '198.51.100.200' }, N), // outside h1's 198.51.100.0/25
        { ...ipip(7903, {}, {}, N), patch: [{ offset: 20 + 10, xor: 0x0101 }] }, // inner header checksum
        ipip(7904, {}, { ttl: 0 }, N),
        ipip(7905, {}, { dst: h2.underlay }, N),
      ]);
      d = delta(before, await settle(h2, before, (x) => dc(x, 'underlay_rx_packets') >= 6 * N));
      await cap.waitFor(6 * N);
    } finally {
      await cap.stop();
    }
    expect(d.drops).toEqual({ unknown_peer: N, spoofed_source: N, inner_bad_checksum: N, ttl_expired: N, loop: N });
    expect(dc(d, 'underlay_rx_packets')).toBe(6 * N);
    expect(dc(d, 'rx_packets')).toBe(N);
    expect(dc(d, 'underlay_rx_packets')).toBe(dc(d, 'rx_packets') + sum(d.drops));
    const rows = tshark(cap.pcap, ['udp.dstport', 'ip.checksum.status']);
    expect(rows).toHaveLength(6 * N);
    for (const [port, cks] of rows) expect(cks, `port ${port}`).toEqual(port![0] === '7903' ? ['1', '0'] : ['1', '1']);
  });

  test('§3.1 with encap { ttl: inherit, tos: 40 } (restart): outer TTL = inner TTL, outer DSCP fixed (0x28) with ECN from the inner', async () => {
    const cfg = editedConfig(topo, h1, 'inherit', (c) => (c.encap = { ...c.encap, ttl: 'inherit', tos: 40 }));
    expect(readFileSync(cfg, 'utf8')).toMatch(/\n {2}ttl: inherit\n {2}tos: 40\n/);
    expect(await stopDaemon(d1)).toBe(0);
    d1 = await startDaemon(topo, h1, cfg);

    const cap = await Capture.start(topo, h1.ns, 'ul0', 'ip proto 4 and src host 192.0.2.1', 'encap-inherit');
    // [port, inner TTL, inner TOS, outer TOS]
    const cases: [number, number, number, number][] = [
      [8001, 37, 0xb8, 0x28],
      [8002, 12, 0xb9, 0x29],
      [8003, 200, 0xba, 0x2a],
      [8004, 99, 0xbb, 0x2a], // CE -> ECT(0)
    ];
    try {
      await craft(topo, h1.ns, cases.map(([port, ttl, tos]) => innerUdp(port, { ttl, tos })));
      await cap.waitFor(4, (p) => (p.inner?.udp?.dport ?? 0) >= 8001);
    } finally {
      await cap.stop();
    }
    for (const [port, ttl, tos, outerTos] of cases) {
      const p = byPort(cap.packets, port);
      expect([p.ttl, p.tos, p.inner!.ttl, p.inner!.tos, p.cksumOk, p.inner!.cksumOk], `port ${port}`).toEqual([ttl, outerTos, ttl, tos, true, true]);
    }
    const rows = tshark(cap.pcap, ['udp.dstport', 'ip.ttl', 'ip.dsfield', 'ip.checksum.status'], 'udp.dstport >= 8001 && udp.dstport <= 8004');
    expect(rows.map(([port, ttl, ds, cks]) => [Number(port![0]), ttl!.map(Number), ds!.map((x) => Number(x)), cks])).toEqual(
      cases.map(([port, ttl, tos, outerTos]) => [port, [ttl, ttl], [outerTos, tos], ['1', '1']]),
    );
  });
});
