/**
 * What the main thread and every data-path queue worker (src/daemon/queue-worker.ts) build alike
 * from a validated config, with no I/O: the pure tunnel core (`buildTunnel`), the JIT warm-up's
 * flows (`warmUpFlows`, src/daemon/warmup.ts says why), the ID plan that keeps the queues'
 * outer Identifications apart (`queueIds`), and each queue's share of the ICMP rate
 * (`icmpLimits`).
 */
import { randomInt } from 'node:crypto';
import { PrefixTable } from '../routing/table.js';
import { Peer, Tunnel } from '../ipip/index.js';
import type { Config } from '../daemon/config.js';
import type { WarmFlow } from './warmup.js';

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
  return { starts: starts ?? Array.from({ length: peers }, () => randomInt(0x10000)), queue, step };
}

/**
 * One queue's share of the ICMP errors ipipd may send (`icmp.rate` per second, `icmp.burst` at
 * once): each of `queues` has its own token bucket, so the daemon as a whole keeps to the config.
 */
export function icmpLimits(config: Config, queues: number): { icmpRate: number; icmpBurst: number } {
  return {
    icmpRate: Math.max(1, Math.floor(config.icmp.rate / queues)),
    icmpBurst: Math.max(1, Math.floor(config.icmp.burst / queues)),
  };
}

/** Build the pure tunnel core (peers, prefix table, encap policy) from a validated config. */
export function buildTunnel(config: Config, tunMtu: number, ids?: QueueIds): { tunnel: Tunnel; peers: Peer[] } {
  const local = config.underlay.address.value;
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
      }),
  );
  const routes = PrefixTable.build(
    config.peers.flatMap((p, i) => p.prefixes.map((x) => ({ addr: x.addr, len: x.len, value: peers[i]! }))),
  );
  const tunnel = new Tunnel({
    local,
    routes,
    peers,
    ttl: config.encap.ttl,
    tos: config.encap.tos,
    df: config.encap.df,
    mtu: tunMtu,
  });
  return { tunnel, peers };
}

/** Rounds of synthetic batches in the JIT warm-up (each both ways, 1..64 packets). */
export const WARM_UP_ROUNDS = 2000;

/**
 * The warm-up's flows, one per peer: an inner address the peer owns (the first of its prefixes
 * that routes to it, host part 1 when there is room) and one of ours that routes to no peer and
 * is no endpoint (the TUN's address, or the first such of a few candidates).
 */
export function warmUpFlows(c: Config, tunnel: Tunnel): WarmFlow[] {
  const usable = (a: number): boolean => !tunnel.isTunnelAddress(a) && tunnel.routes.lookup(a) === undefined;
  const candidates = [c.tun.address?.addr, 0x0a000001, 0x64400001, 0xc6120001 | 0, 0xac100001 | 0, 0xc0a80001 | 0];
  const local = candidates.find((a): a is number => a !== undefined && usable(a));
  if (local === undefined) return [];
  const flows: WarmFlow[] = [];
  c.peers.forEach((p, i) => {
    const peer = tunnel.peers[i]!;
    for (const x of p.prefixes) {
      const remote = x.len < 31 ? (x.addr + 1) | 0 : x.addr;
      if (!tunnel.isTunnelAddress(remote) && tunnel.routes.lookup(remote) === peer) {
        flows.push({ endpoint: peer.endpoint, remote, local });
        return;
      }
    }
  });
  return flows;
}

