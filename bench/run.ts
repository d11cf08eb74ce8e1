/**
 * `npm run bench`: pod-to-pod throughput, packet rate, CPU per packet, latency and memory through
 * ipipd, compared with direct routing and, when installed, quicktun and wireguard-go, on
 * network namespaces built by scripts/netns-setup.sh (method and diagram: docs/performance.md).
 *
 * Flow: parse options (options.ts); check prerequisites (root, iperf3, ping or traffic.js, the
 * modes' binaries; `--peers` installs them with apt-get, machine.ts); collect machine facts;
 * then, for every round and every mode in it, measure the mode in a fresh topology
 * (mode-run.ts). After each round, ratios to direct routing of that round; at the end, the
 * spread over rounds, the table, results/bench-<timestamp>.json and a chart,
 * results/bench-<timestamp>.svg. `--soak` runs soak.ts instead.
 *
 * The bench measures; it asserts nothing about speed. It fails (exit 1, partial JSON written)
 * only when a mode does not carry traffic or a tool fails. Every exit path kills what it started
 * and deletes its namespaces (tools/netns/safety-net.ts).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasCommand } from '../tools/netns/exec.js';
import { freshPrefix } from '../tools/netns/namespaces.js';
import { installSafetyNet, onCleanup } from '../tools/netns/safety-net.js';
import { TRAFFIC_JS } from '../tools/netns/topology.js';
import { installPeers, machineFacts } from './machine.js';
import { type MeasureContext, type ModeRaw, measureMode } from './mode-run.js';
import { type IpipdModeName, MODES, type ModeName, POD_MTU } from './modes.js';
import { HELP, type Options, parseOptions } from './options.js';
import { clearProgress, progress, say } from './progress.js';
import { type ModeSummary, type RoundEntry, FIGURES, ratiosTo, ratiosToFloor, ratiosToQuicktun, setAdded, summarize, table } from './report.js';
import { footprintTable } from './footprint.js';
import { runSoak } from './soak.js';
import { chart } from './svg.js';

interface Results {
  schema: 'ipipd-bench/1';
  startedAt: string;
  finishedAt: string | null;
  argv: string[];
  options: Omit<Options, 'modesExplicit' | 'soak'>;
  machine: Record<string, unknown>;
  modeFacts: Record<string, Record<string, unknown>>;
  skipped: Array<{ mode: ModeName; reason: string }>;
  figures: typeof FIGURES;
  rounds: Array<Record<string, RoundEntry & { raw: Omit<ModeRaw, 'figures'> }>>;
  summary: Record<string, ModeSummary>;
  warnings: string[];
  error: string | null;
}

async function main(): Promise<number> {
  let opts: Options | null;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\nTry 'npm run bench -- --help'.\n`);
    return 2;
  }
  if (opts === null) {
    process.stdout.write(HELP);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: must run as root (network namespaces, TUN devices, raw sockets)\n');
    return 2;
  }
  installSafetyNet((sig) => say(`bench: ${sig}: stopping, killing what was started, deleting the namespaces`));

  if (opts.peers) await installPeers();
  if (!hasCommand('iperf3')) {
    process.stderr.write("bench: iperf3 is not installed: apt-get install -y iperf3 (or run with --peers)\n");
    return 2;
  }
  if (opts.soak !== null) return soak(opts, opts.soak);
  const udpPing = useUdpPing();
  if (udpPing === null) return 2;
  const picked = pickModes(opts);
  if (picked === null) return 2;
  return compare(opts, picked.modes, picked.skipped, udpPing);
}

/** Whether latency comes from traffic.js udp-ping (no ping installed); null when neither is there. */
function useUdpPing(): boolean | null {
  if (hasCommand('ping')) return false;
  if (!existsSync(TRAFFIC_JS)) {
    process.stderr.write(`bench: neither ping nor ${TRAFFIC_JS}: apt-get install -y iputils-ping, or npm run build\n`);
    return null;
  }
  say(
    'bench: ping is not installed: latency from traffic.js udp-ping (UDP echo between two node processes, p50 and p99; ' +
      'apt-get install -y iputils-ping for ICMP ping)',
  );
  return true;
}

