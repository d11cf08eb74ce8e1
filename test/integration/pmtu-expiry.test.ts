/**
 * RFC 1191 §6.3 through the tunnel: a learned path MTU is soft state. With
 * `underlay.pmtu_expires: 2`, h1 learns its peer's smaller MTU from a router's Fragmentation
 * Needed, goes back to the configured MTU once it expires (logged), and learns it again from the
 * next packet that does not fit (STYLE rule 16: the topology is this run's, torn down after).
 *
 *   P-h1p1 pod A --- [ipip0] h1 ul0 --- a0 P-r b0 (mtu 1400) --- ul0 h2 [ipip0] --- pod B
 *                    ipipd, pmtu_expires: 2                       ipipd
 *
 * The waits poll the status with a deadline far above the 2-4 s the expiry takes (the aging
 * timer runs every min(pmtu_expires, 30) s): they bound a loaded machine, they time nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { editedConfig, startDaemon, status, type RunningDaemon } from '../helpers/daemons.js';
import { have, routerPair } from '../helpers/pair.js';
import { integrationSkip } from '../helpers/skip.js';
import { waitFor } from '../../tools/netns/exec.js';
import type { HostInfo, PodInfo, Topology } from '../../tools/netns/topology.js';

const why = integrationSkip('path MTU expiry test', have('ping') ? null : "'ping' not installed");

describe.skipIf(why)('underlay.pmtu_expires: a learned path MTU expires and is learned again', () => {
  let topo: Topology;
  let h1: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  let R: string;
  let d1: RunningDaemon;

  beforeAll(async () => {
    let h2: HostInfo;
    ({ topo, h1, h2, A, B, R } = await routerPair());
    d1 = await startDaemon(topo, h1, editedConfig(topo, h1, 'pmtu-expiry', (c) => (c.underlay.pmtu_expires = 2)));
    await startDaemon(topo, h2);
    expect((await topo.exec(R, ['ip', 'link', 'set', 'b0', 'mtu', '1400'])).code).toBe(0);
  });

  afterAll(async () => {
    await topo?.down();
  });

  /** h1's one peer as its status shows it. */
  const peer = async () => (await status(h1)).peers[0]!;

  /** h1's peer once its MTU is `mtu` (polled every 100 ms for up to 30 s), or as it is at the deadline. */
  async function until(mtu: number): Promise<Awaited<ReturnType<typeof peer>>> {
    await waitFor(async () => (await peer()).mtu === mtu, 30_000, 100);
    return peer();
  }

  /** Pings from pod A whose outer packets (1428 + 20 bytes, DF) do not fit b0's 1400. */
  const bigPings = () => topo.exec(A.ns, ['ping', '-M', 'do', '-s', '1400', '-c', '3', '-i', '0.3', '-W', '1', B.address], { timeoutMs: 15_000 });

  test('learned from the router: 1400 - 20 = 1380', async () => {
    expect(await peer()).toMatchObject({ mtu: 1480, baseMtu: 1480, pmtuLearnedSecondsAgo: null });
    await bigPings();
    expect(await until(1380)).toMatchObject({ mtu: 1380, baseMtu: 1480 });
  });

  test('expired: back to the configured 1480, and the log says so', async () => {
    expect(await until(1480)).toMatchObject({ mtu: 1480, baseMtu: 1480, pmtuLearnedSecondsAgo: null });
    const line = d1
      .log()
      .split('\n')
      .filter((l) => l.includes('learned path MTU expired'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(line).toHaveLength(1);
    expect(line[0]).toMatchObject({ peer: 'h2', from: 1380, to: 1480 });
  });

  test('learned again from the next packet that does not fit', async () => {
    // Pod A's kernel keeps the 1380 ipipd told it for 10 minutes (net.ipv4.route.mtu_expires) and
    // would not send such a packet again: its route cache is flushed, as that expiry would.
    expect((await topo.exec(A.ns, ['ip', 'route', 'flush', 'cache'])).code).toBe(0);
    await bigPings();
    expect(await until(1380)).toMatchObject({ mtu: 1380, baseMtu: 1480 });
  });
});
