/**
 * Packet tools for the RFC 2003 conformance tests: scapy to craft and sniff, tcpdump + tshark to
 * capture and decode independently, and status deltas for ipipd's counters.
 *
 *   const why = packetToolsMissing();                         // null, or why the tests skip
 *   await craft(topo, h1.ns, [{ layers: [{ ip: { src, dst, ttl: 0 } }, { udp: { dport: 7 } }] }]);
 *   const cap = await Capture.start(topo, pod.ns, 'eth0', 'icmp', 'ttl');  // sniff.py + tcpdump
 *   const pkts = await cap.waitFor(1);                        // decoded by sniff.py, as JSON
 *   await cap.stop();
 *   tshark(cap.pcap, ['icmp.type', 'icmp.checksum.status']);  // rows of fields
 *
 * Flow of this file: what is needed (packetToolsMissing); craft.py (craft); the decoded packet
 * type sniff.py prints; Capture (sniff.py and tcpdump on one interface); tshark; the status
 * report with the RFC 2003 §4/§5 fields, waiting on it, and deltas between two reports.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, status } from './daemons.js';
import { sleep } from '../../tools/netns/exec.js';
import type { HostInfo, PodInfo, Topology } from '../../tools/netns/topology.js';
import type { StatusReport } from '../../src/daemon/daemon.js';

/** Debian's scapy runs under the system interpreter, not whatever `python3` is on PATH. */
export const PYTHON = '/usr/bin/python3';
export const CRAFT_PY = join(ROOT, 'test', 'fixtures', 'craft.py');
export const SNIFF_PY = join(ROOT, 'test', 'fixtures', 'sniff.py');

let cachedMissing: string | null | undefined;

/** Why the packet tests cannot run here (no scapy under /usr/bin/python3, no tcpdump or tshark), or null. */
export function packetToolsMissing(): string | null {
  if (cachedMissing !== undefined) return cachedMissing;
  cachedMissing = (() => {
    const py = spawnSync(PYTHON, ['-c', 'import scapy'], { encoding: 'utf8' });
    if (py.error || py.status !== 0) return `scapy is not importable by ${PYTHON} (apt-get install python3-scapy)`;
    for (const tool of ['tcpdump', 'tshark']) {
      if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
    }
    return null;
  })();
  return cachedMissing;
}

// ---------------------------------------------------------------------------------------------
// craft.py

/** Fields passed to scapy's constructors as they are (see test/fixtures/craft.py). */
export type Fields = Record<string, string | number>;

export type Layer =
  | { ip: Fields }
  | { icmp: Fields }
  | { udp: Fields }
  | { tcp: Fields }
  | { raw: { len: number } | { text: string } }
  | { quote: { layers: Layer[]; bytes?: number } };

export interface PacketSpec {
  layers: Layer[];
  count?: number;
  /** XOR the 16-bit word at `offset` of the built packet with `xor`. */
  patch?: { offset: number; xor: number }[];
  /** Write the packet to this device (AF_PACKET, no routing) instead of sending it through a raw IP socket. */
  iface?: string;
}

/** Sends the packets from namespace `ns` at layer 3 (raw socket, IP_HDRINCL); resolves with the number sent. */
export async function craft(topo: Topology, ns: string, packets: PacketSpec[]): Promise<number> {
  const r = await topo.exec(ns, [PYTHON, CRAFT_PY], { input: JSON.stringify({ packets }), timeoutMs: 20_000 });
  const want = packets.reduce((n, p) => n + (p.count ?? 1), 0);
  let sent = NaN;
  try {
    sent = (JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { sent: number }).sent;
  } catch {
    // reported below
  }
  if (r.code !== 0 || sent !== want) throw new Error(`craft.py in ${ns}: exit ${r.code}, sent ${sent} of ${want}\n${r.stderr}`);
  return sent;
}

// ---------------------------------------------------------------------------------------------
// What sniff.py prints: one object per IPv4 packet.

