// Reading a job's events from the events stream: the newest of a type, all stored so far,
// or following them until the job ends; the loss curve is built from them.
import {
  ErrorCode,
  EVENTS_STREAM,
  TunefleetError,
  jobEventSubject,
  jobEventsFilter,
  parseJobEvent,
  type JobEvent,
  type JobEventOf,
  type JobResult,
  type TrainerEventType,
} from '../../../shared';
import type { LossCurve } from '../format';
import { failureMessage } from '../messages';
import type { JobClient } from './jobs';

type Print = (e: JobEvent) => void;
type Warn = (msg: string) => void;

const stderrWarn: Warn = (msg) => void process.stderr.write(`warning: ${msg}\n`);

export class JobEvents {
  constructor(private readonly jobs: JobClient) {}

  /** The newest stored event of `type` for the job, or null. */
  async last<T extends TrainerEventType>(jobId: string, type: T): Promise<JobEventOf<T> | null> {
    const jsm = await (await this.jobs.nats()).nc.jetstreamManager();
    try {
      const m = await jsm.streams.getMessage(EVENTS_STREAM, { last_by_subj: jobEventSubject(jobId, type) });
      const e = parseJobEvent(m.data, jobId);
      return e.ok && e.event.type === type ? (e.event as JobEventOf<T>) : null;
    } catch {
      return null;
    }
  }

  /** Every event of a job stored so far, in order (no waiting for new ones); returns how many were read. */
  async read(jobId: string, print: Print, warn = stderrWarn): Promise<number> {
    const n = await this.jobs.nats();
    const consumer = await n.js.consumers.get(EVENTS_STREAM, { filterSubjects: [jobEventsFilter(jobId)] });
    let count = 0;
    for (;;) {
      const batch = await consumer.fetch({ max_messages: 500, expires: 1000 });
      let got = 0;
      for await (const m of batch) {
        deliver(m.data, m.subject, m.seq, jobId, print, warn);
        got += 1;
      }
      count += got;
      if (got === 0) return count;
    }
  }

  /** Print a job's events as they come (from the beginning), until the job ends; returns its result. */
  async follow(jobId: string, print: Print, warn = stderrWarn): Promise<JobResult> {
    const n = await this.jobs.nats();
    const consumer = await n.js.consumers.get(EVENTS_STREAM, { filterSubjects: [jobEventsFilter(jobId)] });
    const messages = await consumer.consume();
    const reading = (async () => {
      for await (const m of messages) deliver(m.data, m.subject, m.seq, jobId, print, warn);
    })();
    try {
      return await this.jobs.result(jobId).catch(async (e: unknown) => {
        if (!(e instanceof TunefleetError) || e.code !== ErrorCode.JobRunning) throw e;
        try {
          return (await this.jobs.client.workflow.getHandle(jobId).result()) as JobResult;
        } catch (err) {
          throw new TunefleetError(ErrorCode.TrainerFailed, `job '${jobId}' did not succeed: ${failureMessage(err)}`);
        }
      });
    } finally {
      await new Promise((r) => setTimeout(r, 300)); // let the last events print
      await messages.close();
      await reading.catch(() => {});
    }
  }

  /** Every event of a job from the first, then each new one as it comes, until `signal` aborts. */
  async stream(jobId: string, print: Print, signal: AbortSignal, warn = stderrWarn): Promise<void> {
    if (signal.aborted) return;
    const n = await this.jobs.nats();
    const consumer = await n.js.consumers.get(EVENTS_STREAM, { filterSubjects: [jobEventsFilter(jobId)] });
    const messages = await consumer.consume();
    const stop = (): void => void messages.close();
    signal.addEventListener('abort', stop, { once: true });
    try {
      for await (const m of messages) deliver(m.data, m.subject, m.seq, jobId, print, warn);
    } finally {
      signal.removeEventListener('abort', stop);
    }
  }

  /** Train loss by step (the attempt that ran it last) and eval losses, from the job's events. */
  async lossCurve(jobId: string): Promise<LossCurve> {
    const train = new Map<number, [number, number]>();
    const evals = new Map<number, [number, number]>();
    await this.read(
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
}

function deliver(data: Uint8Array, subject: string, seq: number, jobId: string, print: Print, warn: Warn): void {
  const e = parseJobEvent(data, jobId);
  if (e.ok) print(e.event);
  else warn(`skipped a malformed event on ${subject} (stream seq ${seq}): ${e.message}`);
}
