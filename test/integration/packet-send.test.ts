/**
 * `underlay.send: packet`: outer packets leave through an AF_PACKET socket straight to each
 * peer's next hop (the MAC from the kernel's neighbour table, the route from `ip route get`;
 * src/daemon/nexthop.ts), bypassing the kernel's IP output path. Real daemons, real packets;
 * topologies from scripts/netns-setup.sh with a per-run prefix, torn down on every exit path
 * (STYLE rule 16):
 *
 *   direct:  P-h1p1 pod A --- P-h1 [ipip0] ul0 192.0.2.1 ==================== 192.0.2.2 ul0 [ipip0] P-h2 --- P-h2p1 pod B
 *                             ipipd send: packet -> AF_PACKET to h2's ul0 MAC      (and h2 to h1's)
 *   router:  P-h1 ul0 192.0.2.1/25 ==== a0 192.0.2.126 [P-r] b0 192.0.2.254 ==== 192.0.2.129/25 ul0 P-h2
 *                             next hop: the router's a0 (from h1) and b0 (from h2), not the far endpoint
 *
 * Flow:
 *  - direct underlay, io.offload on (the default) and off, one pair each, both daemons in packet
 *    mode: the fresh pair has counted nothing and put no IP packet on the underlay while starting
 *    (only the ARP its next-hop lookup asks for), and says send 'packet'; each peer's next hop
 *    resolves to the other host's ul0 address and MAC on the own ul0; ping and 4 MiB of TCP each
 *    way (SHA-256 on both ends) with no drop; with `iptables -A OUTPUT -p 4 -j DROP` on h1 the
 *    tunnel still works and the rule counts nothing.
 *  - offload on only, the same pair going on: h2's ul0 gets a new MAC (h2 kept from ARPing h1,
 *    h1's entry put STALE as its reachable time would leave it), and h1's next hop follows it
 *    (STALE nudged, unicast probes fail, re-resolved) and the tunnel works again; the control:
 *    h1 restarted in raw mode (the default), where status says send 'raw' with no next hop and the
 *    same iptables rule blocks the tunnel and counts; h1's neighbour table flushed and h1 started
 *    in packet mode again: the daemon itself created the missing entry (before any traffic, with
 *    h2 pinned so that it sends h1 no ARP), the first pings pass and the next hop resolves to
 *    h2's new MAC.
 *  - both pairs: after SIGTERM the daemons exit 0 and leave nothing behind.
 *  - router underlay: the next hop is the router's address and interface MAC on each side; ping
 *    and TCP work; clean SIGTERM.
 *  - io.queues: 2: both ends' neighbour tables empty at start, so the queue worker gets its
 *    next hop only as a message; with OUTPUT dropping protocol 4 on both hosts, concurrent TCP
 *    transfers both ways arrive, both of h1's queues sent, and the rules saw nothing; clean SIGTERM.
 *  - `ipipd check` refuses an unknown `underlay.send` (exit 2, names underlay.send) and accepts
 *    `packet` with one or two queues.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { StatusReport } from '../../src/daemon/daemon.js';
import { IPIPD, editedConfig, startDaemon, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectFreshPair, expectNothingLeft, have, pingBothWays, routerPair, startPair, tcpTransfer, type StartedPair } from '../helpers/pair.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';
import { integrationSkip } from '../helpers/skip.js';

const why = integrationSkip('packet-send integration tests');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** NUD states in which the kernel (and so the daemon) sends to the entry's MAC. */
const USABLE_STATE = /^(reachable|stale|delay|probe|permanent|noarp)$/;

/** A locally administered unicast MAC for h2's ul0 (bit 1 of the first byte set, bit 0 clear). */
const NEW_MAC = '02:00:5e:10:20:02';

/** A device's ifindex and MAC in namespace `ns`. */
async function linkOf(topo: Topology, ns: string, dev: string): Promise<{ ifindex: number; mac: string }> {
  const r = await topo.exec(ns, ['ip', '-j', 'link', 'show', 'dev', dev]);
  if (r.code !== 0) throw new Error(`ip link show ${dev} in ${ns}: ${r.stderr}`);
  const l = JSON.parse(r.stdout)[0] as { ifindex: number; address: string };
  return { ifindex: l.ifindex, mac: l.address.toLowerCase() };
}

