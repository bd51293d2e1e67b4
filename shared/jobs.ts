// What crosses Temporal: workflow input, status, result. Only keys, hashes and small
// numbers — never data, checkpoints or logs (payloads are capped at 2 MB).
import type { JobSpec } from './spec';
import type { FileEntry, ModelMetrics } from './events';
import type { GateResult } from './gates';

export interface FineTuneInput {
  jobId: string;
  spec: JobSpec;
  /** object-store name of the uploaded dataset (content-addressed) and its sha256 */
  dataset: { object: string; sha256: string; bytes: number };
  evalDataset?: { object: string; sha256: string; bytes: number };
  submittedAt: string;
  /**
   * agent-activity timeouts (seconds) for this deployment; defaults 120 s to start, heartbeat see workflows/fineTune.ts
   * heartbeatSeconds
   */
  timeouts?: { scheduleToStartSeconds?: number; heartbeatSeconds?: number };
  /** how a queued job polls for placement; defaults in workflows/fineTune.ts (a test shortens them) */
  queue?: { pollMs?: number; historyEvents?: number };
  /** set when a run continued as new while queued: where the previous run had got to */
  continued?: ContinuedRun;
  /** a sweep's trial: it pauses at each rung but the last and waits for the sweep to promote or stop it */
  trial?: TrialInput;
}

/** What makes a job a sweep's trial. */
export interface TrialInput {
  /** the sweep workflow's id (the trial tells it of each rung it reaches and of its end) */
  sweepId: string;
  /** the trial's index in the sweep (0, 1, ... in the order the searcher proposed them) */
  index: number;
  /** the steps it pauses at (ASHA's rungs); the last is training.max_steps */
  rungs: number[];
}

/** What a trial tells its sweep: it paused at a rung, or it ended (with the metrics of its evaluation). */
export interface TrialUpdate {
  index: number;
  kind: 'paused' | 'succeeded' | 'failed_gate' | 'stopped_early' | 'failed' | 'cancelled';
  /** the rung (index into the rungs) it paused at or ended after */
  rung: number;
  /** training steps done */
  step: number;
  /** paused: the eval split's loss at the rung */
  evalLoss: number | null;
  /** succeeded or failed_gate: the fine-tuned model's metrics by name (as gates name them) */
  metrics?: Record<string, number | null | undefined>;
  /** failed: why */
  message?: string;
}

/** A trial the sweep stopped at a rung (ASHA did not promote it): its numbers; it registered no adapter. */
export interface StoppedTrialResult {
  jobId: string;
  state: 'stopped_early';
  sweepId: string;
  trial: number;
  /** steps trained */
  step: number;
  /** the eval split's loss at each rung it reached */
  rungs: { step: number; evalLoss: number | null }[];
  data: DataReport;
}

/**
 * What a queued run hands to the next one when its history has grown (Temporal's
 * continue-as-new): the job keeps its id, submit time and priority (in the input), its
 * attempt count, exclusions, checkpoint to resume from and the outcome of what it
 * already did.
 */
export interface ContinuedRun {
  /** the runs before this one */
  runs: number;
  status: JobStatus;
  /** the spec as the last attempt left it (an OOM retry shrinks the micro-batch) */
  spec: JobSpec;
  exclude: string[];
  resumeFrom: { prefix: string; step: number; manifest_sha256?: string | null } | null;
  data: DataReport;
  /** set when training is done and the job waits to be evaluated */
  training: TrainOutcome | null;
  /** a trial: the rungs it reached, with the eval loss at each (absent: none yet) */
  trialRungs?: { step: number; evalLoss: number | null }[];
}

export const JOB_STATES = [
  'preparing',
  'placing',
  'queued',
  'training',
  'evaluating',
  'registering',
  /** a sweep's trial at a rung: checkpointed, evaluated, its leases released; the sweep promotes or stops it */
  'paused',
  'succeeded',
  'failed_gate',
  /** a sweep's trial the sweep stopped at a rung (not promoted) */
  'stopped_early',
  'failed',
  'cancelled',
] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface DataReport {
  /** non-blank lines read (training file plus eval file) */
  records_total: number;
  records_valid: number;
  /** malformed records (bad UTF-8, JSON, fields, or a second format) */
  records_invalid: number;
  format: 'text' | 'prompt_completion' | 'messages';
  policy: 'strict' | 'lenient';
  train_records: number;
  eval_records: number;
  /** records dropped, per rule */
  dropped: Record<string, number>;
  /** the first few dropped records per rule: file, line, why, and the start of the line */
  examples: Record<string, { file: string; line: number; message: string; text: string }[]>;
  blank_lines: number;
  /** training records added by augmentation (included in train_records) */
  augmented: number;
  problems: { line: number; message: string }[];
  train_object: string;
  eval_object: string;
  /** the prepared splits' sha256 (absent in reports from before digests) */
  train_sha256?: string;
  eval_sha256?: string;
  /** the registered adapter the job starts from (spec init_adapter), as prepare found it */
  parent?: ParentAdapter | null;
}

/** A registered adapter a job continues from: where its files are, and where its evaluation left it. */
export interface ParentAdapter {
  /** the job that trained it */
  job: string;
  bucket: string;
  prefix: string;
  files: FileEntry[];
  /** the parent's fine-tuned eval loss (the evaluation step's) */
  evalLoss: number | null;
  /** the sha256 of the base model's weights the parent trained on (its record's); an agent whose differ refuses */
  baseSha256?: string | null;
}

/** One host of a gang (a multi-node job): its agent, rank and devices. */
export interface GangMember {
  agentId: string;
  /** 0 speaks for the job: events, checkpoints, commits, the adapter */
  rank: number;
  devices: string[];
  reservedBytes: number;
}

