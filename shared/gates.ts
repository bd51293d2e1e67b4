// Quality gates: thresholds a job's evaluation must meet to end `succeeded` (else
// `failed_gate`, the adapter stored either way). Written in the spec as short strings:
//
//   exact_match >= base + 0.05      the fine-tuned model beats the base model by 0.05
//   judge >= 0.8                    an absolute threshold
//   eval_loss <= base - 0.1         lower is better: compare the other way
//   tool.valid_json > 0.9           a score printed by the spec's tool scorer
//
// The left side is always the fine-tuned model's metric; `base` is the base model's value
// of the same metric. Pure and deterministic (the workflow evaluates gates).

export const GATE_METRICS = ['eval_loss', 'perplexity', 'exact_match', 'bleu', 'rouge_l', 'judge'] as const;
const OPS = ['>=', '<=', '>', '<'] as const;
export type GateOp = (typeof OPS)[number];

export interface Gate {
  text: string;
  metric: string;
  op: GateOp;
  /** null: an absolute threshold; otherwise the base model's value plus offset */
  relative: boolean;
  offset: number;
}

export interface GateResult {
  gate: string;
  passed: boolean;
  /** the fine-tuned value, the threshold it was held to, and the base value when relative */
  value: number | null;
  threshold: number | null;
  base: number | null;
  message: string;
}

const NUMBER = String.raw`[0-9]*\.?[0-9]+(?:e[+-]?\d+)?`;
// <metric> <op> then either base [+|- <number>] or <number>
const GATE_RE = new RegExp(
  String.raw`^\s*([a-z_][a-z0-9_.-]*)\s*(>=|<=|>|<)\s*` +
    String.raw`(?:(base)\s*(?:([+-])\s*(${NUMBER}))?|(-?${NUMBER}))\s*$`,
  'i',
);

/** Parse one gate; throws an Error whose message says what is wrong. */
export function parseGate(text: string): Gate {
  const m = GATE_RE.exec(text);
  if (!m)
    throw new Error(
      `'${text}' is not a gate: write '<metric> <op> <number>' or '<metric> <op> base [+|- <number>]', ` +
        `op one of ${OPS.join(' ')}`,
    );
  const metric = m[1] as string;
  if (!(GATE_METRICS as readonly string[]).includes(metric) && !/^tool\.[a-z0-9_-]+$/i.test(metric)) {
    throw new Error(
      `'${text}': unknown metric '${metric}' (one of ${GATE_METRICS.join(', ')}, or tool.<score> from the tool scorer)`,
    );
  }
  const relative = m[3] !== undefined;
  const offset = relative ? (m[5] ? Number(m[5]) * (m[4] === '-' ? -1 : 1) : 0) : Number(m[6]);
  return { text: text.trim(), metric, op: m[2] as GateOp, relative, offset };
}

const compare = (v: number, op: GateOp, t: number): boolean =>
  op === '>=' ? v >= t : op === '<=' ? v <= t : op === '>' ? v > t : v < t;
const fmt = (x: number): string => (Math.abs(x) >= 100 ? x.toFixed(1) : Math.abs(x) >= 1 ? x.toFixed(3) : x.toFixed(4));

/** Metric values of one model, by gate metric name (tool scores as tool.<name>). */
export type MetricValues = Record<string, number | null | undefined>;

export function checkGates(gates: string[], tuned: MetricValues, base: MetricValues): GateResult[] {
  return gates.map((text) => {
    const g = parseGate(text);
    const value = tuned[g.metric];
    const b = base[g.metric];
    if (value === null || value === undefined || !Number.isFinite(value)) {
      return {
        gate: g.text,
        passed: false,
        value: null,
        threshold: null,
        base: b ?? null,
        message: `${g.text}: no ${g.metric} value for the fine-tuned model (was it computed?)`,
      };
    }
    if (g.relative && (b === null || b === undefined || !Number.isFinite(b))) {
      return {
        gate: g.text,
        passed: false,
        value,
        threshold: null,
        base: null,
        message: `${g.text}: no ${g.metric} value for the base model`,
      };
    }
    const threshold = g.relative ? (b as number) + g.offset : g.offset;
    const passed = compare(value, g.op, threshold);
    const offset = g.offset ? ` ${g.offset > 0 ? '+' : '-'} ${fmt(Math.abs(g.offset))}` : '';
    const how = g.relative ? `base ${fmt(b as number)}${offset} = ${fmt(threshold)}` : fmt(threshold);
    return {
      gate: g.text,
      passed,
      value,
      threshold,
      base: g.relative ? (b as number) : null,
      message: `${g.metric} ${fmt(value)} ${g.op} ${how}: ${passed ? 'pass' : 'FAIL'}`,
    };
  });
}

/** A model's metrics by gate name: the trainer's and the judge's, tool scores as tool.<name>. */
export function metricValues(m: {
  eval_loss: number;
  perplexity: number;
  exact_match: number | null;
  bleu?: number | null;
  rouge_l?: number | null;
  judge?: number | null;
  tool?: Record<string, number>;
}): MetricValues {
  const out: MetricValues = {
    eval_loss: m.eval_loss,
    perplexity: m.perplexity,
    exact_match: m.exact_match,
    bleu: m.bleu ?? null,
    rouge_l: m.rouge_l ?? null,
    judge: m.judge ?? null,
  };
  for (const [k, v] of Object.entries(m.tool ?? {})) out[`tool.${k}`] = v;
  return out;
}
