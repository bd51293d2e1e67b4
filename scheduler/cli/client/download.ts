// Downloading a finished job's registered adapter or its TensorBoard event files: every file
// checked against its sha256, written under a temporary name and moved into place whole.
import { existsSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ADAPTERS_BUCKET, ErrorCode, TunefleetError, type FileEntry, type JobResult } from '../../../shared';
import { getFile } from '../../nats';
import type { JobClient } from './jobs';
import { assertNotRemoved } from './models';

/** Write the registered adapter of `jobId` (and its result as tunefleet-result.json) to the new directory `out`. */
export async function downloadAdapter(
  jobs: JobClient,
  jobId: string,
  out: string,
): Promise<{ dir: string; files: number }> {
  const result = await jobs.result(jobId);
  await assertNotRemoved(jobs, jobId);
  const { prefix, files } = result.adapter;
  await download(jobs, prefix, files, out, { 'tunefleet-result.json': JSON.stringify(result, null, 1) });
  return { dir: out, files: files.length };
}

/** Write the TensorBoard event files of `jobId` to the new directory `out` (`tensorboard --logdir out`). */
export async function downloadLogs(
  jobs: JobClient,
  jobId: string,
  out: string,
): Promise<{ dir: string; files: number; bytes: number }> {
  const result: JobResult = await jobs.result(jobId);
  await assertNotRemoved(jobs, jobId);
  if (!result.logs?.files.length)
    throw new TunefleetError(
      ErrorCode.ObjectMissing,
      `${jobId} has no TensorBoard event files (it was trained by a trainer that did not write them)`,
    );
  const { prefix, files } = result.logs;
  await download(jobs, prefix, files, out, {});
  return { dir: out, files: files.length, bytes: files.reduce((n, f) => n + f.bytes, 0) };
}

async function download(
  jobs: JobClient,
  prefix: string,
  files: FileEntry[],
  out: string,
  extra: Record<string, string>,
): Promise<void> {
  if (existsSync(out))
    throw new TunefleetError(ErrorCode.FlagInvalid, `${out} already exists; choose another --out`, { field: '--out' });
  const store = await (await jobs.nats()).objects(ADAPTERS_BUCKET);
  const tmp = `${out}.part`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  for (const f of files) {
    const target = join(tmp, f.name);
    if (!target.startsWith(resolve(tmp) + '/') && !target.startsWith(tmp + '/'))
      throw new TunefleetError(ErrorCode.ChecksumMismatch, `file name '${f.name}' leaves the output directory`);
    await mkdir(dirname(target), { recursive: true });
    await getFile(store, `${prefix}${f.name}`, target, f.sha256);
  }
  for (const [name, text] of Object.entries(extra)) await writeFile(join(tmp, name), text);
  await rename(tmp, out);
}
