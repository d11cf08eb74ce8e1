/**
 * The Prometheus exporter (config `metrics.listen`, README "Metrics"): an HTTP server answering
 * `GET /metrics` in the text exposition format, and 404 to anything else.
 *
 * Flow, in the order of this file: `METRIC_DEFS`, every ipipd metric with its help and where
 * its value comes from in the status report (src/daemon/status.ts); `ipipdRegistry`, a
 * prom-client registry holding them and prom-client's process defaults (CPU, memory, file
 * descriptors, GC, event-loop lag); `MetricsServer`, listen and close.
 *
 * Nothing is counted per packet here: every value is read at scrape time, by the metrics'
 * collect() callbacks, from one status report per scrape (the same one `ipipd status` gets:
 * queue 0's figures plus every queue worker's, added up). Counters are set to the report's
 * running totals (prom-client counters only go up; ours restart from 0 only when the daemon
 * restarts, which Prometheus's rate() takes as a counter reset).
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { COUNTER_NAMES } from '../dataplane/figures.js';
import { IpipdError, errnoName } from './errors.js';
import type { Logger } from './logger.js';
import type { StatusReport } from './status.js';

/** Where the values come from: the daemon's status report (Daemon.status). */
export type MetricsSource = () => Promise<StatusReport>;

type Labels = Record<string, string>;
type Sample = [Labels, number];

interface MetricDef {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  labels: readonly string[];
  samples: (s: StatusReport) => Sample[];
}

const perPeer = (f: (p: StatusReport['peers'][number]) => number) => (s: StatusReport): Sample[] => s.peers.map((p) => [{ peer: p.name }, f(p)]);
const perQueue = (f: (q: StatusReport['queues'][number]) => number) => (s: StatusReport): Sample[] => s.queues.map((q) => [{ queue: String(q.queue) }, f(q)]);

/**
 * README "Counters": each global counter as `ipipd_<name>_total`: the data path's, and the two the
 * daemon adds to the report (the TUN's kernel-side drops, log lines it could not write).
 */
const GLOBAL_COUNTERS: MetricDef[] = [...COUNTER_NAMES, 'tun_kernel_tx_dropped', 'log_write_errors'].map((n) => ({
  name: `ipipd_${n}_total`,
  help: `Global counter ${n} (README "Counters"), every queue added up.`,
  type: 'counter',
  labels: [],
  samples: (s) => [[{}, s.counters[n] ?? 0]],
}));

/** Every metric ipipd exports besides prom-client's defaults. */
export const METRIC_DEFS: readonly MetricDef[] = [
  { name: 'ipipd_up', help: '1 while the daemon is up (forwarding), 0 while starting or closing.', type: 'gauge', labels: [], samples: (s) => [[{}, s.state === 'up' ? 1 : 0]] },
  { name: 'ipipd_peer_tx_packets_total', help: 'Encapsulated packets sent to the peer.', type: 'counter', labels: ['peer'], samples: perPeer((p) => p.txPackets) },
  { name: 'ipipd_peer_tx_bytes_total', help: 'Inner bytes sent to the peer (outer header not counted).', type: 'counter', labels: ['peer'], samples: perPeer((p) => p.txBytes) },
  { name: 'ipipd_peer_rx_packets_total', help: 'Packets from the peer decapsulated and written to the TUN.', type: 'counter', labels: ['peer'], samples: perPeer((p) => p.rxPackets) },
  { name: 'ipipd_peer_rx_bytes_total', help: 'Inner bytes from the peer written to the TUN.', type: 'counter', labels: ['peer'], samples: perPeer((p) => p.rxBytes) },
  { name: 'ipipd_peer_mtu_bytes', help: 'Tunnel MTU toward the peer now (lower than configured after a path MTU was learned).', type: 'gauge', labels: ['peer'], samples: perPeer((p) => p.mtu) },
  { name: 'ipipd_peer_configured_mtu_bytes', help: 'Tunnel MTU toward the peer as configured.', type: 'gauge', labels: ['peer'], samples: perPeer((p) => p.baseMtu) },
  { name: 'ipipd_peer_reachable', help: '0 after an ICMP unreachable about our packets to the peer, until a packet from it arrives; else 1.', type: 'gauge', labels: ['peer'], samples: perPeer((p) => (p.reachable ? 1 : 0)) },
  { name: 'ipipd_peer_last_rx_age_seconds', help: 'Seconds since the last packet from the peer (absent: none yet).', type: 'gauge', labels: ['peer'], samples: (s) => s.peers.filter((p) => p.lastRxSecondsAgo !== null).map((p) => [{ peer: p.name }, p.lastRxSecondsAgo!]) },
  {
    name: 'ipipd_drops_total',
    help: 'Packets dropped, by reason (README "Counters", drop reasons).',
    type: 'counter',
    labels: ['reason'],
    samples: (s) => Object.entries(s.drops).map(([reason, v]) => [{ reason }, v]),
  },
  ...GLOBAL_COUNTERS,
  { name: 'ipipd_queue_tun_rx_packets_total', help: 'Per data-path queue: inner packets read from the TUN.', type: 'counter', labels: ['queue'], samples: perQueue((q) => q.tunRxPackets) },
  { name: 'ipipd_queue_tx_packets_total', help: 'Per data-path queue: encapsulated packets sent on the underlay.', type: 'counter', labels: ['queue'], samples: perQueue((q) => q.txPackets) },
  { name: 'ipipd_queue_underlay_rx_packets_total', help: 'Per data-path queue: IPIP datagrams read from the underlay.', type: 'counter', labels: ['queue'], samples: perQueue((q) => q.underlayRxPackets) },
  { name: 'ipipd_queue_rx_packets_total', help: 'Per data-path queue: decapsulated packets written to the TUN.', type: 'counter', labels: ['queue'], samples: perQueue((q) => q.rxPackets) },
];

