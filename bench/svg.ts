/**
 * The bench's chart, drawn by hand as SVG: for every figure that has a ratio to direct routing,
 * one group of bars (one per tunnel mode) on a logarithmic axis, each bar growing from the 1×
 * line (direct routing) to the median ratio, with a whisker for min..max over the rounds. Below
 * the bars, the figures that have no ratio (CPU per packet, added latency, RSS) as text, and the
 * machine note.
 *
 * Flow of this file: the SVG helpers the soak's chart (svg-soak.ts) shares; chart, then the
 * parts it draws in order: the legend, the log axis, the bars, the figures without a ratio.
 */
import type { ModeName } from './modes.js';
import { FIGURES, type FigureDef, type ModeSummary, sig3 } from './report.js';

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
  'ipipd-fou': '#9c36b5',
  'node-floor': '#868e96',
  'node-floor-udp': '#adb5bd',
  quicktun: '#e3801c',
  'wireguard-go': '#2f9e44',
};
const FALLBACK = ['#7b4fb0', '#b23a48', '#5c6b73'];

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Splits `s` at spaces into lines of at most `width` characters. */
export function wrap(s: string, width: number): string[] {
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
export function svgHead(W: number, H: number, left: number, title: string, subtitle: readonly string[]): string[] {
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(text(left, 28, title, 'font-size="17" font-weight="bold" fill="#222"'));
  subtitle.forEach((s, i) => out.push(text(left, 50 + i * 16, s, 'fill="#555"')));
  return out;
}

export function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;
}

/** The plot area and its logarithmic ratio scale. */
interface RatioPlot {
  top: number;
  left: number;
  plotW: number;
  plotH: number;
  lo: number;
  hi: number;
  /** The y of ratio `v` (clamped to lo..hi). */
  y(v: number): number;
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
  const noRatio = FIGURES.filter((f) => !f.ratio);
  const bottomText = 58 + (noRatio.length + input.footer.length) * 16;
  const H = top + plotH + bottomText + 20;
  const plot = ratioPlot(input, tunnels, figs, { top, left, plotW: W - left - right, plotH });

  const out = svgHead(W, H, left, input.title, input.subtitle);
  legend(out, tunnels, left, 50 + input.subtitle.length * 16 + 8);
  ratioAxis(out, plot);
  bars(out, plot, input, tunnels, figs);
  bottomLines(out, plot, input, tunnels, noRatio);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** Domain: every median, min and max ratio, and 1, widened to whole decades. */
function ratioPlot(input: ChartInput, tunnels: ModeName[], figs: FigureDef[], box: Omit<RatioPlot, 'lo' | 'hi' | 'y'>): RatioPlot {
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
  const y = (v: number): number => box.top + ((Math.log10(hi) - L(v)) / (Math.log10(hi) - Math.log10(lo))) * box.plotH;
  return { ...box, lo, hi, y };
}

function legend(out: string[], tunnels: ModeName[], left: number, ly: number): void {
  let lx = left;
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
}

/** Axis and grid: 1, 2, 5 per decade. */
function ratioAxis(out: string[], p: RatioPlot): void {
  const { top, left, plotW, plotH, lo, hi, y } = p;
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
}

/** One group per figure, one bar per tunnel from the 1× line to the median, whiskers min..max; the 1× line on top. */
function bars(out: string[], p: RatioPlot, input: ChartInput, tunnels: ModeName[], figs: FigureDef[]): void {
  const { top, left, plotW, plotH, y } = p;
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
  out.push(`<line x1="${left}" y1="${y(1).toFixed(1)}" x2="${left + plotW}" y2="${y(1).toFixed(1)}" stroke="#222" stroke-width="1.5" stroke-dasharray="5,3"/>`);
}

/** Figures without a ratio, then the footer. */
function bottomLines(out: string[], p: RatioPlot, input: ChartInput, tunnels: ModeName[], noRatio: FigureDef[]): void {
  let ty = p.top + p.plotH + 66;
  for (const f of noRatio) {
    const parts = tunnels.map((m) => {
      const s = input.summary[m]?.values[f.key];
      return `${m} ${s ? sig3(s.median * f.scale) : 'n/a'}`;
    });
    out.push(text(p.left, ty, `${f.label} (${f.unit}, median): ${parts.join(' · ')}`, 'fill="#222"'));
    ty += 16;
  }
  footerLines(out, p.left, ty, input.footer);
}

/** The footer, one italic line each from `ty` down. */
export function footerLines(out: string[], left: number, ty: number, lines: readonly string[]): void {
  for (const line of lines) {
    out.push(text(left, ty, line, 'fill="#555" font-style="italic"'));
    ty += 16;
  }
}