/** The modes that can run here; those not installed are skipped, unless named with --modes (then null: exit 2). */
function pickModes(opts: Options): { modes: ModeName[]; skipped: Results['skipped'] } | null {
  const skipped: Results['skipped'] = [];
  const modes: ModeName[] = [];
  for (const m of opts.modes) {
    const why = MODES[m].missing();
    if (why === null) modes.push(m);
    else if (opts.modesExplicit) {
      process.stderr.write(`bench: mode ${m}: ${why}\n`);
      return null;
    } else skipped.push({ mode: m, reason: why });
  }
  for (const s of skipped) say(`bench: skipping ${s.mode}: ${s.reason}`);
  if (!modes.includes('direct')) say('bench: direct routing is not among the modes: ratios and added latency will be n/a');
  return { modes, skipped };
}

/** A private directory for the run (wireguard keys live here), removed on every exit path. */
function runDir(): string {
  const tmpDir = mkdtempSync(join(tmpdir(), 'ipipd-bench-'));
  onCleanup(() => rmSync(tmpDir, { recursive: true, force: true }));
  return tmpDir;
}

/** The comparison: every round, every mode; the JSON after each round, then the summary, table and chart. */
async function compare(opts: Options, modes: ModeName[], skipped: Results['skipped'], udpPing: boolean): Promise<number> {
  const prefix = freshPrefix('b');
  const tmpDir = runDir();
  const started = new Date();
  const machine = await machineFacts();
  const results: Results = {
    schema: 'ipipd-bench/1',
    startedAt: started.toISOString(),
    finishedAt: null,
    argv: process.argv.slice(2),
    options: { rounds: opts.rounds, duration: opts.duration, pings: opts.pings, modes, peers: opts.peers, quick: opts.quick, out: opts.out },
    machine,
    modeFacts: {},
    skipped,
    figures: FIGURES,
    rounds: [],
    summary: {},
    warnings: [],
    error: null,
  };
  const base = join(opts.out, `bench-${stamp(started)}`);
  const write = (): void => {
    mkdirSync(opts.out, { recursive: true });
    writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  };

  say(`bench: ${modes.join(', ')}; ${opts.rounds} round${opts.rounds > 1 ? 's' : ''}, ${opts.duration} s per iperf3 test, ${opts.pings} pings idle and under load; namespaces ${prefix}-*`);
  say(`bench: note: ${machine.note as string}`);
  try {
    for (let r = 1; r <= opts.rounds; r++) {
      const step = (m: ModeName) => (s: string): void => progress(`[round ${r}/${opts.rounds}] ${m}: ${s}...`);
      const round: Results['rounds'][number] = {};
      results.rounds.push(round); // a failing round is in the partial JSON with the modes it measured
      await runRound(results, round, modes, (m) => ({ opts, prefix, tmpDir, udpPing, step: step(m) }), r);
      write();
    }
  } catch (e) {
    clearProgress();
    results.error = (e as Error).message;
    results.finishedAt = new Date().toISOString();
    write();
    process.stderr.write(`bench: FAILED: ${(e as Error).message}\nbench: partial results in ${base}.json\n`);
    return 1;
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
  clearProgress();
  summarizeResults(results, modes);
  write();
  report(results, opts, modes, started, base);
  return 0;
}

/** Fills `round`: every mode once (its warnings said and kept in `results`), then the ratios to this round's direct routing. */
async function runRound(
  results: Results,
  round: Results['rounds'][number],
  modes: ModeName[],
  ctx: (m: ModeName) => MeasureContext,
  r: number,
): Promise<void> {
  for (const m of modes) {
    const raw = await measureMode(m, ctx(m));
    for (const w of raw.warnings) {
      say(`bench: warning: round ${r} ${m}: ${w}`);
      results.warnings.push(`round ${r} ${m}: ${w}`);
    }
    const { figures, ...rest } = raw;
    round[m] = { figures, ratios: {}, raw: rest };
  }
  const direct = round.direct?.figures;
  for (const m of modes) {
    const e = round[m];
    setAdded(e.figures, direct, m === 'direct');
    e.ratios = ratiosTo(direct, e.figures);
  }
  // After every mode's added figures exist: the latency targets are set against quicktun's.
  const quicktun = round.quicktun?.figures;
  for (const m of modes) if (m !== 'direct') round[m].vsQuicktun = ratiosToQuicktun(quicktun, round[m].figures);
  // And idle, against the least a Node data path does.
  const floor = round['node-floor']?.figures;
  for (const m of modes) if (m !== 'direct') round[m].vsFloor = ratiosToFloor(floor, round[m].figures);
}

/** Each mode's facts (from round 1) and the spread of every figure over the rounds. */
function summarizeResults(results: Results, modes: ModeName[]): void {
  for (const m of modes) {
    const f = results.rounds[0]?.[m]?.raw.facts;
    const dev = results.rounds[0]?.[m]?.raw.devices;
    results.modeFacts[m] = { ...(f ?? {}), devices: dev };
  }
  results.summary = summarize(
    results.rounds.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, { figures: v.figures, ratios: v.ratios, vsQuicktun: v.vsQuicktun, vsFloor: v.vsFloor }]))),
    modes,
  );
  results.finishedAt = new Date().toISOString();
}

