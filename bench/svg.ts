/**
 * The bench's chart, drawn by hand as SVG: for every figure that has a ratio to direct routing,
 * one group of bars (one per tunnel mode) on a logarithmic axis, each bar growing from the 1×
 * line (direct routing) to the median ratio, with a whisker for min..max over the rounds. Below
 * the bars, the figures that have no ratio (CPU per packet, added latency, RSS) as text, and the
 * machine note.
 *
 * Also the soak's chart (`soakChart`): both daemons' RSS over time as lines.
 */
import type { ModeName } from './modes.js';
import { FIGURES, type ModeSummary, sig3, slope } from './report.js';

export interface ChartInput {
  title: string;
  /** Lines under the title (run facts). */
  subtitle: string[];
  /** Lines at the bottom (machine note). */
  footer: string[];
  modes: ModeName[];
  summary: Record<string, ModeSummary>;
}

const COLORS: Record<string, string> = {
  ipipd: '#1f6fb4',
  'ipipd-2q': '#7fb2e0',
  'ipipd-pkt': '#0b3d6b',
  quicktun: '#e3801c',
  'wireguard-go': '#2f9e44',
};
const FALLBACK = ['#7b4fb0', '#b23a48', '#5c6b73'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Splits `s` at spaces into lines of at most `width` characters. */
function wrap(s: string, width: number): string[] {
  const lines: string[] = [];
  let cur = '';
  for (const word of s.split(' ')) {
    if (cur && cur.length + 1 + word.length > width) {
      lines.push(cur);
      cur = word;
    } else cur = cur ? `${cur} ${word}` : word;
  }
  if (cur) lines.push(cur);
  return lines;
}

/** The opening of a chart: the <svg> element, a white background, the title and subtitle lines. */
function svgHead(W: number, H: number, left: number, title: string, subtitle: readonly string[]): string[] {
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(text(left, 28, title, 'font-size="17" font-weight="bold" fill="#222"'));
  subtitle.forEach((s, i) => out.push(text(left, 50 + i * 16, s, 'fill="#555"')));
  return out;
}

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;
}

