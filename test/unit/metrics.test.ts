/**
 * The Prometheus exporter (src/daemon/metrics.ts) against a status report of the test's own:
 * what /metrics says, that each scrape reads the report once, 404 elsewhere, a port in use, and
 * that close() leaves nothing listening, and that a server error later is logged and not the
 * end of it; and the Grafana dashboard (packaging/) names only
 * metrics the exporter exports.
 */
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { createServer } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { validateConfig } from '../../src/daemon/config.js';
import { IpipdError } from '../../src/daemon/errors.js';
import { createLogger } from '../../src/daemon/logger.js';
import { MetricsServer, ipipdRegistry, parseListen } from '../../src/daemon/metrics.js';
import type { StatusReport } from '../../src/daemon/status.js';
import { COUNTER_NAMES } from '../../src/dataplane/figures.js';
import { recordingLogger } from '../helpers/hop-kernel.js';

const silent = createLogger('silent');

function report(): StatusReport {
  const counters = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i]));
  counters.tx_bytes = 123456;
  return {
    state: 'up',
    pid: 1,
    uptimeSeconds: 5,
    tun: { name: 'ipip0', mtu: 1480, address: null, ifindex: 3 },
    underlay: { address: '192.0.2.1', device: 'ul0', mtu: 1500, send: 'raw' },
    batch: 64,
    offload: false,
    udpGro: false,
    queues: [
      { queue: 0, tunRxPackets: 10, txPackets: 9, underlayRxPackets: 8, rxPackets: 7 },
      { queue: 1, tunRxPackets: 20, txPackets: 19, underlayRxPackets: 18, rxPackets: 17 },
    ],
    routesInstalled: [],
    peers: [
      { name: 'h2', endpoint: '192.0.2.2', prefixes: ['203.0.113.128/25'], mtu: 1400, baseMtu: 1480, pmtuLearnedSecondsAgo: 3, reachable: false, unreachableReason: 'x', lastRxSecondsAgo: null, txPackets: 28, txBytes: 2800, rxPackets: 24, rxBytes: 2400, nextHop: null },
    ],
    counters,
    drops: { spoofed_source: 3, no_route: 0 },
    lastErrors: {},
    failure: null,
  } as StatusReport;
}

let server: MetricsServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function get(path: string): Promise<{ status: number; text: string }> {
  const r = await fetch(`http://${server!.address}${path}`);
  return { status: r.status, text: await r.text() };
}

