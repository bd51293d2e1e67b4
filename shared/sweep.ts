// A hyperparameter sweep: a base job spec, a search space over its numeric and enumerated fields, the metric to
// optimise, a budget and a searcher: grid, seeded random, or ASHA whose trials pause at each rung (checkpointed) and
// resume when promoted. Pure: parsing, validation, the trials a searcher proposes and ASHA's decisions; the sweep
// workflow runs them.
import { z } from 'zod';
import { ErrorCode, TunefleetError, TunefleetErrors } from './errors';
import { ID_PATTERN } from './names';
import { seededRandom } from './dataset';
import { jobSpecSchema, type JobSpec } from './spec';
import type { FineTuneInput } from './jobs';

export const DIMENSION_KINDS = ['grid', 'choice', 'uniform', 'loguniform', 'int'] as const;
export type DimensionKind = (typeof DIMENSION_KINDS)[number];
export type Value = number | string | boolean;
export type Dimension =
  { kind: 'grid' | 'choice'; values: Value[] } | { kind: 'uniform' | 'loguniform' | 'int'; low: number; high: number };

/** Metrics a sweep may optimise: the evaluation's (base vs fine-tuned) numbers of the fine-tuned model. */
export const SWEEP_METRICS = ['eval_loss', 'perplexity', 'exact_match', 'bleu', 'rouge_l', 'judge'] as const;
const LOWER_IS_BETTER = new Set(['eval_loss', 'perplexity']);

const positiveInt = z.number().int().positive();

export const sweepSchema = z.strictObject({
  name: z
    .string()
    .regex(ID_PATTERN, 'lowercase letters, digits and dashes, at most 63, starting with a letter or digit'),
  /** the job spec every trial starts from (a path, relative to the sweep file) */
  job: z.string().min(1),
  /** field (dotted, as in the job spec) -> {grid|choice: [values]} or {uniform|loguniform|int: [low, high]} */
  space: z.record(z.string(), z.unknown()),
  /** an evaluation metric of the fine-tuned model, or a tool score as tool.<name> */
  metric: z.string().default('eval_loss'),
  /** min or max; default: min for eval_loss and perplexity, max for the others */
  mode: z.enum(['min', 'max']).optional(),
  budget: z.strictObject({
    max_trials: positiveInt.max(1000),
    max_concurrent: positiveInt.max(256).default(1),
    /** each trial's training steps (the job spec's training.max_steps for every trial) */
    max_steps: positiveInt,
  }),
  searcher: z
    .strictObject({
      type: z.enum(['grid', 'random', 'asha']),
      seed: z.number().int().min(0).default(0),
      /** ASHA: the top 1/reduction_factor of a rung go on to the next */
      reduction_factor: z.number().int().min(2).max(10).default(3),
      /** ASHA: the first rung; rungs at min_steps x reduction_factor^k, up to max_steps */
      min_steps: positiveInt.optional(),
    })
    .default({ type: 'grid', seed: 0, reduction_factor: 3 }),
});

export interface SweepSpec {
  name: string;
  job: string;
  space: Record<string, Dimension>;
  metric: string;
  mode: 'min' | 'max';
  budget: { max_trials: number; max_concurrent: number; max_steps: number };
  searcher: { type: 'grid' | 'random' | 'asha'; seed: number; reduction_factor: number; min_steps?: number };
}

export interface Trial {
  /** 0, 1, ... in the order the searcher proposes them */
  index: number;
  params: Record<string, Value>;
}

const bad = (field: string, message: string): TunefleetError =>
  new TunefleetError(ErrorCode.SpecInvalid, message, { field });

