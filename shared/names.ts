// Names of everything on the wire, in one place. Subjects are tunefleet.<noun>.<id>.<verb>;
// buckets tunefleet-<noun>; task queues tunefleet-control and agent-<agentId>.

export const CONTROL_TASK_QUEUE = 'tunefleet-control';
export const agentTaskQueue = (agentId: string): string => `agent-${agentId}`;

export const ADVERTS_BUCKET = 'tunefleet-adverts';
/** Adverts expire this long after an agent's last write (the bucket's max age, and the fleet view's own cutoff). */
export const ADVERT_TTL_MS = 10_000;
/** How often an agent re-advertises by default. */
export const ADVERT_INTERVAL_MS = 2_000;
/** Operator intent per agent (cordon, drain); no TTL: it outlives agent restarts. */
export const AGENT_STATES_BUCKET = 'tunefleet-agent-states';
export const DATASETS_BUCKET = 'tunefleet-datasets';
export const CHECKPOINTS_BUCKET = 'tunefleet-checkpoints';
export const ADAPTERS_BUCKET = 'tunefleet-adapters';

export const EVENTS_STREAM = 'TUNEFLEET_EVENTS';
export const EVENTS_SUBJECTS = 'tunefleet.job.*.*';
/** All events of one job: tunefleet.job.<jobId>.<event type> */
export const jobEventsFilter = (jobId: string): string => `tunefleet.job.${jobId}.*`;

/** Ids that become parts of subjects, keys and file names. */
export const ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** Names of base models: a directory name under the agent's model store, never a path. */
export const MODEL_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export const datasetObjectName = (sha256: string): string => `sha256-${sha256}`;
export const preparedObjectName = (jobId: string, split: 'train' | 'eval'): string =>
  `prepared/${jobId}/${split}.jsonl`;
/** Checkpoints live under their attempt: an older attempt's late writes never mix with a newer one's. */
export const checkpointPrefix = (jobId: string, attempt: number, step: number): string =>
  `${jobId}/a${attempt}/step-${String(step).padStart(8, '0')}/`;
export const trainedAdapterPrefix = (jobId: string, attempt: number): string => `${jobId}/a${attempt}/adapter/`;
/** The TensorBoard event files of a finished attempt, beside its adapter. */
export const trainedLogsPrefix = (jobId: string, attempt: number): string => `${jobId}/a${attempt}/tensorboard/`;
/** The registered adapter, in the adapters bucket. */
export const adapterPrefix = (jobId: string): string => `${jobId}/adapter/`;
/** The registered job's TensorBoard event files, in the adapters bucket. */
export const logsPrefix = (jobId: string): string => `${jobId}/tensorboard/`;
export const jobEventSubject = (jobId: string, type: string): string => `tunefleet.job.${jobId}.${type}`;
export const resultObjectName = (jobId: string): string => `${jobId}/result.json`;
/** The registry's record of a job's adapter (shared/registry.ts), beside it. */
export const modelRecordObjectName = (jobId: string): string => `${jobId}/model.json`;
/** Left by `tunefleet models rm` where the record was: when and what was removed (so a later read says so). */
export const removedRecordObjectName = (jobId: string): string => `${jobId}/removed.json`;
/** every evaluation generation of a job (JSONL), for review export */
export const evalOutputsObjectName = (jobId: string): string => `${jobId}/eval-outputs.jsonl`;
/** human grades imported with `tunefleet review import`: one object per import, and the newest */
export const reviewObjectPrefix = (jobId: string): string => `${jobId}/review/`;
export const latestReviewObjectName = (jobId: string): string => `${jobId}/review.json`;

/** Memory reservations, one key per agent (compare-and-set on the key's revision). */
export const LEASES_BUCKET = 'tunefleet-leases';
/** Jobs waiting for capacity, one key per job. */
export const QUEUE_BUCKET = 'tunefleet-queue';
/** The newest committed checkpoint of each job and the epoch that owns it (key = job id). */
export const COMMITS_BUCKET = 'tunefleet-commits';
/**
 * Agents ask a control worker to claim an epoch or commit a checkpoint on this subject (request/reply): the server
 * lets each agent publish only on its own, so the control worker knows who asks. Only control writes the commits.
 */
export const commitSubject = (agentId: string): string => `tunefleet.commit.${agentId}`;
export const COMMIT_SUBJECTS = 'tunefleet.commit.*';
/** Placement decisions per job, for `tunefleet explain`. */
export const DECISIONS_BUCKET = 'tunefleet-decisions';
/** The signal an agent sends a fineTune workflow with a session's progress. */
export const PROGRESS_SIGNAL = 'progress';
/** The signal a control worker sends queued fineTune workflows when capacity is released. */
export const CAPACITY_SIGNAL = 'capacity';
/** A sweep's trial tells its sweep it paused at a rung or ended (TrialUpdate). */
export const TRIAL_SIGNAL = 'trial';
/** A sweep tells a paused trial to go on to its next rung (true) or to stop there (false). */
export const PROMOTE_SIGNAL = 'promote';
