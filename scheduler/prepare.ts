// The prepare step: stream the dataset through the cleaning / dedup pipeline, split
// train/eval with a seed, and write both splits. Two passes over the stream (judge, then
// write) keep memory bounded by one line, a byte per record and the dedup indexes,
// whatever the file size. The same code runs `tunefleet data check` on a local file.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { once } from 'node:events';
import type { ObjectStore } from 'nats';
import {
  checkLine,
  cleanRecord,
  evalIndices,
  ErrorCode,
  Pipeline,
  RULES,
  TunefleetError,
  TunefleetErrors,
  preparedObjectName,
  type DataReport,
  type FineTuneInput,
  type JobSpec,
  type Rule,
  type Verdict,
} from '../shared';
import { readLines } from './lines';
import { putFile, sha256File } from './nats';
import { MAX_PROBLEMS, fileSource, strictRefusal, tooLong, type Source } from './datacheck';

export { fileSource, type Source };
export { checkDatasetFile, checkJobData } from './datacheck';

const EXAMPLES_PER_RULE = 3;
const EXAMPLE_CHARS = 160;
const MALFORMED: ReadonlySet<Rule> = new Set<Rule>(['invalid_utf8', 'invalid_json', 'invalid_record', 'mixed_format']);

/**
 * The records of a dataset object, streamed. With `sha256` (what the CLI hashed before its upload) the object is
 * re-hashed on the way: one that does not hash to it (replaced or planted in the store) fails the read at its end,
 * before anything prepared from it is written.
 */
export function objectSource(store: ObjectStore, name: string, sha256?: string): Source {
  return async function* () {
    const obj = await store.get(name);
    if (!obj) throw new TunefleetError(ErrorCode.DatasetMissing, `dataset object '${name}' is not in the store`);
    const h = createHash('sha256');
    for await (const chunk of Readable.fromWeb(
      obj.data as unknown as import('node:stream/web').ReadableStream<Uint8Array>,
    )) {
      h.update(chunk as Buffer);
      yield chunk as Buffer;
    }
    const err = await obj.error;
    if (err) throw new TunefleetError(ErrorCode.ChecksumMismatch, `dataset object '${name}': ${err.message}`);
    const digest = h.digest('hex');
    if (sha256 && digest !== sha256)
      throw new TunefleetError(
        ErrorCode.ChecksumMismatch,
        `dataset object '${name}' hashes to ${digest.slice(0, 12)}…, not the ${sha256.slice(0, 12)}… submitted: ` +
          'it was replaced in the store; submit the job again',
      );
  };
}

function hasSystemMessage(rec: Record<string, unknown>): boolean {
  const msgs = rec.messages as { role: string }[] | undefined;
  return !!msgs && msgs.some((m) => m.role === 'system') && msgs.some((m) => m.role !== 'system');
}

