/**
 * Topology: the one wrapper around scripts/netns-setup.sh, for the bench and the integration
 * tests alike. It lives in tools/netns/, beside neither of them, because both use it: bench/
 * runs from dist/bench (tsconfig.build.json compiles tools/ to dist/tools), the tests run it
 * from source under vitest. The rest of the module: exec.ts (commands, in a namespace or not),
 * namespaces.ts (listing, prefixes, bare namespaces, whether namespaces work here) and
 * safety-net.ts (what tears it all down on every exit path).
 *
 *   const topo = await Topology.up({ hosts: 2 });        // namespaces t<5 hex>-h1, -h1p1, ...
 *   const echo = await topo.serve(h2.ns, ['udp-echo', '--bind', h2.underlay, '--port', '7000']);
 *   const r = await topo.traffic(h1.ns, ['udp-ping', '--to', h2.underlay, '--port', '7000', '--count', '3']);
 *   await topo.down();                                   // kills what it spawned, deletes namespaces
 *
 * Flow of this file: the topology.json types; Topology.up() (registered with the safety net
 * before the script runs, so that a signal during "up" still tears down); running processes
 * inside a namespace (exec, spawn, and the traffic fixture: traffic/serve); down() and the
 * synchronous downSync() the safety net calls.
 */
import { type ChildProcess, type SpawnOptions, spawn as spawnChild, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RunOptions, type RunResult, inNs, runCommand, sleep } from './exec.js';
import { ROOT, SETUP_SCRIPT, freshPrefix, listNamespaces } from './namespaces.js';
import { killSync, register, trackChild } from './safety-net.js';

// ---------------------------------------------------------------------------------------------
// topology.json, as written by scripts/netns-setup.sh

export type Underlay = 'direct' | 'switch' | 'router';

export interface PodInfo {
  /** "h1p1" */
  name: string;
  /** Namespace, "<prefix>-h1p1". */
  ns: string;
  /** eth0's /32 address, block base + 9 + j. */
  address: string;
  /** The host-side gateway, block base + 1. */
  gateway: string;
  /** The host-side veth, "p<j>". */
  hostDev: string;
}

export interface HostInfo {
  /** "h1" */
  name: string;
  ns: string;
  /** ul0's address (no prefix length). */
  underlay: string;
  underlayDev: 'ul0';
  underlayPrefixLen: number;
  /** The underlay subnet ul0 is on: "192.0.2.0/24", or on the router underlay "192.0.2.0/25" or "192.0.2.128/25". */
  underlaySubnet: string;
  /** The node's pod block, e.g. "198.51.100.0/25" (up to 4 hosts) or "198.51.100.16/28" (5..32). */
  block: string;
  /** Block base: the address ipipd puts on its TUN (/32). */
  tunAddress: string;
  /** Block base + 1, on every host-side pod veth. */
  gateway: string;
  /** Absolute path of the generated ipipd config. */
  config: string;
  /** Absolute path of the control socket named in that config. */
  socket: string;
  /** With --bgp: this host's BIRD files. */
  bird?: BirdFiles;
  pods: PodInfo[];
}

/** A BIRD's files in the output directory (netns-setup.sh --bgp writes the config, BIRD the rest). */
export interface BirdFiles {
  config: string;
  /** Its control socket (bird -s, birdc -s). */
  socket: string;
  pidFile: string;
  log: string;
}

export type BgpMode = 'mesh' | 'rr';
export type IpipMode = 'always' | 'cross-subnet';

/** netns-setup.sh --bgp: who is in the BGP configs, and the route reflector (rr). */
export interface BgpInfo {
  mode: BgpMode;
  /** h1..h<members> are in the configs (the others may join). */
  members: number;
  ipipMode: IpipMode;
  as: number;
  rr?: { ns: string; address: string; bird: BirdFiles };
}

export interface TopologyInfo {
  prefix: string;
  underlay: Underlay;
  underlayMtu: number;
  podMtu: number;
  /** The pod blocks' prefix length: 25 up to 4 hosts, 28 for 5..32. */
  blockLen: number;
  /** The pools the blocks are cut from: ["198.51.100.0/24", "203.0.113.0/24"]. */
  pools: string[];
  outDir: string;
  hosts: HostInfo[];
  switch?: { ns: string; bridge: string };
  router?: { ns: string; a0: string; b0: string };
  bgp?: BgpInfo;
}

