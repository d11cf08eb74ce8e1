/**
 * RFC 2003 §4 and §5: ICMP from inside the tunnel. A router sits in the underlay; scapy in its
 * namespace sends h1 the ICMP errors a router would send about h1's outer packets, and we check
 * what ipipd makes of them: the peer's soft state (MTU, reachability), what it relays into the
 * TUN to the inner sender (pod A, sniffed there), and its counters. Every scenario is also
 * captured with tcpdump and decoded by tshark (STYLE rule 16).
 *
 *   P-h1p1 pod A            P-h1 host A                       P-r router                       P-h2 host B            P-h2p1 pod B
 *   198.51.100.10 --- [ipip0 198.51.100.0] ul0 192.0.2.1/25 --- a0 192.0.2.126  b0 192.0.2.254 --- ul0 192.0.2.129/25 [ipip0] --- 203.0.113.10
 *                        ipipd (h1.yaml)                      craft.py: ICMP errors to 192.0.2.1        ipipd (h2.yaml)
 *
 * The quoted "tunnel packet" is what h1 would have sent: outer 192.0.2.1 -> 192.0.2.129 (proto 4,
 * 1420 bytes) around pod A -> pod B (UDP, 1400 bytes); the router quotes its outer header, the
 * inner header and some bytes after it (or less, for the unrelayable case).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startDaemon } from '../helpers/daemons.js';
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
  type Delta,
  type DecodedIp,
  type Fields,
  type Layer,
  type Status,
} from '../helpers/scapy.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';
import { integrationSkip } from '../helpers/skip.js';
import { routerPair } from '../helpers/pair.js';

const why = integrationSkip('RFC 2003 conformance tests (ICMP from the tunnel)', packetToolsMissing());

const ROUTER_A0 = '192.0.2.126';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Outcome {
  /** ICMP that reached pod A. */
  pod: DecodedIp[];
  d: Delta;
  after: Status;
  podPcap: string;
  ulPcap: string;
}