describe('metrics exporter', () => {
  test('/metrics: per peer, drops by reason, global counters, per queue, process defaults; one report per scrape', async () => {
    let asked = 0;
    server = await MetricsServer.listen(
      '127.0.0.1:0',
      async () => {
        asked++;
        return report();
      },
      silent,
    );
    const r = await get('/metrics');
    expect(r.status).toBe(200);
    expect(asked).toBe(1);
    const lines = r.text.split('\n');
    for (const l of [
      'ipipd_up 1',
      'ipipd_peer_tx_packets_total{peer="h2"} 28',
      'ipipd_peer_tx_bytes_total{peer="h2"} 2800',
      'ipipd_peer_rx_packets_total{peer="h2"} 24',
      'ipipd_peer_rx_bytes_total{peer="h2"} 2400',
      'ipipd_peer_mtu_bytes{peer="h2"} 1400',
      'ipipd_peer_configured_mtu_bytes{peer="h2"} 1480',
      'ipipd_peer_reachable{peer="h2"} 0',
      'ipipd_drops_total{reason="spoofed_source"} 3',
      'ipipd_drops_total{reason="no_route"} 0',
      'ipipd_tx_bytes_total 123456',
      `ipipd_pmtu_updates_total ${COUNTER_NAMES.indexOf('pmtu_updates')}`,
      'ipipd_queue_tx_packets_total{queue="1"} 19',
      'ipipd_queue_rx_packets_total{queue="0"} 7',
      '# TYPE ipipd_drops_total counter',
      '# TYPE ipipd_peer_mtu_bytes gauge',
    ])
      expect(lines, l).toContain(l);
    // No peer has been heard from: no age sample.
    expect(r.text).not.toMatch(/^ipipd_peer_last_rx_age_seconds\{/m);
    expect(r.text).toMatch(/^process_cpu_seconds_total /m);
    expect(r.text).toMatch(/^nodejs_eventloop_lag_seconds /m);
    await get('/metrics');
    expect(asked).toBe(2);
  });

  test('anything but GET /metrics is 404', async () => {
    server = await MetricsServer.listen('127.0.0.1:0', async () => report(), silent);
    expect((await get('/')).status).toBe(404);
    expect((await get('/metrics/x')).status).toBe(404);
    expect((await fetch(`http://${server.address}/metrics`, { method: 'POST' })).status).toBe(404);
    expect((await get('/metrics?x=1')).status).toBe(200);
  });

  test('a port in use: ERR_METRICS_LISTEN naming it, nothing left listening; close() frees the port', async () => {
    const other = createServer();
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const port = (other.address() as { port: number }).port;
    const err = await MetricsServer.listen(`127.0.0.1:${port}`, async () => report(), silent).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IpipdError);
    expect((err as IpipdError).code).toBe('ERR_METRICS_LISTEN');
    expect((err as IpipdError).message).toContain(`127.0.0.1:${port}: EADDRINUSE`);
    await new Promise<void>((resolve) => other.close(() => resolve()));
    // The port is free again: the failed exporter holds nothing.
    server = await MetricsServer.listen(`127.0.0.1:${port}`, async () => report(), silent);
    const keepAlive = await fetch(`http://${server.address}/metrics`);
    expect(keepAlive.status).toBe(200);
    await server.close();
    server = undefined;
    await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
  });

  test('a server error after it listens is logged (where, the errno), and it goes on serving', async () => {
    const { log, lines } = recordingLogger();
    server = await MetricsServer.listen('127.0.0.1:0', async () => report(), log);
    // What libuv reports when accept(2) fails (EMFILE): an 'error' on the server, not fatal.
    (server as unknown as { server: Server }).server.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }));
    expect(lines).toEqual([{ level: 'warn', obj: { listen: server.address, code: 'EMFILE', err: 'accept EMFILE' }, msg: 'metrics: server error' }]);
    expect((await get('/metrics')).status).toBe(200);
  });

  test('config: metrics.listen is off by default and must be host:port', () => {
    const base = { underlay: { address: '192.0.2.1' }, peers: [{ name: 'h2', endpoint: '192.0.2.2', prefixes: ['203.0.113.128/25'] }] };
    expect(validateConfig(base).metrics.listen).toBeUndefined();
    expect(validateConfig({ ...base, metrics: { listen: '127.0.0.1:9474' } }).metrics.listen).toBe('127.0.0.1:9474');
    expect(parseListen('[::1]:9474')).toEqual({ host: '::1', port: 9474 });
    for (const bad of ['9474', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', 'a b:1']) {
      expect(() => validateConfig({ ...base, metrics: { listen: bad } }), bad).toThrow(/metrics\.listen/);
    }
  });
});

describe('Grafana dashboard (packaging/grafana-ipipd.json)', () => {
  test('its expressions name only metrics the exporter exports, and use the main ones', async () => {
    const { registry } = ipipdRegistry(async () => report());
    const exported = new Set((await registry.getMetricsAsJSON()).flatMap((m) => (String(m.type) === 'histogram' ? [m.name, `${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`] : [m.name])));
    const dash = JSON.parse(readFileSync(new URL('../../packaging/grafana-ipipd.json', import.meta.url), 'utf8')) as {
      panels: { targets: { expr: string }[] }[];
      templating: { list: { query?: unknown }[] };
    };
    const exprs = [...dash.panels.flatMap((p) => p.targets.map((t) => t.expr)), ...dash.templating.list.map((t) => t.query).filter((q): q is string => typeof q === 'string' && q.includes('('))];
    const used = new Set(exprs.flatMap((e) => e.match(/\b(ipipd|process|nodejs)_[a-z0-9_]+/g) ?? []));
    expect(used.size).toBeGreaterThan(10);
    for (const name of used) expect(exported, name).toContain(name);
    for (const name of ['ipipd_peer_tx_bytes_total', 'ipipd_drops_total', 'ipipd_peer_mtu_bytes', 'ipipd_queue_tx_packets_total', 'ipipd_icmp_sent_total']) expect(used).toContain(name);
  });
});
