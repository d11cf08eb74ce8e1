/**
 * FOU (IPIP over UDP, README "FOU") between two ipipd daemons, real packets. The two-host
 * topology of tunnel.test.ts, with every peer's `encap: fou`:
 *
 *   pod A 198.51.100.10 -- [ipip0] host A 192.0.2.1 ==== UDP to port 5555 ==== 192.0.2.2 host B [ipip0] -- pod B 203.0.113.10
 *
 * What is checked: the TUN MTU leaves room for 28 bytes of outer headers; ping and a
 * multi-megabyte TCP transfer each way arrive byte for byte (SHA-256), counted on the FOU path
 * (UDP_SEGMENT sends and UDP_GRO reads in offload mode, which is the default); the underlay
 * carries UDP to port 5555 whose payload is the inner packet, and no protocol 4; the status
 * report shows FOU; after SIGTERM nothing is left. Also with io.queues 2 (queue 0 reads the FOU
 * socket, both queues send on the shared send sockets).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { editedConfig, status, stopDaemon } from '../helpers/daemons.js';
import { expectNothingLeft, pingBothWays, startPair, tcpTransfer, type StartedPair } from '../helpers/pair.js';
import { Topology } from '../../tools/netns/topology.js';
import { tcpdumpFrames } from '../helpers/packets.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';

const why = integrationSkip('FOU integration tests');

// With io.queues 2 queue 0 alone reads the FOU socket; both queues send on the shared send sockets.
describe.skipIf(why).each([{ offload: true, queues: 1 }, { offload: false, queues: 1 }, { offload: true, queues: 2 }])('ipipd <-> ipipd over FOU (io.offload and fou.offload: $offload, io.queues: $queues)', ({ offload, queues }) => {
  let topo: Topology;
  let pair: StartedPair;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    pair = await startPair(topo, (h) =>
      editedConfig(topo, h, `fou-${offload}-${queues}`, (c) => {
        for (const p of c.peers) p.encap = 'fou';
        c.io = { offload, queues };
        c.fou = { offload };
      }),
    );
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('the TUN MTU is the underlay 1500 less 28, and status shows FOU', async () => {
    const s = await status(pair.h1);
    expect(s.tun.mtu).toBe(1472);
    expect(s.peers).toEqual([expect.objectContaining({ name: 'h2', encap: 'fou', mtu: 1472 })]);
    expect(s.fou).toMatchObject({ port: 5555, udpSegment: offload ? 'on' : 'off', udpGro: offload ? 'on' : 'off' });
    expect(s.fou!.sourcePorts).toHaveLength(8);
  });

  test('echoes both ways, then 8 MiB of TCP each way byte for byte, on the FOU path', async () => {
    const { h1, h2 } = pair;
    const [a, b] = [h1.pods[0]!, h2.pods[0]!];
    await pingBothWays(topo, a, b);
    const bytes = 8 << 20;
    await tcpTransfer(topo, a, b, bytes, 21, 60);
    await tcpTransfer(topo, b, a, bytes, 22, 60);
    const both = await Promise.all([status(h1), status(h2)]);
    for (const s of both) {
      expect(s.peers[0]!.rxBytes).toBeGreaterThan(bytes);
      expect(s.peers[0]!.txBytes).toBeGreaterThan(bytes);
      const failed = s.drops.socket_write_error! + s.drops.tun_write_error! + s.drops.not_fou_peer!;
      expect(failed).toBe(0);
      // Offload: TSO super-packets from the TUN leave as UDP_SEGMENT sends of many datagrams.
      expect(s.counters.fou_gso_sends! > 0).toBe(offload);
      expect(s.counters.fou_gso_refused).toBe(0);
      if (offload) expect(s.counters.fou_gso_segments).toBeGreaterThan(2 * s.counters.fou_gso_sends!);
    }
    // UDP_GRO on the receiving socket hands several datagrams per read (veth GRO permitting).
    const groReads = both[0]!.counters.fou_gro_reads! + both[1]!.counters.fou_gro_reads!;
    expect(groReads > 0).toBe(offload);
  });

  test.skipIf(skipWithout('tcpdump', 'ping'))('on the underlay: UDP to port 5555 whose payload is the inner IPv4 packet, and no protocol 4', async () => {
    const { h1, h2 } = pair;
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    // -x: each frame's IP datagram in hex after its summary line.
    const cap = topo.spawn(h2.ns, ['tcpdump', '-i', 'ul0', '-l', '-n', '-x', 'udp port 5555 or ip proto 4']);
    let text = '';
    cap.stdout?.on('data', (d: Buffer) => (text += d.toString()));
    await new Promise((r) => setTimeout(r, 500));
    const echo = await topo.serve(b.ns, ['udp-echo', '--bind', b.address, '--port', '7']);
    await topo.traffic(a.ns, ['udp-ping', '--to', b.address, '--port', '7', '--count', '3', '--interval-ms', '50']);
    await echo.stop();
    // Two echoes with DSCP EF and ECT(1) (TOS 0xb9), which the outer header must carry (RFC 6040).
    const ping = await topo.exec(a.ns, ['ping', '-c', '2', '-i', '0.2', '-Q', '0xb9', b.address], { timeoutMs: 10_000 });
    expect(ping.stdout).toMatch(/2 received/);
    await new Promise((r) => setTimeout(r, 300));
    cap.kill('SIGTERM');
    const frames = tcpdumpFrames(text);
    const fou = frames.filter((f) => f.bytes.length >= 56);
    expect(fou.length, text).toBeGreaterThanOrEqual(10);
    expect(fou.filter((f) => f.bytes[28 + 1] === 0xb9).length, text).toBeGreaterThanOrEqual(4);
    const hex4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));
    for (const { head, bytes } of fou) {
      expect(head, text).not.toMatch(/IPIP/);
      // Outer IPv4: protocol 17, DF, the inner TOS (CE would go out as ECT(0)); UDP (bytes
      // 20..27) to 5555 with length 8 + the inner total length.
      expect(bytes[9]).toBe(17);
      expect(bytes[1]).toBe(bytes[29] === 0xbb ? 0xba : bytes[29]);
      expect(bytes[6]! & 0x40).toBe(0x40);
      expect(bytes.readUInt16BE(22)).toBe(5555);
      const inner = bytes.subarray(28);
      expect(bytes.readUInt16BE(24)).toBe(8 + inner.readUInt16BE(2));
      // The payload is the inner packet itself: IPv4 between the pods, UDP to or from port 7.
      expect(inner[0]).toBe(0x45);
      const ends = [inner.subarray(12, 16), inner.subarray(16, 20)];
      expect(ends.some((x) => x.equals(hex4(a.address))) && ends.some((x) => x.equals(hex4(b.address)))).toBe(true);
      // udp-ping to port 7, or the ICMP echoes.
      if (inner[9] === 17) expect([inner.readUInt16BE(20), inner.readUInt16BE(22)]).toContain(7);
      else expect(inner[9]).toBe(1);
    }
  });

  test('SIGTERM: both exit 0 and leave nothing behind', async () => {
    expect(await stopDaemon(pair.d1)).toBe(0);
    expect(await stopDaemon(pair.d2)).toBe(0);
    await expectNothingLeft(topo, pair.h1);
    await expectNothingLeft(topo, pair.h2);
  });
});
