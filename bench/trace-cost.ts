/**
 * What live tracing (src/dataplane/trace.ts) costs the batch handlers: CPU ns per packet of
 * `onTunBatch` + `onRawBatch` over batches of 64 forwards each way (UDP, one peer), with the
 * tracer off, on with a filter every packet matches, on with one none matches, and off again.
 * Sends and TUN writes go to the native discard fd: only the handlers' own work is measured.
 * CPU time (process.cpuUsage), not wall-clock, so that other processes on a shared machine
 * count less; the best of 15 rounds.
 *
 * Run: npm run build && node dist/bench/trace-cost.js   (about 10 s)
 */
import { execFileSync } from 'node:child_process';
import { constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../src/daemon/config.js';
import { createLogger } from '../src/daemon/logger.js';
import { Dataplane } from '../src/dataplane/dataplane.js';
import { buildTunnel } from '../src/dataplane/queue.js';
import { HEADROOM } from '../src/dataplane/slabs.js';
import { TRACE_ANY } from '../src/dataplane/trace.js';
import { WARM_UDP, writeWarmOuter, writeWarmPacket } from '../src/dataplane/warmup.js';
import { Verdict } from '../src/ipip/verdict.js';
import { parseIPv4 } from '../src/routing/prefix.js';

const BATCH = 64;
const ip = (s: string): number => parseIPv4(s)!;
const dir = mkdtempSync('/tmp/ipipd-trace-cost-');
const fifo = (n: string): number => {
  execFileSync('mkfifo', [join(dir, n)]);
  return openSync(join(dir, n), constants.O_RDWR | constants.O_NONBLOCK);
};
const c = parseConfig('tun: { name: tc0, mtu: 1400 }\nunderlay: { address: 192.0.2.1 }\npeers:\n  - { name: b, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }\n');
const { tunnel } = buildTunnel(c, 1400);
const dp = new Dataplane({
  tunFd: fifo('tun'), rawFd: fifo('raw'), icmpFd: -1, tunnel, batch: BATCH, tunMtu: 1400, underlayMax: 1500,
  icmpSource: ip('198.51.100.1'), icmpRate: 100, icmpBurst: 10, log: createLogger('silent'),
});
dp.ports.tun = dp.ports.io.DISCARD_FD;
dp.ports.raw = dp.ports.io.DISCARD_FD;
const { txBuf, tunLens, rxBuf, rawLens, rawSlot } = dp.slabs;
for (let i = 0; i < BATCH; i++) {
  tunLens[i] = writeWarmPacket(txBuf, dp.slabs.placeTun(i), WARM_UDP, ip('198.51.100.10'), ip('203.0.113.10'), 64, i, 1, false);
  const n = writeWarmPacket(rxBuf, i * rawSlot + 20, WARM_UDP, ip('203.0.113.10'), ip('198.51.100.10'), 64, i, 1, false);
  rawLens[i] = writeWarmOuter(rxBuf, i * rawSlot, n, ip('192.0.2.2'), ip('192.0.2.1'), i);
}

/** CPU ns per packet over `iters` batches each way. */
function round(iters: number): number {
  const t0 = process.cpuUsage();
  for (let k = 0; k < iters; k++) {
    dp.send.onTunBatch(BATCH);
    dp.receive.onRawBatch(BATCH);
  }
  const u = process.cpuUsage(t0);
  return ((u.user + u.system) * 1000) / (iters * 2 * BATCH);
}
const best = (): number => Math.min(...Array.from({ length: 15 }, () => round(4000)));

round(3000); // warm-up
const off = best();
dp.tracer.configure({ verdict: TRACE_ANY, peerEndpoint: 0 });
const onAll = best();
dp.tracer.configure({ verdict: Verdict.no_route, peerEndpoint: 0 });
const onNone = best();
dp.tracer.configure(null);
const offAgain = best();
dp.close();
rmSync(dir, { recursive: true, force: true });
const f = (x: number): string => `${x.toFixed(1)} ns`;
process.stdout.write(`batch handlers, CPU per packet: tracing off ${f(off)}; on, all match ${f(onAll)} (at most 200 samples/s kept); on, none match ${f(onNone)}; off again ${f(offAgain)}\n`);
process.exit(0);
