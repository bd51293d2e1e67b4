// The model registry: a record for every registered adapter (where it came from, what it
// scored), stored beside it as model.json and written into its README.md as a model card
// (what a Hugging Face model card holds: intended use, data, training settings, evaluation,
// framework versions). `tunefleet models` lists the records.
import type { GateResult } from './gates';
import type { FileEntry, ModelMetrics } from './events';
import type { FineTuneInput, JobResult, ScoredMetrics } from './jobs';
import type { JobSpec } from './spec';

export const MODEL_RECORD_VERSION = 1;
/** The registered adapter's model card (PEFT writes a template of its own there; the card replaces it). */
export const MODEL_CARD = 'README.md';

export interface ModelRecord {
  v: typeof MODEL_RECORD_VERSION;
  /** the job that trained it (the registry's id) */
  id: string;
  /** when it was registered (ISO 8601) */
  created: string;
  state: JobResult['state'];
  base: { name: string; sha256: string | null };
  method: string;
  /** the job's full spec, as validated */
  spec: JobSpec;
  data: {
    /** the uploaded dataset file(s) as submitted */
    dataset: { sha256: string; bytes: number };
    evalDataset: { sha256: string; bytes: number } | null;
    format: string;
    trainRecords: number;
    evalRecords: number;
    /** the prepared splits the trainer read */
    trainSha256: string | null;
    evalSha256: string | null;
  };
  training: {
    steps: number;
    trainLoss: number | null;
    seconds: number;
    agentId: string;
    attempt: number;
    trainableParams: number;
    totalParams: number;
  };
  /** python, torch, transformers, peft of the trainer (null: an older trainer did not say) */
  versions: Record<string, string> | null;
  metrics: { base: ScoredMetrics; tuned: ScoredMetrics };
  gates: GateResult[];
  /** the adapter this one was trained from (null: trained from the base model) */
  parent: string | null;
  adapter: { bucket: string; prefix: string; files: FileEntry[] };
}

/** The record of a job's registered adapter, from its workflow input and result. */
export function modelRecord(input: FineTuneInput, result: JobResult, created: Date): ModelRecord {
  const t = result.training;
  const d = result.data;
  return {
    v: MODEL_RECORD_VERSION,
    id: result.jobId,
    created: created.toISOString(),
    state: result.state,
    base: { name: input.spec.model, sha256: t.baseSha256 ?? null },
    method: input.spec.method,
    spec: input.spec,
    data: {
      dataset: { sha256: input.dataset.sha256, bytes: input.dataset.bytes },
      evalDataset: input.evalDataset ? { sha256: input.evalDataset.sha256, bytes: input.evalDataset.bytes } : null,
      format: d.format,
      trainRecords: d.train_records,
      evalRecords: d.eval_records,
      trainSha256: d.train_sha256 ?? null,
      evalSha256: d.eval_sha256 ?? null,
    },
    training: {
      steps: t.steps,
      trainLoss: t.trainLoss,
      seconds: t.seconds,
      agentId: t.agentId,
      attempt: t.attempt,
      trainableParams: t.trainableParams,
      totalParams: t.totalParams,
    },
    versions: t.versions ?? null,
    metrics: { base: result.evaluation.base, tuned: result.evaluation.tuned },
    gates: result.gates ?? [],
    parent: input.spec.init_adapter ?? null,
    adapter: result.adapter,
  };
}

const METRICS: [keyof ModelMetrics, string][] = [
  ['eval_loss', 'eval loss (lower is better)'],
  ['perplexity', 'perplexity'],
  ['exact_match', 'exact match'],
  ['bleu', 'BLEU'],
  ['rouge_l', 'ROUGE-L'],
];

const fmt = (v: number | null | undefined): string =>
  v === null || v === undefined ? '-' : Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
/** A value in a Markdown table cell or list: one line, no pipes. */
const cell = (s: string): string => s.replace(/[\r\n]+/g, ' ').replace(/\|/g, '\\|');
/** A YAML scalar for the card's front matter: always double-quoted JSON, which YAML reads as the same string. */
const yaml = (s: string): string => JSON.stringify(s);

