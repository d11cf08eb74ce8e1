/**
 * io.queues: 2 and path MTU discovery: a tunnel MTU learned by queue 0 (the only queue that reads
 * ICMP from the underlay) is used by queue 1 too (Dataplane onPathMtu -> QueueWorkers.setPeerMtu
 * -> the worker's peer.mtu). Nothing is crafted: the router's kernel sends the Fragmentation
 * Needed, pod A's kernel sends the datagrams (STYLE rule 16).
 *
 *   P-h1p1 pod A            P-h1 host A                       P-r router                        P-h2 host B            P-h2p1 pod B
 *   198.51.100.10 --- [ipip0 x2 queues] ul0 192.0.2.1/25 --- a0 192.0.2.126  b0 192.0.2.254 --- ul0 192.0.2.129/25 [ipip0 x2] --- 203.0.113.10
 *     tcp-send, udp-probe   ipipd io.queues: 2                  b0 mtu 1500 -> 1400                ipipd io.queues: 2
 *
 * 1. A TCP transfer pod A -> pod B makes h1 learn tunnel MTU 1400 - 20 = 1380 toward h2 (as in
 *    rfc2003-pmtu.test.ts): pmtu_updates >= 1, peers[0].mtu 1380.
 * 2. Pod A then sends DF UDP datagrams of 1428 bytes (1400 of payload; > 1380, <= 1480) from 32
 *    unconnected sockets (32 source ports) with IP_MTU_DISCOVER = IP_PMTUDISC_PROBE, so its
 *    kernel ignores the 1380 it has cached for B and sends them whole, DF set, at eth0's MTU
 *    (1500; checked on pod A's eth0). h1's kernel forwards them into ipip0 (MTU 1480), and the
 *    TUN spreads them over its two queues by flow (no steering program is attached, so
 *    tun_automq_select_queue: the symmetric flow hash, randomly keyed per boot, scaled to the
 *    queue count; a new flow with no entry in the TUN's flow table lands on hash * 2 >> 32). With
 *    32 flows both queues get some unless the hash is pathological (1 in 2^31).
 *    Each queue must refuse every one locally (drop too_big, ICMP Frag Needed 1380 into the
 *    TUN); none may leave h1 as an outer packet above 1400 bytes, so the router answers none
 *    (underlay_icmp_rx unchanged) and nothing new is learned (pmtu_updates unchanged).
 *
 * Were the MTU not propagated, queue 1 would still see 1480 for the peer and encapsulate its
 * share into 1448-byte outer packets. While h1's kernel still has the router's 1400 cached for
 * h2's address (from step 1; `ip route get` shows "cache expires ... mtu 1400"), its sendmmsg
 * refuses them (EMSGSIZE: drop socket_write_error) and the kernel sends h1 itself a Frag Needed
 * 1400 over lo, which queue 0 reads (underlay_icmp_rx) and relays (icmp_relayed); once that
 * cache has expired they would reach the router, which answers the same way. Either way too_big
 * falls short by queue 1's share and underlay_icmp_rx grows by it (checked by breaking the
 * worker's 'mtu' message in a scratch copy: too_big 45 of 96, underlay_icmp_rx 51,
 * socket_write_error 51).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { StatusReport } from '../../src/daemon/daemon.js';
import { expectedSha256 } from '../fixtures/payload.js';
import { editedConfig, startDaemon } from '../helpers/daemons.js';
import { Capture, PYTHON, dc, delta, packetToolsMissing, settle, snapshot, type DecodedIp } from '../helpers/scapy.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';
import { integrationSkip } from '../helpers/skip.js';
import { routerPair } from '../helpers/pair.js';

const why = integrationSkip('queue path-MTU tests', packetToolsMissing());

const ROUTER_A0 = '192.0.2.126';
const BYTES = 4 * 1024 * 1024;
/** Source ports (one unconnected socket each), rounds over all of them, payload bytes. */
const FLOWS = 32;
const ROUNDS = 3;
const PAYLOAD = 1400;
/** The inner datagram: IPv4 20 + UDP 8 + payload. Above 1380, at most the TUN's 1480. */
const INNER = PAYLOAD + 28;
const DPORT = 9;

/**
 * Sends `rounds` rounds of one DF datagram per socket to (dst, dport) from `flows` unconnected
 * UDP sockets bound to (src, 0), each with IP_MTU_DISCOVER = IP_PMTUDISC_PROBE (3): DF set, the
 * cached path MTU ignored, the device MTU the only limit. Unconnected, so the Frag Needed the
 * socket gets back sets no pending error on it. Prints {"sent", "ports", "errors"}.
 */
