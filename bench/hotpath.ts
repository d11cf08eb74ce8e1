/**
 * Micro-benchmark of the data path's own JavaScript: what the batch handlers cost per packet,
 * without the kernel, so that a change to src/dataplane or src/ipip can be compared before and
 * after on a busy machine (the full bench, `npm run bench`, measures the whole machine and moves
 * by 10-20% between runs on 2 shared cores; this moves by 1-3%).
 *
 * Flow: build queue 0 with the real queue factory (src/dataplane/queue.ts, JIT warm-up included)
 * on an I/O whose Readers never poll, with both fds set to the native discard fd (the addon
 * counts every packet as written and makes no system call); write one batch template per
 * workload once (UDP 64 B payload, UDP 1400 B, TCP 1400 B with timestamps) in each direction;
 * then per iteration copy the templates into the slabs and run `onTunBatch` and `onRawBatch`
 * on them, as the Readers would after a wake-up. Prints the median and minimum ns per packet
 * over several rounds, per workload and mode (plain and offload), and checks that every packet
 * was forwarded (a benchmark of drops would measure the wrong thing).
 *
 * Run: npm run build && npm run bench:hotpath [-- --rounds N --iterations N]   (a few seconds)
 */
import { parseConfig } from '../src/daemon/config.js';
import { createLogger } from '../src/daemon/logger.js';
import type { Dataplane } from '../src/dataplane/dataplane.js';
import { nativeIo, type DataplaneIo } from '../src/dataplane/io.js';
import { createQueue } from '../src/dataplane/queue.js';
import { WARM_TCP, WARM_UDP, writeWarmOuter, writeWarmPacket, writeWarmVnet } from '../src/dataplane/warmup.js';
import { VNET_HDR_LEN } from '../src/ipip/index.js';

const BATCH = 64;
const TEMPLATE_SLOT = 2048;
const HEADROOM = 20;
const LOCAL = 0xc6336402 | 0; // 198.51.100.2, ours
const REMOTE = 0xcb00710a | 0; // 203.0.113.10, the peer's
const ENDPOINT = 0xc0000202 | 0; // 192.0.2.2
const UNDERLAY = 0xc0000201 | 0; // 192.0.2.1

interface Workload {
  name: string;
  kind: number;
  payload: number;
}

const WORKLOADS: Workload[] = [
  { name: 'UDP 64 B', kind: WARM_UDP, payload: 64 },
  { name: 'UDP 1400 B', kind: WARM_UDP, payload: 1400 },
  { name: 'TCP 1400 B', kind: WARM_TCP, payload: 1400 },
];

/** Readers that never poll: the benchmark calls the batch handlers itself. */
class IdleReader {
  start(): void {}
  stop(): void {}
  close(): void {}
}

function queueFor(offload: boolean): Dataplane {
  const c = parseConfig(
    `tun: {name: hot0, address: 198.51.100.0/32}
underlay: {address: 192.0.2.1}
io: {offload: ${offload}}
peers: [{name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25]}]
`,
    'hotpath.yaml',
  );
  const io = { ...nativeIo, Reader: IdleReader } as unknown as DataplaneIo;
  const d = nativeIo.DISCARD_FD;
  const q = createQueue(c, { queue: 0, queues: 1, tunFd: d, rawFd: d, icmpFd: -1, tunMtu: 1480, underlayMax: 1500, udpGro: offload, icmpSource: LOCAL, log: createLogger('silent'), io });
  return q.dataplane;
}

/** One batch each way of workload `w`, written once: the TUN side (after its vnet header) and the underlay side. */
function templates(w: Workload, offload: boolean): { tun: Buffer; tunLens: number[]; raw: Buffer; rawLens: number[] } {
  const tun = Buffer.alloc(BATCH * TEMPLATE_SLOT);
  const raw = Buffer.alloc(BATCH * TEMPLATE_SLOT);
  const tunLens: number[] = [];
  const rawLens: number[] = [];
  const vnet = offload ? VNET_HDR_LEN : 0;
  for (let i = 0; i < BATCH; i++) {
    const at = i * TEMPLATE_SLOT + HEADROOM;
    const len = writeWarmPacket(tun, at, w.kind, LOCAL, REMOTE, w.payload, i, 1 + i * w.payload, false);
    if (offload) writeWarmVnet(tun, at, w.kind, false, 0);
    tunLens.push(len + vnet);
    const inner = writeWarmPacket(raw, i * TEMPLATE_SLOT + 20, w.kind, REMOTE, LOCAL, w.payload, i, 1 + i * w.payload, false);
    rawLens.push(writeWarmOuter(raw, i * TEMPLATE_SLOT, inner, ENDPOINT, UNDERLAY, i));
  }
  return { tun, tunLens, raw, rawLens };
}

/** ns per packet (both directions counted) over `rounds` rounds of `iterations` batches each way. */
function measure(dp: Dataplane, w: Workload, offload: boolean, rounds: number, iterations: number): number[] {
  const t = templates(w, offload);
  const s = dp.slabs;
  const vnet = offload ? VNET_HDR_LEN : 0;
  const once = (): void => {
    for (let i = 0; i < BATCH; i++) {
      const from = i * TEMPLATE_SLOT;
      t.tun.copy(s.txBuf, s.placeTun(i) - vnet, from + HEADROOM - vnet, from + HEADROOM - vnet + t.tunLens[i]!);
      s.tunLens[i] = t.tunLens[i]!;
      t.raw.copy(s.rxBuf, i * s.rawSlot, from, from + t.rawLens[i]!);
      s.rawLens[i] = t.rawLens[i]!;
    }
    dp.send.onTunBatch(BATCH);
    dp.receive.onRawBatch(BATCH);
  };
  for (let i = 0; i < iterations; i++) once();
  const out: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) once();
    out.push(Number(process.hrtime.bigint() - t0) / (iterations * 2 * BATCH));
  }
  return out.sort((a, b) => a - b);
}

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(v) || v < 1) {
    process.stderr.write(`bench:hotpath: ${name} takes a whole number >= 1\n`);
    process.exit(2);
  }
  return v;
}

function main(): void {
  const rounds = option('--rounds', 7);
  const iterations = option('--iterations', 1000);
  process.stdout.write(`data-path JavaScript per packet, discard fd, batches of ${BATCH} each way, ${rounds} rounds x ${iterations} batches\n`);
  process.stdout.write(`${'mode'.padEnd(8)} ${'workload'.padEnd(12)} ${'median ns'.padStart(10)} ${'min ns'.padStart(8)}\n`);
  for (const offload of [false, true]) {
    for (const w of WORKLOADS) {
      const dp = queueFor(offload);
      const ns = measure(dp, w, offload, rounds, iterations);
      const f = dp.snapshot();
      const dropped = Object.entries(f.drops).filter(([, v]) => v > 0);
      if (dropped.length > 0 || f.counters.tx_packets === 0 || f.counters.rx_packets === 0) {
        process.stderr.write(`bench:hotpath: ${w.name} (${offload ? 'offload' : 'plain'}) was not forwarded: ${JSON.stringify(Object.fromEntries(dropped))}\n`);
        process.exit(1);
      }
      dp.close();
      const mode = offload ? 'offload' : 'plain';
      process.stdout.write(`${mode.padEnd(8)} ${w.name.padEnd(12)} ${ns[ns.length >> 1]!.toFixed(1).padStart(10)} ${ns[0]!.toFixed(1).padStart(8)}\n`);
    }
  }
}

main();
