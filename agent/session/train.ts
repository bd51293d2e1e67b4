// One training attempt on this agent, from the epoch claim to the uploaded adapter. The
// session owns what it learns from the trainer's events (typed fields, no casts) and
// turns the way the trainer ended into the outcome or a failure from the shared table.
import { CancelledFailure, type Context } from '@temporalio/activity';
import { mkdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Commits } from '../commits';
import { persistently } from '../nats';
import {
  ErrorCode,
  TunefleetError,
  attemptErrorClass,
  trainedAdapterPrefix,
  trainedLogsPrefix,
  type TrainHeartbeat,
  type TrainOutcome,
  TRAINER_PROTOCOL_VERSION,
  type GangRequest,
  type Rendezvous,
  type TrainRequest,
  type TrainerEvent,
} from '../../shared';
import type { TrainerRun } from '../trainer';
import { heartbeating, startTrainer, sessionDir, type AgentDeps, type Session } from './deps';
import { attemptFailure, droppedBecause, inputFailure, oomFailure, type TrainerErrorEvent } from './failures';
import { modelDigest } from '../../shared/modeldigest';
import { modelDir, writeRunConfig } from './inputs';
import { EventPublisher } from './publish';
import {
  fetchFiles,
  fetchNewestCheckpoint,
  fetchSplits,
  uploadCheckpoint,
  uploadFiles,
  type CheckpointRef,
} from './transfer';

type Of<T extends TrainerEvent['type']> = Extract<TrainerEvent, { type: T }>;
type Exit = { code: number | null; signal: NodeJS.Signals | null };

/** How often at most a session signals its progress to the workflow. */
const PROGRESS_EVERY_MS = 2_000;
/** how many recent steps the watchdog measures the pace by, and how many times the slowest of them is silence */
const RECENT_STEPS = 20;
const SLOW_STEP_FACTOR = 3;
/**
 * The least silence the watchdog calls a hang (s). A trainer sharing a busy machine's cores can take several times its
 * usual step for a while (measured: a 3.2 s step took over 11 s while a compiler ran beside it on 2 cores); killing it
 * then loses up to a checkpoint interval and can repeat until the job gives up. A dead agent is still found within
 * the heartbeat timeout: the agent heartbeats on its own timer.
 */
export const WATCHDOG_MIN_S = 30;
/** The longest a trainer may take from 'started' to its first step (s): one-time warm-up, compiling the layers. */
const FIRST_STEP_MAX_S = 900;

/**
 * A gang's rank 0 listens on the port the placement chose (torchrun's store, on every interface): one already taken
 * fails the attempt with a clear error before the trainer starts, and the gang is placed again (another port).
 */
async function rendezvousPortFree(r: Rendezvous, agentId: string): Promise<void> {
  const taken = await new Promise<string | null>((resolve) => {
    const s = createServer();
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    s.listen({ port: r.port, exclusive: true }, () => s.close(() => resolve(null)));
  });
  if (taken)
    throw attemptFailure(
      `rendezvous port ${r.port} on ${agentId} (${r.address}) cannot be opened (${taken}): another process holds ` +
        'it; give the agent a port range nothing else uses (--rendezvous-ports)',
      'RENDEZVOUS_PORT_TAKEN',
    );
}

/** What `watch` shows of a gang once rank 0 has started: every member by rank, and where they met. */
function gangLine(g: GangRequest, time: number): TrainerEvent {
  const members = g.members
    .slice()
    .sort((a, b) => a.rank - b.rank)
    .map((m) => `rank ${m.rank} ${m.agentId}`);
  return {
    v: TRAINER_PROTOCOL_VERSION,
    type: 'log',
    time,
    level: 'info',
    message: `gang of ${g.nodes}: ${members.join(', ')} (rendezvous ${g.rendezvous.address}:${g.rendezvous.port})`,
  };
}

