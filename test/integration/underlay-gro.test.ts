/**
 * GRO on the underlay device (on by default on most NICs): Linux's GRO merges IPIP-encapsulated
 * TCP segments (its built-in ipip offload) before ipipd's raw socket sees them, so ipipd reads
 * IPIP datagrams of up to 64 KiB whose inner packet is a TCP super-packet. ipipd must take them
 * whole (no `truncated` drop) and hand the TUN segments it can deliver: one super-packet behind a
 * TCPV4 virtio_net_hdr in offload mode, segments of the TUN MTU in plain mode. Topology from
 * scripts/netns-setup.sh with a per-run prefix, torn down on every exit path (STYLE rule 16):
 *
 *   P-h1p1 pod A            P-h1 host A                               P-h2 host B                     P-h2p1 pod B
 *   198.51.100.10 --- p1 [ipip0] ul0 192.0.2.1 ======= IPIP ======> 192.0.2.2 ul0 [ipip0] p1 --- 203.0.113.10
 *                        ipipd   gro on, tso off                  gro on, tso off, threaded NAPI   ipipd
 *                                                                 (GRO merges IPIP/TCP here, before the raw socket)
 *
 * GRO on a veth needs its NAPI (`ethtool -K ul0 gro on`); threaded NAPI on the receiving end
 * (`/sys/class/net/ul0/threaded`) lets packets accumulate so that GRO has something to merge.
 * The veth ring then sometimes overflows (h1's ul0 tx_dropped) and TCP retransmits: a property
 * of threaded veth NAPI, not of ipipd, so nothing here asserts on retransmits or time.
 *
 * For both data paths (`io.offload: false` and `true`): a 16 MiB TCP transfer from pod A to pod B
 * arrives byte for byte (SHA-256 on both ends); h2 counted super-packets from the underlay's GRO
 * (`underlay_gro_packets` > 0) and dropped nothing as `truncated` or `inner_malformed`, nor
 * failed a TUN write; in plain mode h2 wrote more packets to the TUN than it read from the
 * underlay (`rx_packets` > `underlay_rx_packets`: the super-packets were cut into segments).
 *
 * Skipped with one line when the integration requirements are missing, when `ethtool` is not
 * installed, or when the kernel refuses GRO or threaded NAPI on the veth.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { editedConfig, startDaemon, status } from '../helpers/daemons.js';
import { have, tcpTransfer } from '../helpers/pair.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';
import { integrationSkip, skipOrFail } from '../helpers/skip.js';

const why = integrationSkip('underlay GRO tests', have('ethtool') ? null : "'ethtool' not installed (apt-get install ethtool): it is what turns GRO on for a veth");

/**
 * Turn GRO on (and TSO off) on both hosts' ul0, and threaded NAPI on the receiver's. Returns why
 * the kernel refused, or null once every setting reads back as asked.
 */
async function enableUnderlayGro(topo: Topology, hosts: HostInfo[], receiver: HostInfo): Promise<string | null> {
  for (const h of hosts) {
    const set = await topo.exec(h.ns, ['ethtool', '-K', h.underlayDev, 'gro', 'on', 'tso', 'off']);
    if (set.code !== 0) return `'ethtool -K ${h.underlayDev} gro on tso off' in ${h.name} failed: ${(set.stderr || set.stdout).trim()}`;
    const get = await topo.exec(h.ns, ['ethtool', '-k', h.underlayDev]);
    if (!/^generic-receive-offload: on/m.test(get.stdout)) return `GRO stays off on ${h.name}'s ${h.underlayDev}: ${get.stdout.match(/^generic-receive-offload:.*$/m)?.[0] ?? get.stderr.trim()}`;
  }
  // `ip netns exec` mounts the namespace's own /sys, so the path names the receiver's ul0.
  const file = `/sys/class/net/${receiver.underlayDev}/threaded`;
  const thr = await topo.exec(receiver.ns, ['sh', '-c', `echo 1 > ${file} && cat ${file}`]);
  if (thr.code !== 0 || thr.stdout.trim() !== '1') return `threaded NAPI refused on ${receiver.name}'s ${receiver.underlayDev}: ${(thr.stderr || thr.stdout).trim()}`;
  return null;
}

function delta(after: Record<string, number>, before: Record<string, number>, key: string): number {
  return (after[key] ?? 0) - (before[key] ?? 0);
}

describe.skipIf(why).each([{ offload: false }, { offload: true }])('GRO on the underlay device (io.offload: $offload)', ({ offload }) => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  /** Why the kernel would not turn GRO on (the test is then skipped), or null. */
  let refused: string | null = null;

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    h2 = topo.host(2);
    refused = await enableUnderlayGro(topo, [h1, h2], h2);
    if (refused) {
      skipOrFail('underlay GRO test', refused);
      return;
    }
    for (const h of [h1, h2]) await startDaemon(topo, h, editedConfig(topo, h, `gro-offload-${offload}`, (c) => (c.io = { ...(c.io ?? {}), offload })));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('a 16 MiB TCP transfer from pod A to pod B arrives byte for byte; h2 took the super-packets GRO made whole', async (ctx) => {
    if (refused) ctx.skip(refused);
    const bytes = 16 * 1024 * 1024;
    const seed = offload ? 52 : 51;
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    const r0 = await status(h2);
    expect(r0.offload).toBe(offload);

    await tcpTransfer(topo, a, b, bytes, seed);

    const r1 = await status(h2);
    const s1 = await status(h1);
    const d = (key: string): number => delta(r1.counters, r0.counters, key);
    const read = `h2 read ${d('underlay_rx_packets')} datagrams, ${d('underlay_rx_bytes')} bytes from the underlay`;
    // The kernel's GRO merged IPIP/TCP on h2's ul0, and ipipd recognised the super-packets.
    expect(d('underlay_gro_packets'), `underlay_gro_packets on h2 (${read})`).toBeGreaterThan(0);
    // Everything the pod received went through the TUN.
    expect(d('rx_bytes')).toBeGreaterThan(bytes);
    if (!offload) {
      // Plain mode: every super-packet was cut into segments, each one packet written.
      expect(d('rx_packets'), `rx_packets on h2 (${read})`).toBeGreaterThan(d('underlay_rx_packets'));
    }
    for (const [name, s] of [['h1', s1], ['h2', r1]] as const) {
      expect(s.drops.truncated, `truncated on ${name}`).toBe(0);
      expect(s.drops.inner_malformed, `inner_malformed on ${name}`).toBe(0);
      expect(s.drops.tun_write_error, `tun_write_error on ${name}`).toBe(0);
    }
  });
});
