/**
 * What the daemon holds on the system, and the start-up steps that acquire it: one method per
 * numbered step of the state diagram in src/daemon/daemon.ts, in its order (`Daemon.acquire`
 * calls them one after the other). A step that changes the system pushes its undo on the stack
 * as soon as the change is made, so a step that fails halfway leaves only undoable changes
 * behind; `release` pops the stack, in reverse order of acquisition (STYLE rule 13).
 *
 * Flow, in the order of this file: 0 `recover` (what a dead ipipd left, src/daemon/recovery.ts)
 * and `recordState` (the state file, once the TUN exists), 1 `checkHost` (underlay address, TUN
 * name; nothing touched), 2 `openTun`, 3 `setUpTun`, 4 `addTunAddress`, 5 `openUnderlaySockets`
 * and `openPacketSockets` (`underlay.send: packet`), 6 `startDataPath`, 7 `installRoutes` (with
 * `addPeerRoute` / `delPeerRoute`, which a reload uses too: src/daemon/live.ts), 8
 * `openControlSocket`, `tunGone` (the TUN deleted from outside: what went with it), 9
 * `openMetrics`; then `held`, `pushUndo` (the daemon's own steps) and `release`. Step 7's plain
 * routes (cross-subnet) and blackholes (own blocks) are kept by src/daemon/plain-routes.ts. What the host
 * lets ipipd do (the TUN's offload probe, a missing capability) is asked in src/daemon/host.ts.
 */
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { FOU_ENCAP_LEN, IPPROTO_ICMP, type Peer } from '../ipip/index.js';
import { native } from '../tun/native.js';
import { Rtnl, type RouteSpec } from '../tun/netlink.js';
import { steeringFilter } from '../tun/steering.js';
import { fouInUse, tunOverhead, type Config } from './config-plain.js';
import { ControlServer, type ControlHandler } from './control.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import { fouOptions, openFouSockets, type FouSockets } from './fou-sockets.js';
import { hopEntry } from '../dataplane/hops.js';
import { createQueue } from '../dataplane/queue.js';
import { IpipdError, errnoName } from './errors.js';
import type { Logger } from './logger.js';
import { QueueWorkers, type QueueWorkerData } from './queues.js';
import { NextHops } from './nexthop.js';
import type { MetricsSource } from './metrics.js';
import { removeFile } from './dirs.js';
import { RTPROT_IPIPD, recover, writeState } from './recovery.js';
import { needsCap, probeUdpL4 } from './host.js';
import { plainRoutes, tunnelled, type PlainRoute } from './cross-subnet.js';
import { UnderlayRoutes, installUnderlayRoutes, plannedUnderlayRoutes } from './plain-routes.js';

/** Outer header + the largest IPv4 options a peer may add; bounds the raw receive slot. */
const OUTER_MAX = 60;

interface Undo {
  what: string;
  run: () => void | Promise<void>;
}

/**
 * The system resources of one daemon run, filled in step by step; the daemon reads the public
 * ones for its status report and its shutdown. Each field is written by the step that acquires
 * it, and not after.
 */
export class Resources {
  private readonly undo: Undo[] = [];
  private readonly rtnl = new Rtnl();
  /** Step 1: the device holding the underlay address, and its MTU. */
  underlayDev = '';
  underlayMtu = 0;
  /** Step 1: its ifindex and underlay.address's prefix length on it; step 7: the routes outside the TUN. */
  underlayIndex = 0;
  underlayPrefixLen = 32;
  underlayRoutes: UnderlayRoutes | undefined;
  /** Step 1: the TUN's MTU (configured, or the underlay's less the outer header). */
  tunMtu = 0;
  /** Step 2: the TUN device, one fd per queue; whether it takes UDP super-packets (USO). */
  private tunName = '';
  tunIndex = 0;
  private readonly tunFds: number[] = [];
  udpGro = false;
  /** Step 5: the raw protocol-4 socket of each queue, and the raw ICMP socket. */
  private readonly rawFds: number[] = [];
  private icmpFd = -1;
  /** Step 5, `underlay.send: packet`: an AF_PACKET socket per queue, the peers' next hops. */
  private readonly packetFds: number[] = [];
  private packet: { fd: number; hops: Int32Array } | undefined;
  nextHops: NextHops | undefined;
  /** Step 5, FOU (`fouInUse`): the UDP sockets, their ports, and whether UDP_GRO was taken. */
  fou: FouSockets | undefined;
  /** Step 6: queue 0's data path (this thread), its peers, and the worker threads of the others. */
  dataplane: Dataplane | undefined;
  peers: Peer[] = [];
  queues: QueueWorkers | undefined;
  /** Step 7: the routes installed, as `ip route` shows them, and their specs by prefix (a reload adds and deletes). */
  readonly routes: string[] = [];
  private readonly routeSpecs = new Map<string, RouteSpec>();
  private routesUndo = false;


