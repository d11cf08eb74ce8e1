/**
 * `npm run fuzz [-- --count N --seed S]`: a million hostile packets (by default) at each face of a
 * running ipipd, with a valid TCP transfer through the tunnel alongside, and every packet
 * accounted for (docs/reliability.md shows a run).
 *
 *   pod A 198.51.100.10 -- P-h1 [ipipd, TUN ipip0] ==== ul0 192.0.2.1 --- 192.0.2.2 ul0 ==== [ipipd] P-h2 -- pod B 203.0.113.10
 *                                 ^ tun face: AF_PACKET                  | peer / stranger faces: AF_PACKET
 *                                   on ipip0 itself, inside P-h1         | on P-h2's ul0 to h1's MAC
 *
 * Flow: options; a two-host topology (tools/netns, fresh prefix, torn down on every exit path)
 * and a daemon on each host; in h1, raw-table rules that let only the transfer's packets out of
 * ipip0 into h1's own stack (so that the fuzzed inner packets ipipd decapsulates cannot touch the
 * kernel counters the underlay faces are accounted with: see `filterTunSide`). Then per face:
 * counters before, the injector (tools/fuzz/inject.ts) and a SHA-256-checked TCP transfer from
 * pod A to pod B at once, a second to settle, counters after, and the face's account (`account`):
 *
 *   injected + valid alongside = forwarded + ipipd's drops by reason + the kernel's drops
 *
 * where "valid" is what the test traffic put on the face (what h1's stack routed into ipip0,
 * h2 ipipd's tx_packets for the underlay), "forwarded" comes from ipipd's send counters (never
 * from its drop counters), and the kernel's drops from its own counters (TUN: the device's
 * tx_dropped and qdisc drops, pod A's veth; underlay: IP header errors and truncated packets,
 * fragments held for reassembly, the raw socket's drops in /proc/net/raw, the peer veth's
 * tx_dropped). Checks: both daemons up and alive, every transfer intact, unaccounted = 0 on
 * every face, both daemons exit 0 on SIGTERM. One table; exit 1 on any failed check.
 */
import type { ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { must, sleep } from '../netns/exec.js';
import { ROOT, freshPrefix, netnsMissing } from '../netns/namespaces.js';
import { installSafetyNet } from '../netns/safety-net.js';
import { type HostInfo, Topology } from '../netns/topology.js';
import { type Figures, daemonFigures, delta, device, iptablesRule, ipMib, raw4Drops } from './counters.js';
import { type Account, account, printTable } from './report.js';

const HELP = `Usage: npm run fuzz -- [--count N] [--seed S] [--rate PPS] [--faces tun,peer,stranger] [--transfer BYTES] [--prefix P]

Sends N hostile packets (default 1000000) at each face of a running ipipd, in network namespaces
it makes and removes: the TUN (written onto the device's queue with AF_PACKET), the underlay from
the peer's address, and the underlay from strangers (random bytes and valid packets mutated
field by field). A TCP transfer runs through the tunnel meanwhile. Checks that the daemons stay
up, that every transfer arrives intact (SHA-256) and that on every face
  injected + valid traffic = forwarded + ipipd's drops + the kernel's drops   (unaccounted = 0).
Prints one table; exits 1 if a check fails, 2 on bad options.

  --count N        packets per face (default 1000000)
  --seed S         PRNG seed (default: random, printed; the same seed sends the same packets)
  --rate PPS       packets per second per face (default 20000)
  --faces LIST     which faces, comma-separated (default tun,peer,stranger)
  --transfer BYTES bytes of the TCP transfer alongside each face (default 8M; K/M/G suffixes)
  --prefix P       namespace prefix (default: a fresh "f" + 5 hex digits)
  --help           this text
Needs root, iproute2, tc and iptables.
`;

export interface Options {
  count: number;
  seed: number;
  rate: number;
  faces: string[];
  transfer: string;
  prefix: string;
}

function parseOptions(argv: string[]): Options | null {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      count: { type: 'string', default: '1000000' }, seed: { type: 'string' }, rate: { type: 'string', default: '20000' },
      faces: { type: 'string', default: 'tun,peer,stranger' }, transfer: { type: 'string', default: '8M' }, prefix: { type: 'string' }, help: { type: 'boolean' },
    },
  });
  if (v.help) return null;
  const count = Number(v.count);
  const rate = Number(v.rate);
  const seed = v.seed === undefined ? randomInt(2 ** 31) : Number(v.seed);
  const faces = v.faces!.split(',');
  if (!Number.isInteger(count) || count < 1) throw new Error(`--count must be a positive integer, got ${v.count}`);
  if (!Number.isInteger(rate) || rate < 1) throw new Error(`--rate must be a positive integer, got ${v.rate}`);
  if (!Number.isInteger(seed)) throw new Error(`--seed must be an integer, got ${v.seed}`);
  for (const f of faces) if (!['tun', 'peer', 'stranger'].includes(f)) throw new Error(`--faces: unknown face ${f}`);
  if (!/^\d+[KMG]?$/.test(v.transfer!)) throw new Error(`--transfer must be bytes with an optional K/M/G, got ${v.transfer}`);
  if (v.prefix !== undefined && !/^[a-z][a-z0-9]{1,7}$/.test(v.prefix)) throw new Error(`--prefix must be a letter and 1-7 letters or digits, got ${v.prefix}`);
  return { count, seed, rate, faces, transfer: v.transfer!, prefix: v.prefix ?? freshPrefix('f') };
}

