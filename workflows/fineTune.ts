// The fineTune workflow: prepare → place → train → evaluate → register. Deterministic:
// every bit of I/O is an activity. A job id is the workflow id.
//
// Agent work runs on the agent's own task queue (agent-<id>). That queue has a single
// poller, so a dead agent means a task nobody will ever pick up: the schedule-to-start
// timeout bounds the wait for a start, the heartbeat timeout (the agent heartbeats when
// the trainer's step advances) catches a dead agent or a hung trainer mid-run, and
// re-placement on another agent happens here, never by retrying on the same queue.
// Each attempt is an epoch: the agent claims it in the commits bucket before training and
// a commit from an older epoch is refused, so a zombie attempt never wins.
//
// A queued job polls for placement until it fits. Each poll adds about a dozen events to
// the workflow's history, and Temporal refuses a history past about 51,200 events, so a
// run that has queued for long continues as new (same workflow id) once its history
// passes QUEUE_HISTORY_EVENTS, handing over what it had got to (ContinuedRun).
import {
  ActivityCancellationType,
  ApplicationFailure,
  CancellationScope,
  ContinueAsNew,
  defineQuery,
  defineSignal,
  getExternalWorkflowHandle,
  isCancellation,
  condition,
  makeContinueAsNewFunc,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type {
  AgentActivities,
  ControlActivities,
  ProgressUpdate,
  TrainHeartbeat,
  TrainRequest,
} from '../shared/activities';
import type {
  DataReport,
  EvalOutcome,
  FineTuneInput,
  JobResult,
  JobState,
  JobStatus,
  Placement,
  StoppedTrialResult,
  TrainOutcome,
  TrialUpdate,
} from '../shared/jobs';
import type { JobSpec } from '../shared/spec';
import type { RetryPolicy } from '@temporalio/common';
import {
  CAPACITY_SIGNAL,
  CONTROL_TASK_QUEUE,
  PROGRESS_SIGNAL,
  PROMOTE_SIGNAL,
  TRIAL_SIGNAL,
  agentTaskQueue,
} from '../shared/names';
import { metricValues } from '../shared/gates';
import { FAILURE_POLICY, MAX_ATTEMPTS, classify, gangCause, shrink } from './failures';
import { SA_AGENT, SA_ATTEMPT, SA_STATE } from './searchAttributes';

export { MAX_ATTEMPTS };

export const statusQuery = defineQuery<JobStatus>('status');

/** Progress from the agent running the attempt (throttled there); other attempts' updates are ignored. */
export const progressSignal = defineSignal<[ProgressUpdate]>(PROGRESS_SIGNAL);
/** Sent to queued jobs when a lease is released: try placement now instead of at the next poll. */
export const capacitySignal = defineSignal(CAPACITY_SIGNAL);
/** A sweep's verdict on its paused trial: go on past `rung` (go) or stop there. */
export const promoteSignal = defineSignal<[{ rung: number; go: boolean }]>(PROMOTE_SIGNAL);
/** What a trial tells its sweep (sent by the trial, handled by the sweep workflow). */
export const trialSignal = defineSignal<[TrialUpdate]>(TRIAL_SIGNAL);

/**
 * A queued job asks for placement again after this long, backing off to the maximum (a released lease wakes it sooner).
 */
const QUEUE_POLL_MS = 2_000;
const QUEUE_POLL_MAX_MS = 60_000;
/** A queued run continues as new once its history has this many events (at most one poll's more: about a dozen). */
export const QUEUE_HISTORY_EVENTS = 1_000;

const controlRetry: RetryPolicy = {
  maximumAttempts: 5,
  initialInterval: '1 second',
  nonRetryableErrorTypes: ['SPEC_INVALID', 'DATASET_INVALID', 'NO_AGENT_FITS'],
};
/** prepare (a big dataset takes minutes) and register (copies the adapter) */
const control = proxyActivities<ControlActivities>({
  taskQueue: CONTROL_TASK_QUEUE,
  startToCloseTimeout: '30 minutes',
  retry: controlRetry,
});
/** place and release take milliseconds: a worker killed in the middle is retried on another within 20 s */
const quick = proxyActivities<ControlActivities>({
  taskQueue: CONTROL_TASK_QUEUE,
  startToCloseTimeout: '20 seconds',
  retry: controlRetry,
});

/**
 * Default seconds without a heartbeat from the agent (it heartbeats on a timer while it runs the attempt) before the
 * attempt counts as lost: the agent died, froze or lost its link. A hung trainer is the agent's watchdog's to catch.
 */
export const heartbeatSeconds = (spec: JobSpec, t: FineTuneInput['timeouts']): number =>
  spec.heartbeat_timeout ?? t?.heartbeatSeconds ?? (spec.method === 'full' ? 60 : 10);

function agentActivities(
  agentId: string,
  t: FineTuneInput['timeouts'],
  spec: JobSpec,
  /** a gang member: a cancelled member is waited for (its agent stopped its trainer, or it timed out) */
  member = false,
): AgentActivities {
  return proxyActivities<AgentActivities>({
    ...(member ? { cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED } : {}),
    taskQueue: agentTaskQueue(agentId),
    // no poller picks the task up in this long: the agent is gone
    scheduleToStartTimeout: (t?.scheduleToStartSeconds ?? 120) * 1000,
    startToCloseTimeout: '7 days',
    // the agent heartbeats whenever the trainer's step advances (and while it sets up)
    heartbeatTimeout: heartbeatSeconds(spec, t) * 1000,
    // one attempt per placement: a retry would land on the same (maybe dead) agent's queue
    retry: { maximumAttempts: 1 },
  });
}

/** A gang attempt that ended early: the failure that ended it, and the agents the next placement avoids. */
class GangFailed extends Error {
  constructor(
    readonly failure: unknown,
    readonly avoid: string[],
    readonly checkpoint: TrainHeartbeat['checkpoint'],
  ) {
    super('gang failed');
  }
}

type Member = NonNullable<Placement['gang']>['members'][number];

export async function fineTune(input: FineTuneInput): Promise<JobResult | StoppedTrialResult> {
  const before = input.continued;
  const status: JobStatus = before
    ? { ...before.status }
    : {
        jobId: input.jobId,
        state: 'preparing',
        attempt: 0,
        epoch: 0,
        agentId: null,
        members: null,
        progress: null,
        queuePosition: null,
        message: null,
      };
  setHandler(statusQuery, () => status);
  setHandler(progressSignal, (p) => {
    if (p.attempt === status.attempt && status.state === 'training')
      status.progress = { step: p.step, stepsTotal: p.stepsTotal, loss: p.loss, checkpoint: p.checkpoint };
  });
  let woken = false;
  setHandler(capacitySignal, () => {
    woken = true;
  });
  // a sweep's trial: the rungs it reached, and the sweep's verdict at each
  const trial = input.trial;
  const trialRungs = [...(before?.trialRungs ?? [])];
  const verdicts = new Map<number, boolean>();
  setHandler(promoteSignal, ({ rung, go }) => {
    if (!verdicts.has(rung)) verdicts.set(rung, go);
  });
  /** Tell the sweep; false: it could not be told (it has ended) */
  const tellSweep = async (u: Omit<TrialUpdate, 'index'>): Promise<boolean> => {
    if (!trial) return true;
    try {
      await getExternalWorkflowHandle(trial.sweepId).signal(trialSignal, { index: trial.index, ...u });
      return true;
    } catch {
      return false;
    }
  };
  /**
   * The state, and where the attempt runs, as search attributes (the job list reads them from visibility alone); one
   * upsert command as before, so recorded histories replay.
   */
  const showState = (): void => {
    const agent = status.members?.length ? status.members.map((m) => m.agentId).join('+') : status.agentId;
    upsertSearchAttributes([
      { key: SA_STATE, value: status.state },
      ...(agent ? [{ key: SA_AGENT, value: agent }] : []),
      ...(status.attempt > 0 ? [{ key: SA_ATTEMPT, value: String(status.attempt) }] : []),
    ]);
  };
  const setState = (s: JobState): void => {
    if (status.state === s) return;
    status.state = s;
    showState();
  };

  // a continued run shows the state it was handed at once (the list reads it from the search attribute)
  if (before) showState();

  let spec: JobSpec = before?.spec ?? input.spec;
  const exclude: string[] = [...(before?.exclude ?? [])];
  let resumeFrom: TrainHeartbeat['checkpoint'] = before?.resumeFrom ?? null;
  // what this job has done so far, handed to the next run if this one continues as new
  let data: DataReport | null = before?.data ?? null;
  let training: TrainOutcome | null = before?.training ?? null;
  const pollMs = input.queue?.pollMs ?? QUEUE_POLL_MS;
  const historyEvents = input.queue?.historyEvents ?? QUEUE_HISTORY_EVENTS;

  /** Hand the job over to a new run of this workflow; throws ContinueAsNew, never returns. */
  async function continueQueued(): Promise<never> {
    if (!data) throw new Error('a job continues as new only once its data is prepared');
    // the memo (submit time) and search attributes (state, model, method) go along explicitly
    const info = workflowInfo();
    const next = makeContinueAsNewFunc<typeof fineTune>({
      memo: info.memo,
      typedSearchAttributes: info.typedSearchAttributes,
    });
    return next({
      ...input,
      continued: {
        runs: (before?.runs ?? 0) + 1,
        status,
        spec,
        exclude,
        resumeFrom,
        data,
        training,
        ...(trial ? { trialRungs } : {}),
      },
    });
  }

  /** Run `work` on a placed agent; on a retryable failure, place again (the failure table decides). */
  async function onAgent<T>(
    purpose: 'train' | 'evaluate',
    work: (agent: AgentActivities, placement: Placement) => Promise<T>,
  ): Promise<T> {
    let poll = pollMs;
    /** the failure class of the attempt that just failed: the next placement is a recovery (counted by the worker) */
    let failedAs: string | null = null;
    /** a lost agent's last heartbeat: the worker measures the time to detect the fault from it */
    let lastBeatAt: number | undefined;
    for (;;) {
      // a trial's pauses each ended an attempt that did its work
      if (status.attempt >= MAX_ATTEMPTS + trialRungs.length) {
        throw ApplicationFailure.nonRetryable(
          `gave up after ${MAX_ATTEMPTS} attempts; last: ${status.message ?? 'none'}`,
          'ATTEMPTS_EXHAUSTED',
        );
      }
      if (status.state !== 'queued') setState('placing');
      const placed = await quick.place({
        jobId: input.jobId,
        spec,
        attempt: status.attempt + 1,
        submittedAt: input.submittedAt,
        exclude,
        purpose,
        ...(failedAs ? { after: failedAs } : {}),
      });
      if (!placed.placement) {
        setState('queued');
        status.queuePosition = placed.position;
        status.message = placed.waiting;
        woken = false;
        await condition(() => woken, poll);
        poll = Math.min(QUEUE_POLL_MAX_MS, Math.round(poll * 1.5));
        const info = workflowInfo();
        if (info.historyLength >= historyEvents || info.continueAsNewSuggested) await continueQueued();
        continue;
      }
      poll = pollMs;
      failedAs = null;
      lastBeatAt = undefined;
      status.queuePosition = null;
      status.attempt += 1;
      status.epoch = status.attempt;
      const placement = placed.placement;
      status.agentId = placement.agentId;
      status.members = placement.gang?.members.map((m) => ({ agentId: m.agentId, rank: m.rank })) ?? null;
      status.message = placement.reason;
      setState(purpose === 'train' ? 'training' : 'evaluating');
      try {
        return await work(agentActivities(placement.agentId, input.timeouts, spec), placement);
      } catch (caught) {
        const gang = caught instanceof GangFailed ? caught : null;
        const err = gang ? gang.failure : caught;
        if (isCancellation(err)) throw err;
        const f = classify(err);
        const policy = FAILURE_POLICY[f.cls];
        if (!policy.retry) throw err;
        failedAs = f.cls;
        lastBeatAt = f.lastBeatAt;
        const checkpoint = gang?.checkpoint ?? f.checkpoint;
        if (checkpoint && (!resumeFrom || checkpoint.step > resumeFrom.step)) resumeFrom = checkpoint;
        if (gang) exclude.push(...gang.avoid);
        else if (policy.avoidAgent) exclude.push(placement.agentId);
        if (policy.shrink) {
          const smaller = shrink(spec, f.oom);
          if (!smaller)
            throw ApplicationFailure.nonRetryable(
              `${f.why}; already at micro-batch 1 with gradient checkpointing`,
              'OOM',
            );
          spec = smaller;
        }
        const next = policy.shrink
          ? `retrying with micro-batch ${spec.training.micro_batch_size} and gradient checkpointing`
          : 'placing again';
        const on = gang
          ? `the gang of ${placement.gang?.members.length} (avoiding ${gang.avoid.join(', ') || 'none'})`
          : placement.agentId;
        status.message = `attempt ${status.attempt} on ${on} ended (${f.cls}: ${f.why}); ${next}`;
      } finally {
        const attempt = status.attempt;
        status.members = null;
        const holders = placement.gang?.members.map((m) => m.agentId) ?? [placement.agentId];
        await CancellationScope.nonCancellable(async () => {
          for (const [i, id] of holders.entries())
            if (i > 0 || !failedAs) await quick.release(input.jobId, attempt, id);
            else if (lastBeatAt === undefined) await quick.release(input.jobId, attempt, id, failedAs);
            else await quick.release(input.jobId, attempt, id, failedAs, lastBeatAt);
        });
      }
    }
  }

  /**
   * Train on every member of a gang at once. The first member to fail stops the others at once (their agents kill
   * their trainers: a surviving rank must not wait in a collective for a peer that is gone), every member's end is
   * waited for, and the attempt fails with the cause (gangFailure). Rank 0's outcome is the job's.
   */
  async function trainGang(p: Placement, req: Omit<TrainRequest, 'reservedBytes' | 'devices' | 'gang'>) {
    const gang = p.gang as NonNullable<Placement['gang']>;
    const members = gang.members.map((m) => ({ agentId: m.agentId, rank: m.rank }));
    const scope = new CancellationScope();
    const ended: { member: Member; error: unknown }[] = [];
    const runs = gang.members.map((m) =>
      scope
        .run(() =>
          agentActivities(m.agentId, input.timeouts, spec, true).train({
            ...req,
            reservedBytes: m.reservedBytes,
            devices: m.devices,
            gang: { nodes: gang.members.length, rank: m.rank, members, rendezvous: gang.rendezvous },
          }),
        )
        .catch((e: unknown) => {
          ended.push({ member: m, error: e });
          if (ended.length === 1) scope.cancel();
          throw e;
        }),
    );
    const results = await Promise.allSettled(runs);
    if (ended.length === 0) {
      const rank0 = results[gang.members.findIndex((m) => m.rank === 0)];
      if (rank0?.status === 'fulfilled') return rank0.value;
    }
    // the job itself was cancelled: that is how the members ended
    if (CancellationScope.current().consideredCancelled) throw (ended[0] as (typeof ended)[number]).error;
    const why = gangCause(ended.map((e) => ({ agentId: e.member.agentId, error: e.error })));
    throw new GangFailed(why.failure, why.avoid, why.checkpoint);
  }

  try {
    const prepared: DataReport = data ?? (await control.prepare(input));
    data = prepared;
    let trained: TrainOutcome | null = training;
    while (!trained) {
      // a trial stops at its next rung (but the last), checkpointed and evaluated
      const rung = trialRungs.length;
      const pauseAt = trial && rung < trial.rungs.length - 1 ? trial.rungs[rung] : undefined;
      const pause = pauseAt !== undefined ? { pauseAt } : {};
      const out = await onAgent('train', (agent, p) =>
        p.gang
          ? trainGang(p, { jobId: input.jobId, spec, attempt: p.attempt, data: prepared, resumeFrom, ...pause })
          : agent.train({
              jobId: input.jobId,
              spec,
              attempt: p.attempt,
              reservedBytes: p.reservedBytes,
              devices: p.devices ?? [],
              data: prepared,
              resumeFrom,
              ...pause,
            }),
      );
      if (!out.paused || !trial) {
        trained = out;
        break;
      }
      // paused at the rung (its leases released by onAgent): the sweep promotes it or stops it
      const { step, evalLoss, checkpoint } = out.paused;
      resumeFrom = checkpoint;
      trialRungs.push({ step, evalLoss });
      status.progress = { step, stepsTotal: trial.rungs.at(-1) ?? step, loss: out.trainLoss, checkpoint };
      setState('paused');
      const loss = evalLoss === null ? 'no eval split' : `eval loss ${evalLoss.toFixed(4)}`;
      status.message = `paused at step ${step} (rung ${rung + 1} of ${trial.rungs.length}), ${loss}; the sweep decides`;
      const told = await tellSweep({ kind: 'paused', rung, step, evalLoss });
      if (told) await condition(() => verdicts.has(rung));
      if (!told || !verdicts.get(rung)) {
        setState('stopped_early');
        status.message =
          `stopped at step ${step} (rung ${rung + 1} of ${trial.rungs.length}), ${loss}: ` +
          (told ? 'not promoted by the sweep' : 'its sweep has ended');
        await tellSweep({ kind: 'stopped_early', rung, step, evalLoss });
        return {
          jobId: input.jobId,
          state: 'stopped_early',
          sweepId: trial.sweepId,
          trial: trial.index,
          step,
          rungs: trialRungs,
          data: prepared,
        };
      }
      status.message = `promoted past step ${step}: on to step ${trial.rungs[rung + 1]}`;
    }
    if (!training)
      status.progress = {
        step: trained.steps,
        stepsTotal: trained.steps,
        loss: trained.trainLoss,
        checkpoint: status.progress?.checkpoint ?? null,
      };
    training = trained;
    const evaluation: EvalOutcome = await onAgent('evaluate', (agent, p) =>
      agent.evaluate({
        jobId: input.jobId,
        spec,
        attempt: p.attempt,
        reservedBytes: p.reservedBytes,
        devices: p.devices ?? [],
        data: prepared,
        adapterPrefix: trained.adapterPrefix,
        adapterFiles: trained.adapterFiles,
      }),
    );
    setState('registering');
    // register stores the adapter whatever the gates say, and checks them
    const { continued: _continued, ...original } = input;
    const result = await control.register({ ...original, spec }, prepared, trained, evaluation);
    setState(result.state === 'failed_gate' ? 'failed_gate' : 'succeeded');
    await tellSweep({
      kind: result.state,
      rung: (trial?.rungs.length ?? 1) - 1,
      step: trained.steps,
      evalLoss: evaluation.tuned.eval_loss,
      metrics: metricValues(evaluation.tuned),
    });
    status.message =
      result.state === 'failed_gate'
        ? (result.gates ?? [])
            .filter((g) => !g.passed)
            .map((g) => g.message)
            .join('; ')
        : null;
    return result;
  } catch (err) {
    // handed over to the next run: the job still waits, its queue entry stays
    if (err instanceof ContinueAsNew) throw err;
    const cancelled = isCancellation(err);
    // a queued job leaves the queue however it ends
    await CancellationScope.nonCancellable(() => quick.release(input.jobId, status.attempt, null));
    setState(cancelled ? 'cancelled' : 'failed');
    const why = cancelled
      ? 'cancelled'
      : err instanceof Error
        ? err.cause instanceof Error
          ? err.cause.message
          : err.message
        : String(err);
    status.message = why;
    // a trial that failed or was cancelled (by its sweep, or on its own) frees its place in the sweep
    await CancellationScope.nonCancellable(() =>
      tellSweep({
        kind: cancelled ? 'cancelled' : 'failed',
        rung: trialRungs.length,
        step: status.progress?.step ?? 0,
        evalLoss: null,
        message: why,
      }),
    );
    throw err;
  }
}
