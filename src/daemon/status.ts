/**
 * The status report: what the control socket answers (`ipipd status`), what SIGUSR1 and the
 * periodic stats log print, and the final counters at shutdown. `statusReport` adds queue 0's
 * figures (this thread's Dataplane and peers) to those of the queue workers (their snapshots,
 * src/daemon/queues.ts), per queue, per counter and per peer, and puts them beside what start-up
 * found (src/daemon/lifecycle.ts `Resources`).
 */
import { formatIPv4 } from '../routing/prefix.js';
import { ENCAP_FOU, type Peer } from '../ipip/index.js';
import { VERDICT_NAMES } from '../ipip/verdict.js';
import type { Config } from './config.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import { addFigures, COUNTER_NAMES, nameFigures, queueSnapshot } from '../dataplane/figures.js';
import type { QueueSnapshot } from './queues.js';
import type { HopStatus, NextHops } from './nexthop.js';
import { plainRoutes, underlaySubnet } from './cross-subnet.js';
import type { UnderlayRoutes } from './plain-routes.js';
import { memoryFigures, type MemoryFigures } from './footprint.js';

export type DaemonState = 'created' | 'starting' | 'up' | 'failed' | 'closing' | 'closed';

export interface StatusReport {
  state: DaemonState;
  pid: number;
  uptimeSeconds: number;
  tun: { name: string; mtu: number; address: string | null; ifindex: number };
  underlay: { address: string; device: string; mtu: number; send: 'raw' | 'packet' };
  batch: number;
  /** Offload mode (io.offload): TSO/GRO across the TUN. */
  offload: boolean;
  /** Offload mode on a kernel that takes UDP_L4 super-packets from a TUN (6.2+): UDP GRO too. */
  udpGro: boolean;
  /**
   * FOU (README "FOU"), null when no peer uses it: the UDP port, the source ports, and whether
   * UDP_SEGMENT (send) and UDP_GRO (receive) are in use: `on`, `off` (fou.offload: false), or
   * `refused (<errno>)` when the kernel said no and ipipd fell back.
   */
  fou?: { port: number; sourcePorts: number[]; udpSegment: string; udpGro: string } | null;
  /** Per data-path queue (io.queues; queue 0 is the main thread): what it forwarded each way. */
  queues: { queue: number; tunRxPackets: number; txPackets: number; underlayRxPackets: number; rxPackets: number }[];
  routesInstalled: string[];
  /**
   * encap.mode and the underlay subnet it compares endpoints against; the plain routes
   * (cross-subnet) and blackholes (routes.own_blocks) installed, as `ip route` shows them
   * (src/daemon/plain-routes.ts).
   */
  encap?: { mode: 'always' | 'cross-subnet'; subnet: string; plainRoutes: string[]; blackholes: string[] };
  peers: {
    name: string;
    endpoint: string;
    /** `ipip` or `fou`. */
    encap?: 'ipip' | 'fou';
    prefixes: string[];
    mtu: number;
    baseMtu: number;
    pmtuLearnedSecondsAgo: number | null;
    reachable: boolean;
    unreachableReason: string | null;
    lastRxSecondsAgo: number | null;
    txPackets: number;
    txBytes: number;
    rxPackets: number;
    rxBytes: number;
    /** `underlay.send: packet`: where this peer's packets go on the link (null with `raw`). */
    nextHop: HopStatus | null;
    /** `plain`: a configured peer on the underlay subnet in cross-subnet mode (its tx is what still reached the TUN). */
    path?: 'tunnel' | 'plain';
  }[];
  counters: Record<string, number>;
  drops: Record<string, number>;
  lastErrors: Record<string, string>;
  /** State `failed`: the error code, why, and the routes that are no longer there (src/daemon/daemon.ts). */
  failure: { code: string; reason: string; routesLost: string[] } | null;
  /** Live changes (src/daemon/live.ts): reloads applied, the last change, the kernel route watch. */
  live?: {
    reloads: number;
    lastChange: { secondsAgo: number; trigger: string; added: number; removed: number; changed: number; routesAdded: number; routesRemoved: number } | null;
    kernelRoutes: { routes: number; events: number; dumps: number; errors: number } | null;
  };
  /** What the process holds (src/daemon/footprint.ts): RSS and its parts, this thread's V8 heap, Buffers. */
  memory?: MemoryFigures;
}

/** What the report reads of the daemon's resources (src/daemon/lifecycle.ts `Resources`). */
export interface StatusSource {
  readonly config: Config;
  readonly dataplane: Dataplane | undefined;
  readonly peers: readonly Peer[];
  readonly nextHops: NextHops | undefined;
  readonly tunMtu: number;
  readonly tunIndex: number;
  readonly udpGro: boolean;
  readonly underlayDev: string;
  readonly underlayMtu: number;
  readonly routes: readonly string[];
  readonly underlayPrefixLen: number;
  readonly underlayRoutes: UnderlayRoutes | undefined;
  /** FOU: the sockets' ports and whether UDP_GRO was taken (src/daemon/lifecycle.ts). */
  readonly fou?: { readonly port: number; readonly sourcePorts: readonly number[]; readonly gso: boolean; readonly gro: boolean } | undefined;
}