export function chart(input: ChartInput): string {
  input = { ...input, footer: input.footer.flatMap((l) => wrap(l, 135)) };
  const tunnels = input.modes.filter((m) => m !== 'direct');
  const figs = FIGURES.filter((f) => f.ratio);
  const W = 1000;
  const top = 70 + input.subtitle.length * 16 + 24; // title, subtitles, legend
  const plotH = 340;
  const left = 80;
  const right = 24;
  const plotW = W - left - right;
  const noRatio = FIGURES.filter((f) => !f.ratio);
  const bottomText = 58 + (noRatio.length + input.footer.length) * 16;
  const H = top + plotH + bottomText + 20;

  // Domain: every median, min and max ratio, and 1, widened to whole decades.
  const all: number[] = [1];
  for (const m of tunnels) {
    for (const f of figs) {
      const s = input.summary[m]?.ratios[f.key];
      if (s) all.push(s.median, s.min, s.max);
    }
  }
  const pos = all.filter((v) => v > 0);
  let lo = 10 ** Math.floor(Math.log10(Math.min(...pos)));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...pos)));
  if (hi <= 1) hi = 10;
  if (lo >= 1) lo = 0.1;
  const L = (v: number): number => Math.log10(Math.min(hi, Math.max(lo, v)));
  const y = (v: number): number => top + ((Math.log10(hi) - L(v)) / (Math.log10(hi) - Math.log10(lo))) * plotH;

  const out = svgHead(W, H, left, input.title, input.subtitle);

  // Legend.
  let lx = left;
  const ly = 50 + input.subtitle.length * 16 + 8;
  tunnels.forEach((m, i) => {
    const c = COLORS[m] ?? FALLBACK[i % FALLBACK.length];
    out.push(`<rect x="${lx}" y="${ly - 10}" width="14" height="12" fill="${c}"/>`);
    out.push(text(lx + 20, ly, m, 'fill="#222"'));
    lx += 34 + m.length * 8;
  });
  out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 26}" y2="${ly - 4}" stroke="#222" stroke-width="1.5" stroke-dasharray="5,3"/>`);
  out.push(text(lx + 32, ly, 'direct routing (1×)', 'fill="#222"'));
  lx += 32 + 140;
  out.push(`<line x1="${lx + 7}" y1="${ly - 11}" x2="${lx + 7}" y2="${ly + 2}" stroke="#222"/>`);
  out.push(text(lx + 16, ly, 'min..max over rounds', 'fill="#222"'));

  // Axis and grid: 1, 2, 5 per decade.
  out.push(`<g stroke="#e3e3e3" stroke-width="1">`);
  const ticks: number[] = [];
  for (let d = Math.round(Math.log10(lo)); d <= Math.round(Math.log10(hi)); d++) {
    for (const k of [1, 2, 5]) {
      const v = k * 10 ** d;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
    }
  }
  for (const v of ticks) out.push(`<line x1="${left}" y1="${y(v).toFixed(1)}" x2="${left + plotW}" y2="${y(v).toFixed(1)}"/>`);
  out.push('</g>');
  for (const v of ticks) {
    const label = v >= 1 ? `${v}×` : `${Number(v.toPrecision(1))}×`;
    out.push(text(left - 8, y(v) + 4, label, 'text-anchor="end" fill="#444"'));
  }
  out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#444"/>`);
  out.push(`<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#444"/>`);
  const midY = top + plotH / 2;
  out.push(text(22, midY, 'ratio to direct routing (log scale)', `transform="rotate(-90 22 ${midY})" text-anchor="middle" fill="#444"`));

  // Bars.
  const groupW = plotW / figs.length;
  const barW = Math.min(44, (groupW - 24) / Math.max(1, tunnels.length));
  figs.forEach((f, gi) => {
    const gx = left + gi * groupW;
    const x0 = gx + (groupW - barW * tunnels.length) / 2;
    tunnels.forEach((m, bi) => {
      const s = input.summary[m]?.ratios[f.key];
      const bx = x0 + bi * barW;
      const cx = bx + barW / 2;
      if (!s) {
        out.push(text(cx, y(1) - 6, 'n/a', 'text-anchor="middle" font-size="10" fill="#888"'));
        return;
      }
      const c = COLORS[m] ?? FALLBACK[bi % FALLBACK.length];
      const y1 = y(1);
      const ym = y(s.median);
      const h = Math.max(1, Math.abs(ym - y1));
      out.push(`<rect x="${(bx + 2).toFixed(1)}" y="${Math.min(ym, y1).toFixed(1)}" width="${(barW - 4).toFixed(1)}" height="${h.toFixed(1)}" fill="${c}"><title>${esc(`${m} ${f.short}: ${sig3(s.median)}× (${sig3(s.min)}..${sig3(s.max)})`)}</title></rect>`);
      if (s.n > 1) {
        const ya = y(s.max);
        const yb = y(s.min);
        out.push(`<g stroke="#222" stroke-width="1"><line x1="${cx.toFixed(1)}" y1="${ya.toFixed(1)}" x2="${cx.toFixed(1)}" y2="${yb.toFixed(1)}"/><line x1="${(cx - 4).toFixed(1)}" y1="${ya.toFixed(1)}" x2="${(cx + 4).toFixed(1)}" y2="${ya.toFixed(1)}"/><line x1="${(cx - 4).toFixed(1)}" y1="${yb.toFixed(1)}" x2="${(cx + 4).toFixed(1)}" y2="${yb.toFixed(1)}"/></g>`);
      }
      const label = `${sig3(s.median)}×`;
      if (s.median >= 1) out.push(text(cx, Math.min(ym, y(s.max)) - 5, label, 'text-anchor="middle" font-size="10" fill="#222"'));
      else out.push(text(cx, Math.max(ym, y(s.min)) + 13, label, 'text-anchor="middle" font-size="10" fill="#222"'));
    });
    out.push(text(gx + groupW / 2, top + plotH + 20, f.short, 'text-anchor="middle" font-weight="bold" fill="#222"'));
    out.push(text(gx + groupW / 2, top + plotH + 36, `${f.better} is better`, 'text-anchor="middle" font-size="11" fill="#666"'));
  });
  // The 1× line on top of the bars.
  out.push(`<line x1="${left}" y1="${y(1).toFixed(1)}" x2="${left + plotW}" y2="${y(1).toFixed(1)}" stroke="#222" stroke-width="1.5" stroke-dasharray="5,3"/>`);

  // Figures without a ratio, then the footer.
  let ty = top + plotH + 66;
  for (const f of noRatio) {
    const parts = tunnels.map((m) => {
      const s = input.summary[m]?.values[f.key];
      return `${m} ${s ? sig3(s.median * f.scale) : 'n/a'}`;
    });
    out.push(text(left, ty, `${f.label} (${f.unit}, median): ${parts.join(' · ')}`, 'fill="#222"'));
    ty += 16;
  }
  for (const line of input.footer) {
    out.push(text(left, ty, line, 'fill="#555" font-style="italic"'));
    ty += 16;
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// The soak's chart

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
  const MiB = (kib: number): number => kib / 1024;

  const xMax = Math.max(input.durationS, ...input.samples.map((s) => s.t)) / 60;
  const peak = Math.max(input.limitMiB, ...input.samples.flatMap((s) => [...s.rssKiB, ...s.hwmKiB].map(MiB)));
  const yStep = niceStep(peak * 1.1, 8);
  const yMax = Math.ceil((peak * 1.1) / yStep) * yStep;
  const xStep = niceStep(xMax, 12);
  const x = (min: number): number => left + (min / xMax) * plotW;
  const y = (mib: number): number => top + plotH - (mib / yMax) * plotH;

  const out = svgHead(W, H, left, input.title, input.subtitle);

  // Legend.
  let lx = left;
  const ly = 50 + input.subtitle.length * 16 + 8;
  input.hosts.forEach((h, i) => {
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

  // Warm-up band, grid, axes.
  const wx = x(Math.min(xMax, input.warmupS / 60));
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

  // The target.
  out.push(`<line x1="${left}" y1="${y(input.limitMiB).toFixed(1)}" x2="${left + plotW}" y2="${y(input.limitMiB).toFixed(1)}" stroke="#c92a2a" stroke-width="1.5" stroke-dasharray="8,4"/>`);
  out.push(text(left + plotW - 4, y(input.limitMiB) - 5, `target: at most ${input.limitMiB} MiB`, 'text-anchor="end" fill="#c92a2a"'));

  // One set of lines per daemon.
  input.hosts.forEach((h, i) => {
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
    if (b !== null) {
      const mx = xs.reduce((p, q) => p + q, 0) / xs.length;
      const my = ys.reduce((p, q) => p + q, 0) / ys.length;
      const [xa, xb] = [xs[0], xs[xs.length - 1]];
      const fy = (m: number): number => my + b * (m - mx);
      out.push(`<line x1="${x(xa).toFixed(1)}" y1="${y(fy(xa)).toFixed(1)}" x2="${x(xb).toFixed(1)}" y2="${y(fy(xb)).toFixed(1)}" stroke="#222" stroke-width="1.5" stroke-dasharray="1,3"/>`);
      const last = input.samples[input.samples.length - 1];
      const label = `${h}: ${b >= 0 ? '+' : ''}${sig3(b)} MiB/min`;
      out.push(text(x(last.t / 60) - 4, y(MiB(last.rssKiB[i])) + (i % 2 === 0 ? -8 : 16), label, `text-anchor="end" font-size="11" fill="${c}"`));
    }
  });

  let ty = top + plotH + 64;
  for (const line of footer) {
    out.push(text(left, ty, line, 'fill="#555" font-style="italic"'));
    ty += 16;
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
