/**
 * `ipipd`, the command line: `run` (the daemon, src/daemon/run.ts), `check` (validate a config,
 * touch nothing), `status` (ask a running daemon for its counters), `reload` (make it re-read its
 * config file), `routes` (its live prefix table), `check --diff` (what a reload would do). Errors
 * end the process with the exit status of their code in the registry (src/daemon/errors.ts): 2
 * for usage and config, 1 at run time.
 *
 * A well-formed `ipipd run` does not come here: bin/ipipd.js starts the daemon without loading
 * yargs (src/daemon/run-args.ts says why). This module words `run`'s help and usage errors.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { asWritten, describeConfig, loadConfig } from './config.js';
import { askDaemon } from './control.js';
import { IpipdError } from './errors.js';
import { writeStderr } from './logger.js';
import { fail, run } from './run.js';
import { LEVELS, type Level } from './run-args.js';
import { runTrace } from './trace-client.js';
import { TRACE_REASONS } from './trace.js';

function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      dir = dirname(dir);
    }
  }
  return 'unknown';
}

async function cmdCheck(file: string, json: boolean, diffSocket?: string): Promise<void> {
  const c = loadConfig(file);
  if (diffSocket !== undefined) {
    // What a reload to this file would do, computed by the daemon against what it runs.
    const { value } = await askDaemon(diffSocket, { cmd: 'reload', dryRun: true, text: readFileSync(file, 'utf8'), source: file });
    const a = value as import('./live.js').ReloadAnswer;
    process.stdout.write(json ? JSON.stringify(a, null, 2) + '\n' : `${file}: ok; a reload would:\n${a.changes.map((l) => `  ${l}`).join('\n')}\n`);
    return;
  }
  if (json) process.stdout.write(JSON.stringify(c, asWritten, 2) + '\n');
  else process.stdout.write(`${file}: ok\n${describeConfig(c).map((l) => `  ${l}`).join('\n')}\n`);
}

async function cmdStatus(socket: string, json: boolean): Promise<void> {
  const { text, value } = await askDaemon(socket, { cmd: 'status' });
  if (json) {
    process.stdout.write(text);
    return;
  }
  const s = value as import('./status.js').StatusReport;
  const out: string[] = [];
  out.push(`ipipd ${s.state}, pid ${s.pid}, up ${s.uptimeSeconds}s`);
  out.push(`  tun ${s.tun.name} mtu ${s.tun.mtu}${s.tun.address ? ` address ${s.tun.address}` : ''}; underlay ${s.underlay.address} on ${s.underlay.device} (mtu ${s.underlay.mtu}, sending ${s.underlay.send === 'packet' ? 'through AF_PACKET' : 'through the raw socket'}); batch ${s.batch}${s.offload ? `; offload on (${s.udpGro ? 'TSO, USO, TCP and UDP GRO' : 'TSO, TCP GRO'})` : ''}`);
  if (s.fou) out.push(`  fou udp port ${s.fou.port}, source ports ${s.fou.sourcePorts.join(',')}; UDP_SEGMENT ${s.fou.udpSegment}, UDP_GRO ${s.fou.udpGro}`);
  for (const p of s.peers) {
    const mtu = p.mtu === p.baseMtu ? `mtu ${p.mtu}` : `mtu ${p.mtu} (learned ${p.pmtuLearnedSecondsAgo}s ago; configured ${p.baseMtu})`;
    const reach = p.reachable ? '' : ` UNREACHABLE (${p.unreachableReason})`;
    const last = p.lastRxSecondsAgo === null ? 'nothing received yet' : `last rx ${p.lastRxSecondsAgo}s ago`;
    const plain = p.path === 'plain' ? ' (plain route, same underlay subnet)' : '';
    out.push(`  peer ${p.name} ${p.endpoint}${p.encap === 'fou' ? ' (fou)' : ''} [${p.prefixes.join(', ')}]${plain} ${mtu}${reach}: tx ${p.txPackets} pkts ${p.txBytes} B, rx ${p.rxPackets} pkts ${p.rxBytes} B, ${last}`);
    const h = p.nextHop;
    if (h !== null) {
      const where = h.via === undefined ? '' : ` via ${h.via}${h.ifindex ? ` (ifindex ${h.ifindex})` : ''}`;
      out.push(`    next hop${where}: ${h.send === 'packet' ? `AF_PACKET to ${h.mac}` : 'raw socket'}, neighbour ${h.state}`);
    }
  }
  if (s.encap) {
    const e = s.encap;
    out.push(`  encap mode ${e.mode}${e.mode === 'cross-subnet' ? ` (underlay subnet ${e.subnet}): plain routes ${e.plainRoutes.join(', ') || 'none'}` : ''}; ${e.blackholes.join(', ') || 'no blackhole'}`);
  }
  if (s.queues.length > 1) out.push(`  queues ${s.queues.length}: ${s.queues.map((q) => `#${q.queue} tx ${q.txPackets} rx ${q.rxPackets}`).join(', ')}`);
  out.push(`  counters: ${Object.entries(s.counters).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  const drops = Object.entries(s.drops).filter(([, v]) => v !== 0);
  out.push(`  drops: ${drops.length ? drops.map(([k, v]) => `${k}=${v}`).join(' ') : 'none'}`);
  if (s.live) {
    const l = s.live.lastChange;
    const k = s.live.kernelRoutes;
    out.push(`  live: ${s.live.reloads} reload(s)${l ? `; last change ${l.secondsAgo}s ago (${l.trigger}): +${l.added} -${l.removed} ~${l.changed} peers, +${l.routesAdded} -${l.routesRemoved} routes` : ''}${k ? `; kernel routes ${k.routes} (${k.events} events, ${k.dumps} dumps, ${k.errors} errors)` : ''}`);
  }
  const errs = Object.entries(s.lastErrors);
  if (errs.length) out.push(`  last errors: ${errs.map(([k, v]) => `${k}=${v}`).join(' ')}`);
  if (s.memory) out.push(`  memory: ${memoryLine(s.memory)}`);
  if (s.failure) out.push(`  FAILED ${s.failure.code}: ${s.failure.reason}; routes lost: ${s.failure.routesLost.join(', ') || 'none'}`);
  process.stdout.write(out.join('\n') + '\n');
}

/** `ipipd status`'s memory line, in MiB (src/daemon/footprint.ts). */
function memoryLine(m: import('./footprint.js').MemoryFigures): string {
  const mib = (kib: number): string => (kib / 1024).toFixed(1);
  return `rss ${mib(m.rssKiB)} MiB (private ${mib(m.anonKiB)}, file-backed ${mib(m.fileKiB)}; peak ${mib(m.peakKiB)}), V8 heap ${mib(m.heapUsedKiB)} of ${mib(m.heapTotalKiB)} MiB, buffers ${mib(m.arrayBuffersKiB)} MiB reserved`;
}

