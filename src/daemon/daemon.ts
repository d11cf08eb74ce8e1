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
 *      (io.queues > 1: a multi-queue TUN, one fd per queue)           undo: close each fd
 *   3. IPv6 off, MTU (default underlay MTU - 20), txqueuelen, up      (gone with the device)
 *   4. the TUN's address                                             undo: delete the address
 *   5. the raw protocol-4 socket bound to the underlay address        undo: close
 *      (io.queues > 1: one per queue, steered by inner flow)         undo: close each
 *      and a raw ICMP socket there (path MTU, RFC 2003 §4 relaying)   undo: close
 *   6. the dataplane pollers (queue 0, this thread)                   undo: stop, close
 *      and one worker thread per further queue (src/daemon/queues.ts) undo: stop, wait for exit
 *   7. one kernel route per peer prefix into the TUN                  undo: delete each route
 *   8. the control socket                                            undo: close, unlink
 * close(): state `closing`, stop reading (dataplane.stop, then the queue workers, whose final
 * counters join the final report), then pop the stack. Nothing is queued inside ipipd (each
 * batch is processed synchronously), so stopping the pollers is the drain. A queue worker that
 * fails while up is fatal: `onFatal` is called (the CLI shuts down and exits 1), since the
 * flows steered to that queue would otherwise be silently lost.
 * A failing undo step is logged and the rest still run: close() never throws.
 */
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { formatIPv4 } from '../routing/prefix.js';
import { IPPROTO_ICMP, type Peer } from '../ipip/index.js';
import { native } from '../tun/native.js';
import { Rtnl, type RouteSpec } from '../tun/netlink.js';
import type { Config } from './config.js';
import { ControlServer } from './control.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import { COUNTER_NAMES, nameFigures, queueSnapshot } from '../dataplane/figures.js';
import { hopEntry } from '../dataplane/hops.js';
import { createQueue } from '../dataplane/queue.js';
import { VERDICT_NAMES } from '../ipip/verdict.js';
import { IpipdError, errnoName } from './errors.js';
import type { Logger } from './logger.js';
import { QueueWorkers, type QueueSnapshot, type QueueWorkerData } from './queues.js';
import { NextHops, type HopStatus } from './nexthop.js';

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
  underlay: { address: string; device: string; mtu: number; send: 'raw' | 'packet' };
  batch: number;
  /** Offload mode (io.offload): TSO/GRO across the TUN. */
  offload: boolean;
  /** Offload mode on a kernel that takes UDP_L4 super-packets from a TUN (6.2+): UDP GRO too. */
  udpGro: boolean;
  /** Per data-path queue (io.queues; queue 0 is the main thread): what it forwarded each way. */
  queues: { queue: number; tunRxPackets: number; txPackets: number; underlayRxPackets: number; rxPackets: number }[];
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
    /** `underlay.send: packet`: where this peer's packets go on the link (null with `raw`). */
    nextHop: HopStatus | null;
  }[];
  counters: Record<string, number>;
  drops: Record<string, number>;
  lastErrors: Record<string, string>;
}