export interface TopologyOptions {
  /** The namespaces' prefix; default a fresh "t" + 5 hex (freshPrefix). */
  prefix?: string;
  /** 2..32 (default 2). */
  hosts?: number;
  pods?: number;
  underlay?: Underlay;
  underlayMtu?: number;
  podMtu?: number;
  /** ipipd configs with routes.source: kernel and BIRD configs (netns-setup.sh --bgp). */
  bgp?: BgpMode;
  bgpMembers?: number;
  ipipMode?: IpipMode;
}

/** The outcome of a traffic.js run: its exit code and its one JSON line (null if none). */
export interface TrafficResult {
  code: number | null;
  json: Record<string, any> | null;
  stdout: string;
  stderr: string;
}

/** A traffic.js server (tcp-sink, udp-echo) that announced it listens. */
export interface TrafficServer {
  child: ChildProcess;
  /** The port it listens on (useful with --port 0). */
  port: number;
  /** Settles when the process ends. */
  result: Promise<TrafficResult>;
  /** SIGTERM, then the result (udp-echo reports its counts and exits 0). */
  stop(): Promise<TrafficResult>;
}

/** The traffic fixture (test/fixtures/traffic.ts, built): the tests' clients and servers, the bench's ping fallback. */
export const TRAFFIC_JS = join(ROOT, 'dist', 'test', 'fixtures', 'traffic.js');

// ---------------------------------------------------------------------------------------------

export class Topology {
  readonly prefix: string;
  readonly info: TopologyInfo;
  private readonly children = new Set<ChildProcess>();
  private readonly unregister: () => void;
  private isDown = false;
  private serial = 0;

  private constructor(prefix: string, info: TopologyInfo) {
    this.prefix = prefix;
    this.info = info;
    this.unregister = register(this);
  }

  /**
   * Builds a topology under `opts.prefix` (default a fresh "t" + 5 hex) with its files in a new
   * temporary directory. Rejects (leaving nothing behind) if the script fails.
   */
  static async up(opts: TopologyOptions = {}): Promise<Topology> {
    const prefix = opts.prefix ?? freshPrefix('t');
    const outDir = mkdtempSync(join(tmpdir(), `ipipd-${prefix}-`));
    const args = ['up', '--prefix', prefix, '--out', outDir];
    if (opts.hosts !== undefined) args.push('--hosts', String(opts.hosts));
    if (opts.pods !== undefined) args.push('--pods', String(opts.pods));
    if (opts.underlay !== undefined) args.push('--underlay', opts.underlay);
    if (opts.underlayMtu !== undefined) args.push('--underlay-mtu', String(opts.underlayMtu));
    if (opts.podMtu !== undefined) args.push('--pod-mtu', String(opts.podMtu));
    if (opts.bgp !== undefined) args.push('--bgp', opts.bgp);
    if (opts.bgpMembers !== undefined) args.push('--bgp-members', String(opts.bgpMembers));
    if (opts.ipipMode !== undefined) args.push('--ipip-mode', opts.ipipMode);

    // Registered (by the constructor) before the script runs: a signal during "up" still tears down.
    const placeholder = new Topology(prefix, { prefix, underlay: opts.underlay ?? 'direct', underlayMtu: 0, podMtu: 0, blockLen: 0, pools: [], outDir, hosts: [] });
    const r = await runCommand('bash', [SETUP_SCRIPT, ...args], { timeoutMs: 60_000 });
    placeholder.unregister();
    if (r.code !== 0) {
      placeholder.downSync();
      throw new Error(`netns-setup.sh ${args.join(' ')} failed (${r.code ?? r.signal}):\n${r.stderr.trim()}`);
    }
    const info = JSON.parse(readFileSync(join(outDir, 'topology.json'), 'utf8')) as TopologyInfo;
    return new Topology(prefix, info);
  }

  /** Every host, h1 first. */
  get hosts(): HostInfo[] {
    return this.info.hosts;
  }

  /** Host `i` (1-based) or by name ("h2"). */
  host(which: number | string): HostInfo {
    const h = typeof which === 'number' ? this.info.hosts[which - 1] : this.info.hosts.find((x) => x.name === which);
    if (!h) throw new Error(`no host ${which} in ${this.prefix}`);
    return h;
  }

  /** h1's first pod and h2's: the client and the server side of the bench. */
  get podA(): PodInfo {
    return this.host(1).pods[0]!;
  }
  get podB(): PodInfo {
    return this.host(2).pods[0]!;
  }

  /** Runs argv inside namespace `ns` and collects its output; never rejects for a non-zero exit. */
  async exec(ns: string, argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    this.assertUp();
    return runCommand('ip', ['netns', 'exec', ns, ...argv], opts, this.children);
  }