export class TrainSession {
  private readonly t0 = Date.now();
  private readonly hb: TrainHeartbeat;
  private readonly events: EventPublisher;
  // what the trainer said
  private started: Of<'started'> | null = null;
  /** a step event came: the warm-up is over, and silence now means a hang */
  private stepped = false;
  private finished: Of<'finished'> | null = null;
  private paused: Of<'paused'> | null = null;
  private failure: TrainerErrorEvent | null = null;
  private oom: Of<'oom'> | null = null;
  private lastEventAt = Date.now();
  // what this agent decided about it
  private fenced: string | null = null;
  private stuck: string | null = null;
  private uploads: Promise<void> = Promise.resolve();
  /** the base model's digest (shared/modeldigest.ts), computed beside the training */
  private baseDigest: Promise<string | null> = Promise.resolve(null);
  private uploadError: unknown = null;
  private lastSignal = 0;
  private beat: NodeJS.Timeout | null = null;
  /** when the last step event came, and how long the recent steps took (ms; the watchdog's measure of pace) */
  private lastStepAt = 0;
  private recentStepsMs: number[] = [];
  private proc: TrainerRun | null = null;
  /** rank 0 of a gang, or a single-host job: this session speaks for the job (events, progress, commits) */
  private readonly speaks: boolean;

  constructor(
    private readonly deps: AgentDeps,
    private readonly req: TrainRequest,
    private readonly ctx: Context,
    private readonly session: Session,
  ) {
    this.hb = {
      step: req.resumeFrom?.step ?? 0,
      stepsTotal: 0,
      loss: null,
      checkpoint: req.resumeFrom,
      // read when the heartbeat's details are serialized: the time of the heartbeat itself
      get at() {
        return Date.now();
      },
    };
    this.speaks = (req.gang?.rank ?? 0) === 0;
    this.events = new EventPublisher(deps.nats, req.jobId, req.attempt, deps.agentId, deps.log);
  }

  async run(): Promise<TrainOutcome> {
    // a timer heartbeats for the whole session: Temporal's heartbeat timeout detects a dead or frozen agent. A
    // trainer that stops making progress is this agent's to detect (the watchdog), measured against the trainer's
    // own pace: a step on a busy CPU may take longer than the heartbeat timeout without anything being wrong
    this.beat = setInterval(() => this.ctx.heartbeat(this.hb), this.deps.heartbeatMs);
    try {
      const commits = this.deps.nats.commits;
      const configPath = await this.prepare(commits);
      const exit = await this.supervise(configPath, commits);
      return await this.outcome(exit);
    } finally {
      this.stopBeat();
      this.deps.metrics?.ended(this.req.jobId, this.req.attempt);
    }
  }

  /** Claim the epoch, fetch the splits and the newest usable checkpoint, write run.json. */
  private async prepare(commits: Commits): Promise<string> {
    const { req, deps } = this;
    // this attempt is the job's epoch from now on: an older attempt's commits will be refused
    let claim;
    try {
      // safe to repeat (a claim of the epoch it holds answers the same record): a NATS blip is ridden out
      claim = await persistently(
        `claim ${req.jobId} attempt ${req.attempt}`,
        () => commits.claim(req.jobId, req.attempt),
        deps.log,
        30_000,
        (e) => !(e instanceof TunefleetError && e.code === ErrorCode.Fenced),
      );
    } catch (e) {
      if (e instanceof TunefleetError && e.code === ErrorCode.Fenced) throw attemptFailure(e.message, 'FENCED');
      throw e;
    }
    // the commit record is the truth about the newest checkpoint (the workflow's is a hint)
    const candidates: CheckpointRef[] = claim.prefix
      ? [{ prefix: claim.prefix, step: claim.step, manifest_sha256: claim.manifest_sha256 }, ...(claim.previous ?? [])]
      : req.resumeFrom
        ? [req.resumeFrom]
        : [];
    const dir = sessionDir(deps, req.jobId, `attempt-${req.attempt}`);
    await mkdir(dir, { recursive: true });
    const model = modelDir(req.spec, deps.modelsDir, deps.agentId);
    // hashed while the trainer runs (once per model and agent), recorded with the adapter
    if (this.speaks) this.baseDigest = modelDigest(model);
    const splits = await fetchSplits(deps.nats, req.data, dir);
    const resume = await fetchNewestCheckpoint(deps.nats, req.jobId, candidates, dir, deps.log);
    this.hb.step = resume?.from.step ?? 0;
    this.hb.checkpoint = resume?.from ?? null;
    if (req.gang?.rank === 0) await rendezvousPortFree(req.gang.rendezvous, deps.agentId);
    // a job continued from a registered adapter starts from its files; a resume loads them too, for the adapter's
    // configuration (its rank and targets, which the checkpoint's weights have), then the checkpoint over them
    const parent = req.data.parent;
    const initAdapter = parent ? join(dir, 'init-adapter') : null;
    if (parent?.baseSha256) {
      // the adapter's deltas fit only the weights it was trained on: a different file under the same name is refused
      const have = await (this.speaks ? this.baseDigest : modelDigest(model));
      if (have !== parent.baseSha256)
        throw attemptFailure(
          `the base model ${req.spec.model} on agent ${deps.agentId} is not the one ${parent.job}'s adapter was ` +
            `trained on: its weights' sha256 is ${have ?? 'unreadable'}, the record's ${parent.baseSha256}`,
          'MODEL_MISSING',
        );
    }
    if (parent && initAdapter) {
      await rm(initAdapter, { recursive: true, force: true });
      await fetchFiles(deps.nats, parent.bucket, parent.prefix, parent.files, initAdapter);
    }
    const paths = {
      model,
      ...splits,
      out: join(dir, 'out'),
      resume: resume?.path ?? null,
      initAdapter,
      pauseAt: req.pauseAt ?? null,
    };
    return writeRunConfig(dir, req.spec, paths, req.jobId, req.reservedBytes);
  }

