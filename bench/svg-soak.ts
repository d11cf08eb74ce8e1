/**
 * The soak's chart, drawn by hand as SVG like the bench's (svg.ts, whose helpers it shares): both
 * daemons' RSS over time. Flow of this file: soakChart, then the parts it draws in order: the
 * legend, the warm-up band with the grid and axes, the target line, one set of lines per daemon.
 */
import { sig3, slope } from './report.js';
import { esc, footerLines, svgHead, text, wrap } from './svg.js';

export interface SoakChartInput {
  title: string;
  subtitle: string[];
  footer: string[];
  /** Daemon names, in the order of the samples' per-daemon arrays. */
  hosts: string[];
  samples: Array<{ t: number; rssKiB: number[]; hwmKiB: number[] }>;
  warmupS: number;
  durationS: number;
  /** The RSS target, drawn as a horizontal line. */
  limitMiB: number;
}

const HOST_COLORS = ['#1f6fb4', '#e3801c', '#2f9e44', '#7b4fb0'];

const MiB = (kib: number): number => kib / 1024;

/** The plot area and its linear scales: minutes across, MiB up from 0. */
interface TimePlot {
  top: number;
  left: number;
  plotW: number;
  plotH: number;
  xMax: number;
  xStep: number;
  yMax: number;
  yStep: number;
  x(min: number): number;
  y(mib: number): number;
}

/** A step of 1, 2, 2.5 or 5 × 10^k giving at most `maxTicks` intervals over `span`. */
function niceStep(span: number, maxTicks: number): number {
  const raw = span / maxTicks;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const k of [1, 2, 2.5, 5, 10]) if (k * p >= raw) return k * p;
  return 10 * p;
}

/**
 * RSS (MiB, linear from 0) over time (minutes): one solid line per daemon (VmRSS at each sample),
 * a dashed one for its VmHWM, a dotted least-squares line over the samples after the warm-up
 * (shaded), and the target as a red line.
 */
export function soakChart(input: SoakChartInput): string {
  const footer = input.footer.flatMap((l) => wrap(l, 135));
  const W = 1000;
  const left = 70;
  const right = 24;
  const plotW = W - left - right;
  const top = 70 + input.subtitle.length * 16 + 24;
  const plotH = 340;
  const H = top + plotH + 48 + footer.length * 16 + 16;

  const xMax = Math.max(input.durationS, ...input.samples.map((s) => s.t)) / 60;
  const peak = Math.max(input.limitMiB, ...input.samples.flatMap((s) => [...s.rssKiB, ...s.hwmKiB].map(MiB)));
  const yStep = niceStep(peak * 1.1, 8);
  const yMax = Math.ceil((peak * 1.1) / yStep) * yStep;
  const xStep = niceStep(xMax, 12);
  const x = (min: number): number => left + (min / xMax) * plotW;
  const y = (mib: number): number => top + plotH - (mib / yMax) * plotH;
  const plot: TimePlot = { top, left, plotW, plotH, xMax, xStep, yMax, yStep, x, y };

  const out = svgHead(W, H, left, input.title, input.subtitle);
  soakLegend(out, input.hosts, left, 50 + input.subtitle.length * 16 + 8);
  timeAxes(out, plot, input.warmupS);
  out.push(`<line x1="${left}" y1="${y(input.limitMiB).toFixed(1)}" x2="${left + plotW}" y2="${y(input.limitMiB).toFixed(1)}" stroke="#c92a2a" stroke-width="1.5" stroke-dasharray="8,4"/>`);
  out.push(text(left + plotW - 4, y(input.limitMiB) - 5, `target: at most ${input.limitMiB} MiB`, 'text-anchor="end" fill="#c92a2a"'));
  input.hosts.forEach((h, i) => daemonLines(out, plot, input, h, i));
  footerLines(out, left, top + plotH + 64, footer);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function soakLegend(out: string[], hosts: string[], left: number, ly: number): void {
  let lx = left;
  hosts.forEach((h, i) => {
    out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 22}" y2="${ly - 4}" stroke="${HOST_COLORS[i % HOST_COLORS.length]}" stroke-width="2"/>`);
    out.push(text(lx + 28, ly, `ipipd ${h}`, 'fill="#222"'));
    lx += 28 + 90;
  });
  const keys: Array<[string, string]> = [
    ['', 'VmRSS'],
    ['5,3', 'VmHWM (peak)'],
    ['1,3', 'least squares after warm-up'],
  ];
  for (const [dash, label] of keys) {
    out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 22}" y2="${ly - 4}" stroke="#444" stroke-width="1.5"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
    out.push(text(lx + 28, ly, label, 'fill="#222"'));
    lx += 28 + label.length * 7 + 16;
  }
}