/** Both hosts' ul0: ifindex and MAC. */
async function linksOf(topo: Topology, h1: HostInfo, h2: HostInfo): Promise<{ ul1: { ifindex: number; mac: string }; ul2: { ifindex: number; mac: string } }> {
  const [ul1, ul2] = await Promise.all([linkOf(topo, h1.ns, 'ul0'), linkOf(topo, h2.ns, 'ul0')]);
  return { ul1, ul2 };
}

/** The `Ip:` line of /proc/net/snmp in `ns`: IP datagrams received and sent by the host. */
async function ipCounts(topo: Topology, ns: string): Promise<{ inReceives: number; outRequests: number }> {
  const r = await topo.exec(ns, ['cat', '/proc/net/snmp']);
  const [names, values] = r.stdout.split('\n').filter((l) => l.startsWith('Ip:')).map((l) => l.split(/\s+/).slice(1));
  const get = (k: string): number => Number(values![names!.indexOf(k)]);
  return { inReceives: get('InReceives'), outRequests: get('OutRequests') };
}

/** The kernel's neighbour entries on `dev` in `ns` (`ip -j neigh`). */
async function neighbours(topo: Topology, ns: string, dev: string): Promise<Array<{ dst: string; lladdr?: string; state: string[] }>> {
  const r = await topo.exec(ns, ['ip', '-j', 'neigh', 'show', 'dev', dev]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout || '[]');
}

const hop = (s: StatusReport): StatusReport['peers'][number]['nextHop'] => s.peers[0]!.nextHop;

/**
 * Poll `h`'s status every 200 ms until `ok` holds or `timeoutMs` passed, running `meanwhile`
 * between polls (traffic that makes the kernel resolve); returns the last status either way, for
 * the caller to assert on.
 */
async function pollStatus(h: HostInfo, ok: (s: StatusReport) => boolean, timeoutMs: number, meanwhile?: () => Promise<unknown>): Promise<StatusReport> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await status(h);
    if (ok(s) || Date.now() > deadline) return s;
    if (meanwhile) await meanwhile();
    await sleep(200);
  }
}

/** `h`'s status once its peer's next hop is sent through AF_PACKET to `mac` (bounded wait). */
const resolvedTo = (h: HostInfo, mac: string, timeoutMs = 5000, meanwhile?: () => Promise<unknown>): Promise<StatusReport> =>
  pollStatus(h, (s) => hop(s)?.send === 'packet' && hop(s)?.mac === mac, timeoutMs, meanwhile);

function expectHop(s: StatusReport, want: { via: string; ifindex: number; mac: string }): void {
  expect(s.underlay.send).toBe('packet');
  expect(hop(s)).toMatchObject({ send: 'packet', ...want });
  expect(hop(s)!.state).toMatch(USABLE_STATE);
}

function expectNoDrops(s: StatusReport, who: string): void {
  const nonZero = Object.fromEntries(Object.entries(s.drops).filter(([, v]) => v !== 0));
  expect(nonZero, `${who}: drops`).toEqual({});
  expect(s.lastErrors, `${who}: last errors`).toEqual({});
}

/** iptables in `ns`; a missing iptables fails the test with the reason (it is the proof). */
async function iptables(topo: Topology, ns: string, args: string[]): Promise<void> {
  expect(have('iptables'), "'iptables' is not installed: the proof that AF_PACKET bypasses netfilter OUTPUT needs it").toBe(true);
  const r = await topo.exec(ns, ['iptables', ...args]);
  expect(r.code, `iptables ${args.join(' ')} in ${ns}: ${r.stderr}`).toBe(0);
}

/** arptables in `ns` (arptables-nft ships with iptables). */
async function arptables(topo: Topology, ns: string, args: string[]): Promise<void> {
  expect(have('arptables'), "'arptables' is not installed: the MAC-change test keeps h2 from ARPing h1 with it").toBe(true);
  const r = await topo.exec(ns, ['arptables', ...args]);
  expect(r.code, `arptables ${args.join(' ')} in ${ns}: ${r.stderr}`).toBe(0);
}

/** A permanent neighbour entry for `dst` on ul0 in `ns`: the kernel never ARPs for it. */
async function pinNeighbour(topo: Topology, ns: string, dst: string, mac: string): Promise<void> {
  const r = await topo.exec(ns, ['ip', 'neigh', 'replace', dst, 'dev', 'ul0', 'lladdr', mac, 'nud', 'permanent']);
  expect(r.code, r.stderr).toBe(0);
}

