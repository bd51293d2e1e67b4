// Sweeps from the CLI: a sweep file checked (with the job spec it varies) before anything starts, its data uploaded
// once, the sweep workflow started; its status and result read back; cancelled with its trials.
import { dirname, resolve } from 'node:path';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import {
  ErrorCode,
  ID_PATTERN,
  TunefleetError,
  applyParams,
  checkJobSpec,
  checkSweep,
  parseYamlMapping,
  proposeTrials,
  type SweepInput,
  type SweepSpec,
  type SweepStatus,
} from '../../../shared';
import { CONTROL_TASK_QUEUE } from '../../../shared/names';
import { sweep, sweepStatusQuery, trialJobId } from '../../../workflows';
import { failureMessage } from '../messages';
import { loadSpecFile, newJobId, readSpecText, type LoadedSpec } from '../specfile';
import type { JobClient } from './jobs';

/** A sweep file checked with its job spec: the sweep, the job spec file (loaded: spec and data files checked), every
 * trial's job spec. Nothing is contacted. */
export async function loadSweepFile(
  file: string,
): Promise<{ sweep: SweepSpec; job: LoadedSpec; trials: SweepInput['trials'] }> {
  const { data: raw } = parseYamlMapping(await readSpecText(file, 'sweep'), file, 'sweep');
  const jobPath = raw.job;
  // the job spec on its own first (its own errors name its own file and lines)
  const job = typeof jobPath === 'string' ? await loadSpecFile(resolve(dirname(resolve(file)), jobPath)) : null;
  const s = checkSweep(raw, job?.raw ?? {}, file);
  if (!job) throw new TunefleetError(ErrorCode.SpecInvalid, 'a sweep names its job spec file', { file, field: 'job' });
  const trials = proposeTrials(s).map((t) => {
    // checkSweep tries each range's ends; a value inside a range that the job spec refuses is named here
    const values = Object.entries(t.params)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(', ');
    const spec = checkJobSpec(
      applyParams(job.raw, { ...t.params, 'training.max_steps': s.budget.max_steps }),
      file,
      undefined,
      `trial ${t.index}'s job spec (${values})`,
    );
    return { index: t.index, params: t.params, spec };
  });
  return { sweep: s, job, trials };
}

export class Sweeps {
  constructor(private readonly jobs: JobClient) {}

  /** Check the sweep and its job, upload the data once, start the sweep; its id. Nothing starts on bad input. */
  async submit(file: string, id?: string, warn?: (m: string) => void): Promise<string> {
    const { sweep: s, job, trials } = await loadSweepFile(file);
    const sweepId = id ?? newJobId(s.name).slice(0, 58);
    const lastTrial = trialJobId(sweepId, Math.max(0, trials.length - 1));
    if (!ID_PATTERN.test(sweepId) || !ID_PATTERN.test(lastTrial))
      throw new TunefleetError(
        ErrorCode.FlagInvalid,
        `sweep id '${sweepId}' must be lowercase letters, digits and dashes, short enough for its trials' ids ` +
          `(${lastTrial}: at most 63)`,
        { field: '--id' },
      );
    const shared = await this.jobs.checkAndUpload(sweepId, job, warn ? { warn } : {});
    const input: SweepInput = {
      sweepId,
      sweep: s,
      trials,
      dataset: shared.dataset,
      ...(shared.evalDataset ? { evalDataset: shared.evalDataset } : {}),
      submittedAt: shared.submittedAt,
      ...(shared.timeouts ? { timeouts: shared.timeouts } : {}),
      ...(shared.queue ? { queue: shared.queue } : {}),
      ...(this.jobs.cfg.sweepHistoryEvents ? { historyEvents: this.jobs.cfg.sweepHistoryEvents } : {}),
    };
    try {
      await this.jobs.client.workflow.start(sweep, {
        taskQueue: CONTROL_TASK_QUEUE,
        workflowId: sweepId,
        args: [input],
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        memo: { submittedAt: input.submittedAt, kind: 'sweep' },
      });
    } catch (e) {
      if (e instanceof WorkflowExecutionAlreadyStartedError)
        throw new TunefleetError(ErrorCode.FlagInvalid, `a sweep or job with id '${sweepId}' already exists`, {
          field: '--id',
        });
      throw e;
    }
    return sweepId;
  }

  /** The sweep as it stands (running or ended). */
  async status(sweepId: string): Promise<SweepStatus & { temporal: string; failure: string | null }> {
    const handle = this.jobs.client.workflow.getHandle(sweepId);
    let d;
    try {
      d = await handle.describe();
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new TunefleetError(ErrorCode.JobNotFound, `no sweep '${sweepId}'`);
      throw e;
    }
    if (d.type !== 'sweep')
      throw new TunefleetError(ErrorCode.JobNotFound, `'${sweepId}' is a job, not a sweep ('tunefleet status')`);
    const temporal = d.status.name;
    const failure = temporal === 'FAILED' ? await handle.result().then(() => null, failureMessage) : null;
    const st =
      temporal === 'COMPLETED' ? ((await handle.result()) as SweepStatus) : await handle.query(sweepStatusQuery);
    return { ...st, temporal, failure };
  }

  /** Wait for the sweep to end; its status then. */
  async wait(sweepId: string): Promise<SweepStatus & { temporal: string; failure: string | null }> {
    await this.jobs.client.workflow
      .getHandle(sweepId)
      .result()
      .catch(() => {});
    return this.status(sweepId);
  }

  /**
   * The job an id names: itself for a job; for a sweep that has finished, its best trial (whose adapter is the
   * sweep's result).
   */
  async resolveJob(id: string): Promise<{ jobId: string; sweep: string | null }> {
    let type: string;
    try {
      type = (await this.jobs.client.workflow.getHandle(id).describe()).type;
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) return { jobId: id, sweep: null };
      throw e;
    }
    if (type !== 'sweep') return { jobId: id, sweep: null };
    const st = await this.status(id);
    if (st.temporal !== 'COMPLETED' || !st.best)
      throw new TunefleetError(
        st.temporal === 'RUNNING' ? ErrorCode.JobRunning : ErrorCode.TrainerFailed,
        st.temporal === 'RUNNING'
          ? `sweep '${id}' is still running ('tunefleet sweep status ${id}')`
          : `sweep '${id}' has no best trial: ${st.failure ?? st.message ?? st.temporal.toLowerCase()}`,
      );
    return { jobId: st.best.jobId, sweep: id };
  }

  /** Cancel the sweep; it cancels its trials that have not ended. */
  async cancel(sweepId: string): Promise<void> {
    const st = await this.status(sweepId);
    if (st.temporal !== 'RUNNING')
      throw new TunefleetError(
        ErrorCode.FlagInvalid,
        `sweep '${sweepId}' has already ended (${st.temporal.toLowerCase()})`,
      );
    await this.jobs.client.workflow.getHandle(sweepId).cancel();
  }
}
