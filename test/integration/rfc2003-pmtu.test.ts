/**
 * RFC 2003 §5 with real TCP: path MTU discovery through the tunnel when a router inside it has a
 * smaller link. Nothing is crafted here: the router's own kernel sends the Fragmentation Needed,
 * ipipd learns the peer's tunnel MTU from it and tells the pod, whose TCP adapts (STYLE rule 16).
 *
 *   P-h1p1 pod A            P-h1 host A                       P-r router                        P-h2 host B            P-h2p1 pod B
 *   198.51.100.10 --- [ipip0 198.51.100.0] ul0 192.0.2.1/25 --- a0 192.0.2.126  b0 192.0.2.254 --- ul0 192.0.2.129/25 [ipip0] --- 203.0.113.10
 *     tcp-send              ipipd (h1.yaml)                     b0 mtu 1500 -> 1400                ipipd (h2.yaml)          tcp-sink
 *
 * Only the h1 -> h2 direction shrinks: b0's MTU limits what the router sends to h2 (outer
 * packets of 1500 bytes no longer fit, so the router answers h1 with Frag Needed, MTU 1400),
 * while what h2 sends back are TCP ACKs, far below 1400 (a veth also drops, silently, a frame
 * above the receiving end's MTU, so h2's 1500-byte packets would not get through b0 either: none
 * are sent). So h1's tunnel MTU toward h2 becomes 1400 - 20 = 1380 and h2's toward h1 stays 1480.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { expectedSha256 } from '../fixtures/payload.js';
import { startDaemon } from '../helpers/daemons.js';
import { Capture, dc, delta, packetToolsMissing, snapshot, tshark, type Delta } from '../helpers/scapy.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';
import { integrationSkip } from '../helpers/skip.js';
import { routerPair } from '../helpers/pair.js';

const why = integrationSkip('RFC 2003 conformance tests (path MTU)', packetToolsMissing());

const ROUTER_A0 = '192.0.2.126';
const BYTES = 4 * 1024 * 1024;

describe.skipIf(why)('RFC 2003 §5: path MTU through a router with a smaller link, real TCP', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  let R: string;

  /** A TCP transfer pod A -> pod B, checked byte for byte (SHA-256); returns the sink's port. */
  const transfer = async (seed: number): Promise<number> => {
    const sink = await topo.serve(B.ns, ['tcp-sink', '--bind', B.address, '--port', '0', '--timeout', '60']);
    const send = await topo.traffic(
      A.ns,
      ['tcp-send', '--to', B.address, '--port', String(sink.port), '--bytes', String(BYTES), '--seed', String(seed), '--timeout', '60'],
      { timeoutMs: 70_000 },
    );
    const got = await sink.result;
    expect(send.code, send.stdout + send.stderr).toBe(0);
    expect(got.code, got.stdout + got.stderr).toBe(0);
    expect(got.json).toMatchObject({ bytes: BYTES, sha256: expectedSha256(BYTES, seed) });
    return sink.port;
  };

  beforeAll(async () => {
    ({ topo, h1, h2, A, B, R } = await routerPair());
    await startDaemon(topo, h1);
    await startDaemon(topo, h2);
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('before: both peers at the TUN MTU (1480), nothing learned', async () => {
    for (const h of [h1, h2]) {
      const s = await snapshot(h);
      expect(s.peers[0], h.name).toMatchObject({ mtu: 1480, baseMtu: 1480, pmtuLearnedSecondsAgo: null });
    }
  });

  test('router b0 MTU 1400: the transfer completes byte for byte, h1 learns peer MTU 1380 from the router, pod A learns 1380', async () => {
    expect((await topo.exec(R, ['ip', 'link', 'set', 'b0', 'mtu', '1400'])).code).toBe(0);
    const [ulCap, podCap] = await Promise.all([
      // The router's Fragmentation Needed about h1's outer packets, as h1 receives it.
      Capture.start(topo, h1.ns, 'ul0', `icmp and src host ${ROUTER_A0}`, 'pmtu-router'),
      // What ipipd tells pod A (relayed Frag Needed, or its own for later packets).
      Capture.start(topo, A.ns, 'eth0', `icmp and src host ${h1.tunAddress}`, 'pmtu-pod'),
    ]);
    const before = await snapshot(h1);
    let port: number;
    try {
      port = await transfer(21);
      await ulCap.waitFor(1);
      await podCap.waitFor(1);
    } finally {
      await Promise.all([ulCap.stop(), podCap.stop()]);
    }
    const s1 = await snapshot(h1);
    const d: Delta = delta(before, s1);
    expect(s1.peers[0]).toMatchObject({ mtu: 1380, baseMtu: 1480 });
    expect(s1.peers[0]!.pmtuLearnedSecondsAgo).toEqual(expect.any(Number));
    expect(dc(d, 'pmtu_updates')).toBeGreaterThanOrEqual(1);
    expect(dc(d, 'icmp_relayed') + dc(d, 'icmp_sent')).toBeGreaterThanOrEqual(1);
    // The other direction was not shrunk.
    expect((await snapshot(h2)).peers[0]).toMatchObject({ mtu: 1480, pmtuLearnedSecondsAgo: null });

    // The router quoted one of h1's outer packets: 192.0.2.1 -> 192.0.2.129, protocol 4, around
    // pod A's TCP segment to the sink.
    for (const r of ulCap.packets) {
      expect(r).toMatchObject({ src: ROUTER_A0, dst: h1.underlay, cksumOk: true });
      expect(r.icmp).toMatchObject({ type: 3, code: 4, mtu: 1400, cksumOk: true });
      expect(r.icmp!.quote).toMatchObject({ src: h1.underlay, dst: h2.underlay, proto: 4, df: true });
      expect(r.icmp!.quote!.len).toBeGreaterThan(1400);
      expect(r.icmp!.quote!.inner).toMatchObject({ src: A.address, dst: B.address, proto: 6, cksumOk: true });
      expect(r.icmp!.quote!.inner!.tcp).toMatchObject({ dport: port });
    }
    // Pod A heard 1380 from the TUN address, about its own segments.
    const fromIpipd = podCap.packets.filter((p) => p.icmp?.type === 3 && p.icmp.code === 4);
    expect(fromIpipd.length).toBeGreaterThanOrEqual(1);
    for (const p of fromIpipd) {
      expect(p).toMatchObject({ src: h1.tunAddress, dst: A.address, cksumOk: true });
      expect(p.icmp).toMatchObject({ mtu: 1380, word2: 1380, cksumOk: true });
      expect(p.icmp!.quote).toMatchObject({ src: A.address, dst: B.address, proto: 6, df: true });
      expect(p.icmp!.quote!.tcp).toMatchObject({ dport: port });
    }
    const route = await topo.exec(A.ns, ['ip', 'route', 'get', B.address]);
    expect(route.stdout).toMatch(/mtu 1380/);

    const rrows = tshark(ulCap.pcap, ['icmp.type', 'icmp.code', 'icmp.mtu', 'icmp.checksum.status', 'ip.proto', 'ip.checksum.status']);
    expect(rrows.length).toBeGreaterThanOrEqual(1);
    for (const [t, c, mtu, icmpCks, proto, ipCks] of rrows) {
      // ICMP, then the quoted outer header (4) and pod A's quoted TCP segment (6).
      expect([t, c, mtu, icmpCks, proto, ipCks]).toEqual([['3'], ['4'], ['1400'], ['1'], ['1', '4', '6'], ['1', '1', '1']]);
    }
    const prows = tshark(podCap.pcap, ['icmp.type', 'icmp.code', 'icmp.mtu', 'icmp.checksum.status', 'ip.checksum.status'], 'icmp.code == 4');
    expect(prows.length).toBe(fromIpipd.length);
    for (const [t, c, mtu, icmpCks, ipCks] of prows) expect([t, c, mtu, icmpCks, ipCks]).toEqual([['3'], ['4'], ['1380'], ['1'], ['1', '1']]);
  });

  test('a new transfer over the learned path arrives byte for byte, with nothing too big and no send error', async () => {
    const before = await snapshot(h1);
    await transfer(22);
    const after = await snapshot(h1);
    const d = delta(before, after);
    expect(after.peers[0]).toMatchObject({ mtu: 1380 });
    expect(d.drops.too_big ?? 0).toBe(0);
    expect(d.drops.socket_write_error ?? 0).toBe(0);
    expect(dc(d, 'tx_packets')).toBeGreaterThan(BYTES / 1380);
    expect((await topo.exec(A.ns, ['ip', 'route', 'get', B.address])).stdout).toMatch(/mtu 1380/);
  });
});
