/**
 * Cluster: a Topology made with `netns-setup.sh --bgp`, with ipipd (routes.source: kernel) and
 * BIRD running on its member hosts, as a Calico node runs tunl0 and BIRD (README, "A cluster
 * with BIRD"). For the cluster demo (tools/netns/cluster-demo.ts) and test/integration/cluster.test.ts.
 *
 *   const c = await Cluster.up({ hosts: 9, members: 8, bgp: 'mesh' });  // h9 not in BGP yet
 *   await c.waitConverged();                    // every kernel table and every ipipd agree
 *   await c.join();                             // h9's ipipd and BIRD start, the others reconfigure
 *   await c.withdraw('h3');                     // birdc disable own_block on h3
 *   await c.down();                             // every process by pid, then the namespaces
 *
 * Flow of this file: up() (topology, the route reflector's BIRD, then per host its ipipd and,
 * once the TUN exists, its BIRD: BIRD resolves `ifname` when it exports, so the TUN must be
 * there first); join, withdraw and announce (what changes BGP, none restarting anything);
 * down(). What the cluster should look like, and the pings, are in cluster-checks.ts.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { queryControl } from '../../src/daemon/control.js';
import { must, runCommand, sleep, waitFor } from './exec.js';
import { ROOT } from './namespaces.js';
import { type BgpMode, type BirdFiles, type HostInfo, type IpipMode, Topology, type Underlay } from './topology.js';

export const IPIPD_BIN = join(ROOT, 'bin', 'ipipd.js');
export const BGP_SCRIPT = join(ROOT, 'scripts', 'netns-bgp.sh');

export interface ClusterOptions {
  /** Hosts in the topology (2..32). */
  hosts: number;
  /** h1..h<members> start in BGP (default all); the others can join(). */
  members?: number;
  bgp: BgpMode;
  /** Default switch. */
  underlay?: Underlay;
  /** Default: cross-subnet on the router underlay, always otherwise (netns-setup.sh). */
  ipipMode?: IpipMode;
  prefix?: string;
}

/** A host's two processes. */
interface HostProcs {
  ipipd: ChildProcess;
  bird: ChildProcess;
  ipipdLog: () => string;
}

export class Cluster {
  /** Hosts whose block is withdrawn (withdraw()), by name. */
  readonly withdrawn = new Set<string>();
  private readonly procs = new Map<string, HostProcs>();
  private rrBird: ChildProcess | undefined;

  private constructor(
    readonly topo: Topology,
    /** h1..h<members> are in BGP. */
    private memberCount: number,
  ) {}

  static async up(opts: ClusterOptions): Promise<Cluster> {
    const members = opts.members ?? opts.hosts;
    const topo = await Topology.up({
      hosts: opts.hosts,
      underlay: opts.underlay ?? 'switch',
      bgp: opts.bgp,
      bgpMembers: members,
      ...(opts.ipipMode ? { ipipMode: opts.ipipMode } : {}),
      ...(opts.prefix ? { prefix: opts.prefix } : {}),
    });
    const c = new Cluster(topo, members);
    try {
      const rr = topo.info.bgp?.rr;
      if (rr) c.rrBird = await c.startBird(rr.ns, rr.bird, 'route reflector');
      await Promise.all(c.members.map((h) => c.startHost(h)));
    } catch (e) {
      await topo.down();
      throw e;
    }
    return c;
  }

  get mode(): BgpMode {
    return this.topo.info.bgp!.mode;
  }
  get ipipMode(): IpipMode {
    return this.topo.info.bgp!.ipipMode;
  }
  /** The hosts in BGP, h1 first. */
  get members(): HostInfo[] {
    return this.topo.hosts.slice(0, this.memberCount);
  }
  /** The BIRD processes' pids, and the route reflector's: for checking they are gone after down(). */
  get birdPids(): number[] {
    return [...[...this.procs.values()].map((p) => p.bird), ...(this.rrBird ? [this.rrBird] : [])].map((c) => c.pid ?? -1);
  }

  /**
   * The next host joins: the configs are rendered again with it (netns-setup's confd step), its
   * ipipd and its BIRD start, then the BIRDs that must know it take the new configs with `birdc
   * configure` (every member in a mesh, the route reflector alone with rr). Nothing restarts.
   * Resolves with the host and when (Date.now()) its BIRD was ready.
   */
  async join(): Promise<{ host: HostInfo; birdAt: number }> {
    const host = this.topo.hosts[this.memberCount];
    if (!host) throw new Error(`no host left to join (${this.memberCount} of ${this.topo.hosts.length})`);
    await must(['bash', BGP_SCRIPT, 'render', '--out', this.topo.info.outDir, '--members', String(this.memberCount + 1)]);
    const sockets = this.mode === 'mesh' ? this.members.map((h) => h.bird!.socket) : [this.topo.info.bgp!.rr!.bird.socket];
    // The newcomer first: the others, once configured, then find its BIRD listening.
    const birdAt = await this.startHost(host);
    this.memberCount++;
    await Promise.all(sockets.map((s) => birdc(s, 'configure', /^Reconfigured/m)));
    return { host, birdAt };
  }