/** The schema of a job spec field (`training.learning_rate`), or null when the job spec has no such field. */
function fieldSchema(path: string[]): z.ZodType | null {
  let s: z.ZodType = jobSpecSchema;
  for (const key of path) {
    const obj = unwrap(s);
    if (!(obj instanceof z.ZodObject)) return null;
    const next = (obj.shape as Record<string, z.ZodType>)[key];
    if (!next) return null;
    s = next;
  }
  return unwrap(s);
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  for (;;) {
    if (s instanceof z.ZodDefault || s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
    else if (s instanceof z.ZodPipe) s = s.in as z.ZodType;
    else return s;
  }
}

/** Fields a sweep may not vary: they are the sweep's own (steps, name) or not hyperparameters. */
const NOT_SEARCHABLE = new Set(['training.max_steps', 'training.epochs', 'priority', 'heartbeat_timeout']);

function parseDimension(field: string, raw: unknown): Dimension {
  const where = `space.${field}`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || Object.keys(raw).length !== 1)
    throw bad(where, `one of ${DIMENSION_KINDS.map((k) => `{${k}: [...]}`).join(', ')}`);
  const [kind, v] = Object.entries(raw)[0] as [string, unknown];
  if (!(DIMENSION_KINDS as readonly string[]).includes(kind))
    throw bad(where, `'${kind}' is not one of ${DIMENSION_KINDS.join(', ')}`);
  if (!Array.isArray(v)) throw bad(`${where}.${kind}`, 'a list');
  if (kind === 'grid' || kind === 'choice') {
    if (v.length === 0) throw bad(`${where}.${kind}`, 'an empty list: give at least one value');
    if (!v.every((x) => ['number', 'string', 'boolean'].includes(typeof x)))
      throw bad(`${where}.${kind}`, 'values are numbers, strings or booleans');
    if (new Set(v.map((x) => JSON.stringify(x))).size !== v.length)
      throw bad(`${where}.${kind}`, 'a value is repeated');
    return { kind, values: v as Value[] };
  }
  const [low, high] = v as unknown[];
  if (v.length !== 2 || typeof low !== 'number' || typeof high !== 'number' || !isFinite(low) || !isFinite(high))
    throw bad(`${where}.${kind}`, '[low, high]: two numbers');
  if (!(low < high)) throw bad(`${where}.${kind}`, `an empty range: low ${low} is not below high ${high}`);
  if (kind === 'loguniform' && low <= 0)
    throw bad(`${where}.${kind}`, `a log scale needs bounds above 0 (low is ${low})`);
  if (kind === 'int' && (!Number.isInteger(low) || !Number.isInteger(high)))
    throw bad(`${where}.${kind}`, 'whole-number bounds');
  return { kind: kind as 'uniform' | 'loguniform' | 'int', low, high };
}

/** The values a dimension may take that the job spec must accept (each discrete value; both ends of a range). */
function probes(d: Dimension): Value[] {
  return 'values' in d ? d.values : [d.low, d.high];
}

/** `base` with the trial's values set at their dotted paths (a copy). */
export function applyParams(base: unknown, params: Record<string, Value>): Record<string, unknown> {
  const out = structuredClone(base) as Record<string, unknown>;
  for (const [field, value] of Object.entries(params)) {
    const path = field.split('.');
    let o = out;
    for (const key of path.slice(0, -1)) {
      if (o[key] === null || typeof o[key] !== 'object') o[key] = {};
      o = o[key] as Record<string, unknown>;
    }
    o[path[path.length - 1] as string] = value;
  }
  return out;
}

/**
 * Validate a sweep (its fields, then its space against the job spec it varies: every field must exist and be numeric
 * or enumerated, and every value the space can give must be one the job spec accepts); all problems at once, each
 * naming its field.
 */