  /** `queueFailed`: a queue worker failed (while starting or up); the daemon decides what follows. */
  /** `config`: the config being run, its peers the live set (a reload replaces it, src/daemon/live.ts). */
  constructor(
    public config: Config,
    private readonly log: Logger,
    private readonly queueFailed: (err: Error) => void,
  ) {}

  /**
   * 0. Crash recovery (src/daemon/recovery.ts): refuse if the daemon of our state file is
   * alive; remove what a dead one left, and only what it marked as its own.
   */
  async recover(): Promise<void> {
    await recover(this.config, this.rtnl, this.log);
  }

  /** 2, once the TUN exists: the state file that lets the next start clean up after a crash. */
  recordState(): void {
    const path = writeState(this.config, this.tunIndex, plannedUnderlayRoutes(this.config, this.config.peers, this.underlayPrefixLen, this.underlayIndex));
    this.undo.push({ what: `remove state file ${path}`, run: () => void removeFile(path) });
  }

  /** 1. The underlay address must be ours, and the TUN name free, before anything is touched. */
  async checkHost(): Promise<void> {
    const c = this.config;
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
    this.underlayIndex = ownerLink.index;
    this.underlayPrefixLen = owner.prefixLength;
    // RFC 2003 §5.1: the tunnel MTU is the underlay MTU less the outer headers (20 bytes, 28 when every peer uses FOU).
    this.tunMtu = c.tun.mtu ?? ownerLink.mtu - tunOverhead(c);
    if (links.some((l) => l.name === c.tun.name)) {
      throw new IpipdError('ERR_TUN_EXISTS', `a device named ${c.tun.name} already exists; choose another tun.name or remove it`);
    }
  }

  /**
   * 2. The TUN device: it exists as long as its fds are open.
   * Offload mode (io.offload): every read and write carries a virtio_net_hdr; the kernel may
   * hand us TCP super-packets and partial checksums, which the dataplane completes. Several
   * queues: the same name opened once per queue, with the same flags.
   */
  async openTun(): Promise<void> {
    const c = this.config;
    const queues = c.io.queues;
    const cores = availableParallelism();
    if (queues > cores) {
      this.log.warn({ queues, cores }, 'io.queues is larger than the number of CPUs: the extra queue threads only contend for the same cores');
    }
    const tunOptions = {
      ...(c.io.offload ? { vnetHdr: true, offload: native.TUN_F_CSUM | native.TUN_F_TSO4 } : {}),
      ...(queues > 1 ? { multiQueue: true } : {}),
    };
    let tun: { fd: number; name: string } | undefined;
    for (let q = 0; q < queues; q++) {
      let opened: { fd: number; name: string };
      try {
        opened = native.openTun(c.tun.name, tunOptions);
      } catch (err) {
        const what = q === 0 ? `cannot create TUN ${c.tun.name}` : `cannot open queue ${q} of TUN ${c.tun.name}`;
        throw new IpipdError('ERR_TUN_OPEN', `${what}: ${errnoName(err) ?? err}${needsCap(err, 'CAP_NET_ADMIN')}`, { cause: err });
      }
      tun ??= opened;
      this.tunFds.push(opened.fd);
      this.undo.push({ what: q === 0 ? `close TUN ${opened.name}` : `close TUN ${opened.name} queue ${q}`, run: () => native.close(opened.fd) });
    }
    if (tun === undefined) throw new Error('io.queues < 1'); // the config schema forbids it
    this.tunName = tun.name;
    // TUNSETOFFLOAD is the device's, not a queue's: probed once, after every queue is open.
    if (c.io.offload) this.udpGro = probeUdpL4(tun.fd, tun.name);
    const link = await this.rtnl.link(tun.name);
    if (!link) throw new IpipdError('ERR_TUN_SETUP', `TUN ${tun.name} was opened but is not listed by rtnetlink`);
    this.tunIndex = link.index;
  }