/** The chart (<base>.svg) and, on stdout, the heading, the table and where the files are. */
function report(results: Results, opts: Options, modes: ModeName[], started: Date, base: string): void {
  const machine = results.machine;
  const when = started.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const host = `${machine.nproc as number} cores (${machine.cpuModel as string}), kernel ${machine.kernel as string}, node ${machine.node as string}, ipipd ${machine.ipipdCommit as string}`;
  const heading = [
    `ipipd bench, ${when}: ${opts.rounds} round${opts.rounds > 1 ? 's' : ''} x ${modes.length} modes, ${opts.duration} s per iperf3 test, ${opts.pings} pings`,
    `machine: ${host}`,
    `note: ${machine.note as string}`,
    `cells: median (min..max) over the rounds; "× direct": ratio to direct routing in the same round; "× quicktun", "× node-floor": ratio to quicktun's, node-floor's in the same round`,
    `latency: ${opts.pings} pings 10 ms apart, idle, then again while one iperf3 TCP stream runs from pod A to pod B`,
  ];
  const svg = chart({
    title: 'ipipd bench: pod-to-pod figures as a ratio to direct routing',
    subtitle: [
      `${when} · ${opts.rounds} rounds × ${opts.duration} s per test · bars: median, whiskers: min..max over rounds · pods MTU ${POD_MTU}`,
    ],
    footer: [host, `${machine.note as string}`],
    modes,
    summary: results.summary,
  });
  writeFileSync(`${base}.svg`, svg);

  process.stdout.write(`\n${heading.join('\n')}\n\n${table(results.summary, modes)}\n\n`);
  process.stdout.write(`${footprintTable(results.rounds, modes)}\n\n`);
  if (results.skipped.length > 0) process.stdout.write(`skipped: ${results.skipped.map((s) => `${s.mode} (${s.reason})`).join('; ')}\n`);
  process.stdout.write(`results: ${base}.json\nchart:   ${base}.svg\n`);
}

async function soak(opts: Options, minutes: number): Promise<number> {
  const mode = opts.modesExplicit ? (opts.modes[0] as IpipdModeName) : 'ipipd';
  const why = MODES[mode].missing();
  if (why) {
    process.stderr.write(`bench: ipipd: ${why}\n`);
    return 2;
  }
  const prefix = freshPrefix('b');
  const tmpDir = runDir();
  const started = new Date();
  try {
    return await runSoak(
      {
        minutes,
        mode,
        prefix,
        tmpDir,
        base: join(opts.out, `soak-${stamp(started)}`),
        started,
        argv: process.argv.slice(2),
        machine: await machineFacts(),
        write: (path, data) => {
          mkdirSync(opts.out, { recursive: true });
          writeFileSync(path, data);
        },
      },
      { progress, say, clearProgress },
    );
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
}

function stamp(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    clearProgress();
    process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
