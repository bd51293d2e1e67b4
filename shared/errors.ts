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
  JobNotFound: 'JOB_NOT_FOUND',
  StackUnavailable: 'STACK_UNAVAILABLE',
  FlagInvalid: 'FLAG_INVALID',
  ChecksumMismatch: 'CHECKSUM_MISMATCH',
  /** a newer attempt (epoch) owns the job: this one's writes are refused */
  Fenced: 'FENCED',
  Internal: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

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