/** The control socket from --socket, or from the config file's control.socket (as status finds it). */
function socketOf(a: { socket?: string | undefined; config?: string | undefined }): string {
  if (a.socket) return a.socket;
  const c = loadConfig(a.config!);
  if (c.control.socket === false) throw new IpipdError('ERR_STATUS_UNREACHABLE', `${a.config}: control.socket is disabled`);
  return c.control.socket;
}

/** --config / --socket (one of them) and --json, for the commands that ask a running daemon. */
function socketOptions<T>(y: Argv<T>, cmd: string, config: string, json: string) {
  return y
    .option('config', { alias: 'c', type: 'string', requiresArg: true, describe: config })
    .option('socket', { alias: 's', type: 'string', requiresArg: true, describe: 'Control socket path' })
    .option('json', { type: 'boolean', default: false, describe: json })
    .check((a) => {
      if (!a.config && !a.socket) throw new IpipdError('ERR_USAGE', `${cmd} needs --socket PATH or --config FILE`);
      return true;
    });
}

async function cmdReload(a: { socket?: string | undefined; config?: string | undefined }, json: boolean): Promise<void> {
  const socket = socketOf(a);
  const { text, value } = await askDaemon(socket, { cmd: 'reload', ...(a.config ? { file: resolve(a.config) } : {}) }, 30_000);
  const r = value as import('./live.js').ReloadAnswer;
  if (json) process.stdout.write(text);
  else process.stdout.write(`reloaded:${r.changes.map((l) => `\n  ${l}`).join('')}\n${r.errors.map((e) => `  error: ${e}\n`).join('')}`);
  if (r.errors.length) process.exitCode = 1;
}

