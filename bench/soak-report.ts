/**
 * What a soak (soak.ts) concludes and prints: the verdict against the criteria of "flat"
 * (verdictOf); the chart, the heading, the per-daemon table, the traffic and the verdict
 * (soakReport, with soakTable).
 */
import { sig3 } from './report.js';
import {
  CRITERIA_TEXT,
  type DaemonMemory,
  MAX_RSS_MIB,
  MAX_SLOPE_MIB_PER_MIN,
  SAMPLE_S,
  type SoakIo,
  type SoakOptions,
  type SoakResults,
  WARMUP_S,
} from './soak-settings.js';
import { soakChart } from './svg-soak.js';

export function verdictOf(daemons: DaemonMemory[]): { flat: boolean; text: string } {
  const flatOf = (d: DaemonMemory): boolean => d.slopeMiBPerMin !== null && d.slopeMiBPerMin < MAX_SLOPE_MIB_PER_MIN && d.peakMiB <= MAX_RSS_MIB;
  const flat = daemons.every(flatOf);
  const per = daemons.map((d) => `${d.host} slope ${fmtSlope(d.slopeMiBPerMin)} MiB/min, max ${d.peakMiB.toFixed(1)} MiB`).join('; ');
  const noSlope = daemons.some((d) => d.slopeMiBPerMin === null);
  return {
    flat,
    text: noSlope ? `n/a: fewer than 2 samples after the warm-up (run longer) (${per})` : `${flat ? 'FLAT' : 'NOT FLAT'} (${per})`,
  };
}

/** The chart (<base>.svg), the warnings, and on stdout the heading, the table, the traffic and the verdict. */
export function soakReport(opts: SoakOptions, io: SoakIo, results: SoakResults, trafficText: string, durationS: number): void {
  const when = opts.started.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const m = opts.machine;
  const host = `${m.nproc as number} cores (${m.cpuModel as string}), kernel ${m.kernel as string}, node ${m.node as string}, ipipd ${m.ipipdCommit as string}`;
  const heading = [
    `${opts.mode} soak, ${when}: ${opts.minutes} min of traffic through the tunnel, both daemons' memory sampled every ${SAMPLE_S} s`,
    `machine: ${host}`,
    `traffic: ${trafficText}`,
    `start: first sample after the ${WARMUP_S} s warm-up; max: largest sampled VmRSS; peak: VmHWM at the end; slope: least squares over the samples after the warm-up`,
  ];
  const tr = results.traffic as { tcp: { bytes: number; avgMbps: number; retransmits: number; chunks: number }; udp: { sent: number; delivered: number; avgPps: number; chunks: number }; failedChunks: number };
  const lines = [
    ...heading,
    '',
    soakTable(results.daemons),
    '',
    `forwarded: ${results.daemons.map((d) => `${d.host} encapsulated ${d.encapsulated} and decapsulated ${d.decapsulated} packets`).join('; ')} (ipipd status --json)`,
    `delivered: TCP ${(tr.tcp.bytes / 1e9).toFixed(2)} GB at ${sig3(tr.tcp.avgMbps)} Mb/s (${tr.tcp.retransmits} retransmits); ` +
      `UDP ${tr.udp.delivered} of ${tr.udp.sent} datagrams at ${sig3(tr.udp.avgPps / 1000)} kpps; ` +
      `iperf3 runs: ${tr.tcp.chunks} TCP, ${tr.udp.chunks} UDP, ${tr.failedChunks} failed`,
    `criteria: ${CRITERIA_TEXT}`,
    `verdict: ${results.verdict?.text ?? 'n/a'}`,
  ];
  opts.write(
    `${opts.base}.svg`,
    soakChart({
      title: `${opts.mode} soak: daemon RSS over ${opts.minutes} min of traffic`,
      subtitle: [`${when} · ${trafficText}`],
      footer: [`criteria: ${CRITERIA_TEXT}`, `verdict: ${results.verdict?.text ?? 'n/a'}`, host],
      hosts: results.daemons.map((d) => d.host),
      samples: results.samples,
      warmupS: WARMUP_S,
      durationS,
      limitMiB: MAX_RSS_MIB,
    }),
  );
  for (const w of results.warnings) io.say(`bench: soak: warning: ${w}`);
  process.stdout.write(`\n${lines.join('\n')}\n\nresults: ${opts.base}.json\nchart:   ${opts.base}.svg\n`);
}

function fmtSlope(v: number | null): string {
  if (v === null) return 'n/a';
  return `${v >= 0 ? '+' : '-'}${Math.abs(v).toFixed(3)}`;
}

/** The text table: one row per daemon. */
export function soakTable(daemons: DaemonMemory[]): string {
  const head = ['daemon', 'idle MiB', 'start MiB', 'end MiB', 'max MiB', 'peak MiB', 'slope MiB/min', 'samples', 'encap pkts', 'decap pkts', 'CPU s'];
  const rows = daemons.map((d) => [
    `ipipd ${d.host.replace(/^.*-/, '')}`,
    d.idleMiB.toFixed(1),
    d.startMiB === null ? 'n/a' : d.startMiB.toFixed(1),
    d.endMiB.toFixed(1),
    d.maxMiB.toFixed(1),
    d.peakMiB.toFixed(1),
    fmtSlope(d.slopeMiBPerMin),
    String(d.samplesAfterWarmup),
    String(d.encapsulated),
    String(d.decapsulated),
    d.cpuSeconds.toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [fmt(head), '-'.repeat(fmt(head).length), ...rows.map(fmt)].join('\n');
}
