/**
 * FOU's RFC 2003 rules with real packets (README "FOU"):
 *
 * 1. A mixed daemon: three hosts on a switch; h1 reaches h2 over FOU and h3 over plain IPIP in
 *    the same daemon (h2 and h3 reach each other over IPIP). Pings all ways; a capture on h1's
 *    underlay shows UDP to 5555 toward h2 and protocol 4 toward h3, nothing else.
 * 2. Datagrams no honest peer sends to h1's FOU port: from h3 (an IPIP peer) -> not_fou_peer;
 *    from h2 with an inner source of h3's pod -> spoofed_source; neither is delivered, and a
 *    control datagram from h2 with its own pod's source is.
 * 3. Path MTU: a router inside the tunnel with a 1400-byte link; h1 learns 1400 - 28 = 1372
 *    toward h2 from the router's ICMP about its UDP datagrams, and pod A hears 1372; a TCP
 *    transfer arrives byte for byte.
 * (UDP_SEGMENT refused: this host's kernel refuses it in no underlay these tests can build (it
 * segments in software when the device has no checksum offload, and has no xfrm); the fallback
 * is tested in test/unit/fou-sender.test.ts with a binding that refuses.)
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { editedConfig, startDaemon, status } from '../helpers/daemons.js';
import { pingBothWays, routerPair, tcpTransfer } from '../helpers/pair.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';

const why = integrationSkip('FOU rule tests');

/** Python that sends one UDP datagram from `src` to `dst`:5555 holding an inner IPv4/UDP packet `isrc` -> `idst`:7000. */
function sendFou(src: string, dst: string, isrc: string, idst: string, payload: string): string[] {
  const py = `
import socket, struct
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
data = ${JSON.stringify(payload)}.encode()
udp = struct.pack('!HHHH', 40000, 7000, 8 + len(data), 0) + data
hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0, socket.inet_aton('${'${isrc}'}'), socket.inet_aton('${'${idst}'}'))
hdr = hdr[:10] + struct.pack('!H', csum(hdr)) + hdr[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('${'${src}'}', 0))
for _ in range(3): s.sendto(hdr + udp, ('${'${dst}'}', 5555))
`.replace('${isrc}', isrc).replace('${idst}', idst).replace('${src}', src).replace('${dst}', dst);
  return ['python3', '-c', py];
}

