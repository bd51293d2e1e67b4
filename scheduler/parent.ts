// The adapter a job continues from (spec init_adapter): the registry's record of the job
// that trained it, checked against the new job's base model and method. prepare resolves it
// for the workflow (the agent then fetches its files); submit checks it first so that a
// mistake is an error at the prompt, not a failed job.
import type { ObjectStore } from 'nats';
import {
  ADAPTERS_BUCKET,
  ErrorCode,
  modelRecordObjectName,
  TunefleetError,
  type JobSpec,
  type ModelRecord,
  type ParentAdapter,
} from '../shared';

/** lora and qlora train the same adapter (qlora over a 4-bit base): each continues the other's. */
const family = (method: string): string => (method === 'qlora' ? 'lora' : method);

/** The registered adapter `spec.init_adapter` names, or null when the spec names none. */
export async function parentAdapter(adapters: ObjectStore, spec: JobSpec): Promise<ParentAdapter | null> {
  const id = spec.init_adapter;
  if (!id) return null;
  const where = { field: 'init_adapter' };
  const blob = await adapters.getBlob(modelRecordObjectName(id));
  if (!blob)
    throw new TunefleetError(
      ErrorCode.ObjectMissing,
      `no registered adapter of job ${id} (no such job, it has not finished, or its adapter was removed)`,
      where,
    );
  let record: ModelRecord;
  try {
    record = JSON.parse(new TextDecoder().decode(blob)) as ModelRecord;
  } catch (e) {
    throw new TunefleetError(ErrorCode.ObjectMissing, `the record of job ${id}'s adapter is unreadable: ${String(e)}`);
  }
  if (record.base.name !== spec.model)
    throw new TunefleetError(
      ErrorCode.SpecInvalid,
      `${id}'s adapter was trained on ${record.base.name}; this job's model is ${spec.model}`,
      where,
    );
  if (family(record.method) !== family(spec.method))
    throw new TunefleetError(
      ErrorCode.SpecInvalid,
      `${id}'s adapter is a ${record.method} adapter; this job's method ${spec.method} cannot continue it`,
      where,
    );
  return {
    job: id,
    bucket: ADAPTERS_BUCKET,
    prefix: record.adapter.prefix,
    files: record.adapter.files,
    evalLoss: record.metrics.tuned.eval_loss ?? null,
    baseSha256: record.base.sha256 ?? null,
  };
}