export interface DecodedIcmp {
  type: number;
  code: number;
  cksum: number;
  /** Present when the whole ICMP message was captured. */
  cksumOk?: boolean;
  /** The second 32-bit word (unused / next-hop MTU / gateway / id+seq). */
  word2: number;
  /** Type 3 code 4: the low 16 bits of the second word (RFC 1191). */
  mtu?: number;
  gw?: string;
  id?: number;
  seq?: number;
  /** Errors: bytes after the 8-byte ICMP header, and the quoted datagram decoded. */
  quoteBytes?: number;
  quote?: DecodedIp;
}

export interface DecodedIp {
  truncated?: true;
  version: number;
  ihl: number;
  tos: number;
  len: number;
  id: number;
  df: boolean;
  mf: boolean;
  /** Fragment offset in bytes. */
  frag: number;
  ttl: number;
  proto: number;
  cksum: number;
  cksumOk: boolean;
  src: string;
  dst: string;
  /** Bytes captured from this header on (can be less than `len` in a quote). */
  bytes: number;
  payloadBytes: number;
  inner?: DecodedIp;
  icmp?: DecodedIcmp;
  udp?: { sport: number; dport: number; len: number; cksum: number; cksumOk?: boolean };
  tcp?: { sport: number; dport: number; seq: number };
}

// ---------------------------------------------------------------------------------------------
// Capture: sniff.py (decoded JSON lines) and tcpdump (a pcap for tshark) on the same interface.

/** Number of packet records in a pcap file being written (0 if it is not there yet). */
function pcapRecords(file: string): number {
  if (!existsSync(file)) return 0;
  const b = readFileSync(file);
  if (b.length < 24) return 0;
  const le = b.readUInt32LE(0) === 0xa1b2c3d4 || b.readUInt32LE(0) === 0xa1b23c4d;
  let n = 0;
  for (let off = 24; off + 16 <= b.length; n++) {
    const incl = le ? b.readUInt32LE(off + 8) : b.readUInt32BE(off + 8);
    if (off + 16 + incl > b.length) break;
    off += 16 + incl;
  }
  return n;
}

export class Capture {
  /** Every packet sniff.py decoded so far, in arrival order. */
  readonly packets: DecodedIp[] = [];
  private stdout = '';
  private stderr = '';
  private sniffExited = false;