export class Daemon {
  state: DaemonState = 'created';
  private readonly undo: Undo[] = [];
  private readonly rtnl = new Rtnl();
  private dataplane: Dataplane | undefined;
  private queues: QueueWorkers | undefined;
  /** `underlay.send: packet`: the peers' next hops, refreshed from the kernel's tables. */
  private nextHops: NextHops | undefined;
  /** Called once if the data path fails while up (a queue worker died); the CLI shuts down. */
  onFatal: ((err: Error) => void) | undefined;
  /** A queue worker that failed while the daemon was still starting. */
  private queueFailure: Error | undefined;
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
      if (this.queueFailure) throw new IpipdError('ERR_QUEUE', this.queueFailure.message, { cause: this.queueFailure });
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
    // Offload mode (io.offload): every read and write carries a virtio_net_hdr; the kernel may
    // hand us TCP super-packets and partial checksums, which the dataplane completes. Several
    // queues: the same name opened once per queue, with the same flags.
    const queues = c.io.queues;
    const cores = availableParallelism();
    if (queues > cores) {
      this.log.warn({ queues, cores }, 'io.queues is larger than the number of CPUs: the extra queue threads only contend for the same cores');
    }
    const tunOptions = {
      ...(c.io.offload ? { vnetHdr: true, offload: native.TUN_F_CSUM | native.TUN_F_TSO4 } : {}),
      ...(queues > 1 ? { multiQueue: true } : {}),
    };
    const tunFds: number[] = [];
    let tun: { fd: number; name: string } | undefined;
    for (let q = 0; q < queues; q++) {
      let opened: { fd: number; name: string };
      try {
        opened = native.openTun(c.tun.name, tunOptions);
      } catch (err) {
        const what = q === 0 ? `cannot create TUN ${c.tun.name}` : `cannot open queue ${q} of TUN ${c.tun.name}`;
        throw new IpipdError('ERR_TUN_OPEN', `${what}: ${errnoName(err) ?? err}${errnoName(err) === 'EPERM' ? ' (needs root or CAP_NET_ADMIN)' : ''}`, { cause: err });
      }
      tun ??= opened;
      tunFds.push(opened.fd);
      this.undo.push({ what: q === 0 ? `close TUN ${opened.name}` : `close TUN ${opened.name} queue ${q}`, run: () => native.close(opened.fd) });
    }
    if (tun === undefined) throw new Error('io.queues < 1'); // the config schema forbids it
    // TUNSETOFFLOAD is the device's, not a queue's: probed once, after every queue is open.
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
    // Several queues: one socket each, keeping only its share of the inner flows (every raw
    // socket would otherwise get a copy of every datagram).
    const rawFds: number[] = [];
    for (let q = 0; q < queues; q++) {
      let fd: number;
      try {
        fd = native.openRaw(c.underlay.address.value, c.io.socket_buffer, c.io.socket_buffer, undefined, queues > 1 ? { index: q, count: queues } : undefined);
      } catch (err) {
        throw new IpipdError('ERR_RAW_SOCKET', `cannot open the raw IPIP socket${queues > 1 ? ` of queue ${q}` : ''} on ${c.underlay.address.text}: ${errnoName(err) ?? err}`, { cause: err });
      }
      rawFds.push(fd);
      this.undo.push({ what: queues > 1 ? `close raw socket of queue ${q}` : 'close raw socket', run: () => native.close(fd) });
    }
    let icmpFd: number;
    try {
      icmpFd = native.openRaw(c.underlay.address.value, 1 << 18, 0, IPPROTO_ICMP);
    } catch (err) {
      throw new IpipdError('ERR_RAW_SOCKET', `cannot open the raw ICMP socket on ${c.underlay.address.text}: ${errnoName(err) ?? err}`, { cause: err });
    }
    this.undo.push({ what: 'close ICMP socket', run: () => native.close(icmpFd) });

    // underlay.send: packet: an AF_PACKET socket per queue, and each peer's next hop from the
    // kernel's route and neighbour tables before the first packet (src/daemon/nexthop.ts); a
    // changed entry goes to the queue workers as a message.
    let packet: { fd: number; hops: Int32Array } | undefined;
    const packetFds: number[] = [];
    if (c.underlay.send === 'packet') {
      for (let q = 0; q < queues; q++) {
        let fd: number;
        try {
          fd = native.openPacket(c.io.socket_buffer);
        } catch (err) {
          throw new IpipdError('ERR_RAW_SOCKET', `cannot open the AF_PACKET socket${queues > 1 ? ` of queue ${q}` : ''} (underlay.send: packet): ${errnoName(err) ?? err}`, { cause: err });
        }
        packetFds.push(fd);
        this.undo.push({ what: queues > 1 ? `close AF_PACKET socket of queue ${q}` : 'close AF_PACKET socket', run: () => native.close(fd) });
      }
      const hops = new NextHops(
        this.rtnl,
        c.peers.map((p) => p.endpoint.value),
        c.peers.map((p) => p.name),
        c.underlay.address.value,
        this.log.child({ subsystem: 'nexthop' }),
        (i) => this.queues?.setPeerHop(i, hopEntry(hops.table, i)),
      );
      await hops.start();
      this.nextHops = hops;
      this.undo.push({ what: 'stop next-hop refresh', run: () => hops.stop() });
      packet = { fd: packetFds[0]!, hops: hops.table };
    }

