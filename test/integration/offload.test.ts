/**
 * Offload mode (`io.offload: true`, issue 4) with real packets: TSO super-packets from the TUN
 * are cut into segments before encapsulation, received segments are coalesced into super-packets
 * before they are written to the TUN. Topologies from scripts/netns-setup.sh with a per-run
 * prefix, torn down on every exit path (STYLE rule 16):
 *
 *   P-h1p1 pod A                 P-h1 host A                        P-h2 host B                 P-h2p1 pod B
 *   198.51.100.10 --- p1 [ipip0 (vnet hdr, TSO4, CSUM)] ul0 192.0.2.1 ==== 192.0.2.2 ul0 [ipip0 (vnet hdr)] p1 --- 203.0.113.10
 *                       ipipd io.offload: true                 IPIP                  ipipd io.offload: true
 *
 * 1. Both daemons in offload mode: ping both ways; a 16 MiB TCP transfer each way arrives byte
 *    for byte, the sender's ipipd segmented super-packets (gso_packets > 0) and the receiver's
 *    coalesced segments (gro_packets > 0); the segments on the underlay carry correct inner TCP
 *    checksums and fit the MTU (capture decoded, when tshark is installed).
 * 2. UDP (the kernel here takes UDP_L4 from a TUN, so `udpGro`): bursts of datagrams from two
 *    sockets of pod A to pod B, 64-byte and then 1400-byte ones, each arrive intact and in order
 *    per flow; the receiver's ipipd coalesced them into UDP_L4 super-packets (gro_packets > 0)
 *    and still counts every datagram (rx_packets).
 * 2b. UDP the other way round: a socket in pod A sends with UDP_SEGMENT (test/fixtures/uso.py),
 *    so host A's kernel hands ipipd UDP_L4 super-packets from the TUN (USO on, `udpGro`);
 *    ipipd cuts them into datagrams (gso_packets, gso_segments), which pod B receives every one,
 *    intact and in order.
 * 3. Host A's peer MTU is 1280, below its TUN MTU (1480): the segments of a super-packet are
 *    too big, answered with ICMP Fragmentation Needed, and the TCP transfer adapts and arrives
 *    byte for byte.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { editedConfig, startDaemon, status } from '../helpers/daemons.js';
import { have, pingBothWays, tcpTransfer } from '../helpers/pair.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';
import { integrationSkip, skipOrFail, skipWithout } from '../helpers/skip.js';

const why = integrationSkip('integration tests');

/** The UDP_SEGMENT sender and its receiver; plain sockets, so any python3 does. */
const USO_PY = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'uso.py');
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : have('python3') ? 'python3' : null;
skipOrFail('UDP_SEGMENT test', PYTHON ? null : 'no python3');

/**
 * Send `sends` x `perSend` datagrams of `size` bytes with UDP_SEGMENT from pod `from` to pod
 * `to` (uso.py send, a `pauseMs` pause after each sendto) and return what uso.py recv in `to`
 * reports (received, bad, outOfOrder, missing, ...) and what the sender reports.
 */
