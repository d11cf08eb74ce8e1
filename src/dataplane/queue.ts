/**
 * One data-path queue built from the frozen config, the same way on the main thread (queue 0,
 * src/daemon/daemon.ts) and in each queue worker (src/daemon/queue-worker.ts), with no I/O of
 * its own. Flow of this file:
 *   - `QueueConfig`: the part of the config a queue reads (the daemon's frozen Config has it);
 *   - `queueIds`: the ID plan that keeps the queues' outer Identifications apart;
 *   - `icmpLimits`: each queue's share of the ICMP rate;
 *   - `buildTunnel`: the pure tunnel core (peers, prefix table, encapsulation policy);
 *   - `createQueue`: all of the above, the Dataplane on the queue's fds, its JIT warm-up
 *     (warmup.ts) and a quiet heap after it (heap.ts); the caller starts it;
 *   - `reloadQueue`: a config reload on a running queue: a new tunnel core from the new peer
 *     set, what stays carried over from the old one, swapped in between two batches.
 */
import type { Logger } from 'pino';
import { ENCAP_FOU, ENCAP_IPIP, Peer, Tunnel } from '../ipip/index.js';
import { PrefixTable } from '../routing/table.js';
import { Dataplane } from './dataplane.js';
import { PeerFigures } from './figures.js';
import { quietHeap } from './heap.js';
import { random16 } from './random.js';
import type { FouOptions } from './fou.js';
import type { DataplaneIo } from './io.js';
import { WARM_UP_ROUNDS, warmUp, warmUpFlows } from './warmup.js';

/** What a queue reads from the validated, frozen config (src/daemon/config.ts `Config`). */
export interface QueueConfig {
  readonly tun: { readonly address?: { readonly addr: number } | undefined };
  readonly underlay: { readonly address: { readonly value: number } };
  readonly peers: readonly {
    readonly name: string;
    readonly endpoint: { readonly value: number };
    readonly mtu?: number | undefined;
    readonly prefixes: readonly { readonly addr: number; readonly len: number }[];
    /** `fou`: IPIP over UDP (fou.ts); default ipip. */
    readonly encap?: 'ipip' | 'fou' | undefined;
  }[];
  readonly encap: { readonly ttl: number | 'inherit'; readonly tos: number | 'inherit'; readonly df: 'inherit' | 'always' };
  readonly icmp: { readonly rate: number; readonly burst: number };
  readonly io: { readonly batch: number; readonly offload: boolean };
}

/**
 * Where a queue's outer IDs start and what they advance by: with `queues` > 1, queue q of peer
 * i starts at `starts[i] + q` and advances by the smallest power of two >= `queues`, so no two
 * queues ever use the same ID toward one endpoint (RFC 6864 §4.1), and each queue still goes
 * 65536 / step packets before repeating one. `starts` are random per peer (RFC 6864 §4.1: IDs
 * do not repeat across daemon restarts); the main thread draws them and hands them to workers.
 */
export interface QueueIds {
  starts: readonly number[];
  queue: number;
  step: number;
}

/** The ID plan for queue `queue` of `queues`, on random starts (or the given ones). */
export function queueIds(peers: number, queue: number, queues: number, starts?: readonly number[]): QueueIds {
  let step = 1;
  while (step < queues) step <<= 1;
  return { starts: starts ?? random16(peers), queue, step };
}

/**
 * One queue's share of the ICMP errors ipipd may send (`icmp.rate` per second, `icmp.burst` at
 * once): each of `queues` has its own token bucket, so the daemon as a whole keeps to the config.
 */
export function icmpLimits(config: QueueConfig, queues: number): { icmpRate: number; icmpBurst: number } {
  return {
    icmpRate: Math.max(1, Math.floor(config.icmp.rate / queues)),
    icmpBurst: Math.max(1, Math.floor(config.icmp.burst / queues)),
  };
}

/** Build the pure tunnel core (peers, prefix table, encap policy) from a validated config. */
export function buildTunnel(config: QueueConfig, tunMtu: number, ids?: QueueIds, fouMtu?: number): { tunnel: Tunnel; peers: Peer[] } {
  const plan = ids ?? queueIds(config.peers.length, 0, 1);
  const peers = config.peers.map(
    (p, index) =>
      new Peer({
        index,
        name: p.name,
        endpoint: p.endpoint.value,
        mtu: Math.min(p.mtu ?? tunMtu, tunMtu),
        initialId: (plan.starts[index]! + plan.queue) & 0xffff,
        idStep: plan.step,
        encap: p.encap === 'fou' ? ENCAP_FOU : ENCAP_IPIP,
      }),
  );
  const routes = PrefixTable.build(
    config.peers.flatMap((p, i) => p.prefixes.map((x) => ({ addr: x.addr, len: x.len, value: peers[i]! }))),
  );
  const tunnel = new Tunnel({
    local: config.underlay.address.value,
    routes,
    peers,
    ttl: config.encap.ttl,
    tos: config.encap.tos,
    df: config.encap.df,
    mtu: tunMtu,
    // FOU peers: the underlay MTU - 28, never above the TUN's (default: 8 below it).
    fouMtu: Math.min(tunMtu, fouMtu ?? tunMtu - 8),
  });
  return { tunnel, peers };
}

