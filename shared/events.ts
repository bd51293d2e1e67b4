// Trainer events: the JSON lines the Python trainer prints on stdout, protocol version 1.
// Defined once here; agent/trainer/tunefleet_trainer/events.schema.json is generated from
// these schemas (npm run build writes it) and pytest validates every event the trainer
// prints against it. Readers are tolerant: unknown keys are ignored, so a newer trainer
// does not break an older agent; unknown event types are skipped with a log line.
import { z } from 'zod';
import { ErrorCode, TRAINER_ERROR_CODES, TunefleetError } from './errors';

export const TRAINER_PROTOCOL_VERSION = 1;

const base = { v: z.literal(TRAINER_PROTOCOL_VERSION), time: z.number() };
const finite = z.number().refine(Number.isFinite, 'must be a finite number');

export const startedEvent = z.object({
  ...base,
  type: z.literal('started'),
  method: z.string(),
  device: z.string(),
  dtype: z.string(),
  trainable_params: z.number().int().nonnegative(),
  total_params: z.number().int().positive(),
  train_records: z.number().int().nonnegative(),
  eval_records: z.number().int().nonnegative(),
  steps_total: z.number().int().nonnegative(),
  micro_batch_size: z.number().int().positive(),
  grad_accum: z.number().int().positive(),
  truncated_records: z.number().int().nonnegative(),
  resumed_from_step: z.number().int().nonnegative(),
  /** the CUDA_VISIBLE_DEVICES the trainer was given (its devices' UUIDs), or null */
  visible_devices: z.string().max(4096).nullable().default(null),
  /** CUDA devices torch sees with it (0 on a CPU trainer) */
  cuda_devices: z.number().int().nonnegative().max(1024).default(0),
  /** processes of a data-parallel run (torchrun); 1 for a trainer alone */
  world_size: z.number().int().positive().max(1024).default(1),
  /** what trained it: python, torch, transformers, peft (an older trainer: absent) */
  versions: z.record(z.string().max(64), z.string().max(128)).optional(),
});

export const stepEvent = z.object({
  ...base,
  type: z.literal('step'),
  step: z.number().int().positive(),
  steps_total: z.number().int().nonnegative(),
  epoch: z.number().nonnegative(),
  loss: finite,
  lr: z.number().nonnegative(),
  grad_norm: z.number().nonnegative().nullable(),
  tokens_per_s: z.number().nonnegative(),
});

export const fileEntry = z.object({
  name: z.string().min(1),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().nonnegative(),
});
export type FileEntry = z.infer<typeof fileEntry>;

export const checkpointEvent = z.object({
  ...base,
  type: z.literal('checkpoint'),
  step: z.number().int().nonnegative(),
  path: z.string().min(1),
  files: z.array(fileEntry).min(1),
  reason: z.enum(['interval', 'final', 'signal', 'pause']),
  /** seconds spent writing, fsyncing and hashing the checkpoint */
  save_seconds: z.number().nonnegative().optional(),
});

export const evalEvent = z.object({
  ...base,
  type: z.literal('eval'),
  step: z.number().int().nonnegative(),
  eval_loss: finite,
  perplexity: z.number().positive(),
  /** with periodic evaluation (training.eval_every): the best so far, which is the adapter exported */
  best_eval_loss: finite.nullable().optional(),
  best_step: z.number().int().nonnegative().nullable().optional(),
});

/** Out of memory: the numbers a retry needs (smaller micro-batch, gradient checkpointing). The trainer exits 3. */
export const oomEvent = z.object({
  ...base,
  type: z.literal('oom'),
  step: z.number().int().positive(),
  micro_batch_size: z.number().int().positive(),
  sequence_length: z.number().int().positive(),
  gradient_checkpointing: z.boolean(),
  device: z.string(),
  memory_total: z.number().int().nonnegative().nullable(),
  memory_free: z.number().int().nonnegative().nullable(),
  memory_allocated: z.number().int().nonnegative().nullable(),
  memory_peak: z.number().int().nonnegative().nullable(),
});