  /** Host `name` stops announcing its block (its static protocol disabled; BGP withdraws it). */
  async withdraw(name: string): Promise<void> {
    await birdc(this.topo.host(name).bird!.socket, 'disable own_block', /own_block: disabled/);
    this.withdrawn.add(name);
  }

  /** ...and announces it again. */
  async announce(name: string): Promise<void> {
    await birdc(this.topo.host(name).bird!.socket, 'enable own_block', /own_block: enabled/);
    this.withdrawn.delete(name);
  }

  /** ipipd's live prefix table on `host` (`ipipd routes`). */
  async ipipdRoutes(host: HostInfo): Promise<{ prefix: string; endpoint: string; source: string; txPackets: number }[]> {
    const r = JSON.parse(await queryControl(host.socket, { cmd: 'routes' })) as { routes: { prefix: string; endpoint: string; source: string; txPackets: number }[] };
    return r.routes;
  }

  /** "ipipd on h2 exited (0)", one per ipipd or BIRD of a member (or the reflector) that is no longer running. */
  exited(): string[] {
    const gone = (c: ChildProcess): boolean => c.exitCode !== null || c.signalCode !== null;
    const out: string[] = [];
    for (const [name, p] of this.procs) {
      if (gone(p.ipipd)) out.push(`ipipd on ${name} exited (${p.ipipd.exitCode ?? p.ipipd.signalCode})`);
      if (gone(p.bird)) out.push(`BIRD on ${name} exited (${p.bird.exitCode ?? p.bird.signalCode})`);
    }
    if (this.rrBird && gone(this.rrBird)) out.push(`the route reflector's BIRD exited (${this.rrBird.exitCode ?? this.rrBird.signalCode})`);
    return out;
  }

  /** The last lines of a member's ipipd log (for failure messages). */
  ipipdLog(name: string): string {
    return this.procs.get(name)?.ipipdLog().slice(-4000) ?? '';
  }

  /** Stops every process (SIGTERM, by pid; ipipd removes what it made), then the namespaces. */
  async down(): Promise<void> {
    await this.topo.down();
    this.procs.clear();
  }

  /** ipipd first (it makes the TUN BIRD's routes name), then BIRD; resolves when BIRD is ready (Date.now()). */
  private async startHost(host: HostInfo): Promise<number> {
    const { child: ipipd, log } = await startIpipd(this.topo, host);
    const bird = await this.startBird(host.ns, host.bird!, host.name);
    this.procs.set(host.name, { ipipd, bird, ipipdLog: log });
    return Date.now();
  }

  /** BIRD in the foreground (so the pid is ours to kill), ready once `birdc show status` answers. */
  private async startBird(ns: string, files: BirdFiles, who: string): Promise<ChildProcess> {
    const bird = this.topo.spawn(ns, ['bird', '-f', '-c', files.config, '-s', files.socket, '-P', files.pidFile], { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      if (bird.exitCode !== null) break;
      if ((await birdcRaw(files.socket, 'show status')).code === 0) return bird;
      await sleep(50);
    }
    throw new Error(`BIRD for ${who} did not start (exit ${bird.exitCode}); its log ${files.log}`);
  }
}

/**
 * Starts `ipipd run --config CONFIG` in `host`'s namespace (tracked by the topology) and resolves
 * once its status says "up"; `log()` is the last 64 KiB it wrote. Rejects if it exits first or
 * is not up within 30 s.
 */
export async function startIpipd(topo: Topology, host: HostInfo, config = host.config): Promise<{ child: ChildProcess; log: () => string }> {
  const child = topo.spawn(host.ns, ['node', IPIPD_BIN, 'run', '--config', config]);
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-65536);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const up = await waitFor(async () => {
    if (child.exitCode !== null) return true;
    try {
      return (JSON.parse(await queryControl(host.socket, { cmd: 'status' }, 1000)) as { state: string }).state === 'up';
    } catch {
      return false;
    }
  }, 30_000, 100);
  if (!up || child.exitCode !== null) throw new Error(`ipipd on ${host.name} did not come up (exit ${child.exitCode}):\n${out}`);
  return { child, log: () => out };
}

async function birdcRaw(socket: string, cmd: string): Promise<{ code: number | null; out: string }> {
  const r = await runCommand('birdc', ['-s', socket, ...cmd.split(' ')], { timeoutMs: 10_000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

/**
 * `birdc -s SOCKET CMD...`; throws unless it exits 0 and says what `expect` says (birdc exits 0
 * when BIRD refuses a command: a configuration with errors, an unknown protocol).
 */
export async function birdc(socket: string, cmd: string, expect: RegExp): Promise<string> {
  const out = await must(['birdc', '-s', socket, ...cmd.split(' ')], { timeoutMs: 10_000 });
  if (!expect.test(out)) throw new Error(`birdc -s ${socket} ${cmd}: ${out.trim()}`);
  return out;
}
