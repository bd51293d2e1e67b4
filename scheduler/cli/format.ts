// Human output: tables and one-line event renderings.
import type { DataReport, JobResult } from '../../shared';
import type { DecisionRecord } from '../activities';

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (c ?? '').padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export const f4 = (x: number | null | undefined): string => (x === null || x === undefined ? '-' : x.toFixed(4));
/** 1234567 -> "1,234,567" */
export const count = (x: number): string => x.toLocaleString('en-US');
/** a fraction as a whole percentage */
const pct = (x: number): string => (100 * x).toFixed(0);
/** the first line of a model's answer, quoted */
const firstLine = (text: string): string => JSON.stringify(text.trim().split('\n')[0] ?? '');
const delta = (a: number | null, b: number | null): string =>
  a === null || b === null ? '-' : `${b - a >= 0 ? '+' : ''}${(b - a).toFixed(4)}`;

export function formatDataReport(d: Omit<DataReport, 'train_object' | 'eval_object'>): string {
  const dropped = Object.entries(d.dropped ?? {});
  const lines = [
    `data: ${d.records_total} records read (${d.format}, policy ${d.policy ?? 'strict'}) → ` +
      `${d.train_records} train / ${d.eval_records} eval` +
      (d.blank_lines ? `; ${d.blank_lines} blank lines skipped` : '') +
      (d.augmented ? `; ${d.augmented} training records added by augmentation` : ''),
  ];
  if (dropped.length) {
    lines.push(
      table(
        ['rule', 'dropped'],
        dropped.map(([k, n]) => [k, n]),
      )
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
    for (const [rule, ex] of Object.entries(d.examples ?? {})) {
      for (const e of ex)
        lines.push(`  ${rule} ${e.file}:${e.line}: ${e.message} | ${JSON.stringify(e.text.slice(0, 80))}`);
    }
  }
  return lines.join('\n');
}

/** Loss over steps: train (every step) and eval (each evaluation during training). */
export interface LossCurve {
  train: [number, number][];
  eval: [number, number][];
}

/**
 * A terminal line chart: `width` columns of steps by `height` rows of loss; train loss as
 * '·' (the mean of the steps in each column), eval loss as 'o'. Axis labels on the left.
 */
export function lossChart(c: LossCurve, width = 60, height = 12): string {
  const all = [...c.train, ...c.eval];
  if (all.length < 2) return '(no loss curve stored for this job)';
  const xs = all.map(([x]) => x);
  const ys = all.map(([, y]) => y).filter(Number.isFinite);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const col = (x: number): number => (x1 === x0 ? 0 : Math.round(((x - x0) / (x1 - x0)) * (width - 1)));
  const row = (y: number): number => (y1 === y0 ? height - 1 : Math.round(((y1 - y) / (y1 - y0)) * (height - 1)));
  const grid = Array.from({ length: height }, () => Array<string>(width).fill(' '));
  const sums = new Map<number, [number, number]>();
  for (const [x, y] of c.train) {
    const k = col(x);
    const [s0, n] = sums.get(k) ?? [0, 0];
    sums.set(k, [s0 + y, n + 1]);
  }
  for (const [k, [s0, n]] of sums) (grid[row(s0 / n)] as string[])[k] = '·';
  for (const [x, y] of c.eval) (grid[row(y)] as string[])[col(x)] = 'o';
  const label = (y: number): string => y.toFixed(3).padStart(8);
  // the y axis is labelled at the top, the middle and the bottom row
  const rowLabel = (i: number): string => {
    if (i === 0) return label(y1);
    if (i === height - 1) return label(y0);
    return i === Math.floor(height / 2) ? label((y0 + y1) / 2) : ' '.repeat(8);
  };
  const lines = grid.map((g, i) => `${rowLabel(i)} │${g.join('')}`);
  lines.push(`${' '.repeat(8)} └${'─'.repeat(width)}`);
  lines.push(
    `${' '.repeat(10)}step ${x0}${' '.repeat(Math.max(1, width - 10 - String(x0).length - String(x1).length))}${x1}`,
  );
  lines.push(`${' '.repeat(10)}· train loss${c.eval.length ? '   o eval loss' : ''}`);
  return lines.join('\n');
}

export function formatResult(r: JobResult, curve?: LossCurve | null): string {
  const b = r.evaluation.base;
  const t = r.evaluation.tuned;
  const ev = r.evaluation;
  const tr = r.training;
  const toolNames = [...new Set([...Object.keys(b.tool ?? {}), ...Object.keys(t.tool ?? {})])].sort();
  const lines = [
    `job ${r.jobId}: ${r.state} — ${r.method} on ${r.model}`,
    formatDataReport(r.data),
    `training: ${tr.steps} steps on ${tr.agentId} (attempt ${tr.attempt}) in ${tr.seconds.toFixed(0)} s; ` +
      `${count(tr.trainableParams)} trainable of ${count(tr.totalParams)} parameters; ` +
      `final train loss ${f4(tr.trainLoss)}`,
    '',
    table(
      ['metric', 'base', 'fine-tuned', 'delta'],
      [
        ['eval loss', f4(b.eval_loss), f4(t.eval_loss), delta(b.eval_loss, t.eval_loss)],
        ['perplexity', b.perplexity.toFixed(2), t.perplexity.toFixed(2), delta(b.perplexity, t.perplexity)],
        ['exact match', f4(b.exact_match), f4(t.exact_match), delta(b.exact_match, t.exact_match)],
        ['BLEU', f4(b.bleu), f4(t.bleu), delta(b.bleu, t.bleu)],
        ['ROUGE-L', f4(b.rouge_l), f4(t.rouge_l), delta(b.rouge_l, t.rouge_l)],
        ['judge (similarity)', f4(b.judge), f4(t.judge), delta(b.judge ?? null, t.judge ?? null)],
        ...toolNames.map((k) => [
          `tool ${k}`,
          f4(b.tool?.[k]),
          f4(t.tool?.[k]),
          delta(b.tool?.[k] ?? null, t.tool?.[k] ?? null),
        ]),
        ...(r.review
          ? [
              [
                'human grade (1-5)',
                f4(r.review.base_mean),
                f4(r.review.tuned_mean),
                delta(r.review.base_mean, r.review.tuned_mean),
              ],
            ]
          : []),
      ],
    ),
  ];
  if (ev.judge)
    lines.push(
      `judge: ${ev.judge.model}, ${ev.judge.answers} answers in ${ev.judge.seconds.toFixed(1)} s` +
        (ev.judge.error ? ` — not scored: ${ev.judge.error}` : ''),
    );
  if (ev.tool) {
    for (const [w, run] of [
      ['base', ev.tool.base],
      ['fine-tuned', ev.tool.tuned],
    ] as const) {
      lines.push(
        `tool ${JSON.stringify(ev.tool.command.join(' '))} on the ${w} outputs: ` +
          (run.error ? `failed (${run.error})` : `ok in ${run.seconds.toFixed(1)} s`),
      );
    }
  }
  if (r.review)
    lines.push(
      `human review: ${r.review.graded} answers graded (${r.review.file}, ${r.review.imported_at}); ` +
        `fine-tuned better in ${pct(r.review.tuned_better)} %, worse in ${pct(r.review.tuned_worse)} %`,
    );
  if (r.gates?.length) {
    lines.push('', `gates: ${r.gates.filter((g) => g.passed).length} of ${r.gates.length} passed`);
    for (const g of r.gates) lines.push(`  ${g.passed ? 'pass' : 'FAIL'}  ${g.gate.padEnd(32)} ${g.message}`);
  }
  if (curve) lines.push('', lossChart(curve));
  lines.push(
    '',
    `adapter: ${r.adapter.files.map((f) => f.name).join(', ')} (tunefleet download ${r.jobId})` +
      (r.state === 'failed_gate' ? ' — stored although a gate failed' : ''),
  );
  const ex = r.evaluation.examples.slice(0, 5);
  if (ex.length) {
    lines.push('', 'examples (prompt → reference | base | fine-tuned):');
    for (const e of ex)
      lines.push(
        `  ${JSON.stringify(e.prompt.slice(-60))} → ${JSON.stringify(e.reference.trim())} | ` +
          `${firstLine(e.base)} | ${firstLine(e.tuned)}`,
      );
  }
  return lines.join('\n');
}

const BREAKDOWN = ['weights', 'adapters', 'gradients', 'optimizer', 'activations', 'logits', 'overhead'] as const;
const gib = (b: number | null): string => (b === null ? '-' : `${(b / 2 ** 30).toFixed(2)} GiB`);

/** What a placement decided, in a few words. */
function outcome(d: DecisionRecord): string {
  if (d.members) return `gang placed: ${d.members.map((m) => `rank ${m.rank} ${m.agentId}`).join(', ')}`;
  if (d.chosen) return `placed on ${d.chosen}`;
  if (d.impossible) return 'impossible';
  return `waiting${d.position ? `, position ${d.position} in the queue` : ''}`;
}

/** An agent's row marker: * for the chosen one, or a gang member's rank. */
function member(d: DecisionRecord, agentId: string): string {
  const m = d.members?.find((x) => x.agentId === agentId);
  if (m) return `${m.rank} ${agentId}`;
  return agentId === d.chosen ? `* ${agentId}` : `  ${agentId}`;
}

/** `tunefleet explain`: each decision, and for each agent why it was or was not chosen. */
export function formatDecisions(jobId: string, decisions: DecisionRecord[]): string {
  const out: string[] = [];
  for (const d of decisions) {
    out.push(`${new Date(d.time).toISOString()}  attempt ${d.attempt} (${d.purpose}): ${outcome(d)}`);
    if (d.estimate) {
      const b = d.estimate.breakdown;
      const parts = BREAKDOWN.map((k) => `${k} ${gib(b[k])}`);
      out.push(`  memory estimate ${gib(d.estimate.total)}: ${parts.join(', ')}`);
    }
    const rows = d.agents
      .slice()
      .sort((x, y) => (y.total ?? -1) - (x.total ?? -1))
      .map((a) => [
        member(d, a.agentId),
        a.code,
        a.total === null ? '-' : a.total.toFixed(1),
        Object.entries(a.scores)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ') || '-',
        gib(a.estimate),
        gib(a.free),
        a.reasons.join('; ') || '-',
      ]);
    out.push(
      table(['agent', 'filter', 'score', 'scores', 'needs', 'free', 'why not'], rows)
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
    if (!d.chosen || d.members) out.push(`  ${d.summary}`);
    out.push('');
  }
  return out.length ? out.join('\n').trimEnd() : `no decisions recorded for ${jobId}`;
}