  private constructor(
    readonly pcap: string,
    private readonly sniffer: ChildProcess | null,
    private readonly dumper: ChildProcess,
    private readonly label: string,
  ) {
    if (!sniffer) return;
    sniffer.stdout?.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d;
      let nl: number;
      while ((nl = this.stdout.indexOf('\n')) >= 0) {
        const line = this.stdout.slice(0, nl);
        this.stdout = this.stdout.slice(nl + 1);
        if (line.trim()) this.packets.push(JSON.parse(line) as DecodedIp);
      }
    });
    sniffer.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    sniffer.on('exit', () => (this.sniffExited = true));
  }

  /**
   * Starts sniff.py and `tcpdump -w <outDir>/<name>.pcap` with the same BPF filter on `iface`
   * in `ns`, and resolves once both listen. With `decode: false` only tcpdump runs (for
   * tshark; `packets` stays empty and `waitFor` counts the pcap's records).
   */
  static async start(topo: Topology, ns: string, iface: string, filter: string, name: string, opts: { decode?: boolean } = {}): Promise<Capture> {
    const pcap = join(topo.info.outDir, `${name}.pcap`);
    const ready = join(topo.info.outDir, `${name}.sniff-ready`);
    rmSync(pcap, { force: true });
    rmSync(ready, { force: true });
    const sniffer =
      opts.decode === false ? null : topo.spawn(ns, [PYTHON, SNIFF_PY, '--iface', iface, '--filter', filter, '--timeout', '60', '--ready-file', ready]);
    // In immediate mode libpcap's ring has one slot per snapshot length: a small snaplen (our
    // packets are <= 1514 bytes) and an 8 MiB buffer keep a burst of hundreds from being dropped.
    const dumper = topo.spawn(ns, ['tcpdump', '-i', iface, '-n', '-U', '--immediate-mode', '-s', '4096', '-B', '8192', '-w', pcap, filter]);
    const cap = new Capture(pcap, sniffer, dumper, `${name} (${ns} ${iface} '${filter}')`);
    let dumpErr = '';
    let dumpExited = false;
    dumper.stderr?.setEncoding('utf8').on('data', (d: string) => (dumpErr += d));
    dumper.on('exit', () => (dumpExited = true));
    const deadline = Date.now() + 15_000;
    while ((sniffer && !existsSync(ready)) || !/listening on/.test(dumpErr)) {
      if (cap.sniffExited || dumpExited || Date.now() > deadline) {
        await cap.stop();
        throw new Error(`capture ${cap.label} did not start: sniff.py: ${cap.stderr} tcpdump: ${dumpErr}`);
      }
      await sleep(20);
    }
    rmSync(ready, { force: true });
    return cap;
  }

  /** Resolves with the packets once at least `n` match `pred`; rejects (with what was seen) after `timeoutMs`. */
  async waitFor(n: number, pred: (p: DecodedIp) => boolean = () => true, timeoutMs = 10_000): Promise<DecodedIp[]> {
    const deadline = Date.now() + timeoutMs;
    if (!this.sniffer) {
      while (pcapRecords(this.pcap) < n) {
        if (Date.now() > deadline) throw new Error(`capture ${this.label}: ${pcapRecords(this.pcap)} of ${n} expected packets`);
        await sleep(20);
      }
      return [];
    }
    for (;;) {
      const got = this.packets.filter(pred);
      if (got.length >= n) return got;
      if (this.sniffExited || Date.now() > deadline) {
        throw new Error(`capture ${this.label}: ${got.length} of ${n} expected packets; all seen: ${JSON.stringify(this.packets)} ${this.stderr}`);
      }
      await sleep(20);
    }
  }

  /**
   * Stops both capturers, first waiting (up to 5 s) until tcpdump's file holds as many packets
   * as sniff.py decoded, so the pcap and the JSON describe the same packets. sniff.py has
   * printed (and flushed) each packet as it came, so it is simply killed; tcpdump gets SIGTERM
   * and closes its file. Resolves once both are gone and their output is read; returns the
   * packets.
   */
  async stop(): Promise<DecodedIp[]> {
    const deadline = Date.now() + 5000;
    while (pcapRecords(this.pcap) < this.packets.length && Date.now() < deadline) await sleep(20);
    const gone = (c: ChildProcess): Promise<void> =>
      new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.on('close', () => r())));
    const done = [this.dumper, ...(this.sniffer ? [this.sniffer] : [])].map(gone);
    this.sniffer?.kill('SIGKILL');
    this.dumper.kill('SIGTERM');
    await Promise.all(done);
    return this.packets;
  }
}

// ---------------------------------------------------------------------------------------------
// tshark

/**
 * Decodes `pcap` with tshark, IPv4 header checksums verified (`ip.check_checksum:TRUE`; ICMP
 * checksums are always verified), and returns one row per frame: the requested fields, each
 * an array of its values (one per protocol layer, e.g. outer and inner `ip.src`).
 */
export function tshark(pcap: string, fields: string[], displayFilter?: string): string[][][] {
  const args = ['-r', pcap, '-o', 'ip.check_checksum:TRUE', '-T', 'fields', '-E', 'separator=;', '-E', 'aggregator=,'];
  if (displayFilter) args.push('-Y', displayFilter);
  for (const f of fields) args.push('-e', f);
  const r = spawnSync('tshark', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tshark -r ${pcap} failed (${r.status}): ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => l.split(';').map((v) => (v === '' ? [] : v.split(','))));
}

// ---------------------------------------------------------------------------------------------
// Status with the RFC 2003 §4/§5 fields

/** The daemon's status report, as the daemon defines it. */
export type Status = StatusReport;
export type PeerStatus = StatusReport['peers'][number];

/** The daemon's status (one control-socket read). */
export async function snapshot(host: HostInfo): Promise<Status> {
  return status(host);
}

export interface Delta {
  /** Counters that changed, after - before. */
  counters: Record<string, number>;
  /** Drop reasons that changed, after - before. */
  drops: Record<string, number>;
}