export const logEvent = z.object({
  ...base,
  type: z.literal('log'),
  level: z.enum(['debug', 'info', 'warning', 'error']),
  message: z.string(),
});

export const finishedEvent = z.object({
  ...base,
  type: z.literal('finished'),
  step: z.number().int().nonnegative(),
  adapter_path: z.string().min(1),
  adapter_files: z.array(fileEntry).min(1),
  /** the run's TensorBoard event files (a newer trainer; none from an older one) */
  logs_path: z.string().min(1).optional(),
  log_files: z.array(fileEntry).default([]),
  train_loss: finite.nullable(),
  /** completed: all steps; early: early stopping (patience ran out); signal: SIGTERM, checkpointed */
  stopped: z.enum(['completed', 'early', 'signal']),
  /** the step whose adapter was exported, when periodic evaluation chose the best */
  best_step: z.number().int().nonnegative().nullable().optional(),
  /** peak memory of the run: CUDA max allocated bytes, or the process's peak RSS on CPU */
  peak_memory: z.number().int().nonnegative().nullable().optional(),
});

export const modelMetrics = z.object({
  eval_loss: finite,
  perplexity: z.number().positive(),
  exact_match: z.number().min(0).max(1).nullable(),
  /** corpus BLEU (sacrebleu), 0-100, of the generations against the references */
  bleu: z.number().min(0).max(100).nullable().default(null),
  /** mean ROUGE-L F1 (rouge-score), 0-1 */
  rouge_l: z.number().min(0).max(1).nullable().default(null),
  samples: z.number().int().nonnegative(),
});
export type ModelMetrics = z.infer<typeof modelMetrics>;

export const evaluationEvent = z.object({
  ...base,
  type: z.literal('evaluation'),
  base: modelMetrics,
  tuned: modelMetrics,
  examples: z
    .array(z.object({ prompt: z.string(), reference: z.string(), base: z.string(), tuned: z.string() }))
    .max(50),
  /** every generation as JSONL (prompt, reference, base, tuned), and how many */
  outputs_path: z.string().optional(),
  outputs: z.number().int().nonnegative().optional(),
});

/** generate: a piece of an answer as it is generated (`prompt`: its index; `side`: which model answers) */
export const tokenEvent = z.object({
  ...base,
  type: z.literal('token'),
  prompt: z.number().int().nonnegative(),
  side: z.enum(['base', 'tuned']),
  text: z.string(),
});

/** generate: a finished answer, whole */
export const answerEvent = z.object({
  ...base,
  type: z.literal('answer'),
  prompt: z.number().int().nonnegative(),
  side: z.enum(['base', 'tuned']),
  text: z.string(),
  tokens: z.number().int().nonnegative(),
});

export const errorEvent = z.object({
  ...base,
  type: z.literal('error'),
  /** one of the shared attempt-error codes the trainer reports (shared/errors.ts) */
  code: z.enum(TRAINER_ERROR_CODES),
  message: z.string(),
});

/** train with pause_at: the run stopped at that step (a sweep's rung), checkpointed, and evaluated on the eval split */
export const pausedEvent = z.object({
  ...base,
  type: z.literal('paused'),
  step: z.number().int().positive(),
  steps_total: z.number().int().positive(),
  /** the eval split's loss at the pause (null: no eval split) */
  eval_loss: finite.nullable(),
});

export const trainerEvent = z.discriminatedUnion('type', [
  startedEvent,
  stepEvent,
  checkpointEvent,
  evalEvent,
  oomEvent,
  logEvent,
  finishedEvent,
  pausedEvent,
  evaluationEvent,
  tokenEvent,
  answerEvent,
  errorEvent,
]);
export type TrainerEvent = z.infer<typeof trainerEvent>;
export type TrainerEventType = TrainerEvent['type'];
export type OomEvent = Extract<TrainerEvent, { type: 'oom' }>;