export function checkSweep(raw: unknown, job: unknown, file = '<sweep>'): SweepSpec {
  const parsed = sweepSchema.safeParse(raw);
  if (!parsed.success)
    throw new TunefleetErrors(
      ErrorCode.SpecInvalid,
      parsed.error.issues.map(
        (i) =>
          new TunefleetError(
            ErrorCode.SpecInvalid,
            i.code === 'unrecognized_keys' ? `unknown key(s) ${i.keys.join(', ')}` : i.message,
            { file, field: i.path.join('.') || '(top)' },
          ),
      ),
      `${file}: the sweep has problems`,
    );
  const s = parsed.data;
  const problems: TunefleetError[] = [];
  const space: Record<string, Dimension> = {};
  if (Object.keys(s.space).length === 0) problems.push(bad('space', 'an empty search space: name a field to vary'));
  for (const [field, rawDim] of Object.entries(s.space)) {
    try {
      const path = field.split('.');
      const schema = fieldSchema(path);
      if (!schema) throw bad(`space.${field}`, 'not a field of the job spec');
      if (NOT_SEARCHABLE.has(field))
        throw bad(`space.${field}`, 'not searched (a trial trains budget.max_steps steps; the sweep sets the rest)');
      if (!(schema instanceof z.ZodNumber) && !(schema instanceof z.ZodEnum))
        throw bad(`space.${field}`, 'not a numeric or enumerated field of the job spec');
      const dim = parseDimension(field, rawDim);
      if (schema instanceof z.ZodEnum && dim.kind !== 'grid' && dim.kind !== 'choice')
        throw bad(`space.${field}`, `an enumerated field takes grid or choice (of ${schema.options.join(', ')})`);
      for (const v of probes(dim)) {
        const r = schema.safeParse(v);
        if (!r.success)
          throw bad(`space.${field}`, `${JSON.stringify(v)}: ${r.error.issues[0]?.message ?? 'not accepted'}`);
      }
      space[field] = dim;
    } catch (e) {
      if (e instanceof TunefleetError) problems.push(new TunefleetError(e.code, e.message, { file, ...e.where }));
      else throw e;
    }
  }
  const metric = s.metric;
  if (!(SWEEP_METRICS as readonly string[]).includes(metric) && !/^tool\.[A-Za-z0-9_-]+$/.test(metric))
    problems.push(bad('metric', `'${metric}' is not one of ${SWEEP_METRICS.join(', ')} or tool.<score>`));
  const mode = s.mode ?? (LOWER_IS_BETTER.has(metric) ? 'min' : 'max');
  const { type, reduction_factor: rf, min_steps: minSteps } = s.searcher;
  if (type === 'grid') {
    for (const [field, d] of Object.entries(space))
      if (d.kind !== 'grid' && d.kind !== 'choice')
        problems.push(bad(`space.${field}`, `the grid searcher takes grid or choice values, not ${d.kind}`));
    const size = gridSize(space);
    if (problems.length === 0 && size > s.budget.max_trials)
      problems.push(
        bad('budget.max_trials', `the grid has ${size} points, more than max_trials ${s.budget.max_trials}`),
      );
  }
  if (type === 'asha') {
    if (minSteps === undefined) problems.push(bad('searcher.min_steps', 'ASHA needs its first rung (min_steps)'));
    else if (minSteps >= s.budget.max_steps)
      problems.push(bad('searcher.min_steps', `${minSteps} is not below budget.max_steps ${s.budget.max_steps}`));
    if (metric !== 'eval_loss' && metric !== 'perplexity')
      problems.push(
        bad(
          'metric',
          `ASHA ranks trials at each rung by the eval split's loss: eval_loss or perplexity, not ${metric}`,
        ),
      );
  } else if (minSteps !== undefined) problems.push(bad('searcher.min_steps', 'only ASHA has rungs'));
  // every trial's spec must be a job spec: a sample at each end of every range, with the base
  if (problems.length === 0) {
    const first = Object.fromEntries(Object.entries(space).map(([f, d]) => [f, probes(d)[0] as Value]));
    const last = Object.fromEntries(Object.entries(space).map(([f, d]) => [f, probes(d).at(-1) as Value]));
    for (const params of [first, last]) {
      const spec = applyParams(job, { ...params, 'training.max_steps': s.budget.max_steps });
      const r = jobSpecSchema.safeParse(spec);
      if (!r.success) {
        const i = r.error.issues[0];
        problems.push(
          bad(
            i?.path.join('.') ?? 'job',
            `a trial (${JSON.stringify(params)}) is not a valid job: ${i?.message ?? 'invalid'}`,
          ),
        );
        break;
      }
    }
  }
  if (problems.length)
    throw new TunefleetErrors(
      ErrorCode.SpecInvalid,
      problems.map((p) => new TunefleetError(p.code, p.message, { file, ...p.where })),
      `${file}: the sweep has ${problems.length} problem${problems.length === 1 ? '' : 's'}`,
    );
  return {
    name: s.name,
    job: s.job,
    space,
    metric,
    mode,
    budget: s.budget,
    searcher: {
      type,
      seed: s.searcher.seed,
      reduction_factor: rf,
      ...(minSteps !== undefined ? { min_steps: minSteps } : {}),
    },
  };
}