const DROP_IPIP = ['OUTPUT', '-p', '4', '-j', 'DROP'];

/** Packets the one DROP rule of `ns`'s OUTPUT chain has matched (`iptables -L OUTPUT -v -n -x`). */
async function dropRuleCount(topo: Topology, ns: string): Promise<number> {
  const r = await topo.exec(ns, ['iptables', '-L', 'OUTPUT', '-v', '-n', '-x']);
  expect(r.code, r.stderr).toBe(0);
  const rows = r.stdout.split('\n').filter((l) => /\sDROP\s/.test(l));
  expect(rows, r.stdout).toHaveLength(1);
  return Number(rows[0]!.trim().split(/\s+/)[0]);
}

/** Two echoes from `from` to `to` that must all be lost. */
async function pingFails(topo: Topology, from: PodInfo, to: PodInfo): Promise<void> {
  const r = await topo.exec(from.ns, ['ping', '-c', '2', '-i', '0.2', '-W', '1', to.address], { timeoutMs: 15_000 });
  expect(r.stdout, `ping ${from.name} -> ${to.name}`).toMatch(/2 packets transmitted, 0 received/);
}

describe.skipIf(why).each([{ offload: true }, { offload: false }])('underlay.send: packet on the direct underlay (io.offload: $offload)', ({ offload }) => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  let d1: RunningDaemon;
  let d2: RunningDaemon;
  let started: StartedPair;
  /** Both hosts' IP counters just before the daemons start and just after both are up. */
  let ipBefore: Array<{ inReceives: number; outRequests: number }>;
  let ipAfter: Array<{ inReceives: number; outRequests: number }>;
  let ul1: { ifindex: number; mac: string };
  let ul2: { ifindex: number; mac: string };
  const packetConfig = (h: HostInfo): string =>
    editedConfig(topo, h, `packet-offload-${offload}`, (c) => {
      c.underlay.send = 'packet';
      c.io = { offload };
    });

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    h2 = topo.host(2);
    A = h1.pods[0]!;
    B = h2.pods[0]!;
    ({ ul1, ul2 } = await linksOf(topo, h1, h2));
    ipBefore = await Promise.all([h1, h2].map((h) => ipCounts(topo, h.ns)));
    ({ d1, d2 } = started = await startPair(topo, packetConfig));
    ipAfter = await Promise.all([h1, h2].map((h) => ipCounts(topo, h.ns)));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('a fresh pair says send packet, has counted nothing, and starting it put no IP packet on the underlay', () => {
    // Starting does put ARP on the underlay: NextHops creates and resolves the missing
    // neighbour entry at once. So instead of the link's packet counts (expectFreshPair's first
    // check), neither host received or sent a single IP datagram while the daemons started.
    expect(ipAfter).toEqual(ipBefore);
    expectFreshPair({ ...started, underlayAfter: started.underlayBefore }, (s) => {
      expect(s.offload).toBe(offload);
      expect(s.underlay).toMatchObject({ device: 'ul0', send: 'packet' });
      expect(s.peers[0]).toMatchObject({ txPackets: 0, rxPackets: 0 });
      // In packet mode every peer has a next hop report (packet or, until resolved, raw).
      expect(hop(s)).not.toBeNull();
      expect(['packet', 'raw']).toContain(hop(s)!.send);
    });
  });

  test("each peer's next hop resolves to the other host's ul0 address and MAC, on its own ul0", async () => {
    const [s1, s2] = await Promise.all([resolvedTo(h1, ul2.mac), resolvedTo(h2, ul1.mac)]);
    expectHop(s1, { via: h2.underlay, ifindex: ul1.ifindex, mac: ul2.mac });
    expectHop(s2, { via: h1.underlay, ifindex: ul2.ifindex, mac: ul1.mac });
  });

  test('ping and 4 MiB of TCP each way arrive byte for byte, with no drop', async () => {
    await pingBothWays(topo, A, B);
    const bytes = 4 * 1024 * 1024;
    for (const [from, to, seed] of [[A, B, 31], [B, A, 32]] as const) await tcpTransfer(topo, from, to, bytes, seed, 60);
    for (const h of [h1, h2]) {
      const s = await status(h);
      expect(s.counters.tx_bytes, h.name).toBeGreaterThan(bytes);
      expect(s.counters.rx_bytes, h.name).toBeGreaterThan(bytes);
      expectNoDrops(s, h.name);
      expect(hop(s)!.send, h.name).toBe('packet');
    }
  });

  test('the outer packets bypass the IP output path: an OUTPUT rule dropping protocol 4 on h1 sees none', async () => {
    await iptables(topo, h1.ns, ['-A', ...DROP_IPIP]);
    try {
      expect(await dropRuleCount(topo, h1.ns)).toBe(0);
      const before = (await status(h1)).counters.tx_packets!;
      await pingBothWays(topo, A, B);
      const s = await status(h1);
      expect(s.counters.tx_packets! - before).toBeGreaterThanOrEqual(6);
      expectNoDrops(s, h1.name);
      expect(hop(s)!.send).toBe('packet');
      expect(await dropRuleCount(topo, h1.ns)).toBe(0);
    } finally {
      await iptables(topo, h1.ns, ['-D', ...DROP_IPIP]);
    }
  });

  if (offload) {
    test("h2's ul0 gets a new MAC: h1's next hop follows it and the tunnel works again", async () => {
      expect(NEW_MAC).not.toBe(ul2.mac);
      await pingBothWays(topo, A, B);
      // A MAC change flushes h2's own neighbour table, and h2 re-resolving h1 would teach h1 the
      // new MAC (the sender of an ARP request for us updates our entry). This is about h1 finding
      // it out by itself, so h2 asks nothing on ul0 (it still answers) and gets h1's entry pinned.
      const quiet = ['OUTPUT', '-o', 'ul0', '--opcode', 'Request', '-j', 'DROP'];
      await arptables(topo, h2.ns, ['-A', ...quiet]);
      try {
        const r = await topo.exec(h2.ns, ['ip', 'link', 'set', 'dev', 'ul0', 'address', NEW_MAC]);
        expect(r.code, r.stderr).toBe(0);
        await pinNeighbour(topo, h2.ns, h1.underlay, ul1.mac);
        expect((await linkOf(topo, h2.ns, 'ul0')).mac).toBe(NEW_MAC);
        // Nothing sent through AF_PACKET confirms h1's entry, so once its reachable time (15-45 s)
        // is over it sits STALE with the old MAC, and the kernel does nothing more about it by
        // itself. Put it there now (cancelling any probe already due) rather than wait.
        const stale = await topo.exec(h1.ns, ['ip', 'neigh', 'change', h2.underlay, 'dev', 'ul0', 'lladdr', ul2.mac, 'nud', 'stale']);
        expect(stale.code, stale.stderr).toBe(0);
        // NextHops nudges the STALE entry, the kernel's unicast probes to the old MAC go
        // unanswered, the entry fails, the raw socket's packets have the kernel resolve it again
        // (broadcast), and the next refresh takes the new MAC. Pings from pod A meanwhile give
        // the kernel something to resolve for.
        const s1 = await resolvedTo(h1, NEW_MAC, 25_000, () => topo.exec(A.ns, ['ping', '-c', '1', '-W', '1', B.address], { timeoutMs: 5000 }));
        expectHop(s1, { via: h2.underlay, ifindex: ul1.ifindex, mac: NEW_MAC });
        await pingBothWays(topo, A, B);
        // h2's own next hop (h1's MAC, now from the pinned entry) is unchanged.
        expectHop(await status(h2), { via: h1.underlay, ifindex: ul2.ifindex, mac: ul1.mac });
      } finally {
        await arptables(topo, h2.ns, ['-D', ...quiet]);
      }
    });

    test('control: in raw mode (the default) the same OUTPUT rule blocks the tunnel and counts its packets', async () => {
      expect(await stopDaemon(d1)).toBe(0);
      await expectNothingLeft(topo, h1);
      d1 = await startDaemon(topo, h1, editedConfig(topo, h1, 'raw', (c) => (c.io = { offload })));
      const s = await status(h1);
      expect(s.underlay.send).toBe('raw');
      expect(hop(s)).toBeNull();
      await iptables(topo, h1.ns, ['-A', ...DROP_IPIP]);
      try {
        await pingFails(topo, A, B);
        expect(await dropRuleCount(topo, h1.ns)).toBeGreaterThanOrEqual(2);
        expect((await status(h1)).drops.socket_write_error).toBeGreaterThanOrEqual(2);
      } finally {
        await iptables(topo, h1.ns, ['-D', ...DROP_IPIP]);
      }
      // Without the rule the raw-mode tunnel works: the rule was what blocked it.
      await pingBothWays(topo, A, B);
    });

    test("with h1's neighbour table flushed before the start, the daemon resolves the entry itself and the first pings pass", async () => {
      expect(await stopDaemon(d1)).toBe(0);
      // Pin h2's entry for h1, so that h2 sends h1 no ARP (which would create h1's entry too).
      await pinNeighbour(topo, h2.ns, h1.underlay, ul1.mac);
      const flush = await topo.exec(h1.ns, ['ip', 'neigh', 'flush', 'dev', 'ul0']);
      expect(flush.code, flush.stderr).toBe(0);
      expect((await neighbours(topo, h1.ns, 'ul0')).filter((n) => n.dst === h2.underlay)).toEqual([]);

      d1 = await startDaemon(topo, h1, packetConfig(h1));
      // No traffic yet, and h2 sends no ARP: the entry is there because the daemon created it.
      const created = (await neighbours(topo, h1.ns, 'ul0')).filter((n) => n.dst === h2.underlay);
      expect(created, "h1's neighbour entry for h2 after the start").toHaveLength(1);
      // The first pings, through the raw socket or already through AF_PACKET.
      await pingBothWays(topo, A, B);
      const s1 = await resolvedTo(h1, NEW_MAC);
      expectHop(s1, { via: h2.underlay, ifindex: ul1.ifindex, mac: NEW_MAC });
      expectNoDrops(s1, h1.name);
      await pingBothWays(topo, A, B);
    });
  }

  test('after SIGTERM both daemons exit 0 and leave nothing behind', async () => {
    for (const d of [d1, d2]) {
      expect(await stopDaemon(d)).toBe(0);
      await expectNothingLeft(topo, d.host);
      const final = JSON.parse(d.log().split('\n').find((l) => l.includes('closed: final counters'))!);
      expect(final.counters.tx_packets, d.host.name).toBeGreaterThan(0);
    }
  });
});