/** Where a gang meets: the rank-0 agent's advertised address and the port the placement chose from its range. */
export interface Rendezvous {
  address: string;
  port: number;
}

export interface Placement {
  /** the agent (a gang's rank 0) */
  agentId: string;
  attempt: number;
  reason: string;
  device: 'cuda' | 'cpu';
  /** bytes reserved on the agent for this attempt */
  reservedBytes: number;
  /** the devices reserved (UUIDs; 'cpu' on a CPU agent); absent in histories from before per-device leases */
  devices?: string[];
  /** a gang: every member, by rank (rank 0 is agentId), leases taken on all of them, and where they meet */
  gang?: { members: GangMember[]; rendezvous: Rendezvous };
}

/**
 * The newest committed checkpoint of a job (KV tunefleet-commits, key = job id) and the
 * epoch that owns the job. Written only by compare-and-set: an epoch claims the record
 * before it trains, and a commit from an older epoch is refused, so a zombie attempt
 * never replaces the newer one's state. (epoch, step) never goes backwards.
 */
export interface CommitRecord {
  epoch: number;
  step: number;
  /** checkpoints-bucket prefix of the committed checkpoint; null before the first commit */
  prefix: string | null;
  manifest_sha256: string | null;
  agent_id: string;
  time: number;
  /**
   * the commits before this one, newest first (at most COMMITS_KEPT): where a resume falls back if the newest is
   * damaged
   */
  previous?: { step: number; prefix: string; manifest_sha256: string | null }[];
}

/** Earlier commits a CommitRecord remembers. */
export const COMMITS_KEPT = 3;

export interface TrainProgress {
  step: number;
  stepsTotal: number;
  loss: number | null;
  /** the newest committed checkpoint, with its manifest's sha256: the next attempt downloads only that manifest */
  checkpoint: { step: number; prefix: string; manifest_sha256?: string | null } | null;
}

export interface TrainOutcome {
  attempt: number;
  agentId: string;
  steps: number;
  trainLoss: number | null;
  trainableParams: number;
  totalParams: number;
  /** object-store prefix of the final adapter in the checkpoints bucket */
  adapterPrefix: string;
  adapterFiles: FileEntry[];
  /** what trained it (the trainer's started event): python, torch, transformers, peft */
  versions?: Record<string, string>;
  /** the base model's weights as the training agent held them: sha256 over its weight files (modelDigest) */
  baseSha256?: string | null;
  /** object-store prefix of the run's TensorBoard event files in the checkpoints bucket (absent: none) */
  logPrefix?: string;
  logFiles?: FileEntry[];
  seconds: number;
  /** a sweep trial paused at its rung (TrainRequest.pauseAt): its committed checkpoint and eval loss; no adapter */
  paused?: {
    step: number;
    evalLoss: number | null;
    checkpoint: { prefix: string; step: number; manifest_sha256?: string | null };
  };
}

/** A model's metrics: the trainer's, the judge's mean score and the tool scorer's scores. */
export interface ScoredMetrics extends ModelMetrics {
  /** mean cosine similarity of answer and reference embeddings (all-MiniLM-L6-v2), null when not judged */
  judge?: number | null;
  /** the tool scorer's scores, by name */
  tool?: Record<string, number>;
}

export interface ToolRun {
  scores: Record<string, number>;
  /** why there are no scores (exit status, timeout, unreadable output); null when it worked */
  error: string | null;
  seconds: number;
}

export interface EvalOutcome {
  base: ScoredMetrics;
  tuned: ScoredMetrics;
  examples: { prompt: string; reference: string; base: string; tuned: string }[];
  /** how the judge ran (null: turned off in the spec) */
  judge?: { model: string; answers: number; seconds: number; error: string | null } | null;
  tool?: { command: string[]; base: ToolRun; tuned: ToolRun } | null;
  /**
   * every generation (JSONL: prompt, reference, base, tuned) in the adapters bucket, for review export; sha256 of the
   * object, checked by every reader (absent in jobs from before it was recorded)
   */
  outputs?: { object: string; records: number; sha256?: string } | null;
}

/** Human grades attached with `tunefleet review import` (1-5 per answer). */
export interface ReviewSummary {
  graded: number;
  base_mean: number | null;
  tuned_mean: number | null;
  /** share of graded rows where the fine-tuned answer got the higher grade / the lower one */
  tuned_better: number;
  tuned_worse: number;
  file: string;
  imported_at: string;
}

export interface JobResult {
  jobId: string;
  /** failed_gate: a quality gate in the spec did not pass (the adapter is stored all the same) */
  state: 'succeeded' | 'failed_gate';
  /** each gate of the spec with its numbers */
  gates?: GateResult[];
  /** human review, when grades were imported (added when the result is read) */
  review?: ReviewSummary | null;
  model: string;
  method: string;
  data: DataReport;
  training: TrainOutcome;
  evaluation: EvalOutcome;
  /** prefix of the registered adapter in the adapters bucket */
  adapter: { bucket: string; prefix: string; files: FileEntry[] };
  /** the TensorBoard event files in the adapters bucket (`tunefleet download JOB --logs`); absent: none */
  logs?: { bucket: string; prefix: string; files: FileEntry[] };
}

export interface JobStatus {
  jobId: string;
  state: JobState;
  attempt: number;
  /** the epoch of the current attempt (checkpoint commits of older epochs are refused) */
  epoch: number;
  agentId: string | null;
  /** a gang's members by rank while it trains (absent or null: one host) */
  members?: { agentId: string; rank: number }[] | null;
  progress: TrainProgress | null;
  /** 1 = next to be placed, while queued */
  queuePosition: number | null;
  message: string | null;
}
