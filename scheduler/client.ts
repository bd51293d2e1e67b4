// What the CLI does against a running stack: submit, status, list, result, download,
// and following a job's events. Spec errors are found before anything is contacted.
import { Client, Connection, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import {
  ADAPTERS_BUCKET,
  CONTROL_TASK_QUEUE,
  DATASETS_BUCKET,
  DECISIONS_BUCKET,
  ErrorCode,
  EVENTS_STREAM,
  ID_PATTERN,
  TunefleetError,
  datasetObjectName,
  jobEventSubject,
  jobEventsFilter,
  parseJobEvent,
  latestReviewObjectName,
  reviewObjectPrefix,
  type ReviewSummary,
  type Config,
  type FineTuneInput,
  type JobResult,
  type JobEvent,
  type JobEventOf,
  type JobStatus,
  type TrainerEventType,
} from '../shared';
import { fineTune, statusQuery } from '../workflows';
import { SA_JOB_ID, SA_METHOD, SA_MODEL, SA_STATE } from '../workflows/searchAttributes';
import type { DecisionRecord } from './activities';
import type { LossCurve } from './format';
import { readReview, sampleRows, summarise, writeReview, type OutputRow, type ReviewFormat } from './review';
import { connectNats, ensureAssets, getFile, putFile, sha256File, type Nats } from './nats';
import { listJobs, type JobRow, type ListOptions } from './joblist';
import { newJobId, type LoadedSpec } from './specfile';

export { loadSpecFile, newJobId, type LoadedSpec } from './specfile';
export type { JobRow, ListOptions } from './joblist';
export { failureMessage } from './messages';
import { failureMessage } from './messages';

export class Stack {
  private constructor(
    readonly cfg: Config,
    readonly client: Client,
    private readonly connection: Connection,
    private natsConn: Nats | null,
  ) {}

  static async connect(cfg: Config): Promise<Stack> {
    let connection: Connection;
    try {
      connection = await Connection.connect({ address: cfg.temporalAddress, connectTimeout: 3000 });
    } catch (cause) {
      throw new TunefleetError(
        ErrorCode.StackUnavailable,
        `cannot reach Temporal at ${cfg.temporalAddress}: is the stack up? ('tunefleet up')`,
        {},
        { cause },
      );
    }
    return new Stack(cfg, new Client({ connection, namespace: cfg.namespace }), connection, null);
  }

  async nats(): Promise<Nats> {
    this.natsConn ??= await connectNats(this.cfg.natsUrl, 'tunefleet-cli');
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
    const bytes = info && !info.deleted ? info.size : await putFile(store, object, path);
    return { object, sha256, bytes };
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
    // malformed or empty data is refused here, before anything is stored
    const { checkJobData } = await import('./prepare');
    const checked = await checkJobData(loaded.spec, loaded.datasetPath, loaded.evalPath ?? null, o);
    for (const w of checked.warnings) o.warn?.(`warning: ${w}`);
    await ensureAssets(await this.nats());
    const input: FineTuneInput = {
      jobId: id,
      spec: loaded.spec,
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
    try {
      await this.client.workflow.start(fineTune, {
        taskQueue: CONTROL_TASK_QUEUE,
        workflowId: id,
        args: [input],
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        // the job's submit time outlives its runs (a queued job continues as new; visibility's start time is the run's)
        memo: { submittedAt: input.submittedAt },
        typedSearchAttributes: [
          { key: SA_JOB_ID, value: id },
          { key: SA_MODEL, value: loaded.spec.model },
          { key: SA_METHOD, value: loaded.spec.method },
          { key: SA_STATE, value: 'preparing' },
        ],
      });
    } catch (e) {
      if (e instanceof WorkflowExecutionAlreadyStartedError)
        throw new TunefleetError(ErrorCode.FlagInvalid, `a job with id '${id}' already exists`, { field: '--id' });
      throw e;
    }
    return id;
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
    return { temporal, status, lastStep: await this.lastEvent(jobId, 'step'), failure, queryError };
  }

  async lastEvent<T extends TrainerEventType>(jobId: string, type: T): Promise<JobEventOf<T> | null> {
    const n = await this.nats();
    const jsm = await n.nc.jetstreamManager();
    try {
      const m = await jsm.streams.getMessage(EVENTS_STREAM, { last_by_subj: jobEventSubject(jobId, type) });
      const e = parseJobEvent(m.data, jobId);
      return e.ok && e.event.type === type ? (e.event as JobEventOf<T>) : null;
    } catch {
      return null;
    }
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
    return e.json<{ decisions: DecisionRecord[] }>().decisions;
  }

  async result(jobId: string): Promise<JobResult> {
    const handle = this.client.workflow.getHandle(jobId);
    try {
      const d = await handle.describe();
      if (d.status.name === 'RUNNING')
        throw new TunefleetError(ErrorCode.JobRunning, `job '${jobId}' is still running ('tunefleet status ${jobId}')`);
      return (await handle.result()) as JobResult;
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new TunefleetError(ErrorCode.JobNotFound, `no job '${jobId}'`);
      if (e instanceof TunefleetError) throw e;
      throw new TunefleetError(ErrorCode.TrainerFailed, `job '${jobId}' did not succeed: ${failureMessage(e)}`);
    }
  }

  /** The result with the newest imported human review, if any. */
  async resultWithReview(jobId: string): Promise<JobResult> {
    const r = await this.result(jobId);
    const blob = await (await (await this.nats()).objects(ADAPTERS_BUCKET)).getBlob(latestReviewObjectName(jobId));
    if (blob) r.review = (JSON.parse(new TextDecoder().decode(blob)) as { summary: ReviewSummary }).summary;
    return r;
  }

  /** Train loss by step (the attempt that ran it last) and eval losses, from the job's events. */
  async lossCurve(jobId: string): Promise<LossCurve> {
    const train = new Map<number, [number, number]>();
    const evals = new Map<number, [number, number]>();
    await this.events(
      jobId,
      (e) => {
        // a later attempt's value for a step replaces an earlier attempt's
        if (e.type === 'step' && (train.get(e.step)?.[0] ?? 0) <= e.attempt) train.set(e.step, [e.attempt, e.loss]);
        if (e.type === 'eval' && (evals.get(e.step)?.[0] ?? 0) <= e.attempt)
          evals.set(e.step, [e.attempt, e.eval_loss]);
      },
      () => {},
    );
    const sorted = (m: Map<number, [number, number]>): [number, number][] =>
      [...m].sort((a, b) => a[0] - b[0]).map(([k, [, v]]) => [k, v]);
    return { train: sorted(train), eval: sorted(evals) };
  }

  /** Every evaluation generation of a finished job (prompt, reference, base, tuned). */
  async evalOutputs(jobId: string): Promise<OutputRow[]> {
    const r = await this.result(jobId);
    const object = r.evaluation.outputs?.object;
    if (!object)
      throw new TunefleetError(
        ErrorCode.ObjectMissing,
        `job '${jobId}' stored no evaluation generations ` +
          '(evaluation.exact_match off, or a job from before review export existed)',
      );
    const blob = await (await (await this.nats()).objects(ADAPTERS_BUCKET)).getBlob(object);
    if (!blob)
      throw new TunefleetError(
        ErrorCode.ObjectMissing,
        `the evaluation generations of '${jobId}' (${object}) are missing from the store`,
      );
    return new TextDecoder()
      .decode(blob)
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as OutputRow);
  }

  async reviewExport(
    jobId: string,
    o: { sample: number; seed: number; format: ReviewFormat },
  ): Promise<{ text: string; rows: number; of: number }> {
    const rows = await this.evalOutputs(jobId);
    const picked = sampleRows(rows, o.sample, o.seed);
    return { text: writeReview(picked, o.format), rows: picked.length, of: rows.length };
  }

  /** Check a filled-in review file against the stored generations, then store it (one object per import). */
  async reviewImport(jobId: string, file: string, format: ReviewFormat): Promise<ReviewSummary> {
    const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new TunefleetError(ErrorCode.SpecUnreadable, `cannot read the review file (${e.code ?? String(e)})`, {
        file,
      });
    });
    const graded = readReview(text, format, file, await this.evalOutputs(jobId));
    const now = new Date();
    const summary = summarise(graded, basename(file), now);
    const body = new TextEncoder().encode(JSON.stringify({ summary, rows: graded }, null, 1));
    const store = await (await this.nats()).objects(ADAPTERS_BUCKET);
    // every import is kept; the newest is also under a fixed name for `result`
    await store.putBlob({ name: `${reviewObjectPrefix(jobId)}${now.toISOString().replace(/[:.]/g, '-')}.json` }, body);
    await store.putBlob({ name: latestReviewObjectName(jobId) }, body);
    return summary;
  }

  /** Write the registered adapter to `out`, every file checked against its sha256. */
  async download(jobId: string, out: string): Promise<{ dir: string; files: number }> {
    const result = await this.result(jobId);
    const store = await (await this.nats()).objects(ADAPTERS_BUCKET);
    const tmp = `${out}.part`;
    await mkdir(tmp, { recursive: true });
    for (const f of result.adapter.files) {
      const target = join(tmp, f.name);
      if (!target.startsWith(resolve(tmp) + '/') && !target.startsWith(tmp + '/'))
        throw new TunefleetError(
          ErrorCode.ChecksumMismatch,
          `adapter file name '${f.name}' leaves the output directory`,
        );
      await mkdir(dirname(target), { recursive: true });
      await getFile(store, `${result.adapter.prefix}${f.name}`, target, f.sha256);
    }
    await writeFile(join(tmp, 'tunefleet-result.json'), JSON.stringify(result, null, 1));
    if (existsSync(out))
      throw new TunefleetError(ErrorCode.FlagInvalid, `${out} already exists; choose another --out`, {
        field: '--out',
      });
    await rename(tmp, out);
    return { dir: out, files: result.adapter.files.length };
  }

  /** Every event of a job stored so far, in order (no waiting for new ones). */
  async events(jobId: string, print: (e: JobEvent) => void, warn = stderrWarn): Promise<number> {
    const n = await this.nats();
    const consumer = await n.js.consumers.get(EVENTS_STREAM, { filterSubjects: [jobEventsFilter(jobId)] });
    let count = 0;
    for (;;) {
      const batch = await consumer.fetch({ max_messages: 500, expires: 1000 });
      let got = 0;
      for await (const m of batch) {
        const e = parseJobEvent(m.data, jobId);
        if (e.ok) print(e.event);
        else warn(`skipped a malformed event on ${m.subject} (stream seq ${m.seq}): ${e.message}`);
        got += 1;
      }
      count += got;
      if (got === 0) return count;
    }
  }

  /** Print a job's events as they come (from the beginning), until the job ends. */
  async follow(jobId: string, print: (e: JobEvent) => void, warn = stderrWarn): Promise<JobResult> {
    const n = await this.nats();
    const consumer = await n.js.consumers.get(EVENTS_STREAM, { filterSubjects: [jobEventsFilter(jobId)] });
    const messages = await consumer.consume();
    const reading = (async () => {
      for await (const m of messages) {
        const e = parseJobEvent(m.data, jobId);
        if (e.ok) print(e.event);
        else warn(`skipped a malformed event on ${m.subject} (stream seq ${m.seq}): ${e.message}`);
      }
    })();
    try {
      return await this.result(jobId).catch(async (e: unknown) => {
        if (e instanceof TunefleetError && e.code === ErrorCode.JobRunning) {
          try {
            return (await this.client.workflow.getHandle(jobId).result()) as JobResult;
          } catch (err) {
            throw new TunefleetError(ErrorCode.TrainerFailed, `job '${jobId}' did not succeed: ${failureMessage(err)}`);
          }
        }
        throw e;
      });
    } finally {
      await new Promise((r) => setTimeout(r, 300)); // let the last events print
      await messages.close();
      await reading.catch(() => {});
    }
  }
}

const stderrWarn = (msg: string): void => void process.stderr.write(`warning: ${msg}\n`);