async function cmdRoutes(socket: string, json: boolean): Promise<void> {
  const { text, value } = await askDaemon(socket, { cmd: 'routes' });
  if (json) {
    process.stdout.write(text);
    return;
  }
  const t = value as { routes: { prefix: string; peer: string; endpoint: string; source: string; txPackets: number; rxPackets: number }[] };
  const rows = [['PREFIX', 'PEER', 'ENDPOINT', 'SOURCE', 'TX_PACKETS', 'RX_PACKETS'], ...t.routes.map((r) => [r.prefix, r.peer, r.endpoint, r.source, String(r.txPackets), String(r.rxPackets)])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  process.stdout.write(rows.map((r) => r.map((x, i) => x.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
}

/** `ipipd trace`'s options: where the daemon is, which packets, how many, which format. */
function traceOptions<T>(y: Argv<T>) {
  return socketOptions(y, 'trace', 'Config file (to find control.socket)', 'JSON lines, as the daemon sends them')
    .option('reason', { alias: 'r', type: 'string', choices: TRACE_REASONS, describe: 'Only packets with this verdict: a drop reason, "drop" (any), "forward", "icmp" (ICMP from the underlay) or "any"' })
    .option('peer', { alias: 'p', type: 'string', describe: 'Only packets to or from this peer: its name (a peer learned from a kernel route: kernel:ENDPOINT)' })
    .option('count', { alias: 'n', type: 'number', default: 0, describe: 'Stop after this many packets (0: until Ctrl-C)' })
    .check((a) => {
      if (!Number.isInteger(a.count) || a.count < 0) throw new IpipdError('ERR_USAGE', '--count must be a whole number');
      return true;
    })
    .example('$0 trace -c ipipd.yaml --reason drop', 'every kind of drop')
    .example('$0 trace -c ipipd.yaml --peer h2 -n 20 --json', '20 packets to or from peer h2, as JSON lines');
}

/** `ipipd trace`: stream the daemon's samples until --count or Ctrl-C (src/daemon/trace-client.ts). */
async function cmdTrace(a: { socket?: string | undefined; config?: string | undefined; reason?: string | undefined; peer?: string | undefined; count: number; json: boolean }): Promise<void> {
  const req = { cmd: 'trace', count: a.count, ...(a.reason ? { reason: a.reason } : {}), ...(a.peer ? { peer: a.peer } : {}) };
  await runTrace(socketOf(a), req, a.count, a.json, (l) => process.stdout.write(l + '\n'), (l) => process.stderr.write(l + '\n'));
}

export async function main(argv: string[]): Promise<void> {
  const parser = yargs(argv)
    .scriptName('ipipd')
    .usage('ipipd: userspace IP-in-IP (RFC 2003) tunnel daemon\n\nUsage: $0 <command> [options]')
    .command(
      'run',
      'Run the tunnel daemon (as root, or with CAP_NET_ADMIN and CAP_NET_RAW): create the TUN, open the underlay socket, install routes, forward until SIGINT/SIGTERM, then remove everything it created.',
      (y) =>
        y
          .option('config', { alias: 'c', type: 'string', demandOption: true, requiresArg: true, describe: 'YAML config file' })
          .option('log-level', { type: 'string', choices: LEVELS, describe: 'Override log.level from the config' })
          .example('$0 run --config /etc/ipipd/ipipd.yaml', 'run with a config file'),
      async (a) => run(a.config, a['log-level'] as Level | undefined),
    )
    .command(
      'check',
      'Validate a config file and print what it would do; touches nothing. Exit 0 if valid, 2 if not.',
      (y) =>
        y
          .option('config', { alias: 'c', type: 'string', demandOption: true, requiresArg: true, describe: 'YAML config file' })
          .option('json', { type: 'boolean', default: false, describe: 'Print the normalised config as JSON' })
          .option('diff', { type: 'boolean', default: false, describe: 'Print what a reload to this config would do to the daemon on --socket; changes nothing' })
          .option('socket', { alias: 's', type: 'string', requiresArg: true, describe: 'Control socket of the running daemon (with --diff)' })
          .check((a) => {
            if (a.diff && !a.socket) throw new IpipdError('ERR_USAGE', 'check --diff needs --socket');
            return true;
          }),
      async (a) => cmdCheck(a.config, a.json, a.diff ? a.socket : undefined),
    )
    .command(
      'reload',
      "Make a running daemon re-read its config file and apply the difference without dropping a flow (as SIGHUP does). Exit 0 and what changed; 2 and the errors of 'ipipd check' if the config is invalid or needs a restart, and nothing changes.",
      (y) => socketOptions(y, 'reload', "The daemon's config file (to find control.socket; it must be the file the daemon runs)", 'Print the raw JSON answer'),
      async (a) => cmdReload(a, a.json),
    )
    .command(
      'routes',
      "Print a running daemon's live prefix table: prefix, peer, endpoint, source (config or kernel), the peer's packets.",
      (y) => socketOptions(y, 'routes', 'Config file (to find control.socket)', 'Print the raw JSON table'),
      async (a) => cmdRoutes(socketOf(a), a.json),
    )
    .command(
      'status',
      "Print a running daemon's state, peers and counters (read from its control socket).",
      (y) => socketOptions(y, 'status', 'Config file (to find control.socket)', 'Print the raw JSON report'),
      async (a) => cmdStatus(socketOf(a), a.json),
    )
    .command(
      'trace',
      'Print sampled packets a running daemon forwards or drops (outer and inner addresses, protocol, ports, length, verdict, queue), at most 200 a second per queue, until --count or Ctrl-C.',
      traceOptions,
      cmdTrace,
    )
    .demandCommand(1, 'Name a command: run, check, status, reload, routes or trace.')
    .strict()
    .version(packageVersion())
    .help()
    .alias('h', 'help')
    .epilog('Exit status: 0 ok, 1 runtime error, 2 bad usage, a bad config or a request the daemon refused. Error codes: see README "Errors".')
    .fail((msg, err) => {
      // yargs' own validation errors (YError) and ours are usage errors: no stack trace, exit 2.
      if ((err instanceof IpipdError && err.code === 'ERR_USAGE') || err?.name === 'YError') msg = err.message;
      else if (err) fail(err);
      writeStderr(`ipipd: ERR_USAGE: ${msg}\nRun 'ipipd --help' for usage.\n`);
      process.exit(2);
    })
    .wrap(Math.min(100, process.stdout.columns || 100));
  await parser.parseAsync();
}

main(hideBin(process.argv)).catch(fail);
