/**
 * node-floor: the least a Node.js IPIP data path can do, as a reference for the bench.
 *
 *   node dist/bench/floor.js [--udp] <tun name> <local underlay address> <remote underlay address>
 *
 * The same native addon, Readers and batched system calls as ipipd (one TUN, one raw socket of
 * protocol 4), and per packet only what no IPIP tunnel can skip: a fixed outer IPv4 header
 * copied in front of each packet read from the TUN (the kernel fills in the length, ID and
 * checksum for IP_HDRINCL), and the outer header cut off each packet read from the raw socket.
 * With --udp, quicktun's raw protocol instead: each packet is the payload of a UDP datagram
 * between the two addresses' port 2999, so the kernel does the same work as for quicktun.
 * No checks, no table, no counters, no ICMP, no offloads: not a tunnel anyone should run, but
 * what its wake-ups cost is what any Node data path pays before it does its own work, so the
 * bench puts it beside quicktun (docs/performance.md, "The floor of a Node data path").
 */
import { native, READER_RAW, READER_TUN, READER_UDP, UDP_INFO_INTS, type NativeError } from '../src/tun/native.js';

const SLOT = 2048;
const BATCH = 64;
const OUTER = 20;

const PORT = 2999;

function usage(why: string): never {
  process.stderr.write(`node-floor: ${why}\nusage: node dist/bench/floor.js [--udp] <tun> <local IPv4> <remote IPv4>\n`);
  process.exit(2);
}

function addr(s: string | undefined): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s ?? '');
  if (!m || m.slice(1).some((x) => +x > 255)) usage(`not an IPv4 address: '${s ?? ''}'`);
  return ((+m[1]! << 24) | (+m[2]! << 16) | (+m[3]! << 8) | +m[4]!) >>> 0;
}

const udp = process.argv[2] === '--udp';
const [tunName, localArg, remoteArg, ...extra] = process.argv.slice(udp ? 3 : 2);
if (!tunName || extra.length > 0) usage(extra.length > 0 ? `unexpected '${extra[0]}'` : 'no TUN name');
const local = addr(localArg);
const remote = addr(remoteArg);

const tun = native.openTun(tunName);
const raw = udp ? native.openUdp(local, PORT, 4 << 20, 4 << 20).fd : native.openRaw(local, 4 << 20, 4 << 20);

// The outer header every encapsulated packet gets: version 4, IHL 5, DF, TTL 64, protocol 4.
const outer = Buffer.alloc(OUTER);
outer.set([0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 4, 0, 0]);
outer.writeUInt32BE(local, 12);
outer.writeUInt32BE(remote, 16);

// Each send's result: res[0] packets that failed, res[1] the last errno (sendUdp needs 5 elements).
const res = new Int32Array(5);
let dropped = 0;

// TUN -> underlay: each packet is read OUTER bytes into its slot. IPIP puts the outer header in
// front of it there; over UDP the packet is the datagram's payload as it is (the kernel adds
// the headers).
const head = udp ? 0 : OUTER;
const tunSlab = Buffer.alloc(SLOT * BATCH);
const tunLens = new Int32Array(BATCH);
const sendOffs = new Int32Array(BATCH);
const sendLens = new Int32Array(BATCH);
const dsts = new Int32Array(BATCH).fill(remote | 0);
const fds = new Int32Array(BATCH).fill(raw);
function onTunBatch(n: number): void {
  let k = 0;
  for (let i = 0; i < n; i++) {
    const len = tunLens[i]!;
    if (len <= 0) {
      dropped++;
      continue;
    }
    const o = i * SLOT + OUTER - head;
    if (!udp) outer.copy(tunSlab, o);
    sendOffs[k] = o;
    sendLens[k] = len + head;
    k++;
  }
  if (k === 0) return;
  if (udp) native.sendUdp(tunSlab, sendOffs, sendLens, dsts, fds, k, res, PORT, 1);
  else native.sendRaw(raw, tunSlab, sendOffs, sendLens, dsts, k, res);
  dropped += res[0]!;
}

// Underlay -> TUN: each datagram arrives with its outer header, which is skipped.
const rawSlab = Buffer.alloc(SLOT * BATCH);
const rawLens = new Int32Array(BATCH);
const writeOffs = new Int32Array(BATCH);
const writeLens = new Int32Array(BATCH);
function onRawBatch(n: number): void {
  let k = 0;
  for (let i = 0; i < n; i++) {
    const len = rawLens[i]!;
    const o = i * SLOT;
    const ihl = udp ? 0 : (rawSlab[o]! & 15) * 4;
    if (len <= ihl) {
      dropped++;
      continue;
    }
    writeOffs[k] = o + ihl;
    writeLens[k] = len - ihl;
    k++;
  }
  if (k === 0) return;
  native.writeTun(tun.fd, rawSlab, writeOffs, writeLens, k, res);
  dropped += res[0]!;
}

function onError(e: NativeError): void {
  process.stderr.write(`node-floor: ${e.message}\n`);
  process.exit(1);
}

const readers = [
  new native.Reader(tun.fd, READER_TUN, tunSlab, tunLens, SLOT, OUTER, BATCH, onTunBatch, onError),
  udp
    ? new native.Reader(raw, READER_UDP, rawSlab, rawLens, SLOT, 0, BATCH, onRawBatch, onError, new Int32Array(BATCH * UDP_INFO_INTS))
    : new native.Reader(raw, READER_RAW, rawSlab, rawLens, SLOT, 0, BATCH, onRawBatch, onError),
];
for (const r of readers) r.start();

function stop(): void {
  for (const r of readers) r.close();
  native.close(raw);
  native.close(tun.fd);
  process.stdout.write(`node-floor: stopped (${dropped} packets dropped: truncated, too short or not sent)\n`);
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdout.write(`node-floor: ${tun.name} up, ${localArg} -> ${remoteArg}\n`);