function gridSize(space: Record<string, Dimension>): number {
  return Object.values(space).reduce((n, d) => n * (d.kind === 'grid' || d.kind === 'choice' ? d.values.length : 1), 1);
}

function sample(d: Dimension, rand: () => number): Value {
  if ('values' in d) return d.values[Math.floor(rand() * d.values.length)] as Value;
  if (d.kind === 'uniform') return d.low + rand() * (d.high - d.low);
  if (d.kind === 'loguniform') return Math.exp(Math.log(d.low) + rand() * (Math.log(d.high) - Math.log(d.low)));
  return d.low + Math.floor(rand() * (d.high - d.low + 1));
}

function gridPoints(space: Record<string, Dimension>): Record<string, Value>[] {
  let points: Record<string, Value>[] = [{}];
  for (const [field, d] of Object.entries(space)) {
    const values = d.kind === 'grid' || d.kind === 'choice' ? d.values : [];
    points = points.flatMap((p) => values.map((v) => ({ ...p, [field]: v })));
  }
  return points;
}

/**
 * The trials a searcher proposes, in order. Grid: every point (the last field varying fastest). Random: max_trials
 * seeded samples. ASHA: over a space of grid and choice values only whose points fit the budget, every point in a
 * seeded order (so ASHA and the grid compare the same configurations); otherwise seeded samples as random.
 */
export function proposeTrials(s: SweepSpec): Trial[] {
  const discrete = Object.values(s.space).every((d) => d.kind === 'grid' || d.kind === 'choice');
  const rand = seededRandom(s.searcher.seed);
  let params: Record<string, Value>[];
  if (s.searcher.type === 'grid') params = gridPoints(s.space);
  else if (s.searcher.type === 'asha' && discrete && gridSize(s.space) <= s.budget.max_trials) {
    params = gridPoints(s.space);
    for (let i = params.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [params[i], params[j]] = [params[j] as Record<string, Value>, params[i] as Record<string, Value>];
    }
  } else
    params = Array.from({ length: s.budget.max_trials }, () =>
      Object.fromEntries(Object.entries(s.space).map(([f, d]) => [f, sample(d, rand)])),
    );
  return params.map((p, index) => ({ index, params: p }));
}

/** ASHA's rungs in steps: min_steps x rf^k below max_steps, then max_steps. Grid and random: max_steps alone. */
export function rungs(s: SweepSpec): number[] {
  const { min_steps: min, reduction_factor: rf } = s.searcher;
  const max = s.budget.max_steps;
  if (s.searcher.type !== 'asha' || min === undefined) return [max];
  const out: number[] = [];
  for (let r = min; r < max; r *= rf) out.push(r);
  return [...out, max];
}

/** A trial as ASHA sees it: the rungs it has finished (their metric, in order) and whether it is training now. */
export interface TrialState {
  index: number;
  /** the metric at each finished rung */
  results: number[];
  running: boolean;
}

export type AshaAction =
  { do: 'promote'; index: number; rung: number } | { do: 'start'; index: number } | { do: 'wait' };

