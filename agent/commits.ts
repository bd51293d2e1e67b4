// The agent's side of checkpoint commits: it asks a control worker (scheduler/commits.ts)
// on its own subject, tunefleet.commit.<agent id> — it has no write access to the commits
// bucket — to claim its attempt's epoch before training, and to make each uploaded
// checkpoint the job's newest. A refused request is FENCED: another attempt owns the job,
// or this agent holds no lease for it.
import type { NatsConnection } from 'nats';
import { ErrorCode, TunefleetError, commitSubject, type CommitRecord } from '../shared';
import { commitReplySchema, commitRecordSchema, type CommitRequest } from '../shared/records';

export type CommitOutcome = 'committed' | 'duplicate' | 'fenced' | 'older';

export interface Commits {
  /** Take the job for `epoch`; the record to resume from (its prefix may be null). Throws FENCED. */
  claim(jobId: string, epoch: number): Promise<CommitRecord>;
  /** Make an uploaded checkpoint the job's newest, if `epoch` still owns it. */
  commit(jobId: string, c: Omit<CommitRecord, 'time' | 'previous' | 'agent_id'>): Promise<CommitOutcome>;
}

/** How long one request waits for a control worker's answer. */
const REQUEST_MS = 15_000;

export function commitClient(nc: NatsConnection, agentId: string): Commits {
  const ask = async (req: CommitRequest) => {
    const m = await nc.request(commitSubject(agentId), JSON.stringify(req), { timeout: REQUEST_MS });
    const reply = commitReplySchema.parse(JSON.parse(new TextDecoder().decode(m.data)));
    if (!reply.ok)
      throw new TunefleetError(
        reply.code === ErrorCode.Fenced ? ErrorCode.Fenced : ErrorCode.StackUnavailable,
        `${req.jobId}: ${reply.message}`,
      );
    return reply;
  };
  return {
    async claim(jobId, epoch) {
      return commitRecordSchema.parse((await ask({ op: 'claim', jobId, epoch })).record);
    },
    async commit(jobId, c) {
      if (!c.prefix || !c.manifest_sha256) throw new Error('a commit names its checkpoint prefix and manifest');
      try {
        const r = await ask({
          op: 'commit',
          jobId,
          epoch: c.epoch,
          step: c.step,
          prefix: c.prefix,
          manifest_sha256: c.manifest_sha256,
        });
        if (!r.outcome) throw new Error(`${jobId}: the commit service answered without an outcome`);
        return r.outcome;
      } catch (e) {
        if (e instanceof TunefleetError && e.code === ErrorCode.Fenced) return 'fenced';
        throw e;
      }
    },
  };
}
