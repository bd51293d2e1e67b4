// The sweep workflow: one child fineTune workflow per trial (each a job with its own id, `<sweep>-t<index>`), at most
// max_concurrent training at once. Grid and random run each trial to budget.max_steps. ASHA runs each trial to its
// next rung, where the trial checkpoints, evaluates, releases its leases and pauses (tells the sweep); a free slot then
// promotes a paused trial in the top 1/reduction_factor of its rung (it resumes from its checkpoint, placed as any job,
// preferring the agent that holds it) or starts a new trial. When nothing is left to start or promote, the paused
// trials are stopped (stopped_early, with their numbers). Deterministic: trials tell the sweep by signal (so children
// started by an earlier run of a sweep that continued as new still reach it); all I/O is in the trials' activities.
import {
  ApplicationFailure,
  CancellationScope,
  ParentClosePolicy,
  condition,
  defineQuery,
  getExternalWorkflowHandle,
  isCancellation,
  makeContinueAsNewFunc,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import type { FineTuneInput, TrialUpdate } from '../shared/jobs';
import { CONTROL_TASK_QUEUE } from '../shared/names';
import { ashaNext, bestTrial, rungs, type TrialState } from '../shared/sweep';
import type { SweepInput, SweepStatus, SweepTrial } from '../shared/sweep';
import { fineTune, promoteSignal, trialSignal } from './fineTune';
import { SA_JOB_ID, SA_METHOD, SA_MODEL, SA_STATE } from './searchAttributes';

export const sweepStatusQuery = defineQuery<SweepStatus>('sweepStatus');

/** A run continues as new once its history has this many events (a trial adds about 10 per rung). */
export const SWEEP_HISTORY_EVENTS = 2_000;

/** A trial's job id. */
export const trialJobId = (sweepId: string, index: number): string => `${sweepId}-t${index}`;

const ENDED = new Set(['succeeded', 'failed_gate', 'stopped_early', 'failed', 'cancelled']);

export async function sweep(input: SweepInput): Promise<SweepStatus> {
  const s = input.sweep;
  const steps = rungs(s);
  const status: SweepStatus = input.continued ?? {
    sweepId: input.sweepId,
    name: s.name,
    state: 'running',
    searcher: s.searcher.type,
    metric: s.metric,
    mode: s.mode,
    rungs: steps,
    proposed: input.trials.length,
    trials: [],
    best: null,
    stepsTrained: 0,
    message: null,
  };
  setHandler(sweepStatusQuery, () => status);
  let changed = false;
  const byIndex = (i: number): SweepTrial | undefined => status.trials.find((t) => t.index === i);

  /** A trial's metric from what it reported: the rung's eval loss (as perplexity if that is the metric), or final. */
  const rungMetric = (evalLoss: number | null): number | null =>
    evalLoss === null ? null : s.metric === 'perplexity' ? Math.exp(evalLoss) : evalLoss;

  const apply = (u: TrialUpdate): void => {
    const t = byIndex(u.index);
    if (!t || ENDED.has(t.state)) return;
    t.steps = Math.max(t.steps, u.step);
    if (u.kind === 'paused') {
      if (t.results.length > u.rung) return; // told twice
      t.state = 'paused';
      t.results.push(rungMetric(u.evalLoss));
      t.rungs.push({ step: u.step, evalLoss: u.evalLoss });
    } else if (u.kind === 'succeeded' || u.kind === 'failed_gate') {
      t.state = u.kind;
      const m = u.metrics?.[s.metric];
      t.final = typeof m === 'number' ? m : null;
      t.results.push(t.final);
      t.rungs.push({ step: u.step, evalLoss: u.evalLoss });
    } else {
      t.state = u.kind;
      if (u.message) t.message = u.message;
    }
    status.stepsTrained = status.trials.reduce((n, x) => n + x.steps, 0);
    const best = bestTrial(s, ranked());
    const b = best ? byIndex(best.index) : undefined;
    status.best = b
      ? {
          index: b.index,
          jobId: b.jobId,
          params: b.params,
          metric: b.results.at(-1) ?? null,
          rung: b.results.length - 1,
        }
      : null;
    changed = true;
  };
  setHandler(trialSignal, apply);

  /** The trials as ASHA ranks them: a failed trial (or one without a number) is not ranked or promoted. */
  const ranked = (): TrialState[] =>
    status.trials
      .filter((t) => t.state !== 'failed' && t.state !== 'cancelled' && t.results.every((r) => r !== null))
      .map((t) => ({ index: t.index, results: t.results as number[], running: t.state === 'running' }));
  const running = (): number => status.trials.filter((t) => t.state === 'running').length;

  async function start(index: number): Promise<void> {
    const proposed = input.trials[index];
    if (!proposed) throw new Error(`no trial ${index}`);
    const jobId = trialJobId(input.sweepId, index);
    status.trials.push({
      index,
      jobId,
      params: proposed.params,
      state: 'running',
      steps: 0,
      results: [],
      rungs: [],
      final: null,
      message: null,
    });
    const child: FineTuneInput = {
      jobId,
      spec: proposed.spec,
      dataset: input.dataset,
      ...(input.evalDataset ? { evalDataset: input.evalDataset } : {}),
      submittedAt: input.submittedAt,
      ...(input.timeouts ? { timeouts: input.timeouts } : {}),
      ...(input.queue ? { queue: input.queue } : {}),
      trial: { sweepId: input.sweepId, index, rungs: steps },
    };
    const handle = await startChild(fineTune, {
      workflowId: jobId,
      taskQueue: CONTROL_TASK_QUEUE,
      args: [child],
      // the sweep continues as new and cancels its trials itself: a trial outlives one run of it
      parentClosePolicy: ParentClosePolicy.ABANDON,
      memo: { submittedAt: input.submittedAt, recordsAgent: true, sweep: input.sweepId },
      typedSearchAttributes: [
        { key: SA_JOB_ID, value: jobId },
        { key: SA_MODEL, value: proposed.spec.model },
        { key: SA_METHOD, value: proposed.spec.method },
        { key: SA_STATE, value: 'preparing' },
      ],
    });
    // a trial that fails before it can say so (its own workflow failing) still frees its slot
    handle.result().then(
      () => {},
      (e: unknown) => {
        const kind = isCancellation(e) ? 'cancelled' : 'failed';
        apply({ index, kind, rung: 0, step: 0, evalLoss: null, message: errorMessage(e) });
      },
    );
  }

  /** Tell a paused trial the verdict at its rung; a trial that cannot be told (ended from outside) has failed. */
  async function verdict(t: SweepTrial, rung: number, go: boolean): Promise<void> {
    try {
      await getExternalWorkflowHandle(t.jobId).signal(promoteSignal, { rung, go });
    } catch (e) {
      apply({ index: t.index, kind: 'failed', rung, step: t.steps, evalLoss: null, message: errorMessage(e) });
    }
  }

  async function promote(index: number, rung: number): Promise<void> {
    const t = byIndex(index);
    if (!t) return;
    t.state = 'running';
    await verdict(t, rung - 1, true);
  }

  /** Grid and random: the next trial while there are any; ASHA: its decision. */
  const next = (): { do: 'start'; index: number } | { do: 'promote'; index: number; rung: number } | null => {
    const started = status.trials.length;
    if (s.searcher.type !== 'asha') return started < input.trials.length ? { do: 'start', index: started } : null;
    const a = ashaNext(s, ranked(), started, input.trials.length);
    return a.do === 'wait' ? null : a;
  };

  try {
    for (;;) {
      // a trial's word that comes while this acts (starting a child takes a round trip) is not missed
      changed = false;
      for (let act = next(); act && running() < s.budget.max_concurrent; act = next())
        if (act.do === 'start') await start(act.index);
        else await promote(act.index, act.rung);
      if (running() === 0) break;
      await condition(() => changed);
      const info = workflowInfo();
      if (info.historyLength >= (input.historyEvents ?? SWEEP_HISTORY_EVENTS) || info.continueAsNewSuggested) {
        const again = makeContinueAsNewFunc<typeof sweep>({ memo: info.memo });
        await again({ ...input, continued: status });
      }
    }
    // nothing left to start or promote: the paused trials stop where they are
    status.state = 'finishing';
    for (const t of status.trials.filter((x) => x.state === 'paused')) await verdict(t, t.results.length - 1, false);
    await condition(() => status.trials.every((t) => ENDED.has(t.state)));
    if (!status.best || status.best.rung !== steps.length - 1) {
      status.state = 'failed';
      status.message = 'no trial finished its training';
      const ends = status.trials.map((t) => `${t.jobId} ${t.state}`).join(', ');
      throw ApplicationFailure.nonRetryable(
        `sweep ${input.sweepId}: no trial finished its training (${ends})`,
        'SWEEP_FAILED',
      );
    }
    status.state = 'succeeded';
    status.message = `best: ${status.best.jobId} (${s.metric} ${status.best.metric})`;
    return status;
  } catch (err) {
    if (isCancellation(err)) {
      status.state = 'cancelled';
      status.message = 'cancelled';
      // its trials with it (a trial that has ended already refuses the request)
      await CancellationScope.nonCancellable(() =>
        Promise.all(
          status.trials
            .filter((t) => !ENDED.has(t.state))
            .map((t) =>
              getExternalWorkflowHandle(t.jobId)
                .cancel()
                .catch(() => {}),
            ),
        ),
      );
    }
    throw err;
  }
}

function errorMessage(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  let m = e.message;
  for (let c = e.cause; c instanceof Error; c = c.cause) m = c.message;
  return m;
}