/** The non-zero differences between two reports (a key missing in `before` counts from 0). */
export function delta(before: Status, after: Status): Delta {
  const diff = (a: Record<string, number>, b: Record<string, number>): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const k of Object.keys(b)) {
      const d = (b[k] ?? 0) - (a[k] ?? 0);
      if (d !== 0) out[k] = d;
    }
    return out;
  };
  return { counters: diff(before.counters, after.counters), drops: diff(before.drops, after.drops) };
}

/** A counter's change (0 when absent from both). */
export const dc = (d: Delta, name: string): number => d.counters[name] ?? 0;

/**
 * Polls the daemon until `pred(delta from before, report)` holds, then until its counters stay
 * the same across two reads 100 ms apart (what was sent has been processed), and returns the
 * last report. Rejects after `timeoutMs` with the last delta.
 */
export async function settle(
  host: HostInfo,
  before: Status,
  pred: (d: Delta, s: Status) => boolean,
  timeoutMs = 10_000,
): Promise<Status> {
  const deadline = Date.now() + timeoutMs;
  let last = await snapshot(host);
  while (!pred(delta(before, last), last)) {
    if (Date.now() > deadline) throw new Error(`${host.name}: condition not reached; delta ${JSON.stringify(delta(before, last))}`);
    await sleep(50);
    last = await snapshot(host);
  }
  for (;;) {
    await sleep(100);
    const next = await snapshot(host);
    const d = delta(last, next);
    last = next;
    if ((Object.keys(d.counters).length === 0 && Object.keys(d.drops).length === 0) || Date.now() > deadline) return last;
  }
}

// ---------------------------------------------------------------------------------------------
// Layer shorthands for craft()

export const ip = (fields: Fields): Layer => ({ ip: fields });
export const icmp = (fields: Fields): Layer => ({ icmp: fields });
export const udp = (sport: number, dport: number, fields: Fields = {}): Layer => ({ udp: { sport, dport, ...fields } });
export const raw = (len: number): Layer => ({ raw: { len } });
export const quote = (layers: Layer[], bytes?: number): Layer => ({ quote: bytes === undefined ? { layers } : { layers, bytes } });

/** The hosts and pods of two directly connected hosts (pair.ts directPair), as the packet builders below read them. */
export interface DirectEnds {
  h1: HostInfo;
  h2: HostInfo;
  A: PodInfo;
  B: PodInfo;
}

/**
 * The packets the RFC 2003 tests between two directly connected hosts craft, over ends known
 * only once the topology is up (`ends` is read at each call).
 */
export function directPackets(ends: () => DirectEnds): {
  innerUdp: (dport: number, fields?: Fields, extra?: number, count?: number) => PacketSpec;
  ipip: (dport: number, outer?: Fields, inner?: Fields, count?: number) => PacketSpec;
} {
  return {
    /** An inner UDP packet pod A -> pod B (as if routed into h1's TUN), `extra` bytes of payload. */
    innerUdp: (dport, fields = {}, extra = 24, count = 1) => {
      const { A, B } = ends();
      return { layers: [ip({ src: A.address, dst: B.address, ttl: 40, ...fields }), udp(40000, dport), raw(extra)], count };
    },
    /** The same, wrapped by hand in an outer header 192.0.2.1 -> 192.0.2.2 (for h2's underlay side). */
    ipip: (dport, outer = {}, inner = {}, count = 1) => {
      const { h1, h2, A, B } = ends();
      return {
        layers: [ip({ src: h1.underlay, dst: h2.underlay, ...outer }), ip({ src: A.address, dst: B.address, ttl: 50, ...inner }), udp(40000, dport), raw(24)],
        count,
      };
    },
  };
}

/** The packet (or the inner packet) to UDP port `port` among `pkts`; throws if there is none. */
export function byPort(pkts: DecodedIp[], port: number): DecodedIp {
  const p = pkts.find((x) => (x.inner ?? x).udp?.dport === port);
  if (!p) throw new Error(`no packet to port ${port} in ${JSON.stringify(pkts)}`);
  return p;
}
