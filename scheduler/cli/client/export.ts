// `tunefleet export JOB --merged`: the registered adapter folded into its base model, written as one
// plain transformers model directory (safetensors, config, tokenizer). It runs here, with the
// trainer's Python and a local copy of the base model (the models directory an agent uses, by
// default $TUNEFLEET_HOME/models), which must be the very weights the job trained on: their sha256
// is checked against the registry's record first.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { modelDigest } from '../../../shared/modeldigest';
import { TRAINER_DIR, trainerEnv } from '../../../shared/trainerenv';
import { ErrorCode, TunefleetError } from '../../../shared';
import { downloadAdapter } from './download';
import type { JobClient } from './jobs';
import { showModel } from './models';

/** Methods whose adapter has weights to fold into the base (the others add virtual tokens PEFT alone knows). */
const MERGEABLE = new Set(['lora', 'qlora', 'dora', 'ia3']);
export const MERGED_DTYPES = ['auto', 'float32', 'bfloat16', 'float16'] as const;
/** GGUF takes llama.cpp's 8-bit quantisation too */
export const GGUF_DTYPES = [...MERGED_DTYPES, 'q8_0'] as const;
export const EXPORT_FORMATS = ['safetensors', 'gguf'] as const;

export interface MergeOptions {
  /** where the base model is: <modelsDir>/<name> */
  modelsDir: string;
  /** auto: the base's stored dtype; float32 keeps the merged weights exact */
  dtype: (typeof GGUF_DTYPES)[number];
  /** safetensors: a transformers model directory; gguf: one GGUF file (llama.cpp's converter), checked by llama.cpp */
  format: (typeof EXPORT_FORMATS)[number];
  /** where llama.cpp's converter and runtime are installed (infra/bootstrap.sh: $TUNEFLEET_HOME/gguf-tools) */
  ggufTools: string;
}

export async function exportMerged(
  jobs: JobClient,
  jobId: string,
  out: string,
  o: MergeOptions,
): Promise<{ dir: string; files: number; bytes: number; report: string | null }> {
  if (existsSync(out))
    throw new TunefleetError(ErrorCode.FlagInvalid, `${out} already exists; choose another --out`, { field: '--out' });
  const record = await showModel(jobs, jobId);
  if (record.method === 'full')
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      `${jobId} is a full fine-tune: its weights are the whole model already ('tunefleet download ${jobId}')`,
      { field: '--merged' },
    );
  if (!MERGEABLE.has(record.method))
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      `a ${record.method} adapter has no weights to merge into the base (its virtual tokens exist only with PEFT); ` +
        `use the adapter as it is ('tunefleet download ${jobId}')`,
      { field: '--merged' },
    );
  const base = join(o.modelsDir, record.base.name);
  if (!existsSync(join(base, 'config.json')))
    throw new TunefleetError(
      ErrorCode.ModelMissing,
      `the base model ${record.base.name} is not in ${o.modelsDir} ` +
        `(--models-dir: a directory laid out as an agent's, <dir>/${record.base.name}/config.json and its weights)`,
    );
  const digest = await modelDigest(base);
  if (record.base.sha256 && digest !== record.base.sha256)
    throw new TunefleetError(
      ErrorCode.ChecksumMismatch,
      `the base model at ${base} is not the one ${jobId} trained on: ` +
        `its weights' sha256 is ${digest ?? 'unreadable'}, the record's ${record.base.sha256}`,
    );
  const work = mkdtempSync(join(tmpdir(), 'tunefleet-merge-'));
  let report: string | null = null;
  try {
    const adapter = join(work, 'adapter');
    await downloadAdapter(jobs, jobId, adapter);
    const gguf = o.format === 'gguf' ? ['--format', 'gguf', '--gguf-tools', o.ggufTools] : [];
    report = await merge(jobs.cfg.python, base, adapter, out, [...gguf, '--dtype', o.dtype]);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const names = await readdir(out);
  const sizes = await Promise.all(names.map(async (n) => (await stat(join(out, n))).size));
  return { dir: out, files: names.length, bytes: sizes.reduce((a, b) => a + b, 0), report };
}

/** The trainer's export-merged; its error event, when it fails, is the message; its last log line the report. */
async function merge(python: string, base: string, adapter: string, out: string, extra: string[]): Promise<string> {
  const args = ['-m', 'tunefleet_trainer', 'export-merged', '--model', base, '--adapter', adapter, '--out', out];
  const child = spawn(python, [...args, ...extra], {
    cwd: TRAINER_DIR,
    env: { ...trainerEnv(process.env), PYTHONPATH: TRAINER_DIR, PYTHONUNBUFFERED: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let error: string | null = null;
  let said = '';
  const stderr: string[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      const e = JSON.parse(line) as { type?: string; message?: string; code?: string };
      if (e.type === 'error') error = `${e.code}: ${e.message}`;
      if (e.type === 'log' && e.message) said = e.message;
    } catch {
      // not an event
    }
  });
  child.stderr.on('data', (d: Buffer) => stderr.push(d.toString()));
  const code = await new Promise<number | null>((res, rej) => {
    child.on('error', (e) => rej(new TunefleetError(ErrorCode.StackUnavailable, `cannot run ${python}: ${e.message}`)));
    child.on('close', res);
  });
  if (code !== 0)
    throw new TunefleetError(
      ErrorCode.TrainerFailed,
      `merging failed (exit ${code}): ${error ?? stderr.join('').slice(-2000)}`,
    );
  return said;
}
