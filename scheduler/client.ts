// What the CLI does against a running stack: submit, status, list, result, download,
// and following a job's events. Spec errors are found before anything is contacted.
import { Client, Connection, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import {
  ADAPTERS_BUCKET, CONTROL_TASK_QUEUE, DATASETS_BUCKET, DECISIONS_BUCKET, ErrorCode, EVENTS_STREAM, ID_PATTERN, TunefleetError, datasetObjectName,
  jobEventSubject, jobEventsFilter, parseSpec, type Config, type FineTuneInput, type JobResult, type JobSpec, type JobStatus,
} from '../shared';
import { fineTune, statusQuery } from '../workflows';
import { SA_JOB_ID, SA_METHOD, SA_MODEL, SA_STATE } from '../workflows/searchAttributes';
import type { DecisionRecord } from './activities';
import { connectNats, ensureAssets, getFile, putFile, sha256File, type Nats } from './nats';

export interface LoadedSpec { spec: JobSpec; file: string; datasetPath: string; evalPath: string | null }

/** Parse and check a spec file and the files it names. No stack needed. */
export async function loadSpecFile(file: string): Promise<LoadedSpec> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new TunefleetError(ErrorCode.SpecUnreadable, `cannot read the spec (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { file });
  }
  const spec = parseSpec(text, file);
  const base = dirname(resolve(file));
  const local = (p: string, field: string): string => {
    const full = isAbsolute(p) ? p : resolve(base, p);
    if (!existsSync(full)) throw new TunefleetError(ErrorCode.DatasetMissing, `no such file: ${full}`, { file, field });
    if (!statSync(full).isFile()) throw new TunefleetError(ErrorCode.DatasetMissing, `not a regular file: ${full}`, { file, field });
    return full;
  };
  return { spec, file, datasetPath: local(spec.dataset.path, 'dataset.path'), evalPath: spec.dataset.eval_path ? local(spec.dataset.eval_path, 'dataset.eval_path') : null };
}

export function newJobId(name: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:T]/g, '').slice(2, 14);
  const rand = Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0');
  return `${name}-${stamp}-${rand}`.slice(0, 63);
}

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
      throw new TunefleetError(ErrorCode.StackUnavailable, `cannot reach Temporal at ${cfg.temporalAddress}: is the stack up? ('tunefleet up')`, {}, { cause });
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

  async submit(loaded: LoadedSpec, jobId?: string): Promise<string> {
    const id = jobId ?? newJobId(loaded.spec.name);
    if (!ID_PATTERN.test(id)) throw new TunefleetError(ErrorCode.FlagInvalid, `job id '${id}' must be lowercase letters, digits and dashes (at most 63)`, { field: '--id' });
    await ensureAssets(await this.nats());
    const input: FineTuneInput = {
      jobId: id,
      spec: loaded.spec,
      dataset: await this.uploadDataset(loaded.datasetPath),
      submittedAt: new Date().toISOString(),
      ...(loaded.evalPath ? { evalDataset: await this.uploadDataset(loaded.evalPath) } : {}),
      ...(this.cfg.heartbeatTimeoutS || this.cfg.scheduleToStartS
        ? { timeouts: { ...(this.cfg.heartbeatTimeoutS ? { heartbeatSeconds: this.cfg.heartbeatTimeoutS } : {}), ...(this.cfg.scheduleToStartS ? { scheduleToStartSeconds: this.cfg.scheduleToStartS } : {}) } }
        : {}),
    };
    try {
      await this.client.workflow.start(fineTune, {
        taskQueue: CONTROL_TASK_QUEUE, workflowId: id, args: [input], workflowIdReusePolicy: 'REJECT_DUPLICATE',
        typedSearchAttributes: [
          { key: SA_JOB_ID, value: id }, { key: SA_MODEL, value: loaded.spec.model }, { key: SA_METHOD, value: loaded.spec.method }, { key: SA_STATE, value: 'preparing' },
        ],
      });
    } catch (e) {
      if (e instanceof WorkflowExecutionAlreadyStartedError) throw new TunefleetError(ErrorCode.FlagInvalid, `a job with id '${id}' already exists`, { field: '--id' });
      throw e;
    }
    return id;
  }

  async describe(jobId: string): Promise<{ temporal: string; status: JobStatus | null; lastStep: Record<string, unknown> | null; failure: string | null; queryError: string | null }> {
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
      failure = await handle.result().then(() => null, (e: unknown) => failureMessage(e));
    }
    return { temporal, status, lastStep: await this.lastEvent(jobId, 'step'), failure, queryError };
  }

  async lastEvent(jobId: string, type: string): Promise<Record<string, unknown> | null> {
    const n = await this.nats();
    const jsm = await n.nc.jetstreamManager();
    try {
      const m = await jsm.streams.getMessage(EVENTS_STREAM, { last_by_subj: jobEventSubject(jobId, type) });
      return m.json<Record<string, unknown>>();
    } catch {
      return null;
    }
  }

  /** Jobs, newest first; running ones with their state and queue position (from the workflow's query). */
  async list(query?: string): Promise<{ jobId: string; status: string; state: string | null; position: number | null; agent: string | null; started: Date; closed: Date | null }[]> {
    const rows = [];
    for await (const w of this.client.workflow.list({ query: `WorkflowType = 'fineTune'${query ? ` AND (${query})` : ''}` })) {
      rows.push({ jobId: w.workflowId, status: w.status.name, started: w.startTime, closed: w.closeTime ?? null });
    }
    return Promise.all(rows.map(async (r) => {
      const s = r.status === 'RUNNING' ? await this.client.workflow.getHandle(r.jobId).query(statusQuery).catch(() => null) : null;
      return { ...r, state: s?.state ?? null, position: s?.queuePosition ?? null, agent: s?.agentId ?? null };
    }));
  }

  /** Ask the job to stop: the trainer gets SIGTERM (SIGKILL after the agent's grace), leases and the queue entry are released. */
  async cancel(jobId: string): Promise<void> {
    const handle = this.client.workflow.getHandle(jobId);
    try {
      const d = await handle.describe();
      if (d.status.name !== 'RUNNING') throw new TunefleetError(ErrorCode.FlagInvalid, `job '${jobId}' has already ended (${d.status.name.toLowerCase()})`);
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
    if (!e || e.operation !== 'PUT') throw new TunefleetError(ErrorCode.JobNotFound, `no placement decision recorded for '${jobId}' (not placed yet, or no such job)`);
    return e.json<{ decisions: DecisionRecord[] }>().decisions;
  }

  async result(jobId: string): Promise<JobResult> {
    const handle = this.client.workflow.getHandle(jobId);
    try {
      const d = await handle.describe();
      if (d.status.name === 'RUNNING') throw new TunefleetError(ErrorCode.JobNotFound, `job '${jobId}' is still running ('tunefleet status ${jobId}')`);
      return (await handle.result()) as JobResult;
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new TunefleetError(ErrorCode.JobNotFound, `no job '${jobId}'`);
      if (e instanceof TunefleetError) throw e;
      throw new TunefleetError(ErrorCode.TrainerFailed, `job '${jobId}' did not succeed: ${failureMessage(e)}`);
    }
  }

  /** Write the registered adapter to `out`, every file checked against its sha256. */
  async download(jobId: string, out: string): Promise<{ dir: string; files: number }> {
    const result = await this.result(jobId);
    const store = await (await this.nats()).objects(ADAPTERS_BUCKET);
    const tmp = `${out}.part`;
    await mkdir(tmp, { recursive: true });
    for (const f of result.adapter.files) {
      const target = join(tmp, f.name);
      if (!target.startsWith(resolve(tmp) + '/') && !target.startsWith(tmp + '/')) throw new TunefleetError(ErrorCode.ChecksumMismatch, `adapter file name '${f.name}' leaves the output directory`);
      await mkdir(dirname(target), { recursive: true });
      await getFile(store, `${result.adapter.prefix}${f.name}`, target, f.sha256);
    }
    await writeFile(join(tmp, 'tunefleet-result.json'), JSON.stringify(result, null, 1));
    if (existsSync(out)) throw new TunefleetError(ErrorCode.FlagInvalid, `${out} already exists; choose another --out`, { field: '--out' });
    await rename(tmp, out);
    return { dir: out, files: result.adapter.files.length };
  }

  /** Every event of a job stored so far, in order (no waiting for new ones). */
  async events(jobId: string, print: (e: Record<string, unknown>) => void): Promise<number> {
    const n = await this.nats();
    const consumer = await n.js.consumers.get(EVENTS_STREAM, { filterSubjects: [jobEventsFilter(jobId)] });
    let count = 0;
    for (;;) {
      const batch = await consumer.fetch({ max_messages: 500, expires: 1000 });
      let got = 0;
      for await (const m of batch) {
        print(m.json<Record<string, unknown>>());
        got += 1;
      }
      count += got;
      if (got === 0) return count;
    }
  }

  /** Print a job's events as they come (from the beginning), until the job ends. */
  async follow(jobId: string, print: (e: Record<string, unknown>) => void): Promise<JobResult> {
    const n = await this.nats();
    const consumer = await n.js.consumers.get(EVENTS_STREAM, { filterSubjects: [jobEventsFilter(jobId)] });
    const messages = await consumer.consume();
    const reading = (async () => {
      for await (const m of messages) print(m.json<Record<string, unknown>>());
    })();
    try {
      return await this.result(jobId).catch(async (e: unknown) => {
        if (e instanceof TunefleetError && e.code === ErrorCode.JobNotFound && /still running/.test(e.message)) {
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

export function failureMessage(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  while (cur instanceof Error) {
    parts.push(cur.message);
    cur = (cur as { cause?: unknown }).cause;
  }
  return [...new Set(parts.filter(Boolean))].join(': ') || String(e);
}
