/**
 * Worker thread entry for one data-path queue (config io.queues > 1; src/daemon/queues.ts says
 * why and what is shared). Flow: build the queue from the config with `createQueue`
 * (src/dataplane/queue.ts, as the main thread builds queue 0) on the queue's TUN fd and steered
 * raw socket (and, with `underlay.send: packet`, its own AF_PACKET socket and next-hop table),
 * with no ICMP socket (queue 0 reads underlay ICMP for all), warmed up; start reading, say
 * `ready`; then answer the main thread's messages (snapshots, path MTUs, next hops, and a config
 * reload: the new peer set swapped in between two batches by `reloadQueue`) until `stop`, after which the Readers are
 * released, the final figures are posted and, with no handle left, the thread ends. The fds are
 * the daemon's: never closed here. This thread entry stays in the control plane because it owns
 * what src/dataplane does not: the thread, its logger and its messages.
 */
import './young-generation.js';
import { parentPort, workerData } from 'node:worker_threads';
import type { LevelWithSilent } from 'pino';
import { queueSnapshot, type QueueSnapshot } from '../dataplane/figures.js';
import { setHopEntry } from '../dataplane/hops.js';
import { createQueue, reloadQueue } from '../dataplane/queue.js';
import { TRACE_DRAIN_MS } from '../dataplane/trace.js';
import { native } from '../tun/native.js';
import { heapReserved, settleMemory } from './footprint.js';
import { createLogger } from './logger.js';
import type { FromWorker, QueueWorkerData, ToWorker } from './queues.js';

const d = workerData as QueueWorkerData;
native.setThreadName(`ipipd-q${d.queue}`);
const port = parentPort!;
const root = createLogger(d.logLevel as LevelWithSilent);
const log = root.child({ subsystem: 'dataplane', queue: d.queue });
// underlay.send: packet: this queue's copy of the next-hop table, kept up to date by 'hop' messages.
const hops = Int32Array.from(d.hops);
// A config reload replaces the peers (reloadQueue).
const { dataplane: dp, peers: startPeers, warmUp } = createQueue(d.config, {
  ...d,
  log,
  ...(d.packetFd >= 0 ? { packet: { fd: d.packetFd, hops } } : {}),
});

let peers = startPeers;

const snapshot = (): QueueSnapshot => queueSnapshot(dp.figures);
dp.tracer.queue = d.queue;
// Live tracing: while on, the sampled packets are posted every TRACE_DRAIN_MS (bounded by the sampler).
let traceTimer: NodeJS.Timeout | undefined;
function drainTrace(): void {
  const { records, skipped } = dp.tracer.drain();
  if (records.length > 0 || skipped > 0) send({ type: 'trace', records, skipped });
}

function send(m: FromWorker): void {
  port.postMessage(m);
}

port.on('message', (m: ToWorker) => {
  if (m.type === 'snapshot') send({ type: 'snapshot', id: m.id, snap: snapshot() });
  else if (m.type === 'mtu') {
    const p = peers[m.peer];
    if (p) p.mtu = m.mtu;
  } else if (m.type === 'hop') {
    setHopEntry(hops, m.peer, m.entry);
  } else if (m.type === 'trace') {
    dp.tracer.configure(m.filter);
    if (m.filter && !traceTimer) traceTimer = setInterval(drainTrace, TRACE_DRAIN_MS);
    if (!m.filter && traceTimer) {
      clearInterval(traceTimer);
      traceTimer = undefined;
      dp.tracer.drain(); // what is left goes nowhere
    }
  } else if (m.type === 'reload') {
    // Between two batches: this handler and the Readers' callbacks share this thread.
    peers = reloadQueue(dp, peers, m.reload, d.queue, d.queues, d.tunMtu);
    root.level = m.logLevel;
    send({ type: 'reloaded', id: m.id, peers: peers.length });
    // This isolate's copy of a large reload (the structured clone, its tables) as the main thread does.
    settleMemory(native, heapAtReady);
  } else if (m.type === 'stop') {
    if (traceTimer) clearInterval(traceTimer);
    dp.stop();
    dp.close();
    send({ type: 'stopped', snap: snapshot() });
    port.close(); // the last handle: the thread ends
  }
});

dp.start();
const heapAtReady = heapReserved();
send({ type: 'ready', packets: warmUp.packets, ms: warmUp.ms });
