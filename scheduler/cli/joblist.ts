// `tunefleet list`: jobs, newest first, running or finished, each with the state it is in
// or ended in, where it ran, its attempt, duration and eval loss; filters are visibility
// queries over the search attributes, so only the rows asked for are read.
import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import type { JobResult, JobState, JobStatus, StoppedTrialResult } from '../../shared';
import { statusQuery } from '../../workflows';
import { SA_AGENT, SA_ATTEMPT, SA_STATE } from '../../workflows/searchAttributes';
import { failureMessage } from './messages';

/** The states a job ends in (the state search attribute of a closed workflow). */
const ENDED: readonly string[] = ['succeeded', 'failed_gate', 'failed', 'cancelled', 'stopped_early'];

/** How long `list` waits for one job's status query. */
const QUERY_MS = 5_000;

/** p's value, or null when it fails or takes longer than ms. */
function within<T>(ms: number, p: Promise<T>): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((res) => (timer = setTimeout(() => res(null), ms)));
  return Promise.race([p.catch(() => null), late]).finally(() => clearTimeout(timer));
}

export interface ListOptions {
  /** only jobs in this state (running ones by their current state, finished ones as they ended) */
  state?: JobState;
  model?: string;
  /** submitted at or after */
  since?: Date;
  /** at most this many rows, newest first */
  limit?: number;
  /** with limit: which page of `limit` rows (1: the newest) */
  page?: number;
  /** any further visibility query over the search attributes */
  query?: string;
  /**
   * visibility alone: state, agent and attempt from the search attributes, no status query or result per row (no
   * queue position, progress, eval loss or error) — the console's first draw, filled in by its live stream
   */
  brief?: boolean;
}

/** One job as `tunefleet list` shows it. */
export interface JobRow {
  jobId: string;
  /** the workflow's status in Temporal (RUNNING, COMPLETED, FAILED, CANCELED, ...) */
  status: string;
  /** the job's state: the current one while running, how it ended once finished */
  state: string | null;
  position: number | null;
  agent: string | null;
  attempt: number | null;
  /** a running job's epoch and progress (its status query); null otherwise */
  epoch?: number | null;
  progress?: { step: number; stepsTotal: number } | null;
  /** submit time */
  started: Date;
  closed: Date | null;
  /** from submit to close (or to now, while running) */
  seconds: number;
  /** a finished job's eval loss, base and fine-tuned */
  evalLoss: { base: number; tuned: number } | null;
  /** why a failed job failed */
  error: string | null;
}

/**
 * Jobs, newest first, running or finished: the state (a running job's from its status
 * query, a finished one's as it ended: from the state search attribute, else from how the
 * workflow closed), agent, attempt, submit time, duration, and for a finished job with a
 * result the eval loss base -> fine-tuned. Filters are visibility queries, so `limit`
 * rows are read at most.
 */
export async function listJobs(client: Client, o: ListOptions = {}): Promise<JobRow[]> {
  // a run that continued as new is not a job of its own: its successor (same workflow id) is listed
  const where = [`WorkflowType = 'fineTune'`, `ExecutionStatus != 'ContinuedAsNew'`];
  if (o.state) where.push(`TunefleetState = '${o.state}'`);
  if (o.model) where.push(`TunefleetModel = '${o.model.replace(/'/g, '')}'`);
  if (o.since) where.push(`StartTime >= '${o.since.toISOString()}'`);
  if (o.query) where.push(`(${o.query})`);
  const found: { w: WorkflowExecutionInfo; submitted: Date }[] = [];
  let skip = o.limit && o.page ? (o.page - 1) * o.limit : 0;
  // a page as large as what is asked for: visibility reads (and the client decodes) no more rows than are shown
  const pageSize = o.limit ? Math.min(1000, o.limit + skip) : undefined;
  for await (const w of client.workflow.list({ query: where.join(' AND '), ...(pageSize ? { pageSize } : {}) })) {
    if (skip > 0) {
      skip -= 1;
      continue;
    }
    const submitted = typeof w.memo?.submittedAt === 'string' ? new Date(w.memo.submittedAt) : w.startTime;
    found.push({ w, submitted });
    if (o.limit && found.length >= o.limit) break;
  }
  return Promise.all(found.map(({ w, submitted }) => row(client, w, submitted, o.brief ?? false)));
}

async function row(client: Client, w: WorkflowExecutionInfo, submitted: Date, brief: boolean): Promise<JobRow> {
  const handle = client.workflow.getHandle(w.workflowId);
  const temporal = w.status.name;
  const closed = w.closeTime ?? null;
  const base = {
    jobId: w.workflowId,
    status: temporal,
    started: submitted,
    closed,
    seconds: ((closed ?? new Date()).getTime() - submitted.getTime()) / 1000,
  };
  // a query needs a control worker; without one the row shows what visibility knows
  const status = (): Promise<JobStatus | null> => within(QUERY_MS, handle.query(statusQuery));
  const recorded = w.typedSearchAttributes.get(SA_STATE) ?? null;
  // where the attempt ran and its number, as the workflow recorded them (absent on jobs from before they were)
  const agent = w.typedSearchAttributes.get(SA_AGENT) ?? null;
  const attempt = Number(w.typedSearchAttributes.get(SA_ATTEMPT) ?? NaN) || null;
  const none = { position: null, agent: null, attempt: null, evalLoss: null, error: null };
  if (brief) {
    // an ended job's recorded state is how it ended; a workflow terminated from outside never recorded one
    const ended = recorded && ENDED.includes(recorded) ? recorded : null;
    const state =
      temporal === 'RUNNING'
        ? recorded
        : (ended ?? (temporal === 'COMPLETED' ? 'succeeded' : temporal === 'CANCELLED' ? 'cancelled' : 'failed'));
    return { ...base, ...none, state, agent, attempt };
  }
  if (temporal === 'RUNNING') {
    const s = await status();
    return {
      ...base,
      state: s?.state ?? null,
      position: s?.queuePosition ?? null,
      // a gang: its members in rank order, joined with +
      agent: s?.members?.length ? s.members.map((m) => m.agentId).join('+') : (s?.agentId ?? null),
      attempt: s?.attempt || null,
      epoch: s?.epoch || null,
      progress: s?.progress ? { step: s.progress.step, stepsTotal: s.progress.stepsTotal } : null,
      evalLoss: null,
      error: null,
    };
  }
  if (temporal === 'COMPLETED') {
    const r = (await handle.result().catch(() => null)) as JobResult | StoppedTrialResult | null;
    if (!r) return { ...base, ...none, state: recorded };
    if (r.state === 'stopped_early') return { ...base, ...none, state: r.state, agent, attempt };
    return {
      ...base,
      ...none,
      state: r.state,
      agent: r.training.agentId,
      attempt: r.training.attempt,
      evalLoss: { base: r.evaluation.base.eval_loss, tuned: r.evaluation.tuned.eval_loss },
    };
  }
  // failed or cancelled: where it last ran, from the search attributes; for a job from before they were recorded,
  // from the status query (a worker replays the whole history)
  const state = temporal === 'CANCELLED' ? 'cancelled' : 'failed';
  const last = w.memo?.recordsAgent === true ? { agentId: agent, attempt } : await status();
  const error = state === 'failed' ? await handle.result().then(() => null, failureMessage) : null;
  return {
    ...base,
    ...none,
    state: recorded === 'cancelled' || recorded === 'failed' ? recorded : state,
    agent: last?.agentId ?? null,
    attempt: last?.attempt || null,
    error,
  };
}