  /** Run the trainer to its end: heartbeats, checkpoints, cancellation, drain, the progress watchdog. */
  private async supervise(configPath: string, commits: Commits): Promise<Exit> {
    const { req, deps, ctx } = this;
    const dir = join(configPath, '..');
    const proc = startTrainer(deps, 'train', this.session, configPath, dir, (e) => this.onEvent(e, commits), req.gang);
    this.proc = proc;
    this.session.stop = () => {
      this.session.stopping = true;
      proc.interrupt(deps.killGraceMs);
    };
    // cancelled by the job's owner: checkpoint and stop (SIGTERM, SIGKILL after the grace);
    // the server no longer knows this attempt (timed out, lost): it is a zombie, kill at once
    // a gang member is killed at once either way: its peers may be gone, and a checkpoint needs them all (the last
    // commit stands)
    const onCancel = (): void => {
      const why = ctx.cancellationDetails;
      if (req.gang && why?.cancelRequested) {
        deps.log(`${req.jobId} attempt ${req.attempt}: gang rank ${req.gang.rank} stopped by the workflow; killing`);
        return proc.kill();
      }
      if (why?.cancelRequested) return proc.interrupt(deps.killGraceMs);
      deps.log(
        `${req.jobId} attempt ${req.attempt}: the server dropped this attempt (${droppedBecause(why)}); ` +
          'killing the trainer',
      );
      proc.kill();
    };
    ctx.cancellationSignal.addEventListener('abort', onCancel);
    const watchdog = this.watchdog(proc);
    try {
      const exit = await proc.exited;
      if (watchdog) clearInterval(watchdog);
      // the uploads after training have no steps to heartbeat on
      await heartbeating(this.ctx, this.hb, this.deps.heartbeatMs, async () => {
        await this.uploads;
        await this.events.flush();
      });
      return exit;
    } finally {
      if (watchdog) clearInterval(watchdog);
      ctx.cancellationSignal.removeEventListener('abort', onCancel);
    }
  }

  private onEvent(e: TrainerEvent, commits: Commits): void {
    const { ctx, hb } = this;
    // a gang's other ranks report their own steps to their own heartbeat only: rank 0 speaks for the job
    if (this.speaks) this.events.publish(e);
    this.lastEventAt = Date.now();
    switch (e.type) {
      case 'started':
        this.started = e;
        hb.stepsTotal = e.steps_total;
        ctx.heartbeat(hb);
        if (this.speaks && this.req.gang) this.events.publish(gangLine(this.req.gang, e.time));
        return;
      case 'step':
        // a heartbeat with the new step at once (besides the timer's): the workflow's view of progress
        this.stepped = true;
        this.stepTook(Date.now());
        hb.step = e.step;
        hb.loss = e.loss;
        ctx.heartbeat(hb);
        this.deps.metrics?.stepped(this.req.jobId, this.req.attempt, e);
        this.signalProgress(false);
        return;
      case 'checkpoint':
        this.uploads = this.uploads
          .then(() => this.commitCheckpoint(e, commits))
          .catch((err: unknown) => {
            this.uploadError ??= err;
          });
        return;
      case 'finished':
        this.finished = e;
        return;
      case 'paused':
        this.paused = e;
        return;
      case 'error':
        this.failure = e;
        return;
      case 'oom':
        this.oom = e;
        return;
      default:
        if (this.started) ctx.heartbeat(hb); // evaluation progress and other signs of life between steps
    }
  }

