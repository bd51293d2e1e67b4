// Epoch-fenced checkpoint commits (KV tunefleet-commits, key = job id; see CommitRecord).
// Every write is a compare-and-set on the key's revision:
//   claim:  an attempt takes ownership of the job before it trains (epoch can only rise);
//   commit: a checkpoint whose files and manifest are uploaded becomes the job's newest,
//           unless a newer epoch owns the job (refused: the caller kills its trainer).
// Retrying a commit that already landed (a lost reply) is a no-op.
import type { KV } from 'nats';
import { COMMITS_KEPT, ErrorCode, TunefleetError, type CommitRecord } from '../shared';
import { commitRecordSchema, readRecord } from '../shared/records';

export type CommitOutcome = 'committed' | 'duplicate' | 'fenced' | 'older';

/**
 * The job's commit record and its revision. A value that is not a commit record (not written by an agent) counts as
 * no commit: the next claim replaces it, compare-and-set on its revision.
 */
async function current(kv: KV, jobId: string): Promise<{ rec: CommitRecord | null; revision: number }> {
  const e = await kv.get(jobId);
  if (!e || e.operation !== 'PUT') return { rec: null, revision: 0 };
  const rec = readRecord(commitRecordSchema, e.value, `commits/${jobId} (revision ${e.revision})`, (m) =>
    console.warn(`[tunefleet] ${m}`),
  );
  return { rec, revision: e.revision };
}

async function cas(kv: KV, jobId: string, rec: CommitRecord, revision: number): Promise<boolean> {
  try {
    if (revision === 0) await kv.create(jobId, JSON.stringify(rec));
    else await kv.update(jobId, JSON.stringify(rec), revision);
    return true;
  } catch {
    return false; // someone wrote first: read again
  }
}

/**
 * Take the job for `epoch`; returns the record to resume from (its prefix may be null). Throws FENCED if a newer epoch
 * owns it.
 */
export async function claimEpoch(kv: KV, jobId: string, epoch: number, agentId: string): Promise<CommitRecord> {
  for (let i = 0; i < 50; i++) {
    const { rec, revision } = await current(kv, jobId);
    if (rec && rec.epoch > epoch)
      throw new TunefleetError(
        ErrorCode.Fenced,
        `${jobId}: epoch ${rec.epoch} owns this job; attempt ${epoch} is stale`,
      );
    if (rec && rec.epoch === epoch) return rec;
    const next: CommitRecord = {
      epoch,
      step: rec?.step ?? 0,
      prefix: rec?.prefix ?? null,
      manifest_sha256: rec?.manifest_sha256 ?? null,
      agent_id: rec?.agent_id ?? agentId,
      time: Date.now(),
      previous: rec?.previous ?? [],
    };
    if (await cas(kv, jobId, next, revision)) return next;
  }
  throw new TunefleetError(
    ErrorCode.Fenced,
    `${jobId}: could not claim epoch ${epoch}: the commit record kept changing`,
  );
}

/** Make an uploaded checkpoint the job's newest, if `epoch` still owns the job. */
export async function commitCheckpoint(
  kv: KV,
  jobId: string,
  c: Omit<CommitRecord, 'time' | 'previous'>,
): Promise<CommitOutcome> {
  for (let i = 0; i < 50; i++) {
    const { rec, revision } = await current(kv, jobId);
    if (rec && rec.epoch > c.epoch) return 'fenced';
    if (rec && rec.epoch === c.epoch) {
      if (rec.step === c.step && rec.prefix === c.prefix && rec.manifest_sha256 === c.manifest_sha256)
        return 'duplicate';
      if (rec.step > c.step) return 'older';
    }
    const previous = rec?.prefix
      ? [{ step: rec.step, prefix: rec.prefix, manifest_sha256: rec.manifest_sha256 }, ...(rec.previous ?? [])].slice(
          0,
          COMMITS_KEPT,
        )
      : (rec?.previous ?? []);
    if (await cas(kv, jobId, { ...c, time: Date.now(), previous }, revision)) return 'committed';
  }
  throw new TunefleetError(
    ErrorCode.Fenced,
    `${jobId}: could not commit step ${c.step}: the commit record kept changing`,
  );
}
