// Moving a session's files: prepared splits and adapters down, checkpoints down (the newest
// usable committed one) and up (files, manifest last, then an epoch-fenced commit), the
// trained adapter up. Every download is checked against a digest where one is known.
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CHECKPOINTS_BUCKET,
  DATASETS_BUCKET,
  ErrorCode,
  TunefleetError,
  checkpointPrefix,
  type FileEntry,
  type TrainRequest,
} from '../../shared';
import type { Commits } from '../commits';
import { download, persistently, upload, type AgentNats } from '../nats';

type Log = (m: string) => void;

export interface CheckpointRef {
  prefix: string;
  step: number;
  manifest_sha256?: string | null;
}

export async function fetchSplits(
  nats: AgentNats,
  data: TrainRequest['data'],
  dir: string,
): Promise<{ train: string; eval: string }> {
  const store = await nats.store(DATASETS_BUCKET);
  const train = join(dir, 'train.jsonl');
  const evalPath = join(dir, 'eval.jsonl');
  // the digests prepare computed: a split overwritten in the store since is refused
  await download(store, data.train_object, train, data.train_sha256 ?? null);
  await download(store, data.eval_object, evalPath, data.eval_sha256 ?? null);
  return { train, eval: evalPath };
}

/** A file name from a manifest, refused if it would leave the directory it is written into. */
function safeName(name: string, where: string): string {
  if (name.split('/').some((p) => p === '..' || p === '') || name.startsWith('/'))
    throw new TunefleetError(ErrorCode.ChecksumMismatch, `${where}: file name '${name}' leaves its directory`);
  return name;
}

/** Download `files` under `prefix` into `dir`, each checked against its sha256. */
export async function fetchFiles(
  nats: AgentNats,
  bucket: string,
  prefix: string,
  files: FileEntry[],
  dir: string,
): Promise<void> {
  const store = await nats.store(bucket);
  for (const f of files) {
    const local = join(dir, safeName(f.name, prefix));
    await mkdir(join(local, '..'), { recursive: true });
    await download(store, `${prefix}${f.name}`, local, f.sha256);
  }
}

async function fetchCheckpoint(
  nats: AgentNats,
  from: CheckpointRef,
  dir: string,
): Promise<{ path: string; files: number }> {
  const store = await nats.store(CHECKPOINTS_BUCKET);
  const local = join(dir, 'resume', `step-${String(from.step).padStart(8, '0')}`);
  await rm(local, { recursive: true, force: true });
  await mkdir(local, { recursive: true });
  // the manifest is checked against the commit record, every file against the manifest
  await download(store, `${from.prefix}manifest.json`, join(local, 'manifest.json'), from.manifest_sha256 ?? null);
  const manifest = JSON.parse(await readFile(join(local, 'manifest.json'), 'utf8')) as { files: FileEntry[] };
  await fetchFiles(nats, CHECKPOINTS_BUCKET, from.prefix, manifest.files, local);
  return { path: local, files: manifest.files.length };
}

/**
 * The first of `candidates` (newest first) that downloads whole and matches its digests; a damaged or
 * missing one is skipped for the one committed before it. Null when none is usable (training starts at 0).
 */
export async function fetchNewestCheckpoint(
  nats: AgentNats,
  jobId: string,
  candidates: CheckpointRef[],
  dir: string,
  log: Log,
): Promise<{ path: string; from: { prefix: string; step: number } } | null> {
  for (const c of candidates) {
    try {
      const { path, files } = await fetchCheckpoint(nats, c, dir);
      log(`${jobId}: fetched checkpoint step ${c.step} (${files} files)`);
      return { path, from: { prefix: c.prefix, step: c.step } };
    } catch (e) {
      if (
        !(e instanceof TunefleetError) ||
        (e.code !== ErrorCode.ChecksumMismatch && e.code !== ErrorCode.ObjectMissing)
      )
        throw e;
      log(`${jobId}: checkpoint step ${c.step} is unusable (${e.message}); trying the one before it`);
    }
  }
  if (candidates.length > 0) log(`${jobId}: no committed checkpoint is usable; training starts from step 0`);
  return null;
}

/** Upload `names` from `dir` under `prefix`, each retried through a NATS restart. */
export async function uploadFiles(
  nats: AgentNats,
  prefix: string,
  dir: string,
  names: string[],
  log: Log,
): Promise<void> {
  const store = await nats.store(CHECKPOINTS_BUCKET);
  for (const name of names)
    await persistently(`upload ${prefix}${name}`, () => upload(store, `${prefix}${name}`, join(dir, name)), log);
}

export interface CheckpointUpload {
  jobId: string;
  attempt: number;
  step: number;
  /** the trainer's checkpoint directory: the files and manifest.json */
  path: string;
  files: FileEntry[];
}

/**
 * Upload a checkpoint (files first, manifest last) and ask the commit service to make it the job's newest (a
 * compare-and-set on the job's epoch).
 * 'fenced': a newer attempt owns the job (the caller stops its trainer).
 */
export async function uploadCheckpoint(
  nats: AgentNats,
  commits: Commits,
  c: CheckpointUpload,
  log: Log,
): Promise<{ outcome: 'fenced' } | { outcome: 'committed'; prefix: string; manifest_sha256: string }> {
  const prefix = checkpointPrefix(c.jobId, c.attempt, c.step);
  await uploadFiles(nats, prefix, c.path, [...c.files.map((f) => f.name), 'manifest.json'], log);
  const manifestSha = createHash('sha256')
    .update(await readFile(join(c.path, 'manifest.json')))
    .digest('hex');
  const record = { epoch: c.attempt, step: c.step, prefix, manifest_sha256: manifestSha };
  // repeating a commit that landed answers 'duplicate': safe to retry through a NATS restart
  const outcome = await persistently(`commit step ${c.step}`, () => commits.commit(c.jobId, record), log);
  return outcome === 'fenced' ? { outcome } : { outcome: 'committed', prefix, manifest_sha256: manifestSha };
}
