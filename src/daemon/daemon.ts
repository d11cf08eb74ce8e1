/**
 * The daemon's lifecycle: acquire the system resources in order, run the dataplane, release
 * exactly what was acquired in reverse order (STYLE rule 13, after wireguard-go device.go).
 *
 *     created --start()--> starting --ok--> up --close()--> closing --> closed
 *                             |                                ^
 *                             +--failure: undo what was done --+  (start() rethrows)
 *
 * start(), in order (each step that changes the system pushes its undo on a stack):
 *   1. look up the underlay address on this host (nothing touched yet: a wrong address fails here)
 *   2. refuse a TUN name that already exists; open the TUN           undo: close fd (device goes)
 *   3. IPv6 off, MTU (default underlay MTU - 20), txqueuelen, up      (gone with the device)
 *   4. the TUN's address                                             undo: delete the address
 *   5. the raw protocol-4 socket bound to the underlay address        undo: close
 *      and a raw ICMP socket there (path MTU, RFC 2003 §4 relaying)   undo: close
 *   6. the dataplane pollers                                          undo: stop, close
 *   7. one kernel route per peer prefix into the TUN                  undo: delete each route
 *   8. the control socket                                            undo: close, unlink
 * close(): state `closing`, stop reading (dataplane.stop), then pop the stack. Nothing is queued
 * inside ipipd (each batch is processed synchronously), so stopping the pollers is the drain.
 * A failing undo step is logged and the rest still run: close() never throws.
 */
import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { PrefixTable } from '../routing/table.js';
import { formatIPv4 } from '../routing/prefix.js';
import { IPPROTO_ICMP, Peer, Tunnel } from '../ipip/index.js';
import { native } from '../tun/native.js';
import { Rtnl, type RouteSpec } from '../tun/netlink.js';
import type { Config } from './config.js';
import { ControlServer } from './control.js';
import { Dataplane } from './dataplane.js';
import { IpipdError, errnoName } from './errors.js';
import type { Logger } from './logger.js';
import type { WarmFlow } from './warmup.js';

export type DaemonState = 'created' | 'starting' | 'up' | 'closing' | 'closed';

/** Outer header + the largest IPv4 options a peer may add; bounds the raw receive slot. */
const OUTER_MAX = 60;

interface Undo {
  what: string;
  run: () => void | Promise<void>;
}

export interface StatusReport {
  state: DaemonState;
  pid: number;
  uptimeSeconds: number;
  tun: { name: string; mtu: number; address: string | null; ifindex: number };
  underlay: { address: string; device: string; mtu: number };
  batch: number;
  /** Offload mode (io.offload): TSO/GRO across the TUN. */
  offload: boolean;
  /** Offload mode on a kernel that takes UDP_L4 super-packets from a TUN (6.2+): UDP GRO too. */
  udpGro: boolean;
  routesInstalled: string[];
  peers: {
    name: string;
    endpoint: string;
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
  }[];
  counters: Record<string, number>;
  drops: Record<string, number>;
  lastErrors: Record<string, string>;
}

