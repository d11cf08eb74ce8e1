/**
 * RFC 2003 §5.1 with real packets: a peer whose tunnel MTU (1280, `peers[].mtu`) is smaller than
 * the TUN's (1480).
 *
 *   P-h1p1 pod A ---- P-h1 [ipip0 mtu 1480; peer h2 mtu 1280] ul0 ==== ul0 [ipip0] P-h2 ---- P-h2p1 pod B
 *
 * - a DF packet that does not fit is dropped and answered with ICMP Fragmentation Needed
 *   (mtu 1280) from the TUN's address, which the pod's kernel learns;
 * - a packet without DF is cut into inner fragments that fit, and pod B reassembles them;
 * - a multi-megabyte TCP transfer adapts (path MTU discovery through our ICMP) and arrives whole.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { expectedSha256 } from '../fixtures/payload.js';
import { editedConfig, startDaemon, status } from '../helpers/daemons.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';

const why = integrationSkip('integration tests');
const havePing = skipWithout('ping') === null;

describe.skipIf(why)('a peer behind a smaller path (tunnel MTU 1280 < TUN MTU 1480)', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    h2 = topo.host(2);
    const cfg = editedConfig(topo, h1, 'mtu', (c) => (c.peers[0].mtu = 1280));
    expect(readFileSync(cfg, 'utf8')).toMatch(/\n\s+mtu: 1280\n/);
    await startDaemon(topo, h1, cfg);
    await startDaemon(topo, h2);
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('status shows the configured peer MTU below the TUN MTU', async () => {
    const s = await status(h1);
    expect(s.tun.mtu).toBe(1480);
    expect(s.peers[0]).toMatchObject({ mtu: 1280, baseMtu: 1280, reachable: true });
  });

  test.skipIf(!havePing)('DF set and too big: dropped, ICMP Fragmentation Needed (mtu 1280) from the TUN address', async () => {
    const before = await status(h1);
    const a = h1.pods[0]!;
    const r = await topo.exec(a.ns, ['ping', '-c', '1', '-W', '2', '-M', 'do', '-s', '1400', h2.pods[0]!.address]);
    expect(r.stdout).toMatch(/From 198\.51\.100\.0 icmp_seq=1 Frag needed and DF set \(mtu = 1280\)/);
    const after = await status(h1);
    expect(after.drops.too_big! - before.drops.too_big!).toBe(1);
    expect(after.counters.icmp_sent! - before.counters.icmp_sent!).toBe(1);
    // The pod's kernel now knows the path MTU.
    const route = await topo.exec(a.ns, ['ip', 'route', 'get', h2.pods[0]!.address]);
    expect(route.stdout).toMatch(/mtu 1280/);
  });

  test.skipIf(skipWithout('ping', 'tcpdump', 'tshark'))('DF clear and too big: inner fragments that fit, reassembled by pod B', async () => {
    const a = h1.pods[0]!;
    // A pod that has not learned the path MTU yet sends 1428-byte packets without DF.
    await topo.exec(a.ns, ['ip', 'route', 'flush', 'cache']);
    const pcap = join(topo.info.outDir, 'frag.pcap');
    const cap = topo.spawn(h2.ns, ['tcpdump', '-i', 'ul0', '-U', '-n', '-w', pcap, 'ip proto 4 and src host 192.0.2.1']);
    await new Promise((r) => setTimeout(r, 500));
    const before = await status(h1);
    const r = await topo.exec(a.ns, ['ping', '-c', '2', '-i', '0.3', '-W', '2', '-M', 'dont', '-s', '1400', h2.pods[0]!.address]);
    expect(r.stdout).toMatch(/2 packets transmitted, 2 received/);
    expect(r.stdout).toMatch(/1408 bytes from 203\.0\.113\.10/);
    const after = await status(h1);
    expect(after.counters.fragmented_packets! - before.counters.fragmented_packets!).toBe(2);
    expect(after.counters.fragments_sent! - before.counters.fragments_sent!).toBe(4);
    expect(after.drops.too_big! - before.drops.too_big!).toBe(0);
    await new Promise((res) => setTimeout(res, 300));
    cap.kill('SIGINT');
    await new Promise((res) => cap.on('exit', res));
    const d = spawnSync('tshark', ['-r', pcap, '-o', 'ip.check_checksum:TRUE', '-o', 'ip.defragment:FALSE', '-T', 'fields', '-E', 'separator=;',
      '-e', 'ip.len', '-e', 'ip.flags.mf', '-e', 'ip.frag_offset', '-e', 'ip.checksum.status'], { encoding: 'utf8' });
    expect(d.status, d.stderr).toBe(0);
    const rows = d.stdout.trim().split('\n').map((l) => l.split(';').map((f) => f.split(',')));
    expect(rows.length).toBe(4);
    for (const [len, mf, offset, cks] of rows) {
      // Outer header + an inner fragment: the outer is whole (<= 1280 + 20), the inner is a
      // fragment (first: MF set, offset 0; second: MF clear, offset 1256 bytes = 157 units of 8;
      // tshark versions differ in which of the two they print).
      expect(Number(len![0])).toBeLessThanOrEqual(1300);
      expect(mf![0]).toMatch(/^(0|False)$/);
      expect(cks).toEqual(['1', '1']);
      expect([['1', '0'], ['0', '1256'], ['0', '157'], ['True', '0'], ['False', '1256'], ['False', '157']]).toContainEqual([mf![1], offset![1]]);
    }
  });

  test('a multi-megabyte TCP transfer through the smaller path arrives byte for byte', async () => {
    const bytes = 4 * 1024 * 1024;
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    await topo.exec(a.ns, ['ip', 'route', 'flush', 'cache']);
    const sink = await topo.serve(b.ns, ['tcp-sink', '--bind', b.address, '--port', '0', '--timeout', '60']);
    const send = await topo.traffic(a.ns, ['tcp-send', '--to', b.address, '--port', String(sink.port), '--bytes', String(bytes), '--seed', '7', '--timeout', '60'], { timeoutMs: 70_000 });
    const got = await sink.result;
    expect(send.code, send.stderr).toBe(0);
    expect(got.json).toMatchObject({ bytes, sha256: expectedSha256(bytes, 7) });
    const s = await status(h1);
    expect(s.drops.socket_write_error).toBe(0);
  });
});