/** The adapter's README.md: a model card with YAML front matter, as the Hugging Face Hub reads one. */
export function modelCard(r: ModelRecord): string {
  const s = r.spec;
  const t = s.training;
  const peft = r.method !== 'full';
  const lines: string[] = [
    '---',
    `base_model: ${yaml(r.base.name)}`,
    ...(peft ? ['library_name: peft'] : []),
    'tags:',
    '  - tunefleet',
    `  - ${yaml(r.method)}`,
    '---',
    '',
    `# ${s.name}: ${r.method} ${peft ? 'adapter' : 'fine-tune'} of ${r.base.name}`,
    '',
    `Trained by tunefleet job \`${r.id}\`, registered ${r.created}` +
      (r.state === 'failed_gate' ? ' — **a quality gate of its spec did not pass** (see Evaluation).' : '.'),
    '',
    '## Intended use',
    '',
    `The task its data shows (below), on top of ${r.base.name}; check it on your own cases before relying on it. ` +
      (peft
        ? 'Load it with PEFT: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(' +
          `<${r.base.name}>), <this directory>)\`.`
        : 'The directory holds the whole model (transformers format).'),
    '',
    '## Training data',
    '',
    `- dataset: sha256 \`${r.data.dataset.sha256}\` (${r.data.dataset.bytes} bytes), format ${r.data.format}` +
      (r.data.evalDataset ? `; eval file sha256 \`${r.data.evalDataset.sha256}\`` : ''),
    `- ${r.data.trainRecords} training records, ${r.data.evalRecords} held out for evaluation` +
      (r.data.trainSha256 ? ` (prepared splits: train \`${r.data.trainSha256}\`, eval \`${r.data.evalSha256}\`)` : ''),
    '',
    '## Training procedure',
    '',
    `- method ${r.method}` +
      (r.method === 'lora' || r.method === 'dora' || r.method === 'qlora'
        ? `, r ${s.lora.r}, alpha ${s.lora.alpha}, dropout ${s.lora.dropout}` +
          (s.lora.target_modules ? `, modules ${s.lora.target_modules.join(', ')}` : '')
        : ''),
    `- ${r.training.steps} steps, batch ${t.batch_size}, learning rate ${t.learning_rate} (${t.lr_scheduler}), ` +
      `max sequence length ${t.max_seq_len}, precision ${t.precision}, seed ${t.seed}`,
    `- ${r.training.trainableParams.toLocaleString('en')} trainable of ` +
      `${r.training.totalParams.toLocaleString('en')} parameters; final train loss ${fmt(r.training.trainLoss)}`,
    `- attempt ${r.training.attempt} on agent ${cell(r.training.agentId)}, ${r.training.seconds.toFixed(0)} s`,
    '',
    '## Evaluation',
    '',
    `On the ${r.data.evalRecords} held-out records:`,
    '',
    '| metric | base | fine-tuned |',
    '|---|---|---|',
    ...METRICS.filter(([k]) => r.metrics.tuned[k] !== null && r.metrics.tuned[k] !== undefined).map(
      ([k, label]) =>
        `| ${label} | ${fmt(r.metrics.base[k] as number | null)} | ${fmt(r.metrics.tuned[k] as number)} |`,
    ),
    ...(r.metrics.tuned.judge !== null && r.metrics.tuned.judge !== undefined
      ? [`| judge (answer-reference similarity) | ${fmt(r.metrics.base.judge)} | ${fmt(r.metrics.tuned.judge)} |`]
      : []),
    ...Object.entries(r.metrics.tuned.tool ?? {}).map(
      ([k, v]) => `| tool: ${cell(k)} | ${fmt(r.metrics.base.tool?.[k])} | ${fmt(v)} |`,
    ),
    '',
    ...(r.gates.length
      ? ['Gates:', '', ...r.gates.map((g) => `- ${g.passed ? 'passed' : '**failed**'}: ${cell(g.message)}`), '']
      : []),
    '## Lineage',
    '',
    `- base model ${r.base.name}` + (r.base.sha256 ? `, weights sha256 \`${r.base.sha256}\`` : ''),
    `- parent adapter: ${r.parent ?? 'none (trained from the base model)'}`,
    `- the full spec and this record: \`model.json\` beside this file (\`tunefleet models show ${r.id} --json\`)`,
    '',
    '## Framework versions',
    '',
    ...(r.versions ? Object.entries(r.versions).map(([k, v]) => `- ${cell(k)} ${cell(v)}`) : ['- not reported']),
    '',
  ];
  return lines.join('\n');
}