const SENDER = `
import json, socket, sys, time
src, dst, dport, flows, rounds, size, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
IP_MTU_DISCOVER, IP_PMTUDISC_PROBE = 10, 3
socks = []
for _ in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
    assert s.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) == IP_PMTUDISC_PROBE
    s.bind((src, 0))
    socks.append(s)
sent, errors = 0, []
for r in range(rounds):
    if r:
        time.sleep(gap)
    for s in socks:
        try:
            if s.sendto(bytes([r & 0xFF]) * size, (dst, dport)) == size:
                sent += 1
        except OSError as e:
            errors.append(str(e))
print(json.dumps({"sent": sent, "ports": [s.getsockname()[1] for s in socks], "errors": errors}))
`;

describe.skipIf(why)('io.queues: 2: a path MTU learned by queue 0 is used by queue 1', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  let R: string;

  beforeAll(async () => {
    ({ topo, h1, h2, A, B, R } = await routerPair());
    for (const h of [h1, h2]) await startDaemon(topo, h, editedConfig(topo, h, 'queues2-pmtu', (c) => (c.io = { ...(c.io ?? {}), queues: 2 })));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('both daemons run two queues, peers at the TUN MTU (1480), nothing learned', async () => {
    for (const h of [h1, h2]) {
      const s = await snapshot(h);
      expect(s.queues.map((q) => q.queue), h.name).toEqual([0, 1]);
      expect(s.peers[0], h.name).toMatchObject({ mtu: 1480, baseMtu: 1480, pmtuLearnedSecondsAgo: null });
    }
  });

  test('router b0 MTU 1400: a TCP transfer A -> B completes and h1 (queue 0) learns peer MTU 1380', async () => {
    expect((await topo.exec(R, ['ip', 'link', 'set', 'b0', 'mtu', '1400'])).code).toBe(0);
    const before = await snapshot(h1);
    const sink = await topo.serve(B.ns, ['tcp-sink', '--bind', B.address, '--port', '0', '--timeout', '60']);
    const send = await topo.traffic(
      A.ns,
      ['tcp-send', '--to', B.address, '--port', String(sink.port), '--bytes', String(BYTES), '--seed', '31', '--timeout', '60'],
      { timeoutMs: 70_000 },
    );
    const got = await sink.result;
    expect(send.code, send.stdout + send.stderr).toBe(0);
    expect(got.code, got.stdout + got.stderr).toBe(0);
    expect(got.json).toMatchObject({ bytes: BYTES, sha256: expectedSha256(BYTES, 31) });
    const after = await snapshot(h1);
    const d = delta(before, after);
    expect(dc(d, 'pmtu_updates')).toBeGreaterThanOrEqual(1);
    expect(dc(d, 'underlay_icmp_rx')).toBeGreaterThanOrEqual(1);
    expect(after.peers[0]).toMatchObject({ mtu: 1380, baseMtu: 1480 });
    expect((await snapshot(h2)).peers[0]).toMatchObject({ mtu: 1480, pmtuLearnedSecondsAgo: null });
  });

  test(`DF UDP of ${INNER} bytes from ${FLOWS} source ports: both queues refuse every one locally with Frag Needed 1380, none reaches the router`, async () => {
    // Let the transfer's last packets and ICMP be counted before the baseline.
    const b1 = await settle(h1, await snapshot(h1), () => true);
    const b2 = await snapshot(h2);
    expect(b1.peers[0]!.mtu).toBe(1380);

    const [podOut, podIcmp, ul] = await Promise.all([
      // What pod A's kernel sends: whole, DF, 1428 bytes (PROBE ignores its cached 1380).
      Capture.start(topo, A.ns, 'eth0', `udp and src host ${A.address} and dst host ${B.address} and dst port ${DPORT}`, 'qpmtu-pod-out'),
      // What ipipd answers into the TUN, as pod A receives it.
      Capture.start(topo, A.ns, 'eth0', `icmp and src host ${h1.tunAddress} and dst host ${A.address}`, 'qpmtu-pod-icmp'),
      // On h1's underlay: any outer packet above the router's 1400, and any ICMP from the router.
      Capture.start(topo, h1.ns, 'ul0', `(ip proto 4 and ip[2:2] > 1400) or (icmp and src host ${ROUTER_A0})`, 'qpmtu-ul'),
    ]);
    let sent: { sent: number; ports: number[]; errors: string[] };
    let after: StatusReport;
    try {
      const r = await topo.exec(A.ns, [PYTHON, '-c', SENDER, A.address, B.address, String(DPORT), String(FLOWS), String(ROUNDS), String(PAYLOAD), '0.05'], { timeoutMs: 20_000 });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      sent = JSON.parse(r.stdout.trim().split('\n').pop()!);
      expect(sent.errors).toEqual([]);
      expect(sent.sent).toBe(FLOWS * ROUNDS);
      expect(new Set(sent.ports).size).toBe(FLOWS);
      await podOut.waitFor(sent.sent);
      // Every datagram was read from the TUN by some queue; then wait until nothing moves (the
      // router's answers, were there any, and the ICMP written into the TUN are counted).
      after = await settle(h1, b1, (d) => dc(d, 'tun_rx_packets') >= sent.sent, 15_000);
      await new Promise((r) => setTimeout(r, 500));
      after = await settle(h1, b1, () => true);
      // sniff.py has decoded every ICMP error ipipd wrote into the TUN before it is stopped.
      await podIcmp.waitFor(dc(delta(b1, after), 'icmp_sent'));
    } finally {
      await Promise.all([podOut.stop(), podIcmp.stop(), ul.stop()]);
    }
    const d = delta(b1, after);
    const perQueue = after.queues.map((q, i) => q.tunRxPackets - b1.queues[i]!.tunRxPackets);
    const txPerQueue = after.queues.map((q, i) => q.txPackets - b1.queues[i]!.txPackets);
    const summary = JSON.stringify({ tunRxPerQueue: perQueue, txPerQueue, counters: d.counters, drops: d.drops });

    // Pod A's kernel did send them whole with DF, one flow per socket.
    expect(podOut.packets).toHaveLength(sent.sent);
    const ports = new Set(sent.ports);
    for (const p of podOut.packets) {
      expect(p).toMatchObject({ src: A.address, dst: B.address, len: INNER, df: true, mf: false, frag: 0 });
      expect(ports.has(p.udp!.sport)).toBe(true);
    }

    // Both queues read some of them from the TUN (the kernel spread the flows), and all of them
    // were read (nothing else came from the TUN).
    expect(perQueue, summary).toHaveLength(2);
    expect(perQueue[0], `queue 0 read none: ${summary}`).toBeGreaterThan(0);
    expect(perQueue[1], `queue 1 read none: ${summary}`).toBeGreaterThan(0);
    expect(perQueue[0]! + perQueue[1]!, summary).toBe(sent.sent);

    // Every one refused locally, by whichever queue read it; none sent on the underlay, so the
    // router had nothing to refuse and nothing new was learned.
    expect(d.drops.too_big ?? 0, `too_big: ${summary}`).toBe(sent.sent);
    expect(d.drops.socket_write_error ?? 0, `refused by h1's kernel (EMSGSIZE): ${summary}`).toBe(0);
    expect(txPerQueue, `outer packets sent: ${summary}`).toEqual([0, 0]);
    expect(dc(d, 'underlay_icmp_rx'), `ICMP from the underlay: ${summary}`).toBe(0);
    expect(dc(d, 'icmp_relayed'), summary).toBe(0);
    expect(dc(d, 'pmtu_updates'), summary).toBe(0);
    expect(dc(d, 'fragments_sent'), summary).toBe(0);
    expect(after.peers[0]!.mtu).toBe(1380);
    expect(ul.packets, 'outer packets above 1400 bytes or ICMP from the router on h1 ul0').toEqual([]);

    // Each refusal answered with Frag Needed into the TUN, or counted as rate limited (each
    // queue's bucket has icmp.rate/2 per second and burst/2).
    const icmpSent = dc(d, 'icmp_sent');
    expect(icmpSent, summary).toBeGreaterThan(0);
    expect(icmpSent, summary).toBeLessThanOrEqual(sent.sent);
    expect(icmpSent + dc(d, 'icmp_rate_limited'), summary).toBe(sent.sent);
    expect(dc(d, 'icmp_not_sent'), summary).toBe(0);

    // Pod A heard each of them: Frag Needed, next-hop MTU 1380, about its own 1428-byte DF
    // datagrams.
    const frag = podIcmp.packets.filter((p: DecodedIp) => p.icmp?.type === 3 && p.icmp.code === 4);
    expect(frag).toHaveLength(icmpSent);
    expect(podIcmp.packets).toHaveLength(icmpSent);
    for (const p of frag) {
      expect(p).toMatchObject({ src: h1.tunAddress, dst: A.address, cksumOk: true });
      expect(p.icmp).toMatchObject({ mtu: 1380, word2: 1380, cksumOk: true });
      expect(p.icmp!.quote).toMatchObject({ src: A.address, dst: B.address, proto: 17, df: true, len: INNER });
      expect(p.icmp!.quote!.udp).toMatchObject({ dport: DPORT });
      expect(ports.has(p.icmp!.quote!.udp!.sport)).toBe(true);
    }

    // Nothing got through to h2.
    const a2 = await snapshot(h2);
    expect(a2.counters.underlay_rx_packets - b2.counters.underlay_rx_packets).toBe(0);
  });
});
