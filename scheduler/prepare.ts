// The prepare step: stream the uploaded dataset, check every record, split train/eval
// with a seed, and write both splits back to the object store. Two passes over the
// stream (check + count, then write) keep memory bounded by one line plus the split's
// index set, whatever the file size.
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { once } from 'node:events';
import type { ObjectStore } from 'nats';
import { checkLine, evalIndices, ErrorCode, TunefleetError, TunefleetErrors, preparedObjectName, type DataReport, type DatasetFormat, type FineTuneInput } from '../shared';
import { readLines } from './lines';
import { putFile } from './nats';

const MAX_PROBLEMS = 20;

async function* objectBytes(store: ObjectStore, name: string): AsyncGenerator<Uint8Array> {
  const obj = await store.get(name);
  if (!obj) throw new TunefleetError(ErrorCode.DatasetMissing, `dataset object '${name}' is not in the store`);
  yield* Readable.fromWeb(obj.data as unknown as import('node:stream/web').ReadableStream<Uint8Array>);
  const err = await obj.error;
  if (err) throw new TunefleetError(ErrorCode.ChecksumMismatch, `dataset object '${name}': ${err.message}`);
}

interface Scan { count: number; format: DatasetFormat | null; problems: { line: number; message: string }[]; invalid: number }

async function scan(source: AsyncIterable<Uint8Array>, label: string): Promise<Scan> {
  const s: Scan = { count: 0, format: null, problems: [], invalid: 0 };
  for await (const { line, lineNo } of readLines(source)) {
    if (line.toString('utf8').trim() === '') continue;
    const c = checkLine(line);
    let message: string | null = null;
    if (!c.ok) message = c.message;
    else if (s.format && c.format !== s.format) message = `a ${c.format} record in a ${s.format} file (one format per file)`;
    else s.format = c.format;
    if (message) {
      s.invalid += 1;
      if (s.problems.length < MAX_PROBLEMS) s.problems.push({ line: lineNo, message: `${label}:${lineNo}: ${message}` });
    } else s.count += 1;
  }
  return s;
}

async function writeLine(out: NodeJS.WritableStream, line: Buffer): Promise<void> {
  if (!out.write(Buffer.concat([line, Buffer.from('\n')]))) await once(out, 'drain');
}

async function closeStream(out: NodeJS.WritableStream): Promise<void> {
  out.end();
  await once(out, 'finish');
}

export async function prepareDataset(store: ObjectStore, input: FineTuneInput): Promise<DataReport> {
  const { spec, jobId } = input;
  const main = await scan(objectBytes(store, input.dataset.object), spec.dataset.path);
  const evalScan = input.evalDataset ? await scan(objectBytes(store, input.evalDataset.object), spec.dataset.eval_path ?? 'eval') : null;
  const problems = [...main.problems, ...(evalScan?.problems ?? [])];
  const invalid = main.invalid + (evalScan?.invalid ?? 0);
  if (invalid > 0) {
    throw new TunefleetErrors(
      ErrorCode.DatasetInvalid,
      problems.map((p) => new TunefleetError(ErrorCode.DatasetInvalid, p.message)),
      `${invalid} invalid record${invalid === 1 ? '' : 's'} (first ${problems.length} listed); fix them before any GPU is used`,
    );
  }
  if (main.count === 0 || !main.format) throw new TunefleetError(ErrorCode.DatasetInvalid, `${spec.dataset.path}: the dataset has no records`);
  if (evalScan && evalScan.format !== main.format) {
    throw new TunefleetError(ErrorCode.DatasetInvalid, `eval file is ${evalScan.format ?? 'empty'} but the training file is ${main.format}`);
  }

  const held = evalScan ? new Set<number>() : evalIndices(main.count, spec.dataset.eval_fraction, spec.dataset.seed);
  const dir = await mkdtemp(join(tmpdir(), 'tunefleet-prepare-'));
  try {
    const trainPath = join(dir, 'train.jsonl');
    const evalPath = join(dir, 'eval.jsonl');
    const trainOut = createWriteStream(trainPath);
    const evalOut = createWriteStream(evalPath);
    let i = 0;
    let nTrain = 0;
    let nEval = 0;
    for await (const { line } of readLines(objectBytes(store, input.dataset.object))) {
      if (line.toString('utf8').trim() === '') continue;
      if (held.has(i)) {
        await writeLine(evalOut, line);
        nEval += 1;
      } else {
        await writeLine(trainOut, line);
        nTrain += 1;
      }
      i += 1;
    }
    if (input.evalDataset) {
      for await (const { line } of readLines(objectBytes(store, input.evalDataset.object))) {
        if (line.toString('utf8').trim() === '') continue;
        await writeLine(evalOut, line);
        nEval += 1;
      }
    }
    await closeStream(trainOut);
    await closeStream(evalOut);
    const trainObject = preparedObjectName(jobId, 'train');
    const evalObject = preparedObjectName(jobId, 'eval');
    await putFile(store, trainObject, trainPath);
    await putFile(store, evalObject, evalPath);
    return {
      records_total: main.count + (evalScan?.count ?? 0),
      records_valid: main.count + (evalScan?.count ?? 0),
      records_invalid: 0,
      format: main.format,
      train_records: nTrain,
      eval_records: nEval,
      problems: [],
      train_object: trainObject,
      eval_object: evalObject,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