/** A trainer event as the agent publishes it on the job's subjects: with the job, attempt and agent. */
export type JobEvent = TrainerEvent & { job_id: string; attempt: number; agent_id: string };
/** One type of job event, e.g. JobEventOf<'step'>. */
export type JobEventOf<T extends TrainerEventType> = Extract<TrainerEvent, { type: T }> & {
  job_id: string;
  attempt: number;
  agent_id: string;
};
/** Every event type, once (the compiler refuses a type left out: a reader would skip it as unknown) */
const EVENT_TYPES: Record<TrainerEventType, true> = {
  started: true,
  step: true,
  checkpoint: true,
  eval: true,
  oom: true,
  log: true,
  finished: true,
  paused: true,
  evaluation: true,
  token: true,
  answer: true,
  error: true,
};
export const TRAINER_EVENT_TYPES = Object.keys(EVENT_TYPES) as readonly TrainerEventType[];

export type ParsedLine =
  { kind: 'event'; event: TrainerEvent } | { kind: 'text'; text: string } | { kind: 'invalid'; error: TunefleetError };

/**
 * Read one line of trainer stdout. Lines that are not JSON objects are plain text (a
 * library printing to stdout); JSON that claims to be an event but breaks the schema is
 * invalid and reported with the line number, never thrown.
 */
export function parseTrainerLine(line: string, lineNo: number): ParsedLine {
  const trimmed = line.trim();
  if (!trimmed.startsWith('{')) return { kind: 'text', text: line };
  let raw: unknown;
  try {
    raw = JSON.parse(trimmed);
  } catch {
    return { kind: 'text', text: line };
  }
  if (typeof raw !== 'object' || raw === null || !('type' in raw)) return { kind: 'text', text: line };
  const type = (raw as { type: unknown }).type;
  if (typeof type === 'string' && !(TRAINER_EVENT_TYPES as readonly string[]).includes(type)) {
    return {
      kind: 'invalid',
      error: new TunefleetError(ErrorCode.TrainerEventInvalid, `unknown event type '${type}' (skipped)`, {
        file: 'trainer stdout',
        line: lineNo,
        field: 'type',
      }),
    };
  }
  const parsed = trainerEvent.safeParse(raw);
  if (parsed.success) return { kind: 'event', event: parsed.data };
  const issue = parsed.error.issues[0];
  return {
    kind: 'invalid',
    error: new TunefleetError(ErrorCode.TrainerEventInvalid, issue?.message ?? 'invalid event', {
      file: 'trainer stdout',
      line: lineNo,
      field: issue ? issue.path.join('.') : undefined,
    }),
  };
}

/** JSON Schema of the trainer events, for the Python side's tests. */
export function trainerEventsJsonSchema(): unknown {
  return z.toJSONSchema(trainerEvent, { target: 'draft-2020-12', io: 'output' });
}

/**
 * One message from a job's event stream, as the agent publishes it: a trainer event plus
 * job_id, attempt and agent_id. Anyone who can publish on NATS can put anything there, so
 * a reader checks it and skips (with this message) what is not such an event.
 */
export function parseJobEvent(
  data: Uint8Array,
  jobId: string,
): { ok: true; event: JobEvent } | { ok: false; message: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data));
  } catch (e) {
    return { ok: false, message: `not UTF-8 JSON (${(e as Error).message})` };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, message: 'not a JSON object' };
  const r = raw as Record<string, unknown>;
  if (r.job_id !== jobId) return { ok: false, message: `job_id ${JSON.stringify(r.job_id)} is not ${jobId}` };
  if (!Number.isInteger(r.attempt) || (r.attempt as number) < 1 || typeof r.agent_id !== 'string')
    return { ok: false, message: 'attempt and agent_id are missing or malformed' };
  const parsed = trainerEvent.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      ok: false,
      message: `${issue ? `${issue.path.join('.') || 'type'}: ` : ''}${issue?.message ?? 'not a trainer event'}`,
    };
  }
  return { ok: true, event: { ...parsed.data, job_id: jobId, attempt: r.attempt as number, agent_id: r.agent_id } };
}