  /**
   * Starts argv inside namespace `ns` (stdio piped unless `opts.stdio` says otherwise). The
   * process is tracked: down() kills it if it is still running.
   */
  spawn(ns: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    this.assertUp();
    const args = inNs(ns, argv);
    const child = spawnChild(args[0]!, args.slice(1), { stdio: 'pipe', ...opts });
    trackChild(child, this.children);
    return child;
  }

  /** Runs traffic.js (a client: tcp-send, udp-ping) in `ns` and parses its JSON line. */
  async traffic(ns: string, args: string[], opts: RunOptions = {}): Promise<TrafficResult> {
    checkBuilt();
    const r = await this.exec(ns, [process.execPath, TRAFFIC_JS, ...args], opts);
    return { code: r.code, json: lastJson(r.stdout), stdout: r.stdout, stderr: r.stderr };
  }

  /**
   * Starts a traffic.js server (tcp-sink, udp-echo) in `ns` with a ready file in the output
   * directory, and resolves once it listens. Rejects if it exits or is not ready in time.
   */
  async serve(ns: string, args: string[], readyTimeoutMs = 10_000): Promise<TrafficServer> {
    checkBuilt();
    const readyFile = join(this.info.outDir, `ready-${process.pid}-${++this.serial}.json`);
    const child = this.spawn(ns, [process.execPath, TRAFFIC_JS, ...args, '--ready-file', readyFile]);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const result: Promise<TrafficResult> = new Promise((resolveResult) => {
      child.on('close', (code) => resolveResult({ code, json: lastJson(stdout), stdout, stderr }));
    });
    const deadline = Date.now() + readyTimeoutMs;
    let exited = false;
    void result.then(() => (exited = true));
    while (!existsSync(readyFile)) {
      if (exited || Date.now() > deadline) {
        child.kill('SIGKILL');
        const r = await result;
        throw new Error(
          `traffic.js ${args.join(' ')} in ${ns} did not get ready (${exited ? `exit ${r.code}` : 'timeout'}): ${r.stdout}${r.stderr}`,
        );
      }
      await sleep(20);
    }
    const port = (JSON.parse(readFileSync(readyFile, 'utf8')) as { port: number }).port;
    rmSync(readyFile, { force: true });
    return {
      child,
      port,
      result,
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        return result;
      },
    };
  }

  /**
   * Kills every tracked process, runs the script's `down` (which also kills anything left inside
   * the namespaces), checks that no namespace with the prefix is left and removes the output
   * directory. Idempotent.
   */
  async down(): Promise<void> {
    if (this.isDown) return;
    this.isDown = true;
    await killAll(this.children);
    const r = await runCommand('bash', [SETUP_SCRIPT, 'down', '--prefix', this.prefix, '--out', this.info.outDir], { timeoutMs: 60_000 });
    this.unregister();
    rmSync(this.info.outDir, { recursive: true, force: true });
    const left = listNamespaces(this.prefix);
    if (r.code !== 0 || left.length > 0) {
      throw new Error(`netns-setup.sh down --prefix ${this.prefix} failed (${r.code}): ${r.stderr.trim()} left: ${left.join(' ')}`);
    }
  }

  /** Synchronous last-resort teardown, for the safety net (exit and signal handlers). */
  downSync(): void {
    this.unregister();
    this.isDown = true;
    killSync(this.children);
    spawnSync('bash', [SETUP_SCRIPT, 'down', '--prefix', this.prefix, '--out', this.info.outDir], { stdio: 'ignore', timeout: 30_000 });
    rmSync(this.info.outDir, { recursive: true, force: true });
  }

  private assertUp(): void {
    if (this.isDown) throw new Error(`topology ${this.prefix} is down`);
  }
}

// ---------------------------------------------------------------------------------------------

function checkBuilt(): void {
  if (!existsSync(TRAFFIC_JS)) throw new Error(`${TRAFFIC_JS} is missing: run 'npm run build' first`);
}

/** The last line of `out` that parses as a JSON object, or null. */
function lastJson(out: string): Record<string, any> | null {
  const lines = out.trim().split('\n').reverse();
  for (const line of lines) {
    try {
      const v: unknown = JSON.parse(line);
      if (v !== null && typeof v === 'object') return v as Record<string, any>;
    } catch {
      // not JSON
    }
  }
  return null;
}

/** SIGTERM, up to 2 s grace, then SIGKILL; resolves when all have exited. */
async function killAll(children: Set<ChildProcess>): Promise<void> {
  const running = [...children].filter((c) => c.exitCode === null && c.signalCode === null);
  await Promise.all(
    running.map(async (c) => {
      const exited = once(c, 'exit').catch(() => undefined);
      c.kill('SIGTERM');
      const timer = setTimeout(() => c.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
    }),
  );
  children.clear();
}