async function usoSend(topo: Topology, from: PodInfo, to: PodInfo, size: number, perSend: number, sends: number, pauseMs: number): Promise<{ sent: Record<string, any>; got: Record<string, any> }> {
  const count = perSend * sends;
  const ready = join(topo.info.outDir, `uso-ready-${process.pid}.json`);
  const recv = topo.spawn(to.ns, [PYTHON!, USO_PY, 'recv', '--bind', to.address, '--port', '0', '--count', String(count), '--size', String(size), '--timeout', '20', '--ready-file', ready]);
  let out = '';
  let err = '';
  recv.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  recv.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  const closed = new Promise<number | null>((r) => recv.on('close', (code) => r(code)));
  let exited = false;
  void closed.then(() => (exited = true));
  const deadline = Date.now() + 10_000;
  while (!existsSync(ready)) {
    if (exited || Date.now() > deadline) {
      recv.kill('SIGKILL');
      await closed;
      throw new Error(`uso.py recv in ${to.ns} did not get ready: ${out}${err}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const port = (JSON.parse(readFileSync(ready, 'utf8')) as { port: number }).port;
  rmSync(ready, { force: true });
  const send = await topo.exec(from.ns, [PYTHON!, USO_PY, 'send', '--to', to.address, '--port', String(port), '--size', String(size), '--per-send', String(perSend), '--sends', String(sends), '--pause-ms', String(pauseMs)], { timeoutMs: 60_000 });
  expect(send.code, send.stderr).toBe(0);
  // The receiver ends once it has every datagram; if some are lost, SIGTERM makes it report.
  const timer = setTimeout(() => recv.kill('SIGTERM'), 5_000);
  const code = await closed;
  clearTimeout(timer);
  expect(code, err).toBe(0);
  return { sent: JSON.parse(send.stdout.trim().split('\n').pop()!) as Record<string, any>, got: JSON.parse(out.trim().split('\n').pop()!) as Record<string, any> };
}

/** A copy of the host's generated config with `io.offload: true` (and `peers[0].mtu` if given). */
function offloadConfig(topo: Topology, h: HostInfo, peerMtu?: number): string {
  return editedConfig(topo, h, `offload${peerMtu ? `-mtu${peerMtu}` : ''}`, (c) => {
    c.io = { ...(c.io ?? {}), offload: true };
    if (peerMtu !== undefined) c.peers[0].mtu = peerMtu;
  });
}

interface Blast {
  /** UDP payload bytes of every datagram. */
  size: number;
  /** Datagrams per flow. */
  count: number;
  /** Datagrams per flow sent back to back before waiting for the sink's ack. */
  burst: number;
  flows: number;
  seed: number;
}

/**
 * Blast UDP datagrams from pod `from` to pod `to` (traffic.js udp-blast / udp-sink) and check
 * that every one arrived, intact (payload checksum) and in order per flow (sequence numbers).
 */
async function udpBlast(topo: Topology, from: PodInfo, to: PodInfo, b: Blast): Promise<void> {
  const total = b.count * b.flows;
  const sink = await topo.serve(to.ns, ['udp-sink', '--bind', to.address, '--port', '0', '--count', String(total), '--timeout', '90']);
  const send = await topo.traffic(
    from.ns,
    ['udp-blast', '--to', to.address, '--port', String(sink.port), '--count', String(b.count), '--size', String(b.size), '--burst', String(b.burst), '--flows', String(b.flows), '--seed', String(b.seed), '--timeout', '90'],
    { timeoutMs: 100_000 },
  );
  // The blaster ends once the sink has acknowledged each flow's last datagram: by then the sink
  // has ended on its own, or SIGTERM makes it report what it got.
  const got = await sink.stop();
  expect(send.code, send.stderr).toBe(0);
  expect(send.json).toMatchObject({ sent: total, bytes: total * b.size });
  expect(got.code, got.stderr).toBe(0);
  expect(got.json).toMatchObject({ datagrams: total, bytes: total * b.size, corrupt: 0, outOfOrder: 0 });
  const flows = got.json!.flows as Array<Record<string, number>>;
  expect(flows.map((f) => f.flow).sort()).toEqual(Array.from({ length: b.flows }, (_, f) => f));
  for (const f of flows) expect(f).toMatchObject({ datagrams: b.count, bytes: b.count * b.size, firstSeq: 0, lastSeq: b.count - 1, outOfOrder: 0 });
}

function delta(after: Record<string, number>, before: Record<string, number>, key: string): number {
  return (after[key] ?? 0) - (before[key] ?? 0);
}

describe.skipIf(why)('offload mode between two hosts', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    h2 = topo.host(2);
    await startDaemon(topo, h1, offloadConfig(topo, h1));
    await startDaemon(topo, h2, offloadConfig(topo, h2));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test.skipIf(skipWithout('ping'))('ping from pod A to pod B and back (ICMP through the vnet header path)', async () => {
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    // ping is installed (else this test is skipped): ICMP echoes, never the UDP fallback.
    await pingBothWays(topo, a, b);
    // Large echoes (a fragmented ICMP datagram on the pod side) both ways too.
    const r = await topo.exec(a.ns, ['ping', '-c', '2', '-i', '0.2', '-W', '2', '-s', '3000', b.address], { timeoutMs: 15_000 });
    expect(r.stdout).toMatch(/2 packets transmitted, 2 received/);
  });

  test('a 16 MiB TCP transfer each way arrives byte for byte, segmented on send and coalesced on receive', async () => {
    const bytes = 16 * 1024 * 1024;
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    for (const [from, to, sender, receiver, seed] of [[a, b, h1, h2, 21], [b, a, h2, h1, 22]] as const) {
      const s0 = await status(sender);
      const r0 = await status(receiver);
      expect([s0.offload, r0.offload]).toEqual([true, true]);
      await tcpTransfer(topo, from, to, bytes, seed);
      const s1 = await status(sender);
      const r1 = await status(receiver);
      expect(delta(s1.counters, s0.counters, 'gso_packets'), `gso_packets on ${sender.name}`).toBeGreaterThan(0);
      expect(delta(s1.counters, s0.counters, 'gso_segments')).toBeGreaterThan(delta(s1.counters, s0.counters, 'gso_packets'));
      expect(delta(r1.counters, r0.counters, 'gro_packets'), `gro_packets on ${receiver.name}`).toBeGreaterThan(0);
      expect(delta(r1.counters, r0.counters, 'gro_segments')).toBeGreaterThan(delta(r1.counters, r0.counters, 'gro_packets'));
      // What the receiver read from the underlay it delivered: every forwarded segment is counted.
      expect(delta(r1.counters, r0.counters, 'rx_bytes')).toBeGreaterThan(bytes);
      for (const s of [s1, r1]) {
        expect(s.drops.socket_write_error).toBe(0);
        expect(s.drops.tun_write_error).toBe(0);
        expect(s.drops.inner_malformed).toBe(0);
        expect(s.drops.truncated).toBe(0);
      }
    }
  });

  test('UDP bursts arrive intact and in order per flow, coalesced into UDP_L4 super-packets on receive', async () => {
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    // Linux 6.2+ takes UDP_L4 super-packets from a TUN: both daemons found out so.
    expect((await status(h1)).udpGro).toBe(true);
    expect((await status(h2)).udpGro).toBe(true);
    const blasts: Blast[] = [
      { size: 64, count: 1500, burst: 32, flows: 2, seed: 41 },
      { size: 1400, count: 200, burst: 16, flows: 2, seed: 42 },
    ];
    for (const blast of blasts) {
      const r0 = await status(h2);
      await udpBlast(topo, a, b, blast);
      const r1 = await status(h2);
      const what = `${blast.size}-byte datagrams`;
      const datagrams = blast.count * blast.flows;
      const groPackets = delta(r1.counters, r0.counters, 'gro_packets');
      expect(groPackets, `gro_packets on h2, ${what}`).toBeGreaterThan(0);
      expect(delta(r1.counters, r0.counters, 'gro_segments'), what).toBeGreaterThan(groPackets);
      // Every datagram counted, not the super-packets they travelled in; IPv4 + UDP headers 28 bytes.
      expect(delta(r1.counters, r0.counters, 'rx_packets'), `rx_packets on h2, ${what}`).toBe(datagrams);
      expect(delta(r1.counters, r0.counters, 'rx_bytes'), what).toBe(datagrams * (blast.size + 28));
      expect(r1.peers[0]!.rxPackets - r0.peers[0]!.rxPackets, what).toBe(datagrams);
      expect(r1.drops.tun_write_error, what).toBe(0);
      expect(r1.drops.inner_malformed, what).toBe(0);
    }
  });

  test.skipIf(!PYTHON)('UDP_SEGMENT datagrams from pod A: the kernel hands over UDP_L4 super-packets, cut into datagrams that arrive intact and in order', async () => {
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    const s0 = await status(h1);
    const r0 = await status(h2);
    expect(s0.udpGro).toBe(true);
    // 50 sendto calls of 40 x 1000 bytes, 10 ms apart: 2000 datagrams.
    const { sent, got } = await usoSend(topo, a, b, 1000, 40, 50, 10);
    expect(sent).toMatchObject({ sent: 2000, sends: 50, bytes: 2_000_000 });
    expect(got).toMatchObject({ received: 2000, bytes: 2_000_000, bad: 0, outOfOrder: 0, duplicates: 0, missing: 0, firstSeq: 0, lastSeq: 1999 });
    const s1 = await status(h1);
    const r1 = await status(h2);
    // The kernel handed over UDP super-packets (not 2000 single datagrams), and ipipd cut them.
    const gsoPackets = delta(s1.counters, s0.counters, 'gso_packets');
    expect(gsoPackets, 'gso_packets on h1').toBeGreaterThan(0);
    expect(delta(s1.counters, s0.counters, 'gso_segments'), 'gso_segments on h1').toBeGreaterThan(gsoPackets);
    // Every datagram went out as its own encapsulated packet, and h2 delivered every one.
    expect(delta(s1.counters, s0.counters, 'tx_packets'), 'tx_packets on h1').toBe(2000);
    expect(delta(r1.counters, r0.counters, 'rx_packets'), 'rx_packets on h2').toBe(2000);
    expect(delta(r1.counters, r0.counters, 'rx_bytes'), 'rx_bytes on h2').toBe(2000 * (1000 + 28));
    for (const [name, after, before] of [['h1', s1, s0], ['h2', r1, r0]] as const) {
      for (const k of Object.keys(after.drops)) expect(delta(after.drops, before.drops, k), `drops.${k} on ${name}`).toBe(0);
    }
  });

  test.skipIf(skipWithout('tcpdump', 'tshark'))('the segments on the underlay fit the MTU and carry correct inner checksums (capture decoded)', async () => {
    const pcap = join(topo.info.outDir, 'offload.pcap');
    const cap = topo.spawn(h2.ns, ['tcpdump', '-i', 'ul0', '-U', '-n', '-c', '300', '-w', pcap, 'ip proto 4 and src host 192.0.2.1']);
    const capDone = new Promise<void>((r) => cap.on('exit', () => r()));
    await new Promise((r) => setTimeout(r, 500));
    await tcpTransfer(topo, h1.pods[0]!, h2.pods[0]!, 4 * 1024 * 1024, 23);
    await Promise.race([capDone, new Promise((r) => setTimeout(r, 5000))]);
    cap.kill('SIGTERM');
    const d = spawnSync('tshark', ['-r', pcap, '-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-T', 'fields', '-E', 'separator=;',
      '-e', 'ip.len', '-e', 'ip.checksum.status', '-e', 'tcp.checksum.status', '-e', 'tcp.len'], { encoding: 'utf8' });
    expect(d.status, d.stderr).toBe(0);
    const rows = d.stdout.trim().split('\n').map((l) => l.split(';').map((f) => f.split(',')));
    expect(rows.length).toBeGreaterThan(100);
    let full = 0;
    for (const [len, ipCks, tcpCks, tcpLen] of rows) {
      expect(Number(len![0])).toBeLessThanOrEqual(1500); // outer: the underlay MTU
      expect(Number(len![1])).toBeLessThanOrEqual(1480); // inner: the tunnel MTU
      expect(ipCks).toEqual(['1', '1']); // outer and inner header checksums good
      expect(tcpCks).toEqual(['1']); // inner TCP checksum good
      if (Number(tcpLen![0]) > 1000) full++;
    }
    expect(full).toBeGreaterThan(50); // full-sized segments, cut from super-packets
  });
});

describe.skipIf(why)('offload mode toward a peer behind a smaller path (peer MTU 1280 < TUN MTU 1480)', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    h2 = topo.host(2);
    await startDaemon(topo, h1, offloadConfig(topo, h1, 1280));
    await startDaemon(topo, h2, offloadConfig(topo, h2));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('a TCP transfer through the smaller path arrives byte for byte', async () => {
    const s0 = await status(h1);
    expect(s0.peers[0]).toMatchObject({ mtu: 1280, baseMtu: 1280 });
    await tcpTransfer(topo, h1.pods[0]!, h2.pods[0]!, 16 * 1024 * 1024, 31);
    const s1 = await status(h1);
    expect(delta(s1.counters, s0.counters, 'gso_packets')).toBeGreaterThan(0);
    // Segments cut for the TUN MTU were too big for the peer: answered with Fragmentation
    // Needed (TCP sets DF), after which the pod's TCP sends smaller segments.
    expect(delta(s1.drops, s0.drops, 'too_big')).toBeGreaterThan(0);
    expect(delta(s1.counters, s0.counters, 'icmp_sent')).toBeGreaterThan(0);
    expect(s1.drops.socket_write_error).toBe(0);
    expect(s1.drops.inner_malformed).toBe(0);
    const s2 = await status(h2);
    expect(s2.counters.gro_packets).toBeGreaterThan(0);
    // And back, through the same peers.
    await tcpTransfer(topo, h2.pods[0]!, h1.pods[0]!, 4 * 1024 * 1024, 32);
  });
});
