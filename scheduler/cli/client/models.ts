// The model registry as the CLI reads it: every registered adapter's record (model.json in the
// adapters bucket, written by the register step; shared/registry.ts).
import {
  ADAPTERS_BUCKET,
  ErrorCode,
  ID_PATTERN,
  TunefleetError,
  adapterPrefix,
  logsPrefix,
  modelRecordObjectName,
  removedRecordObjectName,
  type FileEntry,
  type ModelRecord,
} from '../../../shared';
import { SA_PARENT } from '../../../workflows/searchAttributes';
import type { JobClient } from './jobs';

const RECORD = /^([a-z0-9][a-z0-9-]{0,62})\/model\.json$/;

/** Every registered adapter's record, newest first; a record that does not parse is reported and skipped. */
export async function listModels(jobs: JobClient, warn: (m: string) => void = () => {}): Promise<ModelRecord[]> {
  const store = await (await jobs.nats()).objects(ADAPTERS_BUCKET);
  const names = (await store.list()).map((i) => i.name).filter((n) => RECORD.test(n));
  const out: ModelRecord[] = [];
  for (const name of names) {
    const blob = await store.getBlob(name);
    try {
      const r = JSON.parse(new TextDecoder().decode(blob ?? new Uint8Array())) as ModelRecord;
      if (typeof r.id !== 'string' || typeof r.created !== 'string') throw new Error('not a model record');
      out.push(r);
    } catch (e) {
      warn(`skipping ${name}: ${(e as Error).message}`);
    }
  }
  return out.sort((a, b) => b.created.localeCompare(a.created));
}

/** One adapter's record. */
export async function showModel(jobs: JobClient, id: string): Promise<ModelRecord> {
  if (!ID_PATTERN.test(id))
    throw new TunefleetError(ErrorCode.FlagInvalid, `'${id.slice(0, 80)}' is not a model id (a job id)`);
  const store = await (await jobs.nats()).objects(ADAPTERS_BUCKET);
  const blob = await store.getBlob(modelRecordObjectName(id));
  if (!blob) {
    const removed = await removedRecord(jobs, id);
    if (removed) throw new TunefleetError(ErrorCode.ObjectMissing, removedMessage(id, removed));
    // a job that exists but registered no adapter (still running, failed, or from before the registry) says so
    const why = await jobs.describe(id).then(
      (d) =>
        d.temporal === 'RUNNING'
          ? `job '${id}' is still running; its adapter is registered when it finishes`
          : `job '${id}' has no registered adapter (${d.temporal.toLowerCase()}, or registered before model records)`,
      () => `no model '${id}' (no such job)`,
    );
    throw new TunefleetError(ErrorCode.JobNotFound, why);
  }
  return JSON.parse(new TextDecoder().decode(blob)) as ModelRecord;
}

/** What `models rm` left where a record was. */
export interface RemovedRecord {
  id: string;
  removed: string;
  files: number;
  bytes: number;
}

async function removedRecord(jobs: JobClient, id: string): Promise<RemovedRecord | null> {
  const blob = await (await (await jobs.nats()).objects(ADAPTERS_BUCKET)).getBlob(removedRecordObjectName(id));
  return blob ? (JSON.parse(new TextDecoder().decode(blob)) as RemovedRecord) : null;
}

export const removedMessage = (id: string, r: RemovedRecord): string =>
  `the adapter of job '${id}' was removed on ${r.removed} ('tunefleet models rm'); its result and history remain`;

/** Refuse when the adapter of `id` was removed (downloads and continuations read this first). */
export async function assertNotRemoved(jobs: JobClient, id: string): Promise<void> {
  const r = await removedRecord(jobs, id);
  if (r) throw new TunefleetError(ErrorCode.ObjectMissing, removedMessage(id, r));
}

/**
 * Remove a registered adapter: its files, its TensorBoard event files and its record; the job's result and history
 * stay, and a note where the record was says when it went. Refused while a running job continues from it
 * (init_adapter). The note is written first, so a removal cut short is finished by running it again.
 */
export async function removeModel(jobs: JobClient, id: string): Promise<RemovedRecord> {
  const record = await showModel(jobs, id).catch(async (e: unknown) => {
    // a removal cut short: the record is gone, the note says so; finish deleting what is left
    if (e instanceof TunefleetError && e.code === ErrorCode.ObjectMissing && (await removedRecord(jobs, id)))
      return null;
    throw e;
  });
  const users: string[] = [];
  for await (const w of jobs.client.workflow.list({
    query: `${SA_PARENT.name} = '${id}' AND ExecutionStatus = 'Running'`,
    pageSize: 10,
  })) {
    users.push(w.workflowId);
    if (users.length === 5) break;
  }
  if (users.length)
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      `the adapter of '${id}' is in use: running job(s) ${users.join(', ')} continue from it (init_adapter); ` +
        'cancel them or wait for them to finish',
    );
  const store = await (await jobs.nats()).objects(ADAPTERS_BUCKET);
  // the record's files, and whatever else sits under the adapter's and the logs' prefixes (older records listed fewer)
  const present = new Map((await store.list()).map((i) => [i.name, i.size]));
  const names = new Set((record?.adapter.files ?? []).map((f: FileEntry) => `${record?.adapter.prefix}${f.name}`));
  for (const name of present.keys())
    if (name.startsWith(adapterPrefix(id)) || name.startsWith(logsPrefix(id))) names.add(name);
  const gone = [...names].filter((n) => present.has(n));
  const bytes = gone.reduce((sum, n) => sum + (present.get(n) ?? 0), 0);
  const note: RemovedRecord = (await removedRecord(jobs, id)) ?? {
    id,
    removed: new Date().toISOString(),
    files: gone.length,
    bytes,
  };
  await store.putBlob({ name: removedRecordObjectName(id) }, new TextEncoder().encode(JSON.stringify(note)));
  await store.delete(modelRecordObjectName(id)).catch(() => false);
  for (const name of gone) await store.delete(name);
  return note;
}
