/**
 * The ways pod A reaches pod B that the bench compares, each set up inside a fresh two-host
 * topology (see docs/performance.md for the diagram):
 *
 *   direct        no tunnel: h1 routes pod B's block via h2's underlay address, and back;
 *   ipipd         this repository's daemon, `ipipd run --config hN.yaml` in each host;
 *   ipipd-2q      the same with `io.queues: 2` (a multi-queue TUN, a worker thread per queue);
 *   ipipd-fou     ipipd with every peer `encap: fou` (IPIP over UDP, UDP_SEGMENT/UDP_GRO);
 *   node-floor    not a tunnel to run: the least a Node.js IPIP data path does (bench/floor.ts),
 *                 ipipd's addon and Readers with a fixed outer header and no checks, the
 *                 reference for what any Node data path's wake-ups cost;
 *   node-floor-udp the same as IP in UDP, quicktun's raw protocol: quicktun's job, in Node;
 *   quicktun      Debian's quicktun, "raw" protocol (IP packets in UDP, no crypto), TUN mode;
 *   wireguard-go  the Go userspace WireGuard, one interface per host.
 *
 * Every mode keeps pods at MTU 1480 (so inner packets are identical) and raises the underlay MTU
 * by its own overhead instead: ipipd and node-floor +20 (1500), quicktun, ipipd-fou and node-floor-udp
 * +28 (1508), wireguard +80 (1560).
 *
 * A mode's start() leaves routes for the other pod block pointing into its device; the bench
 * checks them with `ip route get` and the device counters before it believes any figure.
 */
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Background, hasCommand, inNs, must, run, start, waitFor } from '../tools/netns/exec.js';
import { ROOT } from '../tools/netns/namespaces.js';
import { onCleanup } from '../tools/netns/safety-net.js';
import { type HostInfo, Topology } from '../tools/netns/topology.js';
import type { MemoryFigures } from '../src/daemon/footprint.js';

export type ModeName = 'direct' | 'ipipd' | 'ipipd-2q' | 'ipipd-pkt' | 'ipipd-fou' | 'node-floor' | 'node-floor-udp' | 'quicktun' | 'wireguard-go';
export const ALL_MODES: readonly ModeName[] = ['direct', 'ipipd', 'ipipd-2q', 'ipipd-pkt', 'ipipd-fou', 'node-floor', 'node-floor-udp', 'quicktun', 'wireguard-go'];
/** The modes that run ipipd itself (the ones `--soak` can take). */
export const IPIPD_MODES = ['ipipd', 'ipipd-2q', 'ipipd-pkt', 'ipipd-fou'] as const satisfies readonly ModeName[];
export type IpipdModeName = (typeof IPIPD_MODES)[number];
export const isIpipdMode = (m: string): m is IpipdModeName => (IPIPD_MODES as readonly string[]).includes(m);

export const POD_MTU = 1480;

/** The bench's topology: two hosts with one pod each on a direct veth underlay, pods at POD_MTU. */
export function benchTopology(prefix: string, underlayMtu: number): Promise<Topology> {
  return Topology.up({ prefix, hosts: 2, pods: 1, underlay: 'direct', underlayMtu, podMtu: POD_MTU });
}

/** What a mode needs to start: the run's prefix (for unique device names) and a private directory. */
export interface ModeContext {
  prefix: string;
  tmpDir: string;
}

/** A mode, set up and carrying traffic. */
export interface ActiveMode {
  /** The device on h1 that takes A->B packets, and the one on h2 that hands them to pod B. */
  devs: [string, string];
  /** The tunnel processes, h1's then h2's (none for direct). */
  pids: number[];
  /** Facts for the JSON: versions, settings. */
  facts: Record<string, unknown>;
  /** The daemon's own counters, where it has them (ipipd), per host. */
  counters(): Promise<Record<string, Record<string, number>> | null>;
  /** What each tunnel process says of its own memory (ipipd status `memory`), h1's then h2's; absent for other tunnels. */
  memory?(): Promise<Array<MemoryFigures | null>>;
  /** Why the mode stopped working (a daemon exited), or null. */
  dead(): string | null;
  /** Stops the processes; resolves with warnings (e.g. unclean exit), never throws. */
  stop(): Promise<string[]>;
}