const IPIPD = join(ROOT, 'bin', 'ipipd.js');
const INJECT = join(ROOT, 'dist', 'tools', 'fuzz', 'inject.js');
const PORT = 7100;

interface Daemon {
  host: HostInfo;
  child: ChildProcess;
  log: string[];
}

async function startDaemon(topo: Topology, host: HostInfo): Promise<Daemon> {
  const child = topo.spawn(host.ns, [process.execPath, IPIPD, 'run', '--config', host.config]);
  const d: Daemon = { host, child, log: [] };
  child.stderr?.on('data', (b: Buffer) => d.log.push(b.toString()));
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) throw new Error(`ipipd on ${host.name} exited ${child.exitCode} at start-up: ${d.log.join('')}`);
    const up = await daemonFigures(host.socket).then((f) => f['d.up'] === 1, () => false);
    if (up) return d;
    await sleep(100);
  }
  throw new Error(`ipipd on ${host.name} did not come up: ${d.log.join('')}`);
}

async function stopDaemon(d: Daemon): Promise<number | null> {
  if (d.child.exitCode !== null) return d.child.exitCode;
  const exited = new Promise<number | null>((ok) => d.child.once('exit', (code) => ok(code)));
  d.child.kill('SIGTERM');
  return exited;
}

/**
 * In h1, only the transfer's packets (TCP from pod B's port) may enter h1's stack from ipip0: the
 * fuzzed inner packets ipipd rightly forwards (odd options, fragments, any address) are dropped
 * in the raw table, before the IP options and routing code that would count them in the same
 * IP MIB counters the underlay faces are accounted with. ipipd's figures are unaffected: for it
 * they are written to the TUN.
 */
async function filterTunSide(topo: Topology, h1: HostInfo): Promise<void> {
  await must(['ip', 'netns', 'exec', h1.ns, 'iptables', '-t', 'raw', '-A', 'PREROUTING', '-i', 'ipip0', '-p', 'tcp', '--sport', String(PORT), '-j', 'ACCEPT']);
  await must(['ip', 'netns', 'exec', h1.ns, 'iptables', '-t', 'raw', '-A', 'PREROUTING', '-i', 'ipip0', '-j', 'DROP']);
  // What h1's stack routes into ipip0 (the transfer's segments, pod A's answers), one packet a
  // segment: pod A segments before its veth (TCP always builds GSO packets, Linux 4.19+).
  await must(['ip', 'netns', 'exec', h1.ns, 'iptables', '-t', 'mangle', '-A', 'POSTROUTING', '-o', 'ipip0']);
  await must(['ip', 'netns', 'exec', topo.podA.ns, 'ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off']);
}

async function snapshot(topo: Topology): Promise<Figures> {
  const [h1, h2] = topo.hosts as [HostInfo, HostInfo];
  const parts = await Promise.all([
    daemonFigures(h1.socket), ipMib(h1.ns), raw4Drops(h1.ns), device(h1.ns, 'ul0'), device(h1.ns, 'ipip0'), iptablesRule(h1.ns, 'mangle', 'POSTROUTING'),
    daemonFigures(h2.socket), device(h2.ns, 'ul0'), device(topo.podA.ns, 'eth0'),
  ]);
  const f: Figures = {};
  const prefixes = ['h1.', 'h1.', 'h1.', 'h1.', 'h1.', 'h1.', 'h2.', 'h2.', 'podA.'];
  parts.forEach((p, i) => Object.entries(p).forEach(([k, v]) => (f[prefixes[i] + k] = v)));
  return f;
}

