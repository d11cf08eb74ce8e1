/**
 * Worker thread entry for one data-path queue (config io.queues > 1; src/daemon/queues.ts says
 * why and what is shared). Flow: build the Tunnel from the config with this queue's ID plan,
 * build a Dataplane on the queue's TUN fd and steered raw socket (and, with `underlay.send:
 * packet`, its own AF_PACKET socket and next-hop table) (no ICMP socket: queue 0 reads
 * underlay ICMP for all), warm it up, start reading, say `ready`; then answer the main thread's
 * messages until `stop`, after which the Readers are released, the final figures are posted
 * and, with no handle left, the thread ends. The fds are the daemon's: never closed here.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { LevelWithSilent } from 'pino';
import { native } from '../tun/native.js';
import { Dataplane } from '../dataplane/dataplane.js';
import { createLogger } from './logger.js';
import { setHopEntry } from './nexthop.js';
import { queueSnapshot, type FromWorker, type QueueSnapshot, type QueueWorkerData, type ToWorker } from './queues.js';
import { WARM_UP_ROUNDS, buildTunnel, icmpLimits, queueIds, warmUpFlows } from '../dataplane/queue.js';

const d = workerData as QueueWorkerData;
native.setThreadName(`ipipd-q${d.queue}`);
const port = parentPort!;
const c = d.config;
const log = createLogger(d.logLevel as LevelWithSilent).child({ subsystem: 'dataplane', queue: d.queue });
const { tunnel, peers } = buildTunnel(c, d.tunMtu, queueIds(c.peers.length, d.queue, d.queues, d.idStarts));
// underlay.send: packet: this queue's copy of the next-hop table, kept up to date by 'hop' messages.
const hops = Int32Array.from(d.hops);
const dp = new Dataplane({
  tunFd: d.tunFd,
  rawFd: d.rawFd,
  icmpFd: -1,
  tunnel,
  icmpSource: d.icmpSource,
  // The daemon's ICMP rate is shared by its queues.
  ...icmpLimits(c, d.queues),
  batch: c.io.batch,
  offload: c.io.offload,
  udpGro: d.udpGro,
  tunMtu: d.tunMtu,
  underlayMax: d.underlayMax,
  log,
  ...(d.packetFd >= 0 ? { packet: { fd: d.packetFd, hops } } : {}),
});

const snapshot = (): QueueSnapshot => queueSnapshot(dp, peers);

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
  } else if (m.type === 'stop') {
    dp.stop();
    dp.close();
    send({ type: 'stopped', snap: snapshot() });
    port.close(); // the last handle: the thread ends
  }
});

const t0 = performance.now();
const packets = dp.warmUp(warmUpFlows(c, tunnel), WARM_UP_ROUNDS);
dp.start();
send({ type: 'ready', packets, ms: Math.round(performance.now() - t0) });