describe.skipIf(why)('RFC 2003 §4/§5: ICMP from a router inside the tunnel', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  let R: string;
  let serial = 0;

  /**
   * The outer packet h1 sent (outer + inner + UDP + payload, with the lengths of a 1400-byte
   * inner datagram), for a router to quote. `outer`/`inner` override fields.
   */
  const tunnelPacket = (sport: number, dport: number, inner: Fields = {}, outer: Fields = {}): Layer[] => [
    ip({ src: h1.underlay, dst: h2.underlay, proto: 4, len: 1420, flags: 'DF', ttl: 63, id: 0x4242, ...outer }),
    ip({ src: A.address, dst: B.address, proto: 17, len: 1400, flags: 'DF', ttl: 63, id: 0x1717, ...inner }),
    udp(sport, dport, { len: 1380, chksum: 0x5555 }),
    raw(1372),
  ];
  /** An ICMP error from the router to h1 quoting `quoted`, cut to `bytes` (default: 20 + 20 + 8 + 32). */
  const fromRouter = (fields: Fields, quoted: Layer[], bytes = 20 + 20 + 8 + 32) => ({
    layers: [ip({ src: ROUTER_A0, dst: h1.underlay }), icmp(fields), quote(quoted, bytes)],
  });

  /**
   * Sends the router's messages, waits until ipipd has read them all, and returns what pod A
   * received, what h1's ul0 saw, and ipipd's counter deltas. Checks on the way that every ICMP
   * message read is classified exactly once.
   */
  const scenario = async (msgs: { layers: Layer[] }[]): Promise<Outcome> => {
    const name = `icmp-${++serial}`;
    const [podCap, ulCap] = await Promise.all([
      Capture.start(topo, A.ns, 'eth0', 'icmp', `${name}-pod`),
      // The router's message as h1 receives it, for tshark.
      Capture.start(topo, h1.ns, 'ul0', `icmp and src host ${ROUTER_A0}`, `${name}-ul0`, { decode: false }),
    ]);
    let d: Delta;
    let after: Status;
    try {
      const before = await snapshot(h1);
      await craft(topo, R, msgs);
      after = await settle(h1, before, (x) => dc(x, 'underlay_icmp_rx') >= msgs.length);
      d = delta(before, after);
      await ulCap.waitFor(msgs.length);
      const relayed = dc(d, 'icmp_relayed');
      if (relayed > 0) await podCap.waitFor(relayed);
      await sleep(300); // room for anything unexpected to arrive in the pod
    } finally {
      await Promise.all([podCap.stop(), ulCap.stop()]);
    }
    expect(dc(d, 'underlay_icmp_rx')).toBe(msgs.length);
    expect(dc(d, 'underlay_icmp_rx'), JSON.stringify(d.counters)).toBe(
      dc(d, 'icmp_relayed') + dc(d, 'icmp_not_relayed') + dc(d, 'icmp_unrelayable') + dc(d, 'icmp_not_ours'),
    );
    // Nothing here is a data packet: no drops, nothing forwarded.
    expect(d.drops).toEqual({});
    return { pod: podCap.packets, d, after, podPcap: podCap.pcap, ulPcap: ulCap.pcap };
  };

  /** A relayed error as pod A must see it: from the TUN address, quoting its own packet. */
  const expectRelayed = (p: DecodedIp, type: number, code: number, sport: number, dport: number): void => {
    expect(p).toMatchObject({ src: h1.tunAddress, dst: A.address, proto: 1, cksumOk: true });
    expect(p.icmp).toMatchObject({ type, code, cksumOk: true });
    expect(p.icmp!.quote).toMatchObject({ src: A.address, dst: B.address, proto: 17, id: 0x1717, len: 1400, cksumOk: true });
    expect(p.icmp!.quote!.udp).toMatchObject({ sport, dport });
  };

  /**
   * tshark's view of the router's message on ul0: ICMP, then the quoted outer header (4) and,
   * for most types, the quoted inner one (17; tshark leaves it undecoded in a Redirect); every
   * IPv4 header checksum and the ICMP checksum good.
   */
  const expectUnderlayDecode = (pcap: string, type: number, code: number): void => {
    const rows = tshark(pcap, ['ip.proto', 'ip.src', 'icmp.type', 'icmp.code', 'icmp.checksum.status', 'ip.checksum.status']);
    expect(rows).toHaveLength(1);
    const [proto, src, t, c, icmpCks, ipCks] = rows[0]!;
    expect([proto!.slice(0, 2), src![0], t![0], c![0], icmpCks![0]]).toEqual([['1', '4'], ROUTER_A0, String(type), String(code), '1']);
    if (type !== 5) expect(proto).toEqual(['1', '4', '17']);
    expect(ipCks).toEqual(proto!.map(() => '1'));
  };
  /** tshark's view of what pod A received. */
  const expectPodDecode = (pcap: string, type: number, code: number, mtu?: number): void => {
    const rows = tshark(pcap, ['ip.src', 'icmp.type', 'icmp.code', 'icmp.mtu', 'icmp.checksum.status', 'ip.checksum.status', 'udp.srcport']);
    expect(rows).toHaveLength(1);
    const [src, t, c, m, icmpCks, ipCks] = rows[0]!;
    expect([src, t, c, m, icmpCks![0], ipCks]).toEqual([[h1.tunAddress, A.address], [String(type)], [String(code)], mtu ? [String(mtu)] : [], '1', ['1', '1']]);
  };

  /** Pod B pings pod A once: a packet from the peer, which makes it reachable again. */
  const heardFromPeer = async (): Promise<Status> => {
    const r = await topo.exec(B.ns, ['ping', '-n', '-c', '1', '-W', '2', A.address]);
    expect(r.stdout).toMatch(/1 packets transmitted, 1 received/);
    return snapshot(h1);
  };

  beforeAll(async () => {
    ({ topo, h1, h2, A, B, R } = await routerPair());
    await startDaemon(topo, h1);
    await startDaemon(topo, h2);
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('soft state before any ICMP: peer MTU 1480, reachable', async () => {
    const s = await snapshot(h1);
    expect(s.peers[0]).toMatchObject({ endpoint: h2.underlay, mtu: 1480, baseMtu: 1480, pmtuLearnedSecondsAgo: null, reachable: true, unreachableReason: null });
  });

  test('Frag Needed (1340) about a tunnel packet whose inner packet has no DF: peer MTU 1320, not relayed', async () => {
    const o = await scenario([fromRouter({ type: 3, code: 4, nexthopmtu: 1340 }, tunnelPacket(40001, 7001, { flags: 0 }))]);
    expect([dc(o.d, 'pmtu_updates'), dc(o.d, 'icmp_not_relayed'), dc(o.d, 'icmp_relayed'), dc(o.d, 'icmp_sent')]).toEqual([1, 1, 0, 0]);
    expect(o.after.peers[0]).toMatchObject({ mtu: 1320, baseMtu: 1480 });
    expect(o.after.peers[0]!.pmtuLearnedSecondsAgo).toEqual(expect.any(Number));
    expect(o.pod).toEqual([]);
    expectUnderlayDecode(o.ulPcap, 3, 4);
    expect(tshark(o.ulPcap, ['icmp.mtu'])).toEqual([[['1340']]]);
  });

  test('Frag Needed (1300) about a tunnel packet with DF: peer MTU 1280, pod A gets Frag Needed (1280) quoting its packet', async () => {
    const o = await scenario([fromRouter({ type: 3, code: 4, nexthopmtu: 1300 }, tunnelPacket(40002, 7002), 20 + 20 + 8)]);
    expect([dc(o.d, 'pmtu_updates'), dc(o.d, 'icmp_relayed'), dc(o.d, 'icmp_sent')]).toEqual([1, 1, 1]);
    expect(o.after.peers[0]).toMatchObject({ mtu: 1280, baseMtu: 1480, reachable: true });
    expect(o.pod).toHaveLength(1);
    const p = o.pod[0]!;
    expectRelayed(p, 3, 4, 40002, 7002);
    expect(p.icmp).toMatchObject({ mtu: 1280, word2: 1280, quoteBytes: 28 });
    expect(p.icmp!.quote).toMatchObject({ df: true });
    expectPodDecode(o.podPcap, 3, 4, 1280);
    expectUnderlayDecode(o.ulPcap, 3, 4);
  });

  test('§5.1 after that, a DF packet above 1280 from pod A is answered with Frag Needed (1280) by ipipd', async () => {
    const cap = await Capture.start(topo, A.ns, 'eth0', 'icmp[0] = 3', 'icmp-toobig');
    let d: Delta;
    let ping;
    try {
      const before = await snapshot(h1);
      ping = await topo.exec(A.ns, ['ping', '-n', '-c', '1', '-W', '2', '-M', 'do', '-s', '1372', B.address]);
      d = delta(before, await settle(h1, before, (x) => (x.drops.too_big ?? 0) >= 1));
      await cap.waitFor(1);
    } finally {
      await cap.stop();
    }
    expect(ping.stdout).toMatch(/Frag needed and DF set \(mtu = 1280\)/);
    expect(d.drops).toEqual({ too_big: 1 });
    expect(cap.packets).toHaveLength(1);
    expect(cap.packets[0]).toMatchObject({ src: h1.tunAddress, dst: A.address, icmp: { type: 3, code: 4, mtu: 1280, cksumOk: true } });
    expect((await topo.exec(A.ns, ['ip', 'route', 'get', B.address])).stdout).toMatch(/mtu 1280/);
  });

  test('Host Unreachable (3/1): pod A gets Host Unreachable, the peer is marked unreachable until a packet from it arrives', async () => {
    const o = await scenario([fromRouter({ type: 3, code: 1 }, tunnelPacket(40003, 7003))]);
    expect([dc(o.d, 'icmp_relayed'), dc(o.d, 'icmp_sent')]).toEqual([1, 1]);
    expect(o.pod).toHaveLength(1);
    expectRelayed(o.pod[0]!, 3, 1, 40003, 7003);
    expect(o.pod[0]!.icmp!.quoteBytes).toBe(60);
    expect(o.after.peers[0]!.reachable).toBe(false);
    expect(o.after.peers[0]!.unreachableReason).toEqual(expect.any(String));
    expect(o.after.peers[0]!.unreachableReason).not.toBe('');
    expectPodDecode(o.podPcap, 3, 1);
    expectUnderlayDecode(o.ulPcap, 3, 1);
    const s = await heardFromPeer();
    expect(s.peers[0]).toMatchObject({ reachable: true, unreachableReason: null });
    expect(s.peers[0]!.lastRxSecondsAgo).toEqual(expect.any(Number));
  });

  test('Net Unreachable (3/0): pod A gets Host Unreachable, the peer is marked unreachable until a packet from it arrives', async () => {
    const o = await scenario([fromRouter({ type: 3, code: 0 }, tunnelPacket(40004, 7004))]);
    expect(dc(o.d, 'icmp_relayed')).toBe(1);
    expect(o.pod).toHaveLength(1);
    expectRelayed(o.pod[0]!, 3, 1, 40004, 7004);
    expect(o.after.peers[0]!.reachable).toBe(false);
    expect(o.after.peers[0]!.unreachableReason).toEqual(expect.any(String));
    expectPodDecode(o.podPcap, 3, 1);
    expectUnderlayDecode(o.ulPcap, 3, 0);
    const s = await heardFromPeer();
    expect(s.peers[0]).toMatchObject({ reachable: true, unreachableReason: null });
  });

  test('Protocol Unreachable (3/2): pod A gets Destination Unreachable (Host Unreachable)', async () => {
    const o = await scenario([fromRouter({ type: 3, code: 2 }, tunnelPacket(40005, 7005))]);
    expect(dc(o.d, 'icmp_relayed')).toBe(1);
    expect(o.pod).toHaveLength(1);
    expectRelayed(o.pod[0]!, 3, 1, 40005, 7005);
    expectPodDecode(o.podPcap, 3, 1);
    expectUnderlayDecode(o.ulPcap, 3, 2);
    await heardFromPeer();
  });

  test('Time Exceeded (11/0): pod A gets Host Unreachable', async () => {
    const o = await scenario([fromRouter({ type: 11, code: 0 }, tunnelPacket(40006, 7006))]);
    expect(dc(o.d, 'icmp_relayed')).toBe(1);
    expect(o.pod).toHaveLength(1);
    expectRelayed(o.pod[0]!, 3, 1, 40006, 7006);
    expectPodDecode(o.podPcap, 3, 1);
    expectUnderlayDecode(o.ulPcap, 11, 0);
  });

  test.each([
    ['Port Unreachable (3/3)', { type: 3, code: 3 }],
    ['Source Route Failed (3/5)', { type: 3, code: 5 }],
    // The gateway is the router itself, so that the kernel of h1 has nothing to change either.
    ['Redirect (5/1)', { type: 5, code: 1, gw: ROUTER_A0 }],
    ['Source Quench (4/0)', { type: 4, code: 0 }],
  ] as [string, Fields][])('%s: not relayed (icmp_not_relayed), nothing reaches pod A, soft state unchanged', async (_name, fields) => {
    const o = await scenario([fromRouter(fields, tunnelPacket(40007, 7007))]);
    expect([dc(o.d, 'icmp_not_relayed'), dc(o.d, 'icmp_relayed'), dc(o.d, 'icmp_sent'), dc(o.d, 'pmtu_updates')]).toEqual([1, 0, 0, 0]);
    expect(o.pod).toEqual([]);
    expect(o.after.peers[0]).toMatchObject({ mtu: 1280, reachable: true });
    expectUnderlayDecode(o.ulPcap, Number(fields.type), Number(fields.code));
  });

  test('a quote with only 8 bytes after the outer header cannot be relayed (icmp_unrelayable)', async () => {
    const o = await scenario([fromRouter({ type: 3, code: 1 }, tunnelPacket(40008, 7008), 20 + 8)]);
    expect([dc(o.d, 'icmp_unrelayable'), dc(o.d, 'icmp_relayed'), dc(o.d, 'icmp_sent')]).toEqual([1, 0, 0]);
    expect(o.pod).toEqual([]);
    // IPv4 20 + ICMP 8 + quote 28 (the outer header and 8 bytes of the inner one).
    const rows = tshark(o.ulPcap, ['ip.len', 'icmp.type', 'icmp.code', 'icmp.checksum.status', 'ip.checksum.status', 'ip.proto']);
    expect(rows).toHaveLength(1);
    const [len, t, c, icmpCks, ipCks, proto] = rows[0]!;
    expect([len![0], t![0], c![0], icmpCks![0], ipCks!.slice(0, 2), proto!.slice(0, 2)]).toEqual(['56', '3', '1', '1', ['1', '1'], ['1', '4']]);
    await heardFromPeer();
  });

  test('ICMP about something else (a UDP packet 192.0.2.1 -> 192.0.2.129, or IPIP to a non-peer) is not ours (icmp_not_ours): no relay, no MTU change', async () => {
    const o = await scenario([
      fromRouter({ type: 3, code: 4, nexthopmtu: 1000 }, [
        ip({ src: h1.underlay, dst: h2.underlay, proto: 17, len: 1400, flags: 'DF' }),
        udp(40009, 7009, { len: 1380, chksum: 0x5555 }),
        raw(1372),
      ]),
      fromRouter({ type: 3, code: 1 }, tunnelPacket(40010, 7010, {}, { dst: '192.0.2.200' })),
    ]);
    expect([dc(o.d, 'icmp_not_ours'), dc(o.d, 'icmp_relayed'), dc(o.d, 'icmp_sent'), dc(o.d, 'pmtu_updates')]).toEqual([2, 0, 0, 0]);
    expect(o.pod).toEqual([]);
    expect(o.after.peers[0]).toMatchObject({ mtu: 1280, reachable: true });
    const rows = tshark(o.ulPcap, ['ip.proto', 'icmp.checksum.status', 'ip.checksum.status']);
    expect(rows.map(([proto, icmpCks, ipCks]) => [proto, icmpCks![0], ipCks])).toEqual([
      [['1', '17'], '1', ['1', '1']],
      [['1', '4', '17'], '1', ['1', '1', '1']],
    ]);
  });
});