/**
 * What a free slot does next (asynchronous successive halving): promote a paused trial that is in the top
 * 1/reduction_factor of the results its rung has so far (the highest rung first), else start the next of the `proposed`
 * trials (`started` have been), else wait. `rung` is the index of the rung the promoted trial trains to.
 */
export function ashaNext(s: SweepSpec, trials: TrialState[], started: number, proposed: number): AshaAction {
  const steps = rungs(s);
  const better = (a: number, b: number): number => (s.mode === 'min' ? a - b : b - a);
  for (let k = steps.length - 2; k >= 0; k--) {
    const finished = trials.filter((t) => t.results.length > k);
    const top = Math.floor(finished.length / s.searcher.reduction_factor);
    if (top === 0) continue;
    const ranked = [...finished].sort(
      (a, b) => better(a.results[k] as number, b.results[k] as number) || a.index - b.index,
    );
    const pick = ranked.slice(0, top).find((t) => !t.running && t.results.length === k + 1);
    if (pick) return { do: 'promote', index: pick.index, rung: k + 1 };
  }
  if (started < proposed) return { do: 'start', index: started };
  return { do: 'wait' };
}

/** The best trial by its result at the highest rung any trial finished (ties: the earlier trial); null: none yet. */
export function bestTrial(s: SweepSpec, trials: TrialState[]): TrialState | null {
  const top = Math.max(0, ...trials.map((t) => t.results.length));
  if (top === 0) return null;
  const at = trials.filter((t) => t.results.length === top);
  const better = (a: number, b: number): number => (s.mode === 'min' ? a - b : b - a);
  at.sort((a, b) => better(a.results[top - 1] as number, b.results[top - 1] as number) || a.index - b.index);
  return at[0] ?? null;
}

/** The sweep workflow's input: the checked sweep, every trial the searcher proposed (with its job spec), the data. */
export interface SweepInput {
  sweepId: string;
  sweep: SweepSpec;
  /** in the searcher's order; each spec is the base job with the trial's values and budget.max_steps */
  trials: { index: number; params: Record<string, Value>; spec: JobSpec }[];
  dataset: FineTuneInput['dataset'];
  evalDataset?: FineTuneInput['evalDataset'];
  submittedAt: string;
  timeouts?: FineTuneInput['timeouts'];
  queue?: FineTuneInput['queue'];
  /** continue as new past this many history events (default in workflows/sweep.ts; a test lowers it) */
  historyEvents?: number;
  /** set when a run continued as new: the sweep as it stood */
  continued?: SweepStatus;
}

/** A trial as the sweep sees it. */
export interface SweepTrial {
  index: number;
  jobId: string;
  params: Record<string, Value>;
  /** running: placed, queued or training (its job's status says which); paused: at a rung, waiting for the sweep */
  state: 'running' | 'paused' | 'succeeded' | 'failed_gate' | 'stopped_early' | 'failed' | 'cancelled';
  /** steps trained */
  steps: number;
  /** the sweep's metric at each rung reached (the last rung: the final evaluation's); null: not measured */
  results: (number | null)[];
  /** the eval split's loss at each rung reached */
  rungs: { step: number; evalLoss: number | null }[];
  /** the metric of its final evaluation (null: not finished) */
  final: number | null;
  message: string | null;
}

/** What `tunefleet sweep status` shows, and the sweep's result. */
export interface SweepStatus {
  sweepId: string;
  name: string;
  state: 'running' | 'finishing' | 'succeeded' | 'failed' | 'cancelled';
  searcher: SweepSpec['searcher']['type'];
  metric: string;
  mode: 'min' | 'max';
  /** the steps of each rung (grid and random: budget.max_steps alone) */
  rungs: number[];
  /** trials the searcher proposed */
  proposed: number;
  /** the trials started, in start order */
  trials: SweepTrial[];
  /** the best trial so far, by its result at the highest rung reached; its adapter is the sweep's result */
  best: { index: number; jobId: string; params: Record<string, Value>; metric: number | null; rung: number } | null;
  /** training steps of every trial together */
  stepsTrained: number;
  message: string | null;
}
