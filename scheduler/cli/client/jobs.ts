// Job control against a running stack: submit (after the data checks), describe, list,
// cancel, result, placement decisions. A job's events, its review and its adapter
// download are read through the parts below (events.ts, reviews.ts, download.ts).
import { Client, Connection, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import {
  ADAPTERS_BUCKET,
  CONTROL_TASK_QUEUE,
  DATASETS_BUCKET,
  DECISIONS_BUCKET,
  ErrorCode,
  ID_PATTERN,
  TunefleetError,
  datasetObjectName,
  type Config,
  type FineTuneInput,
  type JobResult,
  type StoppedTrialResult,
  type JobEventOf,
  type JobStatus,
  type JobSpec,
} from '../../../shared';
import { openFleet } from '../fleetcmd';
import { place } from '../../placement';
import { fineTune, statusQuery } from '../../../workflows';
import { SA_JOB_ID, SA_METHOD, SA_MODEL, SA_PARENT, SA_STATE } from '../../../workflows/searchAttributes';
import type { DecisionRecord } from '../../activities';
import { connectNats, objectSha256, putFile, sha256File, type Nats } from '../../nats';
import { temporalConnectOptions } from '../../../shared/temporalconn';
import { decisionsSchema, readRecord } from '../../../shared/records';
import { listJobs, type JobRow, type ListOptions } from '../joblist';
import { failureMessage } from '../messages';
import { newJobId, type LoadedSpec } from '../specfile';
import { JobEvents } from './events';
import { Reviews } from './reviews';
import { Sweeps } from './sweeps';

export class JobClient {
  /** the job's events: newest of a type, all so far, followed to the end, the loss curve */
  readonly events = new JobEvents(this);
  /** evaluation generations for people: export, import, the result with its review */
  readonly reviews = new Reviews(this);
  /** hyperparameter sweeps: submit, status, cancel */
  readonly sweeps = new Sweeps(this);

  private constructor(
    readonly cfg: Config,
    readonly client: Client,
    private readonly connection: Connection,
    private natsConn: Nats | null,
    /** who this client is on NATS: cli (submitters) or operator (cordon, drain) */
    readonly identity: 'cli' | 'operator',
  ) {}

  static async connect(cfg: Config, identity: 'cli' | 'operator' = 'cli'): Promise<JobClient> {
    let connection: Connection;
    try {
      connection = await Connection.connect({ ...temporalConnectOptions(cfg, identity), connectTimeout: 3000 });
    } catch (cause) {
      throw new TunefleetError(
        ErrorCode.StackUnavailable,
        `cannot reach Temporal at ${cfg.temporalAddress}: is the stack up? ('tunefleet up')`,
        {},
        { cause },
      );
    }
    return new JobClient(cfg, new Client({ connection, namespace: cfg.namespace }), connection, null, identity);
  }

  async nats(): Promise<Nats> {
    this.natsConn ??= await connectNats(this.cfg, this.identity);
    return this.natsConn;
  }

  async close(): Promise<void> {
    await this.natsConn?.close();
    await this.connection.close();
  }

  private async uploadDataset(path: string): Promise<FineTuneInput['dataset']> {
    const n = await this.nats();
    const store = await n.objects(DATASETS_BUCKET);
    const sha256 = await sha256File(path);
    const object = datasetObjectName(sha256);
    const info = await store.info(object);
    // an object of that name is used only when it is the file: one planted (or damaged) under it is replaced
    if (info && !info.deleted && (await objectSha256(store, object)) === sha256)
      return { object, sha256, bytes: info.size };
    if (info && !info.deleted)
      console.warn(
        `[tunefleet] the store's ${object} does not hash to its name (replaced or damaged): uploading it again`,
      );
    return { object, sha256, bytes: await putFile(store, object, path) };
  }

  /**
   * Check the spec's data, upload it and start the job; `o.warn` hears what is worth knowing
   * but not refused (a small eval split), `o.strictEval` refuses that too.
   */
  async submit(
    loaded: LoadedSpec,
    jobId?: string,
    o: { strictEval?: boolean; warn?: (m: string) => void } = {},
  ): Promise<string> {
    const id = jobId ?? newJobId(loaded.spec.name);
    if (!ID_PATTERN.test(id))
      throw new TunefleetError(
        ErrorCode.FlagInvalid,
        `job id '${id}' must be lowercase letters, digits and dashes (at most 63)`,
        { field: '--id' },
      );
    const input: FineTuneInput = { jobId: id, spec: loaded.spec, ...(await this.checkAndUpload(id, loaded, o)) };
    try {
      await this.client.workflow.start(fineTune, {
        taskQueue: CONTROL_TASK_QUEUE,
        workflowId: id,
        args: [input],
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        // the job's submit time outlives its runs (a queued job continues as new; visibility's start time is the run's)
        // recordsAgent: its workflow records where each attempt runs as search attributes (joblist reads them)
        memo: { submittedAt: input.submittedAt, recordsAgent: true },
        typedSearchAttributes: [
          { key: SA_JOB_ID, value: id },
          { key: SA_MODEL, value: loaded.spec.model },
          { key: SA_METHOD, value: loaded.spec.method },
          { key: SA_STATE, value: 'preparing' },
          ...(loaded.spec.init_adapter ? [{ key: SA_PARENT, value: loaded.spec.init_adapter }] : []),
        ],
      });
    } catch (e) {
      if (e instanceof WorkflowExecutionAlreadyStartedError)
        throw new TunefleetError(ErrorCode.FlagInvalid, `a job with id '${id}' already exists`, { field: '--id' });
      throw e;
    }
    return id;
  }

  /**
   * What a job's workflow gets besides its id and spec: its data checked (malformed or empty data is refused here,
   * before anything is stored) and uploaded, and this deployment's timeouts. A sweep's trials share one.
   */
  async checkAndUpload(
    id: string,
    loaded: LoadedSpec,
    o: { strictEval?: boolean; warn?: (m: string) => void } = {},
  ): Promise<Omit<FineTuneInput, 'jobId' | 'spec'>> {
    const { checkJobData } = await import('../../prepare');
    const checked = await checkJobData(loaded.spec, loaded.datasetPath, loaded.evalPath ?? null, o);
    for (const w of checked.warnings) o.warn?.(`warning: ${w}`);
    if ((loaded.spec.resources.nodes ?? 1) > 1) await this.gangCouldRun(id, loaded.spec);
    if (loaded.spec.init_adapter) await this.parentUsable(loaded.spec, loaded.file);
    return {
      dataset: await this.uploadDataset(loaded.datasetPath),
      submittedAt: new Date().toISOString(),
      ...(loaded.evalPath ? { evalDataset: await this.uploadDataset(loaded.evalPath) } : {}),
      ...(this.cfg.heartbeatTimeoutS || this.cfg.scheduleToStartS
        ? {
            timeouts: {
              ...(this.cfg.heartbeatTimeoutS ? { heartbeatSeconds: this.cfg.heartbeatTimeoutS } : {}),
              ...(this.cfg.scheduleToStartS ? { scheduleToStartSeconds: this.cfg.scheduleToStartS } : {}),
            },
          }
        : {}),
      ...(this.cfg.queue ? { queue: this.cfg.queue } : {}),
    };
  }

  /**
   * A gang is refused at submit when no `nodes` agents of the fleet could ever hold it, even idle, with the numbers (a
   * one-host job that can never run fails at its first placement instead, as before). An empty fleet refuses nothing:
   * the job waits for agents.
   */
  private async gangCouldRun(jobId: string, spec: JobSpec): Promise<void> {
    const view = await openFleet(await this.nats());
    try {
      const adverts = view.snapshot().map((e) => e.advert);
      if (adverts.length === 0) return;
      const idle = { bytes: 0, sessions: 0, onDevice: () => 0 };
      const d = place({ adverts, reserved: () => idle, checkpointAgent: null }, { jobId, spec, exclude: [] });
      if (d.impossible) throw new TunefleetError(ErrorCode.NoAgentFits, d.summary);
    } finally {
      await view.stop();
    }
  }

  /** The adapter spec.init_adapter names is registered and fits this job: else an error naming the field. */
  private async parentUsable(spec: JobSpec, file: string): Promise<void> {
    const { showModel } = await import('./models');
    const { parentAdapter } = await import('../../parent');
    try {
      await showModel(this, spec.init_adapter ?? '');
      await parentAdapter(await (await this.nats()).objects(ADAPTERS_BUCKET), spec);
    } catch (e) {
      if (!(e instanceof TunefleetError) || e.code === ErrorCode.StackUnavailable) throw e;
      throw new TunefleetError(e.code === ErrorCode.JobNotFound ? e.code : ErrorCode.SpecInvalid, e.message, {
        file,
        field: 'init_adapter',
      });
    }
  }

  async describe(jobId: string): Promise<{
    temporal: string;
    status: JobStatus | null;
    lastStep: JobEventOf<'step'> | null;
    failure: string | null;
    queryError: string | null;
  }> {
    const handle = this.client.workflow.getHandle(jobId);
    let d;
    try {
      d = await handle.describe();
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new TunefleetError(ErrorCode.JobNotFound, `no job '${jobId}'`);
      throw e;
    }
    const temporal = d.status.name;
    let status: JobStatus | null = null;
    let queryError: string | null = null;
    if (temporal === 'RUNNING' || temporal === 'COMPLETED') {
      // answered by a control worker; none running means no detail, not an error
      status = await handle.query(statusQuery).catch((e: unknown) => {
        queryError = failureMessage(e);
        return null;
      });
    }
    let failure: string | null = null;
    if (temporal === 'FAILED' || temporal === 'TERMINATED' || temporal === 'TIMED_OUT') {
      failure = await handle.result().then(
        () => null,
        (e: unknown) => failureMessage(e),
      );
    }
    return { temporal, status, lastStep: await this.events.last(jobId, 'step'), failure, queryError };
  }

  /** Jobs, newest first, running or finished (scheduler/joblist.ts). */
  list(o: ListOptions = {}): Promise<JobRow[]> {
    return listJobs(this.client, o);
  }

  /**
   * Ask the job to stop: the trainer gets SIGTERM (SIGKILL after the agent's grace), leases and the queue entry are
   * released.
   */
  async cancel(jobId: string): Promise<void> {
    const handle = this.client.workflow.getHandle(jobId);
    try {
      const d = await handle.describe();
      if (d.status.name !== 'RUNNING')
        throw new TunefleetError(
          ErrorCode.FlagInvalid,
          `job '${jobId}' has already ended (${d.status.name.toLowerCase()})`,
        );
      await handle.cancel();
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new TunefleetError(ErrorCode.JobNotFound, `no job '${jobId}'`);
      throw e;
    }
  }

  /** The job's recorded placement decisions, oldest first. */
  async decisions(jobId: string): Promise<DecisionRecord[]> {
    const kv = await (await this.nats()).kv(DECISIONS_BUCKET);
    const e = await kv.get(jobId);
    if (!e || e.operation !== 'PUT')
      throw new TunefleetError(
        ErrorCode.JobNotFound,
        `no placement decision recorded for '${jobId}' (not placed yet, or no such job)`,
      );
    const rec = readRecord(decisionsSchema, e.value, `decisions/${jobId}`, (m) => console.warn(m));
    return (rec?.decisions ?? []) as unknown as DecisionRecord[];
  }

  async result(jobId: string): Promise<JobResult> {
    const handle = this.client.workflow.getHandle(jobId);
    try {
      const d = await handle.describe();
      if (d.status.name === 'RUNNING')
        throw new TunefleetError(ErrorCode.JobRunning, `job '${jobId}' is still running ('tunefleet status ${jobId}')`);
      const r = (await handle.result()) as JobResult | StoppedTrialResult;
      if (r.state === 'stopped_early') {
        const last = r.rungs.at(-1);
        throw new TunefleetError(
          ErrorCode.JobNotFound,
          `job '${jobId}' is trial ${r.trial} of sweep ${r.sweepId}, stopped early at step ${r.step}` +
            `${last?.evalLoss != null ? ` (eval loss ${last.evalLoss.toFixed(4)})` : ''}: it has no adapter ` +
            `('tunefleet sweep status ${r.sweepId}')`,
        );
      }
      return r;
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new TunefleetError(ErrorCode.JobNotFound, `no job '${jobId}'`);
      if (e instanceof TunefleetError) throw e;
      throw new TunefleetError(ErrorCode.TrainerFailed, `job '${jobId}' did not succeed: ${failureMessage(e)}`);
    }
  }
}
