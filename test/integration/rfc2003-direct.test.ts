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
 * source) and the ICMP rate limit; and, after a restart with another config, `encap.ttl:
 * inherit` and a fixed `encap.tos`. Path MTU, fragmentation, loops and drop accounting on the
 * same topology: rfc2003-direct-pmtu-loops.test.ts.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sleep } from '../../tools/netns/exec.js';
import type { Topology, HostInfo, PodInfo } from '../../tools/netns/topology.js';
import { editedConfig, startDaemon, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { directPair } from '../helpers/pair.js';
import {
  Capture,
  byPort,
  craft,
  dc,
  delta,
  directPackets,
  icmp,
  ip,
  packetToolsMissing,
  quote,
  raw,
  settle,
  snapshot,
  tshark,
  udp,
  type PacketSpec,
} from '../helpers/scapy.js';
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

describe.skipIf(why)('RFC 2003 between two directly connected hosts', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  let d1: RunningDaemon;
  const { innerUdp, ipip } = directPackets(() => ({ h1, h2, A, B }));

  beforeAll(async () => {
    ({ topo, h1, h2, A, B, d1 } = await directPair());
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