/** Build the pure tunnel core (peers, prefix table, encap policy) from a validated config. */
export function buildTunnel(config: Config, tunMtu: number): { tunnel: Tunnel; peers: Peer[] } {
  const local = config.underlay.address.value;
  const peers = config.peers.map(
    (p, index) =>
      new Peer({
        index,
        name: p.name,
        endpoint: p.endpoint.value,
        mtu: Math.min(p.mtu ?? tunMtu, tunMtu),
        // RFC 6864 §4.1: a random start keeps IDs from repeating across daemon restarts.
        initialId: randomInt(0x10000),
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

export class Daemon {
  state: DaemonState = 'created';
  private readonly undo: Undo[] = [];
  private readonly rtnl = new Rtnl();
  private dataplane: Dataplane | undefined;
  private peers: Peer[] = [];
  private startedAt = 0;
  private tunMtu = 0;
  private udpGro = false;
  private tunIndex = 0;
  private underlayDev = '';
  private underlayMtu = 0;
  private readonly routes: string[] = [];
  private statsTimer: NodeJS.Timeout | undefined;
  private pmtuTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly config: Config,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    if (this.state !== 'created') throw new Error(`start() in state ${this.state}`);
    this.state = 'starting';
    try {
      await this.acquire();
    } catch (err) {
      this.log.error({ err: err instanceof Error ? err.message : String(err) }, 'start failed; undoing what was set up');
      await this.release();
      this.state = 'closed';
      throw err;
    }
    this.startedAt = Date.now();
    this.state = 'up';
    this.startStatsLog();
    this.startPmtuAging();
    this.log.info(
      { tun: this.config.tun.name, mtu: this.tunMtu, underlay: this.config.underlay.address.text, peers: this.peers.length, routes: this.routes.length },
      'up',
    );
  }

  private async acquire(): Promise<void> {
    const c = this.config;
    const tunLog = this.log.child({ subsystem: 'tun' });

    // 1. The underlay address must be ours, before anything is touched.
    const addrs = await this.rtnl.addresses();
    const links = await this.rtnl.links();
    const owner = addrs.find((a) => a.address === c.underlay.address.value);
    const ownerLink = owner && links.find((l) => l.index === owner.index);
    if (!owner || !ownerLink) {
      throw new IpipdError('ERR_UNDERLAY_ADDRESS', `underlay.address ${c.underlay.address.text} is not configured on any interface of this host`);
    }
    if (c.underlay.device !== undefined && ownerLink.name !== c.underlay.device) {
      throw new IpipdError('ERR_UNDERLAY_ADDRESS', `underlay.address ${c.underlay.address.text} is on ${ownerLink.name}, not on underlay.device ${c.underlay.device}`);
    }
    this.underlayDev = ownerLink.name;
    this.underlayMtu = ownerLink.mtu;
    // RFC 2003 §5.1: the tunnel MTU is the underlay MTU less the 20-byte outer header.
    this.tunMtu = c.tun.mtu ?? ownerLink.mtu - 20;
    if (links.some((l) => l.name === c.tun.name)) {
      throw new IpipdError('ERR_TUN_EXISTS', `a device named ${c.tun.name} already exists; choose another tun.name or remove it`);
    }

    // 2. The TUN device: it exists as long as this fd is open.
    let tun: { fd: number; name: string };
    try {
      // Offload mode (io.offload): every read and write carries a virtio_net_hdr; the kernel may
      // hand us TCP super-packets and partial checksums, which the dataplane completes.
      tun = native.openTun(c.tun.name, c.io.offload ? { vnetHdr: true, offload: native.TUN_F_CSUM | native.TUN_F_TSO4 } : undefined);
    } catch (err) {
      throw new IpipdError('ERR_TUN_OPEN', `cannot create TUN ${c.tun.name}: ${errnoName(err) ?? err}${errnoName(err) === 'EPERM' ? ' (needs root or CAP_NET_ADMIN)' : ''}`, { cause: err });
    }
    this.undo.push({ what: `close TUN ${tun.name}`, run: () => native.close(tun.fd) });
    if (c.io.offload) this.udpGro = probeUdpL4(tun.fd, tun.name);
    const link = await this.rtnl.link(tun.name);
    if (!link) throw new IpipdError('ERR_TUN_SETUP', `TUN ${tun.name} was opened but is not listed by rtnetlink`);
    this.tunIndex = link.index;

    // 3. IPv6 off first (autoconfiguration would send packets into a fresh TUN), then MTU, up.
    try {
      writeFileSync(`/proc/sys/net/ipv6/conf/${tun.name}/disable_ipv6`, '1');
    } catch (err) {
      // No IPv6 in this kernel or namespace: nothing to turn off. Non-IPv4 would be counted anyway.
      if (errnoName(err) !== 'ENOENT') tunLog.warn({ code: errnoName(err) }, 'could not disable IPv6 on the TUN; IPv6 packets will be dropped as not_ipv4');
    }
    // The ICMP errors ipipd writes into the TUN come from the TUN's own address; the kernel
    // drops packets arriving with a local source unless accept_local is on for that device.
    try {
      writeFileSync(`/proc/sys/net/ipv4/conf/${tun.name}/accept_local`, '1');
    } catch (err) {
      throw new IpipdError('ERR_TUN_SETUP', `cannot set net.ipv4.conf.${tun.name}.accept_local=1: ${errnoName(err) ?? err}`, { cause: err });
    }
    try {
      await this.rtnl.setLink(link.index, { mtu: this.tunMtu, txqlen: c.tun.txqueuelen, up: true });
    } catch (err) {
      throw new IpipdError('ERR_TUN_SETUP', `cannot set ${tun.name} up with mtu ${this.tunMtu}: ${errnoName(err) ?? err}`, { cause: err });
    }

    // 4. The TUN's own address.
    const ta = c.tun.address;
    if (ta) {
      try {
        await this.rtnl.addAddress(link.index, ta.addr, ta.len);
      } catch (err) {
        throw new IpipdError('ERR_TUN_SETUP', `cannot add address ${ta.text} to ${tun.name}: ${errnoName(err) ?? err}`, { cause: err });
      }
      this.undo.push({ what: `delete address ${ta.text}`, run: () => this.rtnl.delAddress(link.index, ta.addr, ta.len) });
    }

    // 5. The underlay socket.
    let rawFd: number;
    try {
      rawFd = native.openRaw(c.underlay.address.value, c.io.socket_buffer, c.io.socket_buffer);
    } catch (err) {
      throw new IpipdError('ERR_RAW_SOCKET', `cannot open the raw IPIP socket on ${c.underlay.address.text}: ${errnoName(err) ?? err}`, { cause: err });
    }
    this.undo.push({ what: 'close raw socket', run: () => native.close(rawFd) });
    let icmpFd: number;
    try {
      icmpFd = native.openRaw(c.underlay.address.value, 1 << 18, 0, IPPROTO_ICMP);
    } catch (err) {
      throw new IpipdError('ERR_RAW_SOCKET', `cannot open the raw ICMP socket on ${c.underlay.address.text}: ${errnoName(err) ?? err}`, { cause: err });
    }
    this.undo.push({ what: 'close ICMP socket', run: () => native.close(icmpFd) });

    // 6. The data path.
    const { tunnel, peers } = buildTunnel(c, this.tunMtu);
    this.peers = peers;
    const dp = new Dataplane({
      tunFd: tun.fd,
      rawFd,
      icmpFd,
      tunnel,
      icmpSource: ta ? ta.addr : c.underlay.address.value,
      icmpRate: c.icmp.rate,
      icmpBurst: c.icmp.burst,
      batch: c.io.batch,
      offload: c.io.offload,
      udpGro: this.udpGro,
      tunMtu: this.tunMtu,
      underlayMax: Math.max(this.underlayMtu, this.tunMtu + OUTER_MAX),
      log: this.log.child({ subsystem: 'dataplane' }),
    });
    this.dataplane = dp;
    this.undo.push({ what: 'close dataplane', run: () => dp.close() });
    // JIT warm-up (src/daemon/warmup.ts): the real data path over synthetic packets, into the
    // discard fd; nothing leaves the process, and the peers' state is put back.
    const warmT0 = performance.now();
    const warmed = dp.warmUp(warmUpFlows(c, tunnel), WARM_UP_ROUNDS);
    this.log.debug({ packets: warmed, ms: Math.round(performance.now() - warmT0) }, 'data path warmed up');
    dp.start();

    // 7. Kernel routes: every peer prefix into the TUN.
    if (c.routes.install) {
      for (const p of c.peers) {
        for (const x of p.prefixes) {
          const spec: RouteSpec = { dst: x.addr, dstLen: x.len, oif: link.index, table: c.routes.table };
          if (c.routes.metric !== undefined) spec.metric = c.routes.metric;
          try {
            await this.rtnl.addRoute(spec);
          } catch (err) {
            throw new IpipdError('ERR_ROUTE_ADD', `cannot add route ${x.text} dev ${tun.name} (peer ${p.name}): ${errnoName(err) ?? err}`, { cause: err });
          }
          this.routes.push(`${x.text} dev ${tun.name}`);
          this.undo.push({ what: `delete route ${x.text}`, run: () => this.rtnl.delRoute(spec) });
        }
      }
    }

    // 8. The control socket.
    if (c.control.socket !== false) {
      const ctl = await ControlServer.listen(c.control.socket, () => this.status());
      this.undo.push({ what: `close control socket ${ctl.path}`, run: () => ctl.close() });
    }
  }

  /** Pop the undo stack; every step runs even if an earlier one fails. */
  private async release(): Promise<void> {
    this.dataplane?.stop();
    while (this.undo.length > 0) {
      const u = this.undo.pop()!;
      try {
        await u.run();
        this.log.debug({ step: u.what }, 'released');
      } catch (err) {
        this.log.error({ step: u.what, code: errnoName(err), err: err instanceof Error ? err.message : String(err) }, 'cleanup step failed');
      }
    }
    this.rtnl.close();
  }

  /** Shut down: stop reading, release in reverse order, log the final counters. Idempotent. */
  async close(reason = 'shutdown'): Promise<StatusReport | undefined> {
    if (this.state === 'closing' || this.state === 'closed') return undefined;
    const wasUp = this.state === 'up';
    this.state = 'closing';
    if (this.statsTimer) clearInterval(this.statsTimer);
    if (this.pmtuTimer) clearInterval(this.pmtuTimer);
    this.log.info({ reason }, 'closing');
    this.dataplane?.stop();
    const final = wasUp ? this.status() : undefined;
    await this.release();
    this.state = 'closed';
    if (final) {
      final.state = 'closed';
      this.log.info({ counters: final.counters, drops: nonZero(final.drops), peers: final.peers }, 'closed: final counters');
    }
    return final;
  }

  status(): StatusReport {
    const c = this.config;
    const snap = this.dataplane?.snapshot();
    return {
      state: this.state,
      pid: process.pid,
      uptimeSeconds: this.startedAt ? Math.round((Date.now() - this.startedAt) / 1000) : 0,
      tun: { name: c.tun.name, mtu: this.tunMtu, address: c.tun.address?.text ?? null, ifindex: this.tunIndex },
      underlay: { address: c.underlay.address.text, device: this.underlayDev, mtu: this.underlayMtu },
      batch: c.io.batch,
      offload: c.io.offload,
      udpGro: this.udpGro,
      routesInstalled: [...this.routes],
      peers: this.peers.map((p, i) => ({
        name: p.name,
        endpoint: formatIPv4(p.endpoint),
        prefixes: c.peers[i]!.prefixes.map((x) => x.text),
        mtu: p.mtu,
        baseMtu: p.baseMtu,
        pmtuLearnedSecondsAgo: p.pmtuLearnedAt ? Math.round((Date.now() - p.pmtuLearnedAt) / 1000) : null,
        reachable: p.unreachableAt === 0,
        unreachableReason: p.unreachableReason,
        lastRxSecondsAgo: p.lastRxAt ? Math.round((Date.now() - p.lastRxAt) / 1000) : null,
        txPackets: p.txPackets,
        txBytes: p.txBytes,
        rxPackets: p.rxPackets,
        rxBytes: p.rxBytes,
      })),
      counters: snap?.counters ?? {},
      drops: snap?.drops ?? {},
      lastErrors: { ...(this.dataplane?.lastErrors ?? {}) } as Record<string, string>,
    };
  }

  /**
   * RFC 1191 §6.3: a learned path MTU is soft state; after `underlay.pmtu_expires` seconds the
   * peer goes back to its configured MTU, and a smaller path shows itself again by ICMP.
   */
  private startPmtuAging(): void {
    const expires = this.config.underlay.pmtu_expires * 1000;
    if (!expires) return;
    this.pmtuTimer = setInterval(() => {
      const now = Date.now();
      for (const p of this.peers) {
        if (p.pmtuLearnedAt !== 0 && now - p.pmtuLearnedAt >= expires) {
          this.log.info({ peer: p.name, from: p.mtu, to: p.baseMtu }, 'learned path MTU expired');
          p.mtu = p.baseMtu;
          p.pmtuLearnedAt = 0;
        }
      }
    }, Math.min(expires, 30_000));
    this.pmtuTimer.unref();
  }

  /** Log a counter summary at most every `log.stats_interval` seconds, and only if it changed. */
  private startStatsLog(): void {
    const every = this.config.log.stats_interval;
    if (!every || !this.dataplane) return;
    const dp = this.dataplane;
    let last = '';
    this.statsTimer = setInterval(() => {
      const snap = dp.snapshot();
      const key = JSON.stringify(snap);
      if (key === last) return;
      last = key;
      this.log.info({ subsystem: 'stats', counters: snap.counters, drops: nonZero(snap.drops) }, 'counters');
    }, every * 1000);
    this.statsTimer.unref();
  }
}

/**
 * UDP segmentation offload on the TUN `fd` (Linux 6.2+): TUNSETOFFLOAD with TUN_F_USO4|USO6 on
 * top of TSO (EINVAL on older kernels, as wireguard-go probes it). With it the kernel takes
 * UDP_L4 super-packets written to the TUN (ipipd's UDP GRO) and may hand ipipd UDP super-packets
 * from sockets that send with UDP_SEGMENT (cut into datagrams before encapsulation). Returns
 * whether it is on; any failure but EINVAL is a setup error.
 */
function probeUdpL4(fd: number, name: string): boolean {
  try {
    native.setTunOffload(fd, native.TUN_F_CSUM | native.TUN_F_TSO4 | native.TUN_F_USO4 | native.TUN_F_USO6);
  } catch (err) {
    if (errnoName(err) === 'EINVAL') return false;
    throw new IpipdError('ERR_TUN_SETUP', `cannot set offloads on TUN ${name}: ${errnoName(err) ?? err}`, { cause: err });
  }
  return true;
}

/** Rounds of synthetic batches in the JIT warm-up (each both ways, 1..64 packets). */
const WARM_UP_ROUNDS = 2000;

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

function nonZero(o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== 0));
}
