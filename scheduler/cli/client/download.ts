// Downloading a finished job's registered adapter: every file checked against its sha256,
// written under a temporary name and moved into place whole, with the job's result.
import { existsSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ADAPTERS_BUCKET, ErrorCode, TunefleetError } from '../../../shared';
import { getFile } from '../../nats';
import type { JobClient } from './jobs';

/** Write the registered adapter of `jobId` to the new directory `out`. */
export async function downloadAdapter(
  jobs: JobClient,
  jobId: string,
  out: string,
): Promise<{ dir: string; files: number }> {
  const result = await jobs.result(jobId);
  const store = await (await jobs.nats()).objects(ADAPTERS_BUCKET);
  const tmp = `${out}.part`;
  await mkdir(tmp, { recursive: true });
  for (const f of result.adapter.files) {
    const target = join(tmp, f.name);
    if (!target.startsWith(resolve(tmp) + '/') && !target.startsWith(tmp + '/'))
      throw new TunefleetError(ErrorCode.ChecksumMismatch, `adapter file name '${f.name}' leaves the output directory`);
    await mkdir(dirname(target), { recursive: true });
    await getFile(store, `${result.adapter.prefix}${f.name}`, target, f.sha256);
  }
  await writeFile(join(tmp, 'tunefleet-result.json'), JSON.stringify(result, null, 1));
  if (existsSync(out))
    throw new TunefleetError(ErrorCode.FlagInvalid, `${out} already exists; choose another --out`, { field: '--out' });
  await rename(tmp, out);
  return { dir: out, files: result.adapter.files.length };
}
