/**
 * The kernel as `NextHops` (src/daemon/nexthop.ts) sees it, for the next-hop tests
 * (test/unit/nexthop*.test.ts): a fake `HopSource` that records every call, two peers on fixed
 * documentation addresses (h2 on-link, h3 behind a gateway), and a logger that records what
 * NextHops logs.
 */
import { Buffer } from 'node:buffer';
import { createLogger, type Logger } from '../../src/daemon/logger.js';
import { NextHops, type HopSource } from '../../src/daemon/nexthop.js';
import type { HopEvents } from '../../src/tun/hop-watch.js';
import type { NeighbourInfo, RouteLookup } from '../../src/tun/netlink.js';
import { ip } from './packets.js';

/** "aa:bb:cc:dd:ee:ff" -> bytes. */
export function mac(s: string): Buffer {
  return Buffer.from(s.split(':').join(''), 'hex');
}

/** A promise with its resolve and reject outside. */
export function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * The kernel's route and neighbour tables as NextHops sees them through `HopSource`. A route is
 * given per destination (a missing one rejects, as RTM_GETROUTE does with ENETUNREACH); every
 * call is recorded, `useNeighbour` with `create` as a boolean.
 */
export class FakeKernel implements HopSource {
  routes = new Map<number, RouteLookup | Error>();
  entries: NeighbourInfo[] = [];
  /** When set, `neighbours()` rejects with it. */
  neighbourError: Error | null = null;
  /** When set, `useNeighbour()` rejects with it (after recording the call). */
  useError: Error | null = null;
  /** When set, `neighbours()` waits for it before answering. */
  gate: Promise<void> | null = null;
  routeCalls: [number, number][] = [];
  neighbourCalls = 0;
  useCalls: [number, number, boolean][] = [];

  async routeGet(dst: number, src: number): Promise<RouteLookup> {
    this.routeCalls.push([dst, src]);
    const r = this.routes.get(dst);
    if (r === undefined) throw new Error('ENETUNREACH');
    if (r instanceof Error) throw r;
    return { ...r };
  }

  async neighbours(): Promise<NeighbourInfo[]> {
    this.neighbourCalls++;
    if (this.gate !== null) await this.gate;
    if (this.neighbourError !== null) throw this.neighbourError;
    return this.entries.map((e) => ({ ...e }));
  }

  async useNeighbour(ifindex: number, dst: number, create?: boolean): Promise<void> {
    this.useCalls.push([ifindex, dst, create === true]);
    if (this.useError !== null) throw this.useError;
  }

  /** Replace the neighbour entry for (ifindex, dst), or add it. */
  neighbour(dst: number, state: number, lladdr: Buffer | undefined, ifindex = ETH0): void {
    this.entries = this.entries.filter((e) => !(e.ifindex === ifindex && e.dst === dst));
    this.entries.push({ ifindex, dst, lladdr, state });
  }
}

/** A FakeKernel that also announces changes, as the kernel's rtnetlink groups do (src/tun/hop-watch.ts). */
export class WatchingKernel extends FakeKernel {
  /** What NextHops subscribed with; the test calls it to announce a change. */
  on: HopEvents | null = null;
  closed = 0;
  /** When set, `watchHops` throws it (the subscription cannot be opened). */
  watchError: Error | null = null;

  watchHops(on: HopEvents): { close(): void } {
    if (this.watchError !== null) throw this.watchError;
    this.on = on;
    return { close: () => void this.closed++ };
  }
}

/** A logger that records what NextHops logs (info: a peer's entry changed; debug: still unusable). */
export function recordingLogger(): { log: Logger; lines: { level: string; obj: Record<string, unknown>; msg: string }[] } {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at =
    (level: string) =>
    (obj: Record<string, unknown>, msg: string): void => {
      lines.push({ level, obj, msg });
    };
  const stub = { info: at('info'), debug: at('debug'), warn: at('warn'), error: at('error'), trace: at('trace'), fatal: at('fatal'), child: () => stub };
  return { log: stub as unknown as Logger, lines };
}

export const ETH0 = 2;
export const ETH1 = 3;
export const LOCAL = ip('192.0.2.1');
/** Peer 0: on-link on eth0. */
export const H2 = ip('192.0.2.2');
/** Peer 1: behind the gateway GW on eth0. */
export const H3 = ip('198.51.100.7');
export const GW = ip('192.0.2.254');
export const MAC_A = 'ff:ee:dd:cc:bb:aa';
export const MAC_B = '80:01:02:03:04:85';
export const MAC_C = '02:00:00:00:00:01';

/** A kernel with both peers routed (H2 on-link, H3 via GW) and no neighbour entries yet. */
export function kernel<K extends FakeKernel = FakeKernel>(make: () => K = () => new FakeKernel() as K): K {
  const k = make();
  k.routes.set(H2, { oif: ETH0, gateway: undefined });
  k.routes.set(H3, { oif: ETH0, gateway: GW });
  return k;
}

/** NextHops over `k` for peers h2 (index 0) and h3 (index 1), recording onChange calls. */
export function hops(k: FakeKernel, log: Logger = createLogger('silent')): { nh: NextHops; changes: number[] } {
  const changes: number[] = [];
  const nh = new NextHops(k, [H2, H3], ['h2', 'h3'], LOCAL, log, (i) => changes.push(i));
  return { nh, changes };
}