describe.skipIf(why)('a mixed daemon: one FOU peer, one IPIP peer', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let h3: HostInfo;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 3 });
    [h1, h2, h3] = [topo.host(1), topo.host(2), topo.host(3)];
    // h1 <-> h2 over FOU; every pair with h3 over IPIP.
    const fouTo = (names: string[]) => (h: HostInfo) =>
      editedConfig(topo, h, 'mixed', (c) => {
        for (const p of c.peers) p.encap = names.includes(p.name) ? 'fou' : 'ipip';
      });
    await startDaemon(topo, h1, fouTo(['h2'])(h1));
    await startDaemon(topo, h2, fouTo(['h1'])(h2));
    await startDaemon(topo, h3, fouTo([])(h3));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('status: h2 is fou, h3 ipip; ping every way; FOU toward h2, protocol 4 toward h3 on the wire', async () => {
    const s1 = await status(h1);
    expect(s1.peers.map((p) => [p.name, p.encap])).toEqual([['h2', 'fou'], ['h3', 'ipip']]);
    expect(s1.fou).toMatchObject({ port: 5555 });
    // h3 has no FOU peer: no FOU socket at all.
    expect((await status(h3)).fou).toBeNull();
    // The TUN MTU stays underlay - 20 (an IPIP peer); toward h2 the tunnel MTU is 28 less than the underlay.
    expect(s1.tun.mtu).toBe(1480);
    const cap = topo.spawn(h1.ns, ['tcpdump', '-i', 'ul0', '-U', '-n', '-l', 'udp port 5555 or ip proto 4']);
    let seen = '';
    cap.stdout?.on('data', (d: Buffer) => (seen += d.toString()));
    await new Promise((r) => setTimeout(r, 500));
    const [a, b, c] = [h1.pods[0]!, h2.pods[0]!, h3.pods[0]!];
    await pingBothWays(topo, a, b);
    await pingBothWays(topo, a, c);
    await pingBothWays(topo, b, c);
    await new Promise((r) => setTimeout(r, 300));
    cap.kill('SIGTERM');
    const lines = seen.split('\n').filter((l) => l.includes(' IP '));
    const toH2 = lines.filter((l) => l.includes(`> ${h2.underlay}.5555: UDP`));
    const fromH2 = lines.filter((l) => l.includes(`${h2.underlay}.`) && l.includes(`> ${h1.underlay}.5555: UDP`));
    const ipipH3 = lines.filter((l) => l.includes(`${h1.underlay} > ${h3.underlay}: `) || l.includes(`${h3.underlay} > ${h1.underlay}: `));
    expect(toH2.length, seen).toBeGreaterThanOrEqual(6);
    expect(fromH2.length, seen).toBeGreaterThanOrEqual(6);
    expect(ipipH3.length, seen).toBeGreaterThanOrEqual(12);
    // No protocol 4 between h1 and h2, no UDP between h1 and h3.
    expect(lines.filter((l) => l.includes(`${h1.underlay} > ${h2.underlay}: `) || l.includes(`${h2.underlay} > ${h1.underlay}: `))).toEqual([]);
    expect(lines.filter((l) => l.includes(`${h3.underlay}.`) && l.includes('UDP'))).toEqual([]);
  });

  test.skipIf(skipWithout('python3'))('to the FOU port from an IPIP peer: not_fou_peer; from a FOU peer with a spoofed inner source: spoofed_source; neither delivered', async () => {
    const a = h1.pods[0]!;
    const attempt = async (from: HostInfo, isrc: string): Promise<{ drops: Record<string, number>; delivered: number }> => {
      const echo = await topo.serve(a.ns, ['udp-echo', '--bind', a.address, '--port', '7000']);
      const before = await status(h1);
      const r = await topo.exec(from.ns, sendFou(from.underlay, h1.underlay, isrc, a.address, 'fou-rules'));
      expect(r.code, r.stderr).toBe(0);
      await new Promise((res) => setTimeout(res, 300));
      const after = await status(h1);
      const got = await echo.stop();
      const drops: Record<string, number> = {};
      for (const k of Object.keys(after.drops)) {
        const d = after.drops[k]! - before.drops[k]!;
        if (d) drops[k] = d;
      }
      return { drops, delivered: Number(got.json?.datagrams ?? NaN) };
    };
    expect(await attempt(h3, h3.pods[0]!.address)).toEqual({ drops: { not_fou_peer: 3 }, delivered: 0 });
    expect(await attempt(h2, h3.pods[0]!.address)).toEqual({ drops: { spoofed_source: 3 }, delivered: 0 });
    // The control: the same datagrams from h2 with its own pod's source are delivered.
    expect(await attempt(h2, h2.pods[0]!.address)).toEqual({ drops: {}, delivered: 3 });
  });
});

describe.skipIf(why)('FOU path MTU: a router inside the tunnel with a smaller link', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let R: string;

  beforeAll(async () => {
    let p: Awaited<ReturnType<typeof routerPair>>;
    ({ topo, h1, h2, R } = p = await routerPair());
    void p;
    for (const h of [h1, h2]) await startDaemon(topo, h, editedConfig(topo, h, 'fou-pmtu', (c) => (c.peers[0].encap = 'fou')));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('router b0 MTU 1400: h1 learns 1372 toward h2 (1400 - 28), pod A hears it, the transfer arrives intact', async () => {
    expect((await status(h1)).peers[0]).toMatchObject({ mtu: 1472, baseMtu: 1472, encap: 'fou' });
    expect((await topo.exec(R, ['ip', 'link', 'set', 'b0', 'mtu', '1400'])).code).toBe(0);
    await tcpTransfer(topo, h1.pods[0]!, h2.pods[0]!, 4 << 20, 31, 60);
    const s1 = await status(h1);
    expect(s1.peers[0]).toMatchObject({ mtu: 1372, baseMtu: 1472 });
    expect(s1.counters.pmtu_updates).toBeGreaterThanOrEqual(1);
    expect(s1.counters.icmp_relayed! + s1.counters.icmp_sent!).toBeGreaterThanOrEqual(1);
    const route = await topo.exec(h1.pods[0]!.ns, ['ip', 'route', 'get', h2.pods[0]!.address]);
    expect(route.stdout).toMatch(/mtu 1372/);
    // Over the learned path: nothing too big, no send error.
    const before = await status(h1);
    await tcpTransfer(topo, h1.pods[0]!, h2.pods[0]!, 4 << 20, 32, 60);
    const after = await status(h1);
    expect(after.drops.too_big! - before.drops.too_big!).toBe(0);
    expect(after.drops.socket_write_error).toBe(0);
  });
});
