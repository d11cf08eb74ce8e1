/**
 * RFC 2003 conformance between two directly connected hosts, continued (the topology, tools and
 * checks of rfc2003-direct.test.ts): path MTU, fragmentation, loops and drop accounting.
 *
 *   P-h1p1 pod A                P-h1 host A                          P-h2 host B                P-h2p1 pod B
 *   198.51.100.10 --- p1 [ipip0 198.51.100.0/32] ul0 192.0.2.1 ==== 192.0.2.2 ul0 [ipip0 203.0.113.0/32] p1 --- 203.0.113.10
 *                          ipipd (h1.yaml)              IPIP (proto 4)            ipipd (h2.yaml)
 *      craft.py on P-h1 sends into ipip0 (TUN side) or, as 192.0.2.1, onto ul0 (h2's underlay side).
 *
 * Checklist rows covered, in the order of the tests: Frag Needed from the tunnel lowers the peer
 * MTU, a DF packet above it is answered with Frag Needed (§5.1); without DF the inner packet is
 * fragmented (RFC 791); loops (§3.2) in both directions; drop accounting (every packet forwarded
 * or dropped under one reason). They run in this order on one topology: the peer MTU the first
 * test lowers to 1280 stays so, and the TUN-side drop accounting counts on it.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Topology, HostInfo, PodInfo } from '../../tools/netns/topology.js';
import { directPair } from '../helpers/pair.js';
import {
  Capture,
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
  type DecodedIp,
} from '../helpers/scapy.js';
import { integrationSkip } from '../helpers/skip.js';

const why = integrationSkip('RFC 2003 conformance tests (direct: path MTU, loops, drop accounting)', packetToolsMissing());

const sum = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);

describe.skipIf(why)('RFC 2003 between two directly connected hosts: path MTU, loops, drop accounting', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  const { innerUdp, ipip } = directPackets(() => ({ h1, h2, A, B }));

  beforeAll(async () => {
    ({ topo, h1, h2, A, B } = await directPair());
  });

  afterAll(async () => {
    await topo?.down();
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

  test('§3.2 loops after decapsulation: inner source = an underlay endpoint (the peer\'s or ours) -> dropped (loop)', async () => {
    const cap = await Capture.start(topo, h2.ns, 'ul0', 'ip proto 4 and dst host 192.0.2.2', 'loop-decap-src');
    let d;
    try {
      const before = await snapshot(h2);
      await craft(topo, h1.ns, [
        { layers: [ip({ src: h1.underlay, dst: h2.underlay }), ip({ src: h1.underlay, dst: B.address }), udp(40302, 7704), raw(8)] },
        { layers: [ip({ src: h1.underlay, dst: h2.underlay }), ip({ src: h2.underlay, dst: B.address }), udp(40302, 7705), raw(8)] },
      ]);
      d = delta(before, await settle(h2, before, (x) => dc(x, 'underlay_rx_packets') >= 2));
      await cap.waitFor(2);
    } finally {
      await cap.stop();
    }
    expect(dc(d, 'rx_packets')).toBe(0);
    expect(tshark(cap.pcap, ['ip.src', 'ip.checksum.status'])).toEqual([
      [[h1.underlay, h1.underlay], ['1', '1']],
      [[h1.underlay, h2.underlay], ['1', '1']],
    ]);
    expect(d.drops).toEqual({ loop: 2 });
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
});
