// The model registry as the CLI reads it: every registered adapter's record (model.json in the
// adapters bucket, written by the register step; shared/registry.ts).
import {
  ADAPTERS_BUCKET,
  ErrorCode,
  ID_PATTERN,
  TunefleetError,
  modelRecordObjectName,
  type ModelRecord,
} from '../../../shared';
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