  /** Upload files first, manifest last, then commit with compare-and-set on the job's epoch. */
  private async commitCheckpoint(e: Of<'checkpoint'>, commits: Commits): Promise<void> {
    if (this.fenced) return;
    const { req, deps } = this;
    const c = {
      jobId: req.jobId,
      attempt: req.attempt,
      step: e.step,
      path: e.path,
      files: e.files,
    };
    const r = await uploadCheckpoint(deps.nats, commits, c, deps.log);
    if (r.outcome === 'fenced') {
      this.fenced = `checkpoint step ${e.step} refused: a newer attempt owns ${req.jobId}`;
      deps.log(`${req.jobId} attempt ${req.attempt}: ${this.fenced}; killing the trainer`);
      this.proc?.kill();
      return;
    }
    this.hb.checkpoint = { prefix: r.prefix, step: e.step, manifest_sha256: r.manifest_sha256 };
    this.ctx.heartbeat(this.hb);
    this.signalProgress(true);
  }

  /** Tell the workflow how far training is (at most every PROGRESS_EVERY_MS unless forced). */
  private signalProgress(force: boolean): void {
    if (!this.speaks) return;
    if (!force && Date.now() - this.lastSignal < PROGRESS_EVERY_MS) return;
    this.lastSignal = Date.now();
    const { hb, req } = this;
    const update = {
      attempt: req.attempt,
      step: hb.step,
      stepsTotal: hb.stepsTotal,
      loss: hb.loss,
      checkpoint: hb.checkpoint,
    };
    this.deps
      .signalProgress(this.ctx.info.workflowExecution?.workflowId ?? req.jobId, update)
      .catch((err: unknown) => this.deps.log(`${req.jobId}: progress signal failed: ${String(err)}`));
  }

  /**
   * A trainer alive but silent has hung: kill it. Silent means: no event for the longest of the heartbeat timeout,
   * WATCHDOG_MIN_S and SLOW_STEP_FACTOR times its slowest recent step; before its first step (one-time warm-up,
   * such as compiling the layers on CUDA), for FIRST_STEP_MAX_S.
   */
  private watchdog(proc: TrainerRun): NodeJS.Timeout | null {
    const limit = this.ctx.info.heartbeatTimeoutMs ?? 0;
    if (limit <= 0) return null;
    const check = (): void => {
      const slowest = Math.max(0, ...this.recentStepsMs);
      const allowed = this.stepped
        ? Math.max(limit, WATCHDOG_MIN_S * 1000, SLOW_STEP_FACTOR * slowest)
        : Math.max(limit, FIRST_STEP_MAX_S * 1000);
      if (!this.started || this.finished || this.stuck || Date.now() - this.lastEventAt <= allowed) return;
      const silentS = Math.round((Date.now() - this.lastEventAt) / 1000);
      this.stuck =
        `no progress from the trainer for ${silentS} s (step ${this.hb.step}; ` +
        `its slowest recent step took ${(slowest / 1000).toFixed(1)} s)`;
      this.deps.log(`${this.req.jobId} attempt ${this.req.attempt}: ${this.stuck}; killing it`);
      proc.kill();
    };
    return setInterval(check, Math.min(1000, limit / 4));
  }