describe.skipIf(why)('underlay.send: packet behind a router', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  let A: PodInfo;
  let B: PodInfo;
  let R: string;
  let d1: RunningDaemon;
  let d2: RunningDaemon;

  beforeAll(async () => {
    ({ topo, h1, h2, A, B, R } = await routerPair());
    ({ d1, d2 } = await startPair(topo, (h) => editedConfig(topo, h, 'packet', (c) => (c.underlay.send = 'packet'))));
  });

  afterAll(async () => {
    await topo?.down();
  });

  test("each host's next hop is the router's address and interface MAC on its side, not the far endpoint", async () => {
    const router = topo.info.router!;
    const [a0, b0, ul1, ul2] = await Promise.all([linkOf(topo, R, 'a0'), linkOf(topo, R, 'b0'), linkOf(topo, h1.ns, 'ul0'), linkOf(topo, h2.ns, 'ul0')]);
    const [s1, s2] = await Promise.all([resolvedTo(h1, a0.mac), resolvedTo(h2, b0.mac)]);
    expect(s1.peers[0]!.endpoint).toBe(h2.underlay);
    expectHop(s1, { via: router.a0, ifindex: ul1.ifindex, mac: a0.mac });
    expectHop(s2, { via: router.b0, ifindex: ul2.ifindex, mac: b0.mac });
  });

  test('ping and 4 MiB of TCP each way through the router arrive byte for byte', async () => {
    await pingBothWays(topo, A, B);
    for (const [from, to, seed] of [[A, B, 41], [B, A, 42]] as const) await tcpTransfer(topo, from, to, 4 * 1024 * 1024, seed, 60);
    for (const h of [h1, h2]) expectNoDrops(await status(h), h.name);
  });

  test('after SIGTERM both daemons exit 0 and leave nothing behind', async () => {
    for (const d of [d1, d2]) {
      expect(await stopDaemon(d)).toBe(0);
      await expectNothingLeft(topo, d.host);
    }
  });
});