/** Warm-up band, grid, axes. */
function timeAxes(out: string[], p: TimePlot, warmupS: number): void {
  const { top, left, plotW, plotH, xMax, xStep, yMax, yStep, x, y } = p;
  const wx = x(Math.min(xMax, warmupS / 60));
  out.push(`<rect x="${left}" y="${top}" width="${(wx - left).toFixed(1)}" height="${plotH}" fill="#f1f1f1"/>`);
  out.push(text((left + wx) / 2, top + 14, 'warm-up', 'text-anchor="middle" font-size="10" fill="#888"'));
  out.push('<g stroke="#e3e3e3" stroke-width="1">');
  for (let v = yStep; v <= yMax + 1e-9; v += yStep) out.push(`<line x1="${left}" y1="${y(v).toFixed(1)}" x2="${left + plotW}" y2="${y(v).toFixed(1)}"/>`);
  for (let m = xStep; m <= xMax + 1e-9; m += xStep) out.push(`<line x1="${x(m).toFixed(1)}" y1="${top}" x2="${x(m).toFixed(1)}" y2="${top + plotH}"/>`);
  out.push('</g>');
  for (let v = 0; v <= yMax + 1e-9; v += yStep) out.push(text(left - 8, y(v) + 4, `${Number(v.toFixed(2))}`, 'text-anchor="end" fill="#444"'));
  for (let m = 0; m <= xMax + 1e-9; m += xStep) out.push(text(x(m), top + plotH + 18, `${Number(m.toFixed(2))}`, 'text-anchor="middle" fill="#444"'));
  out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#444"/>`);
  out.push(`<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#444"/>`);
  const midY = top + plotH / 2;
  out.push(text(22, midY, 'resident memory, MiB', `transform="rotate(-90 22 ${midY})" text-anchor="middle" fill="#444"`));
  out.push(text(left + plotW / 2, top + plotH + 36, 'minutes since the traffic started', 'text-anchor="middle" fill="#444"'));
}

/** Daemon `i` (`h`): its VmHWM (dashed), VmRSS (solid, a dot per sample) and least-squares line with its slope. */
function daemonLines(out: string[], p: TimePlot, input: SoakChartInput, h: string, i: number): void {
  const { x, y } = p;
  const c = HOST_COLORS[i % HOST_COLORS.length];
  const pts = (f: (s: SoakChartInput['samples'][number]) => number): string =>
    input.samples.map((s) => `${x(s.t / 60).toFixed(1)},${y(f(s)).toFixed(1)}`).join(' ');
  out.push(`<polyline points="${pts((s) => MiB(s.hwmKiB[i]))}" fill="none" stroke="${c}" stroke-width="1" stroke-dasharray="5,3" opacity="0.8"/>`);
  out.push(`<polyline points="${pts((s) => MiB(s.rssKiB[i]))}" fill="none" stroke="${c}" stroke-width="2"/>`);
  for (const s of input.samples) {
    const v = MiB(s.rssKiB[i]);
    out.push(`<circle cx="${x(s.t / 60).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2" fill="${c}"><title>${esc(`ipipd ${h} at ${s.t} s: VmRSS ${v.toFixed(1)} MiB, VmHWM ${MiB(s.hwmKiB[i]).toFixed(1)} MiB`)}</title></circle>`);
  }
  const after = input.samples.filter((s) => s.t >= input.warmupS);
  const xs = after.map((s) => s.t / 60);
  const ys = after.map((s) => MiB(s.rssKiB[i]));
  const b = slope(xs, ys);
  if (b === null) return;
  const mx = xs.reduce((a, q) => a + q, 0) / xs.length;
  const my = ys.reduce((a, q) => a + q, 0) / ys.length;
  const [xa, xb] = [xs[0], xs[xs.length - 1]];
  const fy = (m: number): number => my + b * (m - mx);
  out.push(`<line x1="${x(xa).toFixed(1)}" y1="${y(fy(xa)).toFixed(1)}" x2="${x(xb).toFixed(1)}" y2="${y(fy(xb)).toFixed(1)}" stroke="#222" stroke-width="1.5" stroke-dasharray="1,3"/>`);
  const last = input.samples[input.samples.length - 1];
  const label = `${h}: ${b >= 0 ? '+' : ''}${sig3(b)} MiB/min`;
  out.push(text(x(last.t / 60) - 4, y(MiB(last.rssKiB[i])) + (i % 2 === 0 ? -8 : 16), label, `text-anchor="end" font-size="11" fill="${c}"`));
}
