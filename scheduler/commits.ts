// Epoch-fenced checkpoint commits (KV tunefleet-commits, key = job id; see CommitRecord),
// written only by control workers, for agents that ask on tunefleet.commit.<agent id>
// (serveCommits). The server lets an agent publish only on its own subject, so the
// service knows who asks; it claims or commits only for an agent that holds the lease of
// that job's attempt (= epoch), and only a checkpoint under that job and attempt's prefix.
// Every write is a compare-and-set on the key's revision:
//   claim:  an attempt takes ownership of the job before it trains (epoch can only rise);
//   commit: a checkpoint whose files and manifest are uploaded becomes the job's newest,
//           unless a newer epoch owns the job (refused: the caller kills its trainer).
// Retrying a commit that already landed (a lost reply) is a no-op.
import type { KV, Msg, NatsConnection, Subscription } from 'nats';
import {
  COMMITS_KEPT,
  COMMIT_SUBJECTS,
  ErrorCode,
  TunefleetError,
  checkpointPrefix,
  type CommitRecord,
} from '../shared';
import {
  agentLeasesSchema,
  commitRecordSchema,
  commitRequestSchema,
  readRecord,
  type CommitReply,
  type CommitRequest,
} from '../shared/records';

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

/** Why `agentId` may not claim or commit for this job and epoch (null: it may). */
async function refusal(leases: KV, agentId: string, r: CommitRequest): Promise<string | null> {
  const e = await leases.get(agentId);
  const held =
    e && e.operation === 'PUT'
      ? (readRecord(agentLeasesSchema, e.value, `leases/${agentId}`, (m) => console.warn(`[tunefleet] ${m}`))?.leases ??
        [])
      : [];
  if (!held.some((l) => l.jobId === r.jobId && l.attempt === r.epoch && l.purpose === 'train'))
    return `agent ${agentId} holds no lease for ${r.jobId} attempt ${r.epoch}`;
  if (r.op === 'commit') {
    const under = checkpointPrefix(r.jobId, r.epoch, 0).replace(/step-\d+\/$/, '');
    if (!r.prefix.startsWith(under) || r.prefix.includes('..'))
      return `checkpoint prefix '${r.prefix}' is not under ${under} (the job and attempt it commits for)`;
  }
  return null;
}

/** Answer one request; never throws (a failure is the reply). */
export async function answerCommit(commits: KV, leases: KV, agentId: string, data: Uint8Array): Promise<CommitReply> {
  let req: CommitRequest;
  try {
    req = commitRequestSchema.parse(JSON.parse(new TextDecoder().decode(data)));
  } catch (e) {
    return { ok: false, code: ErrorCode.FlagInvalid, message: `not a commit request: ${(e as Error).message}` };
  }
  try {
    const why = await refusal(leases, agentId, req);
    if (why) return { ok: false, code: ErrorCode.Fenced, message: why };
    if (req.op === 'claim') return { ok: true, record: await claimEpoch(commits, req.jobId, req.epoch, agentId) };
    const { op: _op, jobId, ...rest } = req;
    const outcome = await commitCheckpoint(commits, jobId, { ...rest, agent_id: agentId });
    return { ok: true, outcome };
  } catch (e) {
    const code = e instanceof TunefleetError ? e.code : 'INTERNAL';
    return { ok: false, code, message: (e as Error).message };
  }
}

/**
 * Serve tunefleet.commit.* for the control workers (a queue group: one of them answers each request). The agent is
 * the subject's last token: the server let only that agent publish there.
 */
export function serveCommits(nc: NatsConnection, commits: KV, leases: KV, log: (m: string) => void): Subscription {
  return nc.subscribe(COMMIT_SUBJECTS, {
    queue: 'tunefleet-control',
    callback: (err, msg: Msg) => {
      if (err) return log(`commit service: ${err.message}`);
      const agentId = msg.subject.split('.').pop() ?? '';
      void answerCommit(commits, leases, agentId, msg.data).then((reply) => {
        if (!reply.ok) log(`commit service: ${agentId}: ${reply.message}`);
        msg.respond(JSON.stringify(reply));
      });
    },
  });
}
