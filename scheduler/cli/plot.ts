// `tunefleet result --plot file.svg`: the train and eval loss curves as a standalone SVG
// (axes with ticks, a line for train loss, points for eval loss, a legend). No browser,
// no plotting library: an SVG is text.
import type { LossCurve } from './format';

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function ticks(lo: number, hi: number, n = 5): number[] {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) as number;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

export function lossSvg(c: LossCurve, title: string, width = 720, height = 420): string {
  if (c.train.length + c.eval.length === 0) throw new Error('no loss curve stored for this job: nothing to plot');
  return chartSvg({
    title,
    yLabel: 'loss',
    series: [
      ...(c.train.length ? [{ label: 'train loss', points: c.train, color: '#1f77b4', line: true }] : []),
      ...(c.eval.length ? [{ label: 'eval loss', points: c.eval, color: '#ff7f0e', line: false }] : []),
    ],
    width,
    height,
  });
}

/** One series of a chart: a line through its points, or a dot at each. */
export interface Series {
  label: string;
  points: [number, number][];
  color: string;
  /** a line through the points (and a dot at each); false: dots only */
  line: boolean;
}

/** Colours for series that have none of their own (the usual categorical ten). */
export const PALETTE = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf',
];

/**
 * A standalone SVG chart over steps: axes with ticks, each series as a line or dots, dashed vertical marks (a sweep's
 * rungs) and a legend.
 */
export function chartSvg(o: {
  title: string;
  yLabel: string;
  series: Series[];
  marks?: number[];
  width?: number;
  height?: number;
}): string {
  const { width = 720, height = 420 } = o;
  const m = { l: 64, r: 20, t: 36, b: 48 };
  const all = o.series.flatMap((x) => x.points);
  if (all.length === 0) throw new Error('nothing to plot');
  const xs = [...all.map(([x]) => x), ...(o.marks ?? [])];
  const ys = all.map(([, y]) => y).filter(Number.isFinite);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  const pad = (Math.max(...ys) - Math.min(...ys)) * 0.05 || 0.05;
  const [y0, y1] = [Math.min(...ys) - pad, Math.max(...ys) + pad];
  const X = (x: number): number => m.l + ((x - x0) / (x1 - x0)) * (width - m.l - m.r);
  const Y = (y: number): number => m.t + ((y1 - y) / (y1 - y0)) * (height - m.t - m.b);
  const p = (n: number): string => n.toFixed(1);
  const svgRoot = { width, height, viewBox: `0 0 ${width} ${height}`, 'font-family': 'sans-serif', 'font-size': 12 };
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg"${attrs(svgRoot)}>`,
    el('rect', { width: '100%', height: '100%', fill: 'white' }),
    el('text', { x: width / 2, y: 20, 'text-anchor': 'middle', 'font-size': 14 }, esc(o.title)),
    el('line', { x1: m.l, y1: height - m.b, x2: width - m.r, y2: height - m.b, stroke: 'black' }),
    el('line', { x1: m.l, y1: m.t, x2: m.l, y2: height - m.b, stroke: 'black' }),
  ];
  for (const t of ticks(x0, x1)) {
    const x = p(X(t));
    parts.push(
      el('line', { x1: x, y1: height - m.b, x2: x, y2: height - m.b + 4, stroke: 'black' }) +
        el('text', { x, y: height - m.b + 18, 'text-anchor': 'middle' }, String(t)),
    );
  }
  for (const t of ticks(y0, y1)) {
    parts.push(
      el('line', { x1: m.l - 4, y1: p(Y(t)), x2: width - m.r, y2: p(Y(t)), stroke: '#ddd' }) +
        el('text', { x: m.l - 8, y: p(Y(t) + 4), 'text-anchor': 'end' }, String(t)),
    );
  }
  for (const r of o.marks ?? [])
    parts.push(
      el('line', { x1: p(X(r)), y1: m.t, x2: p(X(r)), y2: height - m.b, stroke: '#999', 'stroke-dasharray': '4 3' }),
    );
  parts.push(el('text', { x: (m.l + width - m.r) / 2, y: height - 10, 'text-anchor': 'middle' }, 'step'));
  const midY = (m.t + height - m.b) / 2;
  parts.push(
    el('text', { x: 16, y: midY, 'text-anchor': 'middle', transform: `rotate(-90 16 ${midY})` }, esc(o.yLabel)),
  );
  for (const sr of o.series) {
    if (sr.line && sr.points.length > 1) {
      const points = sr.points.map(([x, y]) => `${p(X(x))},${p(Y(y))}`).join(' ');
      parts.push(el('polyline', { fill: 'none', stroke: sr.color, 'stroke-width': 1.5, points }));
    }
    if (!sr.line || sr.points.length === 1)
      for (const [x, y] of sr.points) parts.push(el('circle', { cx: p(X(x)), cy: p(Y(y)), r: 4, fill: sr.color }));
  }
  const lx = width - m.r - 160;
  for (const [i, sr] of o.series.entries()) {
    const y = m.t + 8 + i * 18;
    parts.push(
      (sr.line
        ? el('line', { x1: lx, y1: y, x2: lx + 24, y2: y, stroke: sr.color, 'stroke-width': 2 })
        : el('circle', { cx: lx + 12, cy: y, r: 4, fill: sr.color })) +
        el('text', { x: lx + 30, y: y + 4 }, esc(sr.label)),
    );
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/** ` name="value"` for each attribute, in order. */
function attrs(a: Record<string, string | number>): string {
  return Object.entries(a)
    .map(([k, v]) => ` ${k}="${v}"`)
    .join('');
}

/** One SVG element: `<tag ...>text</tag>`, or `<tag .../>` without text. */
function el(tag: string, a: Record<string, string | number>, text?: string): string {
  return text === undefined ? `<${tag}${attrs(a)}/>` : `<${tag}${attrs(a)}>${text}</${tag}>`;
}