  /**
   * 3. IPv6 off first (autoconfiguration would send packets into a fresh TUN), accept_local on,
   * then MTU, queue length, up.
   */
  async setUpTun(): Promise<void> {
    const name = this.tunName;
    const tunLog = this.log.child({ subsystem: 'tun' });
    try {
      writeFileSync(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`, '1');
    } catch (err) {
      // No IPv6 in this kernel or namespace: nothing to turn off. Non-IPv4 would be counted anyway.
      if (errnoName(err) !== 'ENOENT') tunLog.warn({ code: errnoName(err) }, 'could not disable IPv6 on the TUN; IPv6 packets will be dropped as not_ipv4');
    }
    // The ICMP errors ipipd writes into the TUN come from the TUN's own address; the kernel
    // drops packets arriving with a local source unless accept_local is on for that device.
    try {
      writeFileSync(`/proc/sys/net/ipv4/conf/${name}/accept_local`, '1');
    } catch (err) {
      throw new IpipdError('ERR_TUN_SETUP', `cannot set net.ipv4.conf.${name}.accept_local=1: ${errnoName(err) ?? err}`, { cause: err });
    }
    try {
      await this.rtnl.setLink(this.tunIndex, { mtu: this.tunMtu, txqlen: this.config.tun.txqueuelen, up: true });
    } catch (err) {
      throw new IpipdError('ERR_TUN_SETUP', `cannot set ${name} up with mtu ${this.tunMtu}: ${errnoName(err) ?? err}`, { cause: err });
    }
  }

  /** 4. The TUN's own address, if the config gives one. */
  async addTunAddress(): Promise<void> {
    const ta = this.config.tun.address;
    if (!ta) return;
    const index = this.tunIndex;
    try {
      await this.rtnl.addAddress(index, ta.addr, ta.len);
    } catch (err) {
      throw new IpipdError('ERR_TUN_SETUP', `cannot add address ${ta.text} to ${this.tunName}: ${errnoName(err) ?? err}`, { cause: err });
    }
    this.undo.push({ what: `delete address ${ta.text}`, run: () => this.rtnl.delAddress(index, ta.addr, ta.len) });
  }

  /**
   * 5. The underlay sockets, bound to the underlay address: the raw protocol-4 socket and the
   * raw ICMP socket (path MTU, RFC 2003 §4 relaying). Several queues: one protocol-4 socket
   * each, keeping only its share of the inner flows (every raw socket would otherwise get a
   * copy of every datagram).
   */
  openUnderlaySockets(): void {
    const c = this.config;
    const queues = c.io.queues;
    for (let q = 0; q < queues; q++) {
      let fd: number;
      try {
        fd = native.openRaw(c.underlay.address.value, c.io.socket_buffer, c.io.socket_buffer, undefined, queues > 1 ? steeringFilter({ index: q, count: queues }) : undefined);
      } catch (err) {
        throw new IpipdError('ERR_RAW_SOCKET', `cannot open the raw IPIP socket${queues > 1 ? ` of queue ${q}` : ''} on ${c.underlay.address.text}: ${errnoName(err) ?? err}${needsCap(err, 'CAP_NET_RAW')}`, { cause: err });
      }
      this.rawFds.push(fd);
      this.undo.push({ what: queues > 1 ? `close raw socket of queue ${q}` : 'close raw socket', run: () => native.close(fd) });
    }
    let icmpFd: number;
    try {
      icmpFd = native.openRaw(c.underlay.address.value, 1 << 18, 0, IPPROTO_ICMP);
    } catch (err) {
      throw new IpipdError('ERR_RAW_SOCKET', `cannot open the raw ICMP socket on ${c.underlay.address.text}: ${errnoName(err) ?? err}${needsCap(err, 'CAP_NET_RAW')}`, { cause: err });
    }
    this.icmpFd = icmpFd;
    this.undo.push({ what: 'close ICMP socket', run: () => native.close(icmpFd) });
    if (fouInUse(c)) this.openFouSockets();
  }

  /** 5, FOU (src/daemon/fou-sockets.ts): the UDP sockets, closed at exit with the rest. */
  openFouSockets(): void {
    this.fou = openFouSockets(this.config, this.log, (u) => this.undo.push(u));
  }

  /**
   * 5, `underlay.send: packet`: an AF_PACKET socket per queue, and each peer's next hop from the
   * kernel's route and neighbour tables before the first packet (src/daemon/nexthop.ts); a
   * changed entry goes to the queue workers as a message.
   */
  async openPacketSockets(): Promise<void> {
    const c = this.config;
    const queues = c.io.queues;
    if (c.underlay.send !== 'packet') return;
    for (let q = 0; q < queues; q++) {
      let fd: number;
      try {
        fd = native.openPacket(c.io.socket_buffer);
      } catch (err) {
        throw new IpipdError('ERR_RAW_SOCKET', `cannot open the AF_PACKET socket${queues > 1 ? ` of queue ${q}` : ''} (underlay.send: packet): ${errnoName(err) ?? err}${needsCap(err, 'CAP_NET_RAW')}`, { cause: err });
      }
      this.packetFds.push(fd);
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
    this.packet = { fd: this.packetFds[0]!, hops: hops.table };
  }

  /**
   * 6. The data path: queue 0 on this thread, warmed up and started, then one worker thread per
   * further queue (src/daemon/queues.ts), each warmed up before it reads.
   */
  async startDataPath(): Promise<void> {
    const c = this.config;
    const queues = c.io.queues;
    const { tunFds, rawFds, icmpFd, packetFds, packet } = this;
    const ta = c.tun.address;
    const icmpSource = ta ? ta.addr : c.underlay.address.value;
    const underlayMax = Math.max(this.underlayMtu, this.tunMtu + OUTER_MAX);
    // Queue 0 here, built, warmed up (src/dataplane/warmup.ts) and started; the others below.
    const shared = { queues, tunMtu: this.tunMtu, underlayMax, udpGro: this.udpGro, icmpSource, fouMtu: this.underlayMtu - FOU_ENCAP_LEN };
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
      ...(this.fou ? { fou: fouOptions(this.fou, this.fou.recvFd) } : {}),
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
          // Queue 0 alone reads the FOU socket; every queue sends on the shared send sockets.
          ...(this.fou ? { fou: fouOptions(this.fou, -1) } : {}),
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
  }

  /**
   * 7. Kernel routes, if `routes.install`: every peer prefix into the TUN, but with
   * `encap.mode: cross-subnet` a plain route via the endpoint of a peer on the underlay subnet;
   * and a blackhole per `routes.own_blocks` (src/daemon/plain-routes.ts).
   */
  async installRoutes(): Promise<void> {
    const c = this.config;
    const u = new UnderlayRoutes(this.rtnl, this.log, c.routes.table, c.routes.metric, { name: this.underlayDev, index: this.underlayIndex });
    this.underlayRoutes = u;
    this.undo.push({ what: 'remove plain routes and blackholes', run: () => u.release() });
    await installUnderlayRoutes(this, plainRoutes(c, c.peers, this.underlayPrefixLen), c.routes.own_blocks);
    if (!c.routes.install) return;
    for (const p of c.peers) {
      if (!tunnelled(c, p, this.underlayPrefixLen)) continue;
      for (const x of p.prefixes) {
        try {
          await this.addPeerRoute(x);
        } catch (err) {
          throw new IpipdError('ERR_ROUTE_ADD', `cannot add route ${x.text} dev ${this.tunName} (peer ${p.name}): ${errnoName(err) ?? err}`, { cause: err });
        }
      }
    }
  }

  /**
   * Add the kernel route of prefix `x` into the TUN (step 7, and a reload's added prefixes,
   * src/daemon/live.ts). The first one pushes the undo that deletes every route still installed
   * then, newest first; a reload's `delPeerRoute` takes a route off that list.
   */
  async addPeerRoute(x: { text: string; addr: number; len: number }): Promise<void> {
    const c = this.config;
    // Protocol RTPROT_IPIPD marks the route as ipipd's: crash recovery removes only those.
    const spec: RouteSpec = { dst: x.addr, dstLen: x.len, oif: this.tunIndex, table: c.routes.table, protocol: RTPROT_IPIPD };
    if (c.routes.metric !== undefined) spec.metric = c.routes.metric;
    // The prefix's plain route (cross-subnet) is replaced in one step: this route takes it over.
    const replacing = this.underlayRoutes?.hasPlain(x.text) ?? false;
    await this.rtnl.addRoute(spec, replacing);
    if (replacing) this.underlayRoutes!.forgetPlain(x.text);
    if (!this.routesUndo) {
      this.routesUndo = true;
      this.undo.push({ what: 'delete the routes installed', run: () => this.deleteAllRoutes() });
    }
    this.routeSpecs.set(x.text, spec);
    this.routes.push(`${x.text} dev ${this.tunName}`);
  }

  /** Delete the kernel route of prefix `text` that `addPeerRoute` installed (a reload). */
  async delPeerRoute(text: string): Promise<void> {
    const spec = this.routeSpecs.get(text);
    if (!spec) return;
    this.forgetPeerRoute(text);
    await this.rtnl.delRoute(spec);
  }

  /** The TUN route of prefix `text` was replaced by a plain one: no longer ours to list or delete. */
  private forgetPeerRoute(text: string): void {
    this.routeSpecs.delete(text);
    const at = this.routes.indexOf(`${text} dev ${this.tunName}`);
    if (at >= 0) this.routes.splice(at, 1);
  }

  /** Install plain route `r` (cross-subnet), replacing in one step the prefix's TUN route if it has one. */
  async addPlainRoute(r: PlainRoute): Promise<void> {
    const tunnel = this.routeSpecs.has(r.prefix.text);
    await this.underlayRoutes!.addPlain(r, tunnel);
    if (tunnel) this.forgetPeerRoute(r.prefix.text);
  }

  private async deleteAllRoutes(): Promise<void> {
    for (const text of [...this.routeSpecs.keys()].reverse()) {
      try {
        await this.delPeerRoute(text);
        this.log.debug({ step: `delete route ${text}` }, 'released');
      } catch (err) {
        this.log.error({ step: `delete route ${text}`, code: errnoName(err), err: err instanceof Error ? err.message : String(err) }, 'cleanup step failed');
      }
    }
  }

  /** 8. The control socket, unless disabled: every connection gets `answer()` as JSON. */
  async openControlSocket(handlers: Readonly<Record<string, ControlHandler>>): Promise<void> {
    const socket = this.config.control.socket;
    if (socket === false) return;
    const ctl = await ControlServer.listen(socket, handlers, this.log.child({ subsystem: 'control' }));
    this.undo.push({ what: `close control socket ${ctl.path}`, run: () => ctl.close() });
  }

  /**
   * The TUN was deleted from outside: its address and routes went with it. They are no longer
   * listed, and their undo steps are dropped (deleting them would only fail); closing the fds
   * and sockets still runs.
   */
  tunGone(): void {
    this.routes.length = 0;
    for (let i = this.undo.length - 1; i >= 0; i--) {
      if (/^(delete route|delete address|delete the routes installed)/.test(this.undo[i]!.what)) this.undo.splice(i, 1);
    }
  }

  /** 9. The Prometheus exporter (`metrics.listen`, src/daemon/metrics.ts), unless not configured. */
  async openMetrics(source: MetricsSource): Promise<void> {
    const listen = this.config.metrics.listen;
    if (listen === undefined) return;
    // Loaded only when configured: prom-client costs about 2 MiB of heap (docs/performance.md, footprint).
    const { MetricsServer } = await import('./metrics.js');
    const m = await MetricsServer.listen(listen, source, this.log.child({ subsystem: 'metrics' }));
    this.log.info({ subsystem: 'metrics', listen: m.address }, 'metrics: serving /metrics');
    this.undo.push({ what: `close metrics ${m.address}`, run: () => m.close() });
  }

  /** How many changes to the system are held (undo steps on the stack); 0 before the first. */
  get held(): number {
    return this.undo.length;
  }

  /** Push an undo step of the daemon's own (the kernel route watch). */
  pushUndo(what: string, run: () => void | Promise<void>): void {
    this.undo.push({ what, run });
  }

  /** Stop reading, then pop the undo stack; every step runs even if an earlier one fails. */
  async release(): Promise<void> {
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
}