  /** The attempt's result, or the failure that says how it ended (the order matters: see the failure table). */
  private async outcome(exit: Exit): Promise<TrainOutcome> {
    const { req, deps, hb, finished: fin, failure: err } = this;
    const checkpoint = { checkpoint: hb.checkpoint };
    if (this.fenced) throw attemptFailure(this.fenced, 'FENCED');
    if (this.stuck) throw attemptFailure(this.stuck, 'TRAINER_STUCK', checkpoint);
    if (this.uploadError)
      throw attemptFailure(
        `checkpoint upload failed: ${String(this.uploadError)}`,
        'CHECKPOINT_UPLOAD_FAILED',
        checkpoint,
      );
    if (this.ctx.cancellationSignal.aborted)
      throw new CancelledFailure(
        req.gang ? 'gang member stopped' : 'train cancelled; trainer checkpointed and stopped',
      );
    // a gang rank other than 0 trained its share; rank 0 exports the adapter and reports the result
    // (a drain of this member stopped every rank at a step they agreed on: that is the drain's failure, below)
    if (exit.code === 0 && !this.speaks && !err && !this.session.stopping)
      return this.trained(hb.step, hb.loss, '', []);
    // a sweep trial at its rung: checkpointed (committed above) and evaluated; no adapter yet
    const paused = this.paused;
    if (exit.code === 0 && paused && !this.session.stopping) {
      if (!hb.checkpoint || hb.checkpoint.step !== paused.step)
        throw attemptFailure(`paused at step ${paused.step} without its checkpoint committed`, 'TRAINER_FAILED');
      return {
        ...this.trained(paused.step, hb.loss, '', []),
        paused: { step: paused.step, evalLoss: paused.eval_loss, checkpoint: hb.checkpoint },
      };
    }
    if (exit.code === 0 && fin && (fin.stopped === 'completed' || fin.stopped === 'early')) {
      const prefix = trainedAdapterPrefix(req.jobId, req.attempt);
      const names = fin.adapter_files.map((f) => f.name);
      const logs = fin.logs_path && fin.log_files.length ? { prefix: trainedLogsPrefix(req.jobId, req.attempt) } : null;
      await heartbeating(this.ctx, this.hb, this.deps.heartbeatMs, async () => {
        await uploadFiles(deps.nats, prefix, fin.adapter_path, names, deps.log);
        if (logs && fin.logs_path) {
          const logNames = fin.log_files.map((f) => f.name);
          await uploadFiles(deps.nats, logs.prefix, fin.logs_path, logNames, deps.log);
        }
      });
      const out = {
        ...this.trained(fin.step, fin.train_loss, prefix, fin.adapter_files),
        ...(this.started?.versions ? { versions: this.started.versions } : {}),
        baseSha256: await this.baseDigest,
      };
      return logs ? { ...out, logPrefix: logs.prefix, logFiles: fin.log_files } : out;
    }
    const bad = inputFailure(err);
    if (bad) throw bad;
    if (this.oom) throw oomFailure(this.oom, hb.checkpoint);
    if (this.session.stopping)
      throw attemptFailure(
        `agent ${deps.agentId} is draining; checkpointed at step ${hb.checkpoint?.step ?? 0}`,
        'AGENT_DRAINING',
        checkpoint,
      );
    if (err && attemptErrorClass(err.code) === 'disk_full')
      throw attemptFailure(`agent ${deps.agentId}: ${err.message}`, 'DISK_FULL', checkpoint);
    throw attemptFailure(this.why(exit), 'TRAINER_FAILED', checkpoint);
  }

  private trained(
    steps: number,
    trainLoss: TrainOutcome['trainLoss'],
    adapterPrefix: string,
    adapterFiles: TrainOutcome['adapterFiles'],
  ): TrainOutcome {
    return {
      attempt: this.req.attempt,
      agentId: this.deps.agentId,
      steps,
      trainLoss,
      trainableParams: this.started?.trainable_params ?? 0,
      totalParams: this.started?.total_params ?? 0,
      adapterPrefix,
      adapterFiles,
      seconds: (Date.now() - this.t0) / 1000,
    };
  }

  private why(exit: Exit): string {
    if (this.failure) return `${this.failure.code}: ${this.failure.message}`;
    if (this.finished?.stopped === 'signal') return 'the trainer was stopped by a signal';
    return `the trainer exited with ${exit.code ?? exit.signal}\n${this.proc?.stderrTail() ?? ''}`;
  }

  private stopBeat(): void {
    if (this.beat) clearInterval(this.beat);
    this.beat = null;
  }

  private stepTook(now: number): void {
    if (this.lastStepAt > 0) {
      this.recentStepsMs.push(now - this.lastStepAt);
      if (this.recentStepsMs.length > RECENT_STEPS) this.recentStepsMs.shift();
    }
    this.lastStepAt = now;
  }
}
