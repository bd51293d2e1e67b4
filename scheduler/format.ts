// Human output: tables and one-line event renderings.
import type { DataReport, JobResult } from '../shared';

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (c ?? '').padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

const f4 = (x: number | null | undefined): string => (x === null || x === undefined ? '-' : x.toFixed(4));
const delta = (a: number | null, b: number | null): string => (a === null || b === null ? '-' : `${b - a >= 0 ? '+' : ''}${(b - a).toFixed(4)}`);

export function formatDataReport(d: Omit<DataReport, 'train_object' | 'eval_object'>): string {
  const dropped = Object.entries(d.dropped ?? {});
  const lines = [
    `data: ${d.records_total} records read (${d.format}, policy ${d.policy ?? 'strict'}) → ${d.train_records} train / ${d.eval_records} eval` +
      (d.blank_lines ? `; ${d.blank_lines} blank lines skipped` : '') +
      (d.augmented ? `; ${d.augmented} training records added by augmentation` : ''),
  ];
  if (dropped.length) {
    lines.push(table(['rule', 'dropped'], dropped.map(([k, n]) => [k, n])).split('\n').map((l) => `  ${l}`).join('\n'));
    for (const [rule, ex] of Object.entries(d.examples ?? {})) {
      for (const e of ex) lines.push(`  ${rule} ${e.file}:${e.line}: ${e.message} | ${JSON.stringify(e.text.slice(0, 80))}`);
    }
  }
  return lines.join('\n');
}

export function formatResult(r: JobResult): string {
  const b = r.evaluation.base;
  const t = r.evaluation.tuned;
  const lines = [
    `job ${r.jobId}: ${r.state} — ${r.method} on ${r.model}`,
    formatDataReport(r.data),
    `training: ${r.training.steps} steps on ${r.training.agentId} (attempt ${r.training.attempt}) in ${r.training.seconds.toFixed(0)} s; ` +
      `${r.training.trainableParams.toLocaleString('en-US')} trainable of ${r.training.totalParams.toLocaleString('en-US')} parameters; final train loss ${f4(r.training.trainLoss)}`,
    '',
    table(['metric', 'base', 'fine-tuned', 'delta'], [
      ['eval loss', f4(b.eval_loss), f4(t.eval_loss), delta(b.eval_loss, t.eval_loss)],
      ['perplexity', b.perplexity.toFixed(2), t.perplexity.toFixed(2), delta(b.perplexity, t.perplexity)],
      ['exact match', f4(b.exact_match), f4(t.exact_match), delta(b.exact_match, t.exact_match)],
      ['BLEU', f4(b.bleu), f4(t.bleu), delta(b.bleu, t.bleu)],
      ['ROUGE-L', f4(b.rouge_l), f4(t.rouge_l), delta(b.rouge_l, t.rouge_l)],
    ]),
    '',
    `adapter: ${r.adapter.files.map((f) => f.name).join(', ')} (tunefleet download ${r.jobId})`,
  ];
  const ex = r.evaluation.examples.slice(0, 5);
  if (ex.length) {
    lines.push('', 'examples (prompt → reference | base | fine-tuned):');
    for (const e of ex) lines.push(`  ${JSON.stringify(e.prompt.slice(-60))} → ${JSON.stringify(e.reference.trim())} | ${JSON.stringify(e.base.trim().split('\n')[0] ?? '')} | ${JSON.stringify(e.tuned.trim().split('\n')[0] ?? '')}`);
  }
  return lines.join('\n');
}

/** One line per event worth a person's attention; null for the rest. */
export function formatEvent(e: Record<string, unknown>): string | null {
  const n = (k: string): number => Number(e[k]);
  switch (e.type) {
    case 'started':
      return `started on ${String(e.agent_id)} (attempt ${n('attempt')}, ${String(e.device)}, ${String(e.dtype)}): ${n('trainable_params').toLocaleString('en-US')} trainable of ${n('total_params').toLocaleString('en-US')} parameters, ${n('train_records')} records, ${n('steps_total')} steps${n('resumed_from_step') ? `, resumed from step ${n('resumed_from_step')}` : ''}`;
    case 'step':
      return `step ${String(n('step')).padStart(4)}/${n('steps_total')}  loss ${n('loss').toFixed(4)}  lr ${n('lr').toExponential(2)}  ${n('tokens_per_s').toFixed(0)} tok/s`;
    case 'checkpoint':
      return `checkpoint at step ${n('step')} (${String(e.reason)})`;
    case 'eval':
      return `eval loss ${n('eval_loss').toFixed(4)} (perplexity ${n('perplexity').toFixed(2)})${e.best_step !== undefined && e.best_step !== null ? `, best ${n('best_eval_loss').toFixed(4)} at step ${n('best_step')}` : ''}`;
    case 'oom':
      return `out of memory at step ${n('step')} (micro-batch ${n('micro_batch_size')} x ${n('sequence_length')} tokens)`;
    case 'finished':
      return `training ${String(e.stopped)} at step ${n('step')}`;
    case 'error':
      return `trainer error ${String(e.code)}: ${String(e.message)}`;
    case 'log':
      return e.level === 'warning' || e.level === 'error' || /trainable|base:|fine-tuned:/.test(String(e.message)) ? `${String(e.message)}` : null;
    default:
      return null;
  }
}