export interface ModeSpec {
  name: ModeName;
  underlayMtu: number;
  /** null when it can run here, else why not. */
  missing(): string | null;
  start(topo: Topology, ctx: ModeContext): Promise<ActiveMode>;
}

/** Routes `other`'s pod block out of `host` through `dev` (or via a gateway on ul0). */
async function routeTo(host: HostInfo, other: HostInfo, dev: string, via?: string): Promise<void> {
  const args = ['ip', '-n', host.ns, 'route', 'add', other.block];
  if (via) args.push('via', via);
  args.push('dev', dev);
  await must(args);
}

/** Stops every background process; an unclean exit becomes a warning. */
async function stopAll(procs: Array<{ name: string; bg: Background }>, graceMs: number): Promise<string[]> {
  const warnings: string[] = [];
  await Promise.all(
    procs.map(async ({ name, bg }) => {
      const r = await bg.stop(graceMs);
      if (r.killed) warnings.push(`${name} did not exit within ${graceMs / 1000} s of SIGTERM (killed)`);
      else if (r.code !== 0 && r.signal !== 'SIGTERM') warnings.push(`${name} exited with ${r.code ?? r.signal}: ${bg.output().trim().slice(-400)}`);
    }),
  );
  return warnings;
}

function deadOf(procs: Array<{ name: string; bg: Background }>): string | null {
  for (const { name, bg } of procs) {
    if (bg.child.exitCode !== null || bg.child.signalCode !== null) {
      return `${name} exited (${bg.child.exitCode ?? bg.child.signalCode}): ${bg.output().trim().slice(-800)}`;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------

const direct: ModeSpec = {
  name: 'direct',
  underlayMtu: 1500,
  missing: () => null,
  async start(topo) {
    const [h1, h2] = topo.hosts;
    await routeTo(h1, h2, 'ul0', h2.underlay);
    await routeTo(h2, h1, 'ul0', h1.underlay);
    return {
      devs: ['ul0', 'ul0'],
      pids: [],
      facts: {},
      counters: async () => null,
      dead: () => null,
      stop: async () => [],
    };
  },
};

// ---------------------------------------------------------------------------------------------

const IPIPD_BIN = join(ROOT, 'bin', 'ipipd.js');

async function ipipdStatus(socket: string): Promise<{ state: string; tun: { name: string; mtu: number }; counters: Record<string, number>; drops: Record<string, number>; memory?: MemoryFigures } | null> {
  const r = await run([process.execPath, IPIPD_BIN, 'status', '--socket', socket, '--json'], { timeoutMs: 10_000 });
  if (r.code !== 0) return null;
  try {
    return JSON.parse(r.stdout);
  } catch {
    return null;
  }
}

/**
 * ipipd with the generated config, or with `io.queues` or `underlay.send: packet` set (a copy
 * of it in the mode's directory).
 */
function ipipdMode(name: ModeName, queues: number, send: 'raw' | 'packet' = 'raw', encap: 'ipip' | 'fou' = 'ipip'): ModeSpec {
  return {
  name,
  // FOU: 28 bytes of outer headers, so the pods keep POD_MTU (the TUN MTU defaults to underlay - 28).
  underlayMtu: encap === 'fou' ? POD_MTU + 28 : 1500,
  missing() {
    if (!existsSync(join(ROOT, 'dist', 'src', 'daemon', 'cli.js'))) return "not built: run 'npm run build'";
    if (!existsSync(join(ROOT, 'build', 'Release', 'ipipd_native.node'))) return "native addon not built: run 'npm ci'";
    return null;
  },
  async start(topo, ctx) {
    const configs = topo.hosts.map((h) => {
      if (queues === 1 && send === 'raw' && encap === 'ipip') return h.config;
      const file = join(ctx.tmpDir, `${h.name}-${name}.yaml`);
      let text = readFileSync(h.config, 'utf8');
      if (send === 'packet') text = text.replace(/^underlay:\n/m, 'underlay:\n  send: packet\n');
      if (queues > 1) text += `io:\n  queues: ${queues}\n`;
      // Every peer entry of the generated config starts with "  - name:".
      if (encap === 'fou') text = text.replace(/^( {2}- name: .*\n)/gm, '$1    encap: fou\n');
      writeFileSync(file, text);
      return file;
    });
    // Both start at once; then each must answer `ipipd status` with state "up".
    const procs = topo.hosts.map((h, i) => ({
      name: `${name} on ${h.name}`,
      bg: start(inNs(h.ns, [process.execPath, IPIPD_BIN, 'run', '--config', configs[i]!])),
    }));
    try {
      for (const [i, h] of topo.hosts.entries()) {
        const { bg } = procs[i];
        let tunName = '';
        // The socket file first (cheap), then `ipipd status` (a node process per try).
        await waitFor(() => existsSync(h.socket) || bg.child.exitCode !== null, 20_000);
        const up = await waitFor(async () => {
          if (bg.child.exitCode !== null || bg.child.signalCode !== null) return true;
          const s = await ipipdStatus(h.socket);
          if (s?.state === 'up') tunName = s.tun.name;
          return s?.state === 'up';
        }, 20_000, 100);
        const why = deadOf(procs);
        if (why) throw new Error(why);
        if (!up) throw new Error(`ipipd on ${h.name} did not answer 'ipipd status' within 20 s:\n${bg.output().slice(-1500)}`);
        if (tunName !== 'ipip0') throw new Error(`ipipd on ${h.name}: unexpected TUN name '${tunName}'`);
      }
    } catch (e) {
      await stopAll(procs, 5000);
      throw e;
    }
    const version = (await run([process.execPath, IPIPD_BIN, '--version'])).stdout.trim();
    return {
      devs: ['ipip0', 'ipip0'],
      pids: procs.map((p) => p.bg.pid),
      facts: { version, queues, send, encap, command: `node bin/ipipd.js run --config hN.yaml (generated by netns-setup.sh${queues > 1 ? `, plus io.queues: ${queues}` : ''}${send === 'packet' ? ', plus underlay.send: packet' : ''}${encap === 'fou' ? ', plus encap: fou on every peer' : ''})` },
      async counters() {
        const out: Record<string, Record<string, number>> = {};
        for (const h of topo.hosts) {
          const s = await ipipdStatus(h.socket);
          if (!s) throw new Error(`ipipd on ${h.name} no longer answers 'ipipd status'`);
          out[h.name] = { ...s.counters, ...Object.fromEntries(Object.entries(s.drops).map(([k, v]) => [`drop_${k}`, v])) };
        }
        return out;
      },
      memory: () => Promise.all(topo.hosts.map(async (h) => (await ipipdStatus(h.socket))?.memory ?? null)),
      dead: () => deadOf(procs),
      stop: () => stopAll(procs, 15_000),
    };
  },
  };
}

const ipipd = ipipdMode('ipipd', 1);
/** ipipd with two data-path queues (a multi-queue TUN, a thread per queue). */
const ipipd2q = ipipdMode('ipipd-2q', 2);
/** ipipd sending on the underlay through AF_PACKET to each peer's next hop (`underlay.send: packet`). */
const ipipdPkt = ipipdMode('ipipd-pkt', 1, 'packet');
/** ipipd with every peer on FOU (IPIP over UDP, README "FOU"): UDP_SEGMENT and UDP_GRO. */
const ipipdFou = ipipdMode('ipipd-fou', 1, 'raw', 'fou');

// ---------------------------------------------------------------------------------------------

/**
 * Starts one process per host that opens its own TUN `devs[i]` (quicktun, the Node floor):
 * `launch` starts host i's; it must print `ready` within 10 s (and `check` its output, if given,
 * must not throw); then the device gets the pods' MTU and a route to the other host's pod block.
 * On any failure every process started is stopped and the error rethrown.
 */
async function startTunPair(
  topo: Topology,
  name: ModeName,
  devs: [string, string],
  launch: (h: HostInfo, other: HostInfo, i: number) => Background,
  ready: string,
  check?: (h: HostInfo, output: string) => void,
): Promise<Array<{ name: string; bg: Background }>> {
  const procs: Array<{ name: string; bg: Background }> = [];
  try {
    for (let i = 0; i < 2; i++) {
      const h = topo.hosts[i];
      const other = topo.hosts[1 - i];
      const bg = launch(h, other, i);
      procs.push({ name: `${name} on ${h.name}`, bg });
      const ok = await waitFor(() => bg.output().includes(ready) || bg.child.exitCode !== null, 10_000);
      const why = deadOf(procs);
      if (why) throw new Error(why);
      if (!ok) throw new Error(`${name} on ${h.name} did not say '${ready}' within 10 s:\n${bg.output()}`);
      check?.(h, bg.output());
      await must(['ip', '-n', h.ns, 'link', 'set', 'dev', devs[i], 'mtu', String(POD_MTU), 'up']);
      await routeTo(h, other, devs[i]);
    }
  } catch (e) {
    await stopAll(procs, 3000);
    throw e;
  }
  return procs;
}

/** The ActiveMode of a pair from `startTunPair`: no counters of its own. */
function tunPairMode(devs: [string, string], procs: Array<{ name: string; bg: Background }>, facts: Record<string, unknown>): ActiveMode {
  return {
    devs,
    pids: procs.map((p) => p.bg.pid),
    facts,
    counters: async () => null,
    dead: () => deadOf(procs),
    stop: () => stopAll(procs, 5000),
  };
}

// ---------------------------------------------------------------------------------------------

const FLOOR_JS = join(ROOT, 'dist', 'bench', 'floor.js');

/**
 * The least a Node.js data path does (bench/floor.ts): ipipd's addon and Readers, a fixed outer
 * header per packet (or, with `udp`, the packet as a UDP payload to port 2999, as quicktun's raw
 * protocol), nothing else. A reference for what any Node data path's wake-ups cost.
 */
function floorMode(name: ModeName, udp: boolean): ModeSpec {
  return {
    name,
    underlayMtu: udp ? POD_MTU + 28 : 1500,
    missing() {
      if (!existsSync(FLOOR_JS)) return "not built: run 'npm run build'";
      if (!existsSync(join(ROOT, 'build', 'Release', 'ipipd_native.node'))) return "native addon not built: run 'npm ci'";
      return null;
    },
    async start(topo, ctx) {
      const devs = topo.hosts.map((_, i) => `nf${ctx.prefix}${i + 1}`) as [string, string];
      const args = udp ? ['--udp'] : [];
      const procs = await startTunPair(topo, name, devs, (h, other, i) =>
        start(inNs(h.ns, [process.execPath, FLOOR_JS, ...args, devs[i], h.underlay, other.underlay])), ' up, ');
      return tunPairMode(devs, procs, { command: `node dist/bench/floor.js ${udp ? '--udp ' : ''}<tun> <local> <remote>` });
    },
  };
}
const nodeFloor = floorMode('node-floor', false);
const nodeFloorUdp = floorMode('node-floor-udp', true);

// ---------------------------------------------------------------------------------------------

const QT_PORT = 2998;

/**
 * Debian's quicktun takes its settings from environment variables named IF_QT_<NAME> (as
 * ifupdown passes `qt_<name>` options) and IFACE for the device; plain names (PROTOCOL,
 * REMOTE_ADDRESS, QUICKTUN_...) are silently ignored, and it then runs in TAP mode with no peer.
 */
const quicktun: ModeSpec = {
  name: 'quicktun',
  underlayMtu: POD_MTU + 28, // outer IPv4 20 + UDP 8, raw protocol adds nothing
  missing: () => (hasCommand('quicktun') ? null : 'quicktun is not installed (apt-get install -y quicktun, or --peers)'),
  async start(topo, ctx) {
    const devs = topo.hosts.map((_, i) => `qt${ctx.prefix}${i + 1}`) as [string, string];
    let version = '';
    const launch = (h: HostInfo, other: HostInfo, i: number): Background =>
      start(inNs(h.ns, ['quicktun']), {
        ...process.env,
        IFACE: devs[i],
        IF_QT_TUN_MODE: '1',
        IF_QT_PROTOCOL: 'raw',
        IF_QT_LOCAL_ADDRESS: h.underlay,
        IF_QT_LOCAL_PORT: String(QT_PORT),
        IF_QT_REMOTE_ADDRESS: other.underlay,
        IF_QT_REMOTE_PORT: String(QT_PORT),
      });
    const procs = await startTunPair(topo, 'quicktun', devs, launch, 'now operational', (h, output) => {
      if (/Warning: PROTOCOL not specified/.test(output)) throw new Error(`quicktun on ${h.name} ignored its IF_QT_* settings:\n${output}`);
      version ||= /QuickTun [\d.]+/.exec(output)?.[0] ?? 'unknown';
    });
    return tunPairMode(devs, procs, { version, protocol: 'raw (IP in UDP, no encryption)', port: QT_PORT });
  },
};

// ---------------------------------------------------------------------------------------------

const WG_PORT = 51820;
const WG_RUN_DIR = '/var/run/wireguard';

/**
 * wireguard-go in the foreground (-f), one interface per host namespace. Its UAPI sockets live in
 * /var/run/wireguard, which every namespace shares, so the names carry the run's prefix and the
 * host number; a socket left by a killed process is removed on every exit path.
 */
const wireguardGo: ModeSpec = {
  name: 'wireguard-go',
  // WireGuard's own allowance, as wg-quick's MTU = underlay - 80 (IPv6 outer header 40 + UDP 8 +
  // data header 16 + tag 16); over this IPv4 underlay 60 would be enough.
  underlayMtu: POD_MTU + 80,
  missing() {
    if (!hasCommand('wireguard-go')) return 'wireguard-go is not installed (apt-get install -y wireguard-go, or --peers)';
    if (!hasCommand('wg')) return 'wg is not installed (apt-get install -y wireguard-tools, or --peers)';
    return null;
  },
  async start(topo, ctx) {
    const procs: Array<{ name: string; bg: Background }> = [];
    const devs = topo.hosts.map((_, i) => `wg${ctx.prefix}${i + 1}`) as [string, string];
    const sockets = devs.map((d) => join(WG_RUN_DIR, `${d}.sock`));
    const removeSockets = (): void => {
      for (const s of sockets) rmSync(s, { force: true });
    };
    const unregister = onCleanup(removeSockets);
    const keys: Array<{ priv: string; pub: string; file: string }> = [];
    for (let i = 0; i < 2; i++) {
      const priv = (await must(['wg', 'genkey'])).trim();
      const pub = (await must(['wg', 'pubkey'], { input: `${priv}\n` })).trim();
      const file = join(ctx.tmpDir, `wg-h${i + 1}.key`);
      writeFileSync(file, `${priv}\n`, { mode: 0o600 });
      chmodSync(file, 0o600);
      keys.push({ priv, pub, file });
    }
    const cleanup = async (graceMs: number): Promise<string[]> => {
      const w = await stopAll(procs, graceMs);
      removeSockets();
      unregister();
      for (const k of keys) rmSync(k.file, { force: true });
      return w;
    };
    try {
      removeSockets();
      for (let i = 0; i < 2; i++) {
        const h = topo.hosts[i];
        const bg = start(inNs(h.ns, ['wireguard-go', '-f', devs[i]]));
        procs.push({ name: `wireguard-go on ${h.name}`, bg });
        const ok = await waitFor(() => existsSync(sockets[i]) || bg.child.exitCode !== null, 10_000);
        const why = deadOf(procs);
        if (why) throw new Error(why);
        if (!ok) throw new Error(`wireguard-go on ${h.name}: no ${sockets[i]} after 10 s:\n${bg.output()}`);
      }
      for (let i = 0; i < 2; i++) {
        const h = topo.hosts[i];
        const other = topo.hosts[1 - i];
        await must(inNs(h.ns, ['wg', 'set', devs[i], 'listen-port', String(WG_PORT), 'private-key', keys[i].file,
          'peer', keys[1 - i].pub, 'endpoint', `${other.underlay}:${WG_PORT}`, 'allowed-ips', other.block]));
        await must(['ip', '-n', h.ns, 'link', 'set', 'dev', devs[i], 'mtu', String(POD_MTU), 'up']);
        await routeTo(h, other, devs[i]);
      }
    } catch (e) {
      await cleanup(3000);
      throw e;
    }
    const version = /v[\d.]+/.exec((await run(['wireguard-go', '--version'])).stdout)?.[0] ?? 'unknown';
    return {
      devs,
      pids: procs.map((p) => p.bg.pid),
      facts: { version, port: WG_PORT },
      counters: async () => null,
      dead: () => deadOf(procs),
      stop: () => cleanup(5000),
    };
  },
};

export const MODES: Record<ModeName, ModeSpec> = {
  direct,
  ipipd,
  'ipipd-2q': ipipd2q,
  'ipipd-pkt': ipipdPkt,
  'ipipd-fou': ipipdFou,
  'node-floor': nodeFloor,
  'node-floor-udp': nodeFloorUdp,
  quicktun,
  'wireguard-go': wireguardGo,
};
