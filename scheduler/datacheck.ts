// What submit checks on the user's machine before anything is uploaded: the dataset file
// (and a separate eval file) record by record, and the size of the eval split it will
// make. The prepare step (scheduler/prepare.ts) does the cleaning, dedup and split later.
import { createReadStream } from 'node:fs';
import {
  checkLine,
  evalSplitSize,
  smallEvalSplit,
  ErrorCode,
  TunefleetError,
  TunefleetErrors,
  type JobSpec,
} from '../shared';
import { MAX_LINE_BYTES, readLines } from './lines';

export const MAX_PROBLEMS = 20;

/** What a strict dataset policy says when it refuses malformed records. */
export function strictRefusal(invalid: number, listed: number): string {
  const records = `${invalid} malformed record${invalid === 1 ? '' : 's'}`;
  return `${records} (first ${listed} listed; policy strict): fix them, or set dataset.policy: lenient to drop them`;
}
export type Source = () => AsyncIterable<Uint8Array>;

export const tooLong = (bytes: number): string =>
  `the line is ${(bytes / 2 ** 20).toFixed(1)} MiB, over the ${MAX_LINE_BYTES / 2 ** 20} MiB limit for one record`;

/**
 * What submit checks before anything is stored: the dataset (and the eval file) record by
 * record, then the eval split's size as the split will make it (before deduplication, so
 * at most this). An empty eval split with gates is refused (they cannot be computed); a
 * split under MIN_EVAL_RECORDS is a warning, or an error with `strictEval`.
 */
export async function checkJobData(
  spec: JobSpec,
  datasetPath: string,
  evalPath: string | null,
  o: { strictEval?: boolean } = {},
): Promise<{ records: number; evalRecords: number; warnings: string[] }> {
  const { records } = await checkDatasetFile(datasetPath, spec.dataset.path, spec.dataset.policy);
  const evalRecords = evalPath
    ? (await checkDatasetFile(evalPath, spec.dataset.eval_path ?? 'eval', spec.dataset.policy)).records
    : evalSplitSize(records, spec.dataset.eval_fraction);
  const gates = spec.evaluation.gates ?? [];
  if (evalRecords === 0 && gates.length > 0)
    throw new TunefleetError(
      ErrorCode.DatasetInvalid,
      `the eval split would be empty (${records} record${records === 1 ? '' : 's'}), so the gates ` +
        `(${gates.join('; ')}) cannot be computed: add records or give dataset.eval_path`,
      { field: 'dataset' },
    );
  const small = smallEvalSplit(evalRecords);
  if (small && o.strictEval)
    throw new TunefleetError(ErrorCode.DatasetInvalid, `${small}; refused (--strict-eval)`, { field: 'dataset' });
  return { records, evalRecords, warnings: small ? [small] : [] };
}

/**
 * What submit checks on the user's machine before anything is uploaded: every line is
 * UTF-8 JSON in a known record shape and under the line limit (policy strict), and at
 * least one record is there. One streaming pass, like the sha256 the upload needs anyway;
 * cleaning, dedup and the split stay with the prepare step.
 */
export async function checkDatasetFile(
  path: string,
  label: string,
  policy: JobSpec['dataset']['policy'],
): Promise<{ records: number; invalid: number }> {
  let records = 0;
  const problems: TunefleetError[] = [];
  let invalid = 0;
  for await (const { line, lineNo, oversize } of readLines(fileSource(path)())) {
    if (line !== null && line.toString('utf8').trim() === '') continue;
    const c = line === null ? { ok: false as const, message: tooLong(oversize) } : checkLine(line);
    if (c.ok) records += 1;
    else {
      invalid += 1;
      if (problems.length < MAX_PROBLEMS)
        problems.push(new TunefleetError(ErrorCode.DatasetInvalid, `${label}:${lineNo}: ${c.message}`));
    }
  }
  if (invalid > 0 && policy === 'strict') {
    throw new TunefleetErrors(
      ErrorCode.DatasetInvalid,
      problems,
      `${strictRefusal(invalid, problems.length)}; nothing was uploaded`,
    );
  }
  if (records === 0)
    throw new TunefleetError(
      ErrorCode.DatasetInvalid,
      `${label}: no record to train on (${invalid} malformed, the rest blank); nothing was uploaded`,
    );
  return { records, invalid };
}

export function fileSource(path: string): Source {
  return () => createReadStream(path, { highWaterMark: 1 << 20 });
}