describe.skipIf(why)('underlay.send: packet with io.queues: 2', () => {
  /** The pair of this block, set up once (one object: the other blocks' variables are their own). */
  let t: { topo: Topology; h1: HostInfo; h2: HostInfo; ul1: { ifindex: number; mac: string }; ul2: { ifindex: number; mac: string }; daemons: RunningDaemon[] };

  beforeAll(async () => {
    const topo = await Topology.up({ hosts: 2 });
    const [h1, h2] = [topo.host(1), topo.host(2)];
    t = { topo, h1, h2, ...(await linksOf(topo, h1, h2)), daemons: [] };
    // No neighbour entry at start: each worker starts with an empty next-hop table and gets the
    // resolved entry only as a message from the main thread.
    for (const h of [h1, h2]) expect((await topo.exec(h.ns, ['ip', 'neigh', 'flush', 'dev', 'ul0'])).code).toBe(0);
    const { d1, d2 } = await startPair(topo, (h) =>
      editedConfig(topo, h, 'packet-queues2', (c) => {
        c.underlay.send = 'packet';
        c.io = { queues: 2 };
      }),
    );
    t.daemons = [d1, d2];
  });

  afterAll(async () => {
    await t?.topo.down();
  });

  test('every queue sends through AF_PACKET: with OUTPUT dropping protocol 4 on both hosts, concurrent TCP transfers both ways arrive and both of h1\'s queues sent', async () => {
    const { topo, h1, h2, ul1, ul2 } = t;
    const [A, B] = [h1.pods[0]!, h2.pods[0]!];
    const [s1, s2] = await Promise.all([resolvedTo(h1, ul2.mac), resolvedTo(h2, ul1.mac)]);
    expectHop(s1, { via: h2.underlay, ifindex: ul1.ifindex, mac: ul2.mac });
    expectHop(s2, { via: h1.underlay, ifindex: ul2.ifindex, mac: ul1.mac });
    expect(s1.queues.map((q) => q.queue)).toEqual([0, 1]);
    for (const h of [h1, h2]) await iptables(topo, h.ns, ['-A', ...DROP_IPIP]);
    const before = await status(h1);
    const bytes = 2 * 1024 * 1024;
    // Six flows (each connection its own source port), so that both queues of each end carry some.
    await Promise.all([
      ...[1, 2, 3, 4].map((k) => tcpTransfer(topo, A, B, bytes, 900 + k, 60)),
      ...[5, 6].map((k) => tcpTransfer(topo, B, A, bytes, 900 + k, 60)),
    ]);
    await pingBothWays(topo, A, B);
    const after = await status(h1);
    for (const q of [0, 1]) expect(after.queues[q]!.txPackets - before.queues[q]!.txPackets, `h1 queue ${q} txPackets`).toBeGreaterThan(0);
    for (const h of [h1, h2]) {
      expect(await dropRuleCount(topo, h.ns), `${h.name}: packets the OUTPUT rule saw`).toBe(0);
      expectNoDrops(await status(h), h.name);
    }
  });

  test('after SIGTERM both daemons exit 0 and leave nothing behind', async () => {
    for (const d of t.daemons) {
      expect(await stopDaemon(d)).toBe(0);
      await expectNothingLeft(t.topo, d.host);
    }
  });
});