    // 6. The data path: queue 0 here, built, warmed up (src/dataplane/warmup.ts) and started.
    const icmpSource = ta ? ta.addr : c.underlay.address.value;
    const underlayMax = Math.max(this.underlayMtu, this.tunMtu + OUTER_MAX);
    const shared = { queues, tunMtu: this.tunMtu, underlayMax, udpGro: this.udpGro, icmpSource };
    const q0 = createQueue(c, {
      ...shared,
      queue: 0,
      tunFd: tunFds[0]!,
      rawFd: rawFds[0]!,
      icmpFd,
      log: this.log.child({ subsystem: 'dataplane' }),
      // Queue 0 alone reads underlay ICMP: a path MTU it learns goes to the other queues.
      onPathMtu: (peer) => this.queues?.setPeerMtu(peer.index, peer.mtu),
      ...(packet ? { packet } : {}),
    });
    const dp = q0.dataplane;
    this.peers = q0.peers;
    this.dataplane = dp;
    this.undo.push({ what: 'close dataplane', run: () => dp.close() });
    this.log.debug({ packets: q0.warmUp.packets, ms: q0.warmUp.ms }, 'data path warmed up');
    dp.start();
    if (queues > 1) {
      const data: QueueWorkerData[] = [];
      for (let q = 1; q < queues; q++) {
        data.push({
          ...shared,
          queue: q,
          config: c,
          tunFd: tunFds[q]!,
          rawFd: rawFds[q]!,
          idStarts: [...q0.idStarts],
          logLevel: this.log.level,
          packetFd: packetFds[q] ?? -1,
          hops: packet ? Array.from(packet.hops) : [],
        });
      }
      let workers: QueueWorkers;
      try {
        workers = await QueueWorkers.start(data, this.log.child({ subsystem: 'queues' }), (err) => this.queueFailed(err));
      } catch (err) {
        throw new IpipdError('ERR_QUEUE', `cannot start the data-path queues: ${err instanceof Error ? err.message : err}`, { cause: err });
      }
      this.queues = workers;
      // A next hop that changed while the workers started was not posted to them: post all.
      if (packet) for (let i = 0; i < c.peers.length; i++) workers.setPeerHop(i, hopEntry(packet.hops, i));
      // Before the fds are closed (they were pushed earlier, so they are popped later).
      this.undo.push({ what: `stop ${queues - 1} queue worker(s)`, run: async () => void (await workers.stop()) });
    }

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
    // The workers stop first; their last figures are part of the final report.
    const finals = (await this.queues?.stop()) ?? [];
    const final = wasUp ? this.report(finals) : undefined;
    await this.release();
    this.state = 'closed';
    if (final) {
      final.state = 'closed';
      this.log.info({ counters: final.counters, drops: nonZero(final.drops), peers: final.peers }, 'closed: final counters');
    }
    return final;
  }

  /** The daemon's state and figures, every queue's added up (asks the queue workers). */
  async status(): Promise<StatusReport> {
    if (this.queues === undefined || this.state !== 'up') return this.report([]);
    const settled = await this.queues.snapshotsSettled();
    const snaps = settled.filter((x): x is QueueSnapshot => x !== null);
    const report = this.report(snaps);
    settled.forEach((x, i) => {
      if (x === null) report.lastErrors[`queue${i + 1}`] = 'no answer';
    });
    return report;
  }

  /** The report from this thread's figures (queue 0) plus the workers' `snaps` (queues 1..). */
  private report(snaps: readonly QueueSnapshot[]): StatusReport {
    const c = this.config;
    const dp = this.dataplane;
    const all = dp ? [queueSnapshot(dp.figures), ...snaps] : [];
    const counters = new Float64Array(COUNTER_NAMES.length);
    const drops = new Float64Array(VERDICT_NAMES.length);
    const lastErrors: Record<string, string> = {};
    const queueFigures = (q: number, k: ArrayLike<number>): StatusReport['queues'][number] => ({
      queue: q,
      tunRxPackets: k[COUNTER_NAMES.indexOf('tun_rx_packets')]!,
      txPackets: k[COUNTER_NAMES.indexOf('tx_packets')]!,
      underlayRxPackets: k[COUNTER_NAMES.indexOf('underlay_rx_packets')]!,
      rxPackets: k[COUNTER_NAMES.indexOf('rx_packets')]!,
    });
    const queues: StatusReport['queues'] = [];
    const peerSums = this.peers.map(() => ({ txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, lastRxAt: 0 }));
    all.forEach((q, i) => {
      q.counters.forEach((v, j) => (counters[j] += v));
      q.drops.forEach((v, j) => (drops[j] += v));
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
    const unreachableAt = dp ? dp.figures.peers.unreachableAt : new Float64Array(this.peers.length);
    const unreachableReason = dp ? dp.figures.peers.unreachableReason : [];
    return {
      state: this.state,
      pid: process.pid,
      uptimeSeconds: this.startedAt ? Math.round((Date.now() - this.startedAt) / 1000) : 0,
      tun: { name: c.tun.name, mtu: this.tunMtu, address: c.tun.address?.text ?? null, ifindex: this.tunIndex },
      underlay: { address: c.underlay.address.text, device: this.underlayDev, mtu: this.underlayMtu, send: c.underlay.send },
      batch: c.io.batch,
      offload: c.io.offload,
      udpGro: this.udpGro,
      queues,
      routesInstalled: [...this.routes],
      peers: this.peers.map((p, i) => ({
        name: p.name,
        endpoint: formatIPv4(p.endpoint),
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
        nextHop: this.nextHops ? this.nextHops.hopStatus(i) : null,
      })),
      counters: dp ? named.counters : {},
      drops: dp ? named.drops : {},
      lastErrors,
    };
  }

  /** A queue worker failed while up: log it and hand it to `onFatal` (the CLI shuts down). */
  private queueFailed(err: Error): void {
    // Still starting (routes, control socket): start() fails instead, and undoes what it did.
    if (this.state === 'starting') {
      this.queueFailure ??= err;
      return;
    }
    if (this.state !== 'up') return; // closing: nothing more to do
    this.log.error({ subsystem: 'queues', err: err.message }, 'a data-path queue failed; shutting down');
    this.onFatal?.(new IpipdError('ERR_QUEUE', err.message, { cause: err }));
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
          this.queues?.setPeerMtu(p.index, p.mtu);
        }
      }
    }, Math.min(expires, 30_000));
    this.pmtuTimer.unref();
  }

  /** Log a counter summary at most every `log.stats_interval` seconds, and only if it changed. */
  private startStatsLog(): void {
    const every = this.config.log.stats_interval;
    if (!every || !this.dataplane) return;
    let last = '';
    this.statsTimer = setInterval(() => {
      void this.status().then((s) => {
        const key = JSON.stringify([s.counters, s.drops]);
        if (key === last || this.state !== 'up') return;
        last = key;
        this.log.info({ subsystem: 'stats', counters: s.counters, drops: nonZero(s.drops) }, 'counters');
      });
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

function nonZero(o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== 0));
}
