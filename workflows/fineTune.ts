// The fineTune workflow: prepare → place → train → evaluate → register. Deterministic:
// every bit of I/O is an activity. A job id is the workflow id.
//
// Agent work runs on the agent's own task queue (agent-<id>). That queue has a single
// poller, so a dead agent means a task nobody will ever pick up: the schedule-to-start
// timeout bounds the wait for a start, the heartbeat timeout detects death mid-run, and
// re-placement on another agent happens here in the workflow, never by retrying on the
// same queue.
import {
  ActivityFailure, ApplicationFailure, CancelledFailure, TimeoutFailure, defineQuery, isCancellation, proxyActivities,
  setHandler, sleep,
} from '@temporalio/workflow';
import type { AgentActivities, ControlActivities, TrainHeartbeat } from '../shared/activities';
import type { EvalOutcome, FineTuneInput, JobResult, JobStatus, TrainOutcome } from '../shared/jobs';
import { CONTROL_TASK_QUEUE, agentTaskQueue } from '../shared/names';

export const statusQuery = defineQuery<JobStatus>('status');

/** How many agents a job may lose before it fails. */
export const MAX_ATTEMPTS = 5;
/** How often a queued job asks for placement again. */
const QUEUE_POLL = '5 seconds';

const control = proxyActivities<ControlActivities>({
  taskQueue: CONTROL_TASK_QUEUE,
  startToCloseTimeout: '30 minutes',
  retry: { maximumAttempts: 5, initialInterval: '1 second', nonRetryableErrorTypes: ['SPEC_INVALID', 'DATASET_INVALID', 'NO_AGENT_FITS'] },
});

function agentActivities(agentId: string): AgentActivities {
  return proxyActivities<AgentActivities>({
    taskQueue: agentTaskQueue(agentId),
    // no poller picks the task up in this long: the agent is gone
    scheduleToStartTimeout: '2 minutes',
    startToCloseTimeout: '24 hours',
    // the agent heartbeats every few seconds while its trainer runs
    heartbeatTimeout: '30 seconds',
    // one attempt per placement: a retry would land on the same (maybe dead) agent's queue
    retry: { maximumAttempts: 1 },
  });
}

export async function fineTune(input: FineTuneInput): Promise<JobResult> {
  const status: JobStatus = { jobId: input.jobId, state: 'preparing', attempt: 0, agentId: null, progress: null, message: null };
  setHandler(statusQuery, () => status);

  const data = await control.prepare(input);

  const exclude: string[] = [];
  let resumeFrom: TrainHeartbeat['checkpoint'] = null;

  /** Run `work` on a placed agent; on agent loss, place again elsewhere. */
  async function onAgent<T>(purpose: 'train' | 'evaluate', work: (agent: AgentActivities, attempt: number, agentId: string) => Promise<T>): Promise<T> {
    for (;;) {
      if (status.attempt >= MAX_ATTEMPTS) {
        throw ApplicationFailure.nonRetryable(`gave up after ${MAX_ATTEMPTS} attempts; agents lost: ${exclude.join(', ') || 'none'}`, 'ATTEMPTS_EXHAUSTED');
      }
      status.state = 'placing';
      const placed = await control.place({ jobId: input.jobId, spec: input.spec, attempt: status.attempt + 1, exclude, purpose });
      if (!placed.placement) {
        status.state = 'queued';
        status.message = placed.waiting;
        await sleep(QUEUE_POLL);
        continue;
      }
      status.attempt += 1;
      const { agentId } = placed.placement;
      status.agentId = agentId;
      status.message = placed.placement.reason;
      status.state = purpose === 'train' ? 'training' : 'evaluating';
      try {
        return await work(agentActivities(agentId), status.attempt, agentId);
      } catch (err) {
        if (isCancellation(err)) throw err;
        const lost = agentLost(err);
        if (!lost.lost) throw err;
        if (lost.checkpoint && (!resumeFrom || lost.checkpoint.step > resumeFrom.step)) resumeFrom = lost.checkpoint;
        exclude.push(agentId);
        status.message = `attempt ${status.attempt} on ${agentId} ended (${lost.why}); placing again`;
      } finally {
        await control.release(input.jobId, status.attempt, agentId);
      }
    }
  }

  const training: TrainOutcome = await onAgent('train', (agent, attempt) =>
    agent.train({ jobId: input.jobId, spec: input.spec, attempt, data, resumeFrom }),
  );
  status.progress = { step: training.steps, stepsTotal: training.steps, loss: training.trainLoss, checkpoint: null };

  const evaluation: EvalOutcome = await onAgent('evaluate', (agent, attempt) =>
    agent.evaluate({ jobId: input.jobId, spec: input.spec, attempt, data, adapterPrefix: training.adapterPrefix, adapterFiles: training.adapterFiles }),
  );

  status.state = 'registering';
  const result = await control.register(input, data, training, evaluation);
  status.state = 'succeeded';
  status.message = null;
  return result;
}

/**
 * Did the attempt end because the agent (or its trainer process) went away, as opposed
 * to bad input? Timeouts and trainer crashes are agent loss: place again. Input errors
 * (non-retryable application failures) fail the job.
 */
function agentLost(err: unknown): { lost: boolean; why: string; checkpoint: TrainHeartbeat['checkpoint'] } {
  if (!(err instanceof ActivityFailure)) return { lost: false, why: '', checkpoint: null };
  const cause = err.cause;
  if (cause instanceof TimeoutFailure) {
    const hb = cause.lastHeartbeatDetails as TrainHeartbeat | undefined;
    return { lost: true, why: `${cause.timeoutType} timeout`, checkpoint: hb?.checkpoint ?? null };
  }
  if (cause instanceof CancelledFailure) return { lost: false, why: 'cancelled', checkpoint: null };
  if (cause instanceof ApplicationFailure) {
    if (cause.nonRetryable) return { lost: false, why: cause.message, checkpoint: null };
    const details = cause.details?.[0] as { checkpoint?: TrainHeartbeat['checkpoint'] } | undefined;
    return { lost: true, why: `${cause.type ?? 'error'}: ${cause.message}`, checkpoint: details?.checkpoint ?? null };
  }
  return { lost: true, why: err.message, checkpoint: null };
}