function ipText(a: number): string {
  return [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');
}

function ipNum(s: string): number {
  return s.split('.').reduce((a, x) => ((a << 8) | Number(x)) >>> 0, 0);
}

/** The injector's arguments for `face`. */
async function injectArgs(topo: Topology, face: string, o: Options, seed: number): Promise<{ ns: string; args: string[] }> {
  const [h1, h2] = topo.hosts as [HostInfo, HostInfo];
  const link = async (ns: string, dev: string): Promise<{ address: string; mtu: number }> =>
    (JSON.parse(await must(['ip', '-n', ns, '-j', 'link', 'show', 'dev', dev])) as Array<{ address: string; mtu: number }>)[0]!;
  const common = ['--count', String(o.count), '--seed', String(seed), '--rate', String(o.rate), '--local', h1.underlay, '--peer', h2.underlay];
  if (face === 'tun') {
    const [block, len] = h1.block.split('/');
    const tun = await link(h1.ns, 'ipip0');
    return { ns: h1.ns, args: [...common, '--face', 'tun', '--dev', 'ipip0', '--mtu', String(tun.mtu), '--inner-src', topo.podA.address, '--inner-dst', topo.podB.address, '--own-block', block!, '--own-mask', len!] };
  }
  const ul = await link(h1.ns, 'ul0');
  const mask = topo.info.hosts[0]!.underlayPrefixLen;
  const net = (ipNum(h1.underlay) & (mask === 0 ? 0 : (-1 << (32 - mask)) >>> 0)) >>> 0;
  const bcast = (net | (2 ** (32 - mask) - 1)) >>> 0;
  const avoid = [h1.underlay, h1.tunAddress, h1.gateway, h2.underlay, ipText(net), ipText(bcast)].join(',');
  return {
    ns: h2.ns,
    args: [...common, '--face', face, '--dev', 'ul0', '--mac', ul.address, '--mtu', String(ul.mtu), '--inner-src', topo.podB.address, '--inner-dst', topo.podA.address, '--own-block', '0.0.0.0', '--own-mask', '0', '--avoid', avoid],
  };
}

/** One face: counters, the injector and a transfer at once, settle, counters, the account. */
async function fuzzFace(topo: Topology, face: string, o: Options, seed: number, say: (s: string) => void): Promise<Account> {
  const { podA, podB } = topo;
  const inj = await injectArgs(topo, face, o, seed);
  const before = await snapshot(topo);
  const sink = await topo.serve(podB.ns, ['tcp-sink', '--bind', podB.address, '--port', String(PORT), '--timeout', '900']);
  say(`fuzz: ${face}: ${o.count} packets at ${o.rate}/s, ${o.transfer} through the tunnel alongside`);
  const t0 = Date.now();
  const [injected, sent] = await Promise.all([
    topo.exec(inj.ns, [process.execPath, INJECT, ...inj.args], { timeoutMs: 900_000 }),
    topo.traffic(podA.ns, ['tcp-send', '--to', podB.address, '--port', String(PORT), '--bytes', o.transfer, '--seed', String(seed), '--timeout', '900'], { timeoutMs: 900_000 }),
  ]);
  const received = await sink.result;
  const seconds = (Date.now() - t0) / 1000;
  await sleep(1000);
  const after = await snapshot(topo);
  if (injected.code !== 0) throw new Error(`injector (${face}) failed (${injected.code}): ${injected.stderr}`);
  const report = JSON.parse(injected.stdout.trim().split('\n').pop()!) as { injected: number; sendFailures: number; lastErrno: number; cases: Record<string, number> };
  const transferOk = sent.code === 0 && received.code === 0 && sent.json?.sha256 === received.json?.sha256 && sent.json?.bytes === received.json?.bytes;
  const d = delta(before, after);
  if (process.env.IPIPD_FUZZ_DEBUG) say(JSON.stringify({ face, injector: report, delta: Object.fromEntries(Object.entries(d).filter(([, x]) => x !== 0)) }));
  const row = account(face, report, d, transferOk, seconds);
  for (const h of ['h1', 'h2']) if (after[`${h}.d.up`] !== 1) row.failures.push(`${face}: ipipd on ${h} no longer says "up"`);
  return row;
}

async function main(): Promise<number> {
  let o: Options | null;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`fuzz: ${(e as Error).message}\nTry 'npm run fuzz -- --help'.\n`);
    return 2;
  }
  if (o === null) {
    process.stdout.write(HELP);
    return 0;
  }
  const missing = netnsMissing();
  if (missing !== null) {
    process.stderr.write(`fuzz: cannot run here: ${missing}\n`);
    return 1;
  }
  const say = (s: string): void => void process.stderr.write(`${s}\n`);
  installSafetyNet();
  say(`fuzz: seed ${o.seed} (rerun: npm run fuzz -- --count ${o.count} --seed ${o.seed})`);
  const daemons: Daemon[] = [];
  const failures: string[] = [];
  const rows: Account[] = [];
  let topo: Topology | undefined;
  try {
    topo = await Topology.up({ prefix: o.prefix, hosts: 2 });
    for (const h of topo.hosts) daemons.push(await startDaemon(topo, h));
    await filterTunSide(topo, topo.host(1));
    for (const [i, face] of o.faces.entries()) {
      const row = await fuzzFace(topo, face, o, o.seed + i, say);
      rows.push(row);
      failures.push(...row.failures);
      for (const d of daemons) if (d.child.exitCode !== null || d.child.signalCode !== null) failures.push(`${face}: ipipd on ${d.host.name} died (${d.child.exitCode ?? d.child.signalCode})`);
      if (failures.length > 0) break;
    }
  } catch (e) {
    failures.push((e as Error).message);
  } finally {
    for (const d of daemons) {
      const code = await stopDaemon(d);
      if (code !== 0) failures.push(`ipipd on ${d.host.name} exited ${code} on SIGTERM: ${d.log.join('').slice(-2000)}`);
    }
    await topo?.down();
  }
  printTable(rows, (s) => process.stdout.write(s));
  for (const f of failures) process.stdout.write(`FAILED: ${f}\n`);
  process.stdout.write(failures.length === 0 ? `fuzz: ok (seed ${o.seed})\n` : `fuzz: ${failures.length} check(s) failed (seed ${o.seed})\n`);
  return failures.length === 0 ? 0 : 1;
}

process.exitCode = await main();