/** A growable byte-per-record flag array. */
class Flags {
  private a = new Uint8Array(1 << 16);
  n = 0;
  push(v: boolean): void {
    if (this.n === this.a.length) {
      const b = new Uint8Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = v ? 1 : 0;
  }
  get(i: number): boolean {
    return this.a[i] === 1;
  }
}

export interface PrepareInput {
  spec: Pick<JobSpec, 'dataset'>;
  main: { source: Source; label: string };
  eval?: { source: Source; label: string };
}

export interface PrepareOutput {
  report: Omit<DataReport, 'train_object' | 'eval_object'>;
  /** write the splits (second pass); only valid when the report has no failure */
  write(trainPath: string, evalPath: string): Promise<{ train: number; eval: number }>;
}

/** First pass: judge every record, count per rule, decide the split. Throws in strict mode on malformed records. */
export async function analyse(input: PrepareInput): Promise<PrepareOutput> {
  const d = input.spec.dataset;
  const pipeline = new Pipeline({ clean: d.clean, dedup: d.dedup });
  const dropped = Object.fromEntries(RULES.map((r) => [r, 0])) as Record<Rule, number>;
  const examples: DataReport['examples'] = {};
  const problems: { line: number; message: string }[] = [];
  let blank = 0;
  let total = 0;
  let invalid = 0;

  const judgeAll = async (src: { source: Source; label: string }, register: boolean, flags: Flags): Promise<void> => {
    for await (const { line, lineNo, oversize } of readLines(src.source())) {
      if (line !== null && (line.length === 0 || line.toString('utf8').trim() === '')) {
        blank += 1;
        continue;
      }
      total += 1;
      const v: Verdict =
        line === null
          ? { keep: false, rule: 'invalid_record', message: tooLong(oversize) }
          : pipeline.judge(line, register);
      flags.push(v.keep);
      if (v.keep) {
        if (register) hasSystem.push(v.format === 'messages' && hasSystemMessage(v.record));
        continue;
      }
      dropped[v.rule] += 1;
      if (MALFORMED.has(v.rule)) {
        invalid += 1;
        if (problems.length < MAX_PROBLEMS)
          problems.push({ line: lineNo, message: `${src.label}:${lineNo}: ${v.message}` });
      }
      const ex = (examples[v.rule] ??= []);
      if (ex.length < EXAMPLES_PER_RULE)
        ex.push({
          file: src.label,
          line: lineNo,
          message: v.message,
          text: line === null ? '' : line.toString('utf8').slice(0, EXAMPLE_CHARS),
        });
    }
  };

  const hasSystem = new Flags();
  const mainFlags = new Flags();
  await judgeAll(input.main, true, mainFlags);
  const evalFlags = new Flags();
  if (input.eval) await judgeAll(input.eval, false, evalFlags);

  if (invalid > 0 && d.policy === 'strict') {
    throw new TunefleetErrors(
      ErrorCode.DatasetInvalid,
      problems.map((p) => new TunefleetError(ErrorCode.DatasetInvalid, p.message)),
      strictRefusal(invalid, problems.length),
    );
  }
  const format = pipeline.format;
  let kept = 0;
  for (let i = 0; i < mainFlags.n; i++) if (mainFlags.get(i)) kept += 1;
  let evalKept = 0;
  for (let i = 0; i < evalFlags.n; i++) if (evalFlags.get(i)) evalKept += 1;
  if (!format || kept === 0)
    throw new TunefleetError(
      ErrorCode.DatasetInvalid,
      `${input.main.label}: no record is left to train on (${total} read, all dropped)`,
    );
  const held = input.eval ? new Set<number>() : evalIndices(kept, d.eval_fraction, d.seed);
  let augmented = 0;
  if (d.augment.drop_system_prompt) for (let k = 0; k < kept; k++) if (!held.has(k) && hasSystem.get(k)) augmented += 1;
  const trainCount = kept - held.size + augmented;
  const evalCount = input.eval ? evalKept : held.size;
  const nonZero = Object.fromEntries(Object.entries(dropped).filter(([, n]) => n > 0));

  const report: PrepareOutput['report'] = {
    records_total: total,
    records_valid: total - invalid,
    records_invalid: invalid,
    format,
    policy: d.policy,
    train_records: trainCount,
    eval_records: evalCount,
    dropped: nonZero,
    examples,
    blank_lines: blank,
    augmented,
    problems,
  };

  return {
    report,
    async write(trainPath, evalPath) {
      const trainOut = createWriteStream(trainPath);
      const evalOut = createWriteStream(evalPath);
      const copy = async (
        src: { source: Source },
        flags: Flags,
        pick: (keptIndex: number) => NodeJS.WritableStream,
        augment: boolean,
      ): Promise<void> => {
        let i = 0;
        let k = 0;
        for await (const { line } of readLines(src.source())) {
          if (line !== null && (line.length === 0 || line.toString('utf8').trim() === '')) continue;
          if (line !== null && flags.get(i)) {
            const c = checkLine(line);
            if (!c.ok)
              throw new TunefleetError(
                ErrorCode.ChecksumMismatch,
                `${input.main.label}: the dataset changed between passes`,
              );
            const out = pick(k);
            const rec = cleanRecord(c.record as Record<string, unknown>, c.format, d.clean);
            if (!out.write(JSON.stringify(rec) + '\n')) await once(out, 'drain');
            if (augment && out === trainOut && c.format === 'messages' && hasSystemMessage(rec)) {
              const without = { messages: (rec.messages as { role: string }[]).filter((m) => m.role !== 'system') };
              if (!out.write(JSON.stringify(without) + '\n')) await once(out, 'drain');
            }
            k += 1;
          }
          i += 1;
        }
      };
      await copy(input.main, mainFlags, (k) => (held.has(k) ? evalOut : trainOut), d.augment.drop_system_prompt);
      if (input.eval) await copy(input.eval, evalFlags, () => evalOut, false);
      for (const out of [trainOut, evalOut]) {
        out.end();
        await once(out, 'finish');
      }
      return { train: trainCount, eval: evalCount };
    },
  };
}

/** The prepare activity: object store in, prepared splits and report out. */
export async function prepareDataset(store: ObjectStore, input: FineTuneInput): Promise<DataReport> {
  const { spec, jobId } = input;
  const result = await analyse({
    spec,
    main: { source: objectSource(store, input.dataset.object, input.dataset.sha256), label: spec.dataset.path },
    ...(input.evalDataset
      ? {
          eval: {
            source: objectSource(store, input.evalDataset.object, input.evalDataset.sha256),
            label: spec.dataset.eval_path ?? 'eval',
          },
        }
      : {}),
  });
  const dir = await mkdtemp(join(tmpdir(), 'tunefleet-prepare-'));
  try {
    const trainPath = join(dir, 'train.jsonl');
    const evalPath = join(dir, 'eval.jsonl');
    await result.write(trainPath, evalPath);
    const trainObject = preparedObjectName(jobId, 'train');
    const evalObject = preparedObjectName(jobId, 'eval');
    await putFile(store, trainObject, trainPath);
    await putFile(store, evalObject, evalPath);
    // agents check the splits they download against these: a split overwritten in the store is refused
    const [trainSha, evalSha] = await Promise.all([sha256File(trainPath), sha256File(evalPath)]);
    return {
      ...result.report,
      train_object: trainObject,
      eval_object: evalObject,
      train_sha256: trainSha,
      eval_sha256: evalSha,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