/**
 * A registry with ipipd's metrics, read from `source` at scrape time (one report per scrape,
 * shared by every metric's collect()), and prom-client's process defaults. `beginScrape` must be
 * called before each `registry.metrics()`.
 */
export function ipipdRegistry(source: MetricsSource): { registry: Registry; beginScrape: () => void } {
  const registry = new Registry();
  let current: Promise<StatusReport> | undefined;
  const report = (): Promise<StatusReport> => (current ??= source());
  for (const d of METRIC_DEFS) {
    // Both kinds are set from the report: reset, then each sample added to zero.
    async function collect(this: Counter | Gauge): Promise<void> {
      const s = await report();
      this.reset();
      for (const [labels, v] of d.samples(s)) (this as Gauge).inc(labels, v);
    }
    const opts = { name: d.name, help: d.help, labelNames: d.labels as string[], registers: [registry], collect };
    if (d.type === 'counter') new Counter(opts);
    else new Gauge(opts);
  }
  // CPU, memory, fds, GC, and event-loop lag (nodejs_eventloop_lag_seconds and its percentiles).
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    beginScrape: () => {
      current = undefined;
    },
  };
}

/** `host:port` (`[v6]:port` too) as listen() takes it. */
export function parseListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(listen.slice(i + 1)) };
}

export class MetricsServer {
  private constructor(
    private readonly server: Server,
    /** Where it listens, as `host:port` (the real port when 0 was asked for). */
    readonly address: string,
  ) {}

  /**
   * Listen on `listen` (`host:port`); ERR_METRICS_LISTEN if that fails (e.g. EADDRINUSE), nothing
   * left open. A server error once it listens is logged to `log`.
   */
  static async listen(listen: string, source: MetricsSource, log: Logger): Promise<MetricsServer> {
    const { registry, beginScrape } = ipipdRegistry(source);
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (req.method !== 'GET' || path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: ipipd serves GET /metrics\n');
        return;
      }
      beginScrape();
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err instanceof Error ? err.message : err}\n`),
      );
    });
    const { host, port } = parseListen(listen);
    await new Promise<void>((resolve, reject) => {
      const failed = (err: Error): void => {
        server.close();
        reject(new IpipdError('ERR_METRICS_LISTEN', `metrics.listen ${listen}: ${errnoName(err) ?? err}${errnoName(err) === 'EADDRINUSE' ? ' (something else listens there: pick another port)' : ''}`, { cause: err }));
      };
      server.once('error', failed);
      server.listen(port, host, () => {
        server.off('error', failed); // a later error would close the server
        resolve();
      });
    });
    const a = server.address();
    const where = a !== null && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : listen;
    // A server error now (EMFILE on accept) must not end the data path: logged, and it goes on.
    server.on('error', (err) => log.warn({ listen: where, code: errnoName(err), err: err.message }, 'metrics: server error'));
    return new MetricsServer(server, where);
  }

  /** Stop listening and drop open connections (a scraper's keep-alive). */
  async close(): Promise<void> {
    const done = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await done;
  }
}