/** FOU's part of the report: UDP_SEGMENT is `refused` once any queue's kernel refused it (counter fou_gso_refused). */
function fouStatus(s: StatusSource, refused: number, dp: Dataplane | undefined): NonNullable<StatusReport['fou']> | null {
  const f = s.fou;
  if (!f) return null;
  const why = dp?.send.fou?.gsoRefused;
  return {
    port: f.port,
    sourcePorts: [...f.sourcePorts],
    udpSegment: !f.gso ? 'off' : refused > 0 ? `refused (${why ?? 'by a queue'})` : 'on',
    udpGro: !s.config.fou.offload ? 'off' : f.gro ? 'on' : 'refused',
  };
}

/**
 * The report in `state`, up since `startedAt` (0: not yet), from this thread's figures (queue 0)
 * plus the workers' `snaps` (queues 1..).
 */
export function statusReport(state: DaemonState, startedAt: number, s: StatusSource, snaps: readonly QueueSnapshot[]): StatusReport {
  const c = s.config;
  const dp = s.dataplane;
  const all = dp ? [queueSnapshot(dp.figures), ...snaps] : [];
  const sums = { counters: new Float64Array(COUNTER_NAMES.length), drops: new Float64Array(VERDICT_NAMES.length) };
  const { counters, drops } = sums;
  const lastErrors: Record<string, string> = {};
  const queueFigures = (q: number, k: ArrayLike<number>): StatusReport['queues'][number] => ({
    queue: q,
    tunRxPackets: k[COUNTER_NAMES.indexOf('tun_rx_packets')]!,
    txPackets: k[COUNTER_NAMES.indexOf('tx_packets')]!,
    underlayRxPackets: k[COUNTER_NAMES.indexOf('underlay_rx_packets')]!,
    rxPackets: k[COUNTER_NAMES.indexOf('rx_packets')]!,
  });
  const queues: StatusReport['queues'] = [];
  const peerSums = s.peers.map(() => ({ txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, lastRxAt: 0 }));
  all.forEach((q, i) => {
    addFigures(sums, q);
    // Queue 0's first: its errors win over a worker's of the same name.
    for (const [k, v] of Object.entries(q.lastErrors)) lastErrors[k] ??= v;
    queues.push(queueFigures(i, q.counters));
    q.peers.forEach((x, j) => {
      const sum = peerSums[j];
      if (!sum) return;
      sum.txPackets += x.txPackets;
      sum.txBytes += x.txBytes;
      sum.rxPackets += x.rxPackets;
      sum.rxBytes += x.rxBytes;
      sum.lastRxAt = Math.max(sum.lastRxAt, x.lastRxAt);
    });
  });
  const named = nameFigures(counters, drops);
  // Reachability is queue 0's figure: it alone hears underlay ICMP.
  const unreachableAt = dp ? dp.figures.peers.unreachableAt : new Float64Array(s.peers.length);
  const unreachableReason = dp ? dp.figures.peers.unreachableReason : [];
  return {
    state,
    pid: process.pid,
    uptimeSeconds: startedAt ? Math.round((Date.now() - startedAt) / 1000) : 0,
    tun: { name: c.tun.name, mtu: s.tunMtu, address: c.tun.address?.text ?? null, ifindex: s.tunIndex },
    underlay: { address: c.underlay.address.text, device: s.underlayDev, mtu: s.underlayMtu, send: c.underlay.send },
    batch: c.io.batch,
    offload: c.io.offload,
    udpGro: s.udpGro,
    fou: fouStatus(s, counters[COUNTER_NAMES.indexOf('fou_gso_refused')]!, dp),
    queues,
    routesInstalled: [...s.routes],
    encap: encapStatus(s),
    peers: s.peers.map((p, i) => ({
      name: p.name,
      endpoint: formatIPv4(p.endpoint),
      encap: p.encap === ENCAP_FOU ? 'fou' : 'ipip',
      prefixes: c.peers[i]!.prefixes.map((x) => x.text),
      mtu: p.mtu,
      baseMtu: p.baseMtu,
      pmtuLearnedSecondsAgo: p.pmtuLearnedAt ? Math.round((Date.now() - p.pmtuLearnedAt) / 1000) : null,
      // Queue 0 alone hears underlay ICMP; a packet any queue accepted since proves the peer
      // reachable again (RFC 2003 §5 soft state).
      reachable: unreachableAt[i] === 0 || peerSums[i]!.lastRxAt > unreachableAt[i]!,
      unreachableReason: unreachableAt[i] === 0 || peerSums[i]!.lastRxAt > unreachableAt[i]! ? null : unreachableReason[i]!,
      lastRxSecondsAgo: peerSums[i]!.lastRxAt ? Math.round((Date.now() - peerSums[i]!.lastRxAt) / 1000) : null,
      txPackets: peerSums[i]!.txPackets,
      txBytes: peerSums[i]!.txBytes,
      rxPackets: peerSums[i]!.rxPackets,
      rxBytes: peerSums[i]!.rxBytes,
      nextHop: s.nextHops ? s.nextHops.hopStatus(i) : null,
      path: plainRoutes(c, [c.peers[i]!], s.underlayPrefixLen).length > 0 ? 'plain' : 'tunnel',
    })),
    counters: dp ? named.counters : {},
    drops: dp ? named.drops : {},
    lastErrors,
    failure: null,
    memory: memoryFigures(),
  };
}

/** The report's `encap` part: the mode, the subnet, the routes outside the TUN. */
function encapStatus(s: StatusSource): NonNullable<StatusReport['encap']> {
  const lines = s.underlayRoutes?.lines() ?? { plain: [], blackholes: [] };
  return { mode: s.config.encap.mode, subnet: underlaySubnet(s.config, s.underlayPrefixLen).text, plainRoutes: lines.plain, blackholes: lines.blackholes };
}