describe('ipipd check: underlay.send', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ipipd-packet-send-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const check = (name: string, yaml: string): { code: number | null; stdout: string; stderr: string; file: string } => {
    const file = join(dir, `${name}.yaml`);
    writeFileSync(file, yaml);
    const r = spawnSync(process.execPath, [IPIPD, 'check', '--config', file], { encoding: 'utf8', timeout: 30_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr, file };
  };
  const config = (underlay: string, io: string): string => `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1${underlay} }
io: { ${io} }
peers: [{ name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }]
`;

  test('an unknown underlay.send is refused, exit 2, naming underlay.send', () => {
    const r = check('send-bogus', config(', send: afpacket', 'queues: 1'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`ERR_CONFIG_INVALID: ${r.file}: 1 problem`);
    expect(r.stderr).toMatch(/underlay\.send: /);
  });

  test('packet with one or two queues is accepted and described; raw with two queues too', () => {
    const two = check('packet-queues2', config(', send: packet', 'queues: 2'));
    expect(two.code, two.stderr).toBe(0);
    expect(two.stdout).toMatch(/queues 2/);
    const one = check('packet-queues1', config(', send: packet', 'queues: 1'));
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toContain(`${one.file}: ok`);
    expect(one.stdout).toMatch(/sent through AF_PACKET to each peer's next hop/);
    const raw = check('raw-queues2', config(', send: raw', 'queues: 2'));
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stdout).toMatch(/sent through the raw socket/);
  });
});