/** What differs from queue to queue, and what the caller found out while setting up. */
export interface QueueSpec {
  /** This queue's number, 0..queues-1 (queue 0 runs on the main thread). */
  queue: number;
  queues: number;
  /** The per-peer random ID starts (`queueIds`); drawn here when absent (queue 0). */
  idStarts?: readonly number[];
  tunFd: number;
  rawFd: number;
  /** The raw ICMP socket (queue 0 alone reads underlay ICMP), or -1. */
  icmpFd?: number;
  tunMtu: number;
  /** Largest datagram the raw socket may hand us (outer header included). */
  underlayMax: number;
  /** Offload mode with UDP_L4 on the TUN (the daemon probes it). */
  udpGro: boolean;
  /** Source address of the ICMP errors written into the TUN, int32. */
  icmpSource: number;
  log: Logger;
  /** Queue 0: a path MTU it learns goes to the other queues. */
  onPathMtu?: (peer: Peer) => void;
  /** `underlay.send: packet`: this queue's AF_PACKET fd and next-hop table. */
  packet?: { fd: number; hops: Int32Array };
  /** Tests: the I/O to use instead of the native binding. */
  io?: DataplaneIo;
  /** FOU: the UDP sockets (fou.ts), when a peer may use FOU. */
  fou?: FouOptions;
  /** FOU: the tunnel MTU toward FOU peers, underlay MTU - 28 (default: the TUN MTU - 8). */
  fouMtu?: number;
}

export interface Queue {
  dataplane: Dataplane;
  tunnel: Tunnel;
  peers: Peer[];
  /** The ID starts this queue used (queue 0 hands them to the workers). */
  idStarts: readonly number[];
  /** The JIT warm-up: packets processed, how long it took, and of that the full GC after it (heap.ts). */
  warmUp: { packets: number; ms: number; gcMs: number };
}

/** Build queue `spec.queue` from the config and warm it up; not started. */
export function createQueue(c: QueueConfig, spec: QueueSpec): Queue {
  const ids = queueIds(c.peers.length, spec.queue, spec.queues, spec.idStarts);
  const { tunnel, peers } = buildTunnel(c, spec.tunMtu, ids, spec.fouMtu);
  const dataplane = new Dataplane({
    tunFd: spec.tunFd,
    rawFd: spec.rawFd,
    icmpFd: spec.icmpFd ?? -1,
    tunnel,
    icmpSource: spec.icmpSource,
    // The ICMP rate is the daemon's: each queue has its share.
    ...icmpLimits(c, spec.queues),
    batch: c.io.batch,
    offload: c.io.offload,
    udpGro: spec.udpGro,
    tunMtu: spec.tunMtu,
    underlayMax: spec.underlayMax,
    log: spec.log,
    ...(spec.onPathMtu ? { onPathMtu: spec.onPathMtu } : {}),
    ...(spec.packet ? { packet: spec.packet } : {}),
    ...(spec.io ? { io: spec.io } : {}),
    ...(spec.fou ? { fou: spec.fou } : {}),
  });
  // JIT warm-up (warmup.ts): the real data path over synthetic packets, into the discard fd;
  // nothing leaves the process, and the peers' state is put back.
  const t0 = performance.now();
  let packets: number;
  try {
    packets = warmUp(dataplane, warmUpFlows(c, tunnel), WARM_UP_ROUNDS);
  } catch (err) {
    dataplane.close();
    throw err;
  }
  // The warm-up's garbage collected now, and no memory-reducer GC later (heap.ts: they were the
  // 15-45 ms outliers of the round trip).
  const gcMs = quietHeap();
  return { dataplane, tunnel, peers, idStarts: ids.starts, warmUp: { packets, ms: Math.round(performance.now() - t0), gcMs: Math.round(gcMs * 10) / 10 } };
}

/** What a reload hands every queue (plain data: it is posted to the queue workers as it is). */
export interface QueueReload {
  /** The new config, or the part a queue reads, with the peer set to run (configured and kernel-learned). */
  config: QueueConfig;
  /** Per new peer: the index of the same peer (by name) in the old set, or -1 for a new one. */
  carry: readonly number[];
  /** Per new peer: a random ID start (main thread), used where the ID sequence is not carried. */
  idStarts: readonly number[];
}

/**
 * Apply a reload to the running queue `dp` whose peers are `old`: build the new tunnel core,
 * carry over each peer that stays (by `r.carry`): its outer-ID sequence when its endpoint is
 * unchanged (RFC 6864 §4.1), its learned path MTU when its configured MTU is unchanged, its
 * counters, last packet time and reachability; then swap (Dataplane.setTunnel) and apply the
 * queue's share of the ICMP limits. Runs between two batches (the caller is an event handler on
 * the queue's own thread). A removed peer's packets stay in the global counters. Returns the new peers.
 */
export function reloadQueue(dp: Dataplane, old: readonly Peer[], r: QueueReload, queue: number, queues: number, tunMtu: number): Peer[] {
  const { tunnel, peers } = buildTunnel(r.config, tunMtu, queueIds(r.config.peers.length, queue, queues, r.idStarts), dp.tunnel.fouMtu);
  const was = dp.figures.peers;
  const figures = new PeerFigures(peers.length);
  peers.forEach((p, i) => {
    const j = r.carry[i] ?? -1;
    const o = j >= 0 ? old[j] : undefined;
    if (o === undefined) return;
    if (o.endpoint === p.endpoint) p.inheritSoftState(o);
    if (o.baseMtu === p.baseMtu && o.mtu < p.mtu) {
      p.mtu = o.mtu;
      p.pmtuLearnedAt = o.pmtuLearnedAt;
    }
    figures.carry(i, was, j);
    figures.lastRxAt[i] = was.lastRxAt[j]!;
    figures.unreachableAt[i] = was.unreachableAt[j]!;
    figures.unreachableReason[i] = was.unreachableReason[j] ?? null;
  });
  dp.setTunnel(tunnel, figures);
  dp.icmpErrors.setLimits(icmpLimits(r.config, queues));
  return peers;
}
