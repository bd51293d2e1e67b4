// Typed errors: a code from a closed list, a message a person understands, and where it
// happened (file, line, field). Every boundary (spec, dataset record, advert, trainer
// event, CLI flag) throws one of these instead of a bare Error.

export const ErrorCode = {
  SpecInvalid: 'SPEC_INVALID',
  SpecUnreadable: 'SPEC_UNREADABLE',
  DatasetInvalid: 'DATASET_INVALID',
  DatasetMissing: 'DATASET_MISSING',
  AdvertInvalid: 'ADVERT_INVALID',
  TrainerEventInvalid: 'TRAINER_EVENT_INVALID',
  TrainerFailed: 'TRAINER_FAILED',
  ModelMissing: 'MODEL_MISSING',
  NoAgentFits: 'NO_AGENT_FITS',
  /** no job by that id */
  JobNotFound: 'JOB_NOT_FOUND',
  /** the job exists but has not ended: what was asked for (its result) is not there yet */
  JobRunning: 'JOB_RUNNING',
  /** an object (dataset, checkpoint file, adapter, stored outputs) is not in the store */
  ObjectMissing: 'OBJECT_MISSING',
  StackUnavailable: 'STACK_UNAVAILABLE',
  FlagInvalid: 'FLAG_INVALID',
  ChecksumMismatch: 'CHECKSUM_MISMATCH',
  /** a newer attempt (epoch) owns the job: this one's writes are refused */
  Fenced: 'FENCED',
  Internal: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * Why a failed attempt (a train or evaluate session) moves or fails, by failure class: what
 * each class does is the workflow's failure table (workflows/failures.ts FAILURE_POLICY).
 */
export type FailureClass =
  | 'lost_agent'
  | 'agent_draining'
  | 'oom'
  | 'trainer_crash'
  | 'upload_failed'
  | 'disk_full'
  | 'fenced'
  | 'bad_input'
  | 'cancelled';

/**
 * Every code an attempt can end with, and its failure class: the trainer's `error` events
 * (agent/trainer/tunefleet_trainer/errors.py CODES holds the same names; a unit test checks
 * both ways and every literal the trainer and the agent use) and the agent's activity
 * failure types.
 */
export const ATTEMPT_ERRORS = {
  // the trainer: the same input fails on any agent
  CONFIG_INVALID: 'bad_input',
  DATASET_INVALID: 'bad_input',
  DATASET_EMPTY: 'bad_input',
  MODEL_UNSAFE: 'bad_input',
  METHOD_UNSUPPORTED: 'bad_input',
  QLORA_UNAVAILABLE: 'bad_input',
  PRECISION_UNSUPPORTED: 'bad_input',
  LOSS_NOT_FINITE: 'bad_input',
  // the trainer: this agent lacks something another may have, or its files are damaged
  MODEL_MISSING: 'trainer_crash',
  DEVICE_UNAVAILABLE: 'trainer_crash',
  OPTIMIZER_UNAVAILABLE: 'trainer_crash',
  CHECKPOINT_CORRUPT: 'trainer_crash',
  CHECKPOINT_INCOMPLETE: 'trainer_crash',
  CHECKPOINT_MISMATCH: 'trainer_crash',
  CHECKPOINT_WRITE_FAILED: 'trainer_crash',
  TRAINER_CRASHED: 'trainer_crash',
  DISK_FULL: 'disk_full',
  // the agent
  AGENT_DRAINING: 'agent_draining',
  OOM: 'oom',
  TRAINER_FAILED: 'trainer_crash',
  // a gang's rank-0 agent could not open the rendezvous port the placement chose (another process holds it)
  RENDEZVOUS_PORT_TAKEN: 'trainer_crash',
  // its progress watchdog killed a silent trainer
  TRAINER_STUCK: 'trainer_crash',
  CHECKPOINT_UPLOAD_FAILED: 'upload_failed',
  FENCED: 'fenced',
} as const satisfies Record<string, FailureClass>;
export type AttemptError = keyof typeof ATTEMPT_ERRORS;

/** The codes the trainer itself reports in its `error` events. */
export const TRAINER_ERROR_CODES = [
  'CONFIG_INVALID',
  'DATASET_INVALID',
  'DATASET_EMPTY',
  'MODEL_UNSAFE',
  'METHOD_UNSUPPORTED',
  'QLORA_UNAVAILABLE',
  'PRECISION_UNSUPPORTED',
  'LOSS_NOT_FINITE',
  'MODEL_MISSING',
  'DEVICE_UNAVAILABLE',
  'OPTIMIZER_UNAVAILABLE',
  'CHECKPOINT_CORRUPT',
  'CHECKPOINT_INCOMPLETE',
  'CHECKPOINT_MISMATCH',
  'CHECKPOINT_WRITE_FAILED',
  'TRAINER_CRASHED',
  'DISK_FULL',
] as const satisfies readonly AttemptError[];

/** The class of an attempt's error code; an unknown code is a crash (retried elsewhere). */
export function attemptErrorClass(code: string): FailureClass {
  return (ATTEMPT_ERRORS as Record<string, FailureClass>)[code] ?? 'trainer_crash';
}

/** Codes worth retrying: the fault is outside the input. */
export const retryableCodes: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.StackUnavailable,
  ErrorCode.TrainerFailed,
  ErrorCode.ChecksumMismatch,
]);

export interface Where {
  file?: string;
  line?: number;
  field?: string;
}

export class TunefleetError extends Error {
  override readonly name = 'TunefleetError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly where: Where = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** One line: `file:line: field: message` with whatever parts are known. */
  describe(): string {
    const loc = [this.where.file, this.where.line].filter((p) => p !== undefined).join(':');
    const field = this.where.field ? `${this.where.field}: ` : '';
    return `${loc ? `${loc}: ` : ''}${field}${this.message}`;
  }

  get retryable(): boolean {
    return retryableCodes.has(this.code);
  }
}

/** A collection of problems found in one input, reported together. */
export class TunefleetErrors extends TunefleetError {
  constructor(
    code: ErrorCode,
    readonly problems: TunefleetError[],
    summary: string,
  ) {
    super(code, `${summary}\n${problems.map((p) => `  - ${p.describe()}`).join('\n')}`);
  }
}
