// Agent activities (task queue agent-<id>): train and evaluate, each running the Python
// trainer on this machine. Built over their dependencies (createAgentActivities) so tests
// can run them against a real NATS and a real trainer on a tiny model.
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { ActivityCancellationDetails } from '@temporalio/common';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ADAPTERS_BUCKET,
  CHECKPOINTS_BUCKET,
  DATASETS_BUCKET,
  ErrorCode,
  attemptErrorClass,
  type AttemptError,
  ID_PATTERN,
  evalOutputsObjectName,
  MODEL_NAME_PATTERN,
  TunefleetError,
  checkpointPrefix,
  jobEventSubject,
  trainedAdapterPrefix,
  type AgentActivities,
  type EvalOutcome,
  type EvaluateRequest,
  type FileEntry,
  type JobSpec,
  type TrainHeartbeat,
  type TrainOutcome,
  type TrainRequest,
  type TrainerEvent,
  type CommitRecord,
  type ProgressUpdate,
} from '../shared';
import { claimEpoch, commitCheckpoint } from './commits';
import { download, persistently, upload, type AgentNats } from './nats';
import { threadEnv } from './priority';
import { runTrainer } from './trainer';
import { Judge, dot } from './judge';
import { runTool } from './tool';

export interface AgentDeps {
  agentId: string;
  nats: AgentNats;
  python: string;
  modelsDir: string;
  /** the exported judge model (loaded at the first evaluation) */
  judgeDir: string;
  workDir: string;
  /** how often the activity heartbeats while the trainer runs */
  heartbeatMs: number;
  /** SIGTERM → SIGKILL grace for the trainer */
  killGraceMs: number;
  /** trainers run this many nice levels below the agent (0: at its priority) */
  trainerNice: number;
  /** CPU threads each trainer may use (OMP_NUM_THREADS) */
  trainerThreads: number;
  sessions: Map<string, Session>;
  /** tell the job's workflow how training goes (throttled by the caller; failures are only logged) */
  signalProgress: (workflowId: string, update: ProgressUpdate) => Promise<void>;
  /** true while an operator drains this agent: no new work starts */
  draining: () => boolean;
  log: (m: string) => void;
}

export interface Session {
  jobId: string;
  attempt: number;
  reservedBytes: number;
  /** ask the trainer to checkpoint and stop (drain) */
  stop?: () => void;
  stopping?: boolean;
}

/** Input errors: the job cannot succeed anywhere, so it fails instead of moving agents. */
/** The trainer's error says the input is wrong: the same job fails on any agent. */
const inputError = (code: string): boolean => attemptErrorClass(code) === 'bad_input';

/** A retryable activity failure typed with a shared attempt-error code (the workflow's failure table reads it). */
function attemptFailure(message: string, code: AttemptError, ...details: unknown[]): ApplicationFailure {
  return ApplicationFailure.retryable(message, code, ...details);
}

/** How often at most a session signals its progress to the workflow. */
const PROGRESS_EVERY_MS = 2_000;

/** Why the server stopped knowing an attempt, for the agent's log. */
function droppedBecause(why: ActivityCancellationDetails | undefined): string {
  if (why?.timedOut) return 'timed out';
  return why?.notFound ? 'not found' : 'worker shutdown';
}

function runConfig(
  spec: JobSpec,
  paths: { model: string; train: string; eval: string; out: string; resume?: string | null; adapter?: string },
  jobId: string,
  memoryBudget: number,
): object {
  return {
    job_id: jobId,
    memory_budget: memoryBudget > 0 ? memoryBudget : null,
    model_path: paths.model,
    train_path: paths.train,
    eval_path: paths.eval,
    output_dir: paths.out,
    method: spec.method,
    resume_from: paths.resume ?? null,
    adapter_path: paths.adapter ?? null,
    lora: {
      r: spec.lora.r,
      alpha: spec.lora.alpha,
      dropout: spec.lora.dropout,
      target_modules: spec.lora.target_modules ?? null,
    },
    prompt: spec.prompt,
    adapter: spec.adapter,
    training: {
      ...spec.training,
      max_steps: spec.training.max_steps ?? null,
      micro_batch_size: spec.training.micro_batch_size ?? null,
      patience: spec.training.patience ?? null,
    },
    // the judge, the tool scorer and the gates run here and in the workflow, not in the trainer
    evaluation: {
      exact_match: spec.evaluation.exact_match,
      max_new_tokens: spec.evaluation.max_new_tokens,
      max_samples: spec.evaluation.max_samples ?? null,
    },
  };
}

export function createAgentActivities(deps: AgentDeps): AgentActivities {
  const { agentId, nats, log } = deps;
  /** the judge, loaded at the first evaluation and kept */
  let judge: Promise<Judge> | null = null;

  function checkJobId(jobId: string): void {
    if (!ID_PATTERN.test(jobId))
      throw ApplicationFailure.nonRetryable(
        `job id ${JSON.stringify(jobId)} is not a job id (it becomes a directory name here)`,
        ErrorCode.SpecInvalid,
      );
  }

  function modelDir(spec: JobSpec): string {
    // the request came through Temporal, not through the CLI's checks: names become paths here
    if (!MODEL_NAME_PATTERN.test(spec.model))
      throw ApplicationFailure.nonRetryable(
        `model name ${JSON.stringify(spec.model)} is not a model name`,
        ErrorCode.SpecInvalid,
      );
    const dir = join(deps.modelsDir, spec.model);
    if (existsSync(dir) && lstatSync(dir).isSymbolicLink()) {
      throw ApplicationFailure.nonRetryable(
        `base model ${spec.model} on agent ${agentId} is a symlink (${dir}); ` +
          "models are loaded only from the agent's models directory",
        ErrorCode.SpecInvalid,
      );
    }
    if (!existsSync(join(dir, 'config.json'))) {
      throw ApplicationFailure.nonRetryable(
        `base model ${spec.model} is not on agent ${agentId} (${dir})`,
        ErrorCode.ModelMissing,
      );
    }
    return dir;
  }

  /** Publish trainer events to the job's stream, in order, without blocking the reader. */
  function publisher(jobId: string, attempt: number): { publish(e: TrainerEvent): void; flush(): Promise<void> } {
    let chain: Promise<unknown> = Promise.resolve();
    let n = 0;
    return {
      publish(e) {
        const body = JSON.stringify({ ...e, job_id: jobId, attempt, agent_id: agentId });
        // a message id per event: a publish repeated after a lost ack is stored once
        const msgID = `${jobId}/${attempt}/${agentId}/${(n += 1)}`;
        chain = chain
          .then(() =>
            persistently(
              `event publish for ${jobId}`,
              () => nats.js.publish(jobEventSubject(jobId, e.type), body, { msgID }),
              log,
            ),
          )
          .catch((err: unknown) => log(`event publish failed: ${String(err)}`));
      },
      flush: () => chain.then(() => undefined),
    };
  }

  async function fetchCheckpoint(
    jobId: string,
    from: { prefix: string; step: number; manifest_sha256?: string | null },
    dir: string,
  ): Promise<string> {
    const store = await nats.store(CHECKPOINTS_BUCKET);
    const local = join(dir, 'resume', `step-${String(from.step).padStart(8, '0')}`);
    await rm(local, { recursive: true, force: true });
    await mkdir(local, { recursive: true });
    // the manifest is checked against the commit record, every file against the manifest
    await download(store, `${from.prefix}manifest.json`, join(local, 'manifest.json'), from.manifest_sha256 ?? null);
    const manifest = JSON.parse(await readFile(join(local, 'manifest.json'), 'utf8')) as {
      step: number;
      files: FileEntry[];
    };
    for (const f of manifest.files) {
      if (f.name.split('/').some((p) => p === '..' || p === '') || f.name.startsWith('/')) {
        throw new TunefleetError(
          ErrorCode.ChecksumMismatch,
          `checkpoint ${from.prefix}: file name '${f.name}' leaves the checkpoint`,
        );
      }
      await mkdir(join(local, f.name, '..'), { recursive: true });
      await download(store, `${from.prefix}${f.name}`, join(local, f.name), f.sha256);
    }
    log(`${jobId}: fetched checkpoint step ${from.step} (${manifest.files.length} files)`);
    return local;
  }

  async function fetchSplits(
    req: { data: TrainRequest['data'] },
    dir: string,
  ): Promise<{ train: string; eval: string }> {
    const store = await nats.store(DATASETS_BUCKET);
    const train = join(dir, 'train.jsonl');
    const evalPath = join(dir, 'eval.jsonl');
    await download(store, req.data.train_object, train, null);
    await download(store, req.data.eval_object, evalPath, null);
    return { train, eval: evalPath };
  }

  return {
    async train(req: TrainRequest): Promise<TrainOutcome> {
      checkJobId(req.jobId);
      const ctx = Context.current();
      if (deps.draining())
        throw attemptFailure(`agent ${agentId} is draining: place the job elsewhere`, 'AGENT_DRAINING', {
          checkpoint: req.resumeFrom,
        });
      const started = Date.now();
      const key = `${req.jobId}#${req.attempt}`;
      const workflowId = ctx.info.workflowExecution?.workflowId ?? req.jobId;
      const session: Session = { jobId: req.jobId, attempt: req.attempt, reservedBytes: req.reservedBytes };
      deps.sessions.set(key, session);
      const hb: TrainHeartbeat = {
        step: req.resumeFrom?.step ?? 0,
        stepsTotal: 0,
        loss: null,
        checkpoint: req.resumeFrom,
      };
      // while we set up (downloads, model load) a timer heartbeats; once the trainer steps, only progress does
      const setupBeat = setInterval(() => ctx.heartbeat(hb), deps.heartbeatMs);
      try {
        return await trainSession(req, ctx, session, hb, setupBeat, workflowId, started);
      } finally {
        clearInterval(setupBeat);
        deps.sessions.delete(key);
      }
    },

    async evaluate(req: EvaluateRequest): Promise<EvalOutcome> {
      checkJobId(req.jobId);
      return evaluateSession(req);
    },
  };

  async function trainSession(
    req: TrainRequest,
    ctx: Context,
    session: Session,
    hb: TrainHeartbeat,
    setupBeat: NodeJS.Timeout,
    workflowId: string,
    started: number,
  ): Promise<TrainOutcome> {
    // this attempt is the job's epoch from now on: an older attempt's commits will be refused
    const commits = await nats.commits();
    let claim: CommitRecord;
    try {
      claim = await claimEpoch(commits, req.jobId, req.attempt, agentId);
    } catch (e) {
      if (e instanceof TunefleetError && e.code === ErrorCode.Fenced) throw attemptFailure(e.message, 'FENCED');
      throw e;
    }
    // the commit record is the truth about the newest checkpoint (the workflow's is a hint);
    // a damaged or missing one is skipped for the one committed before it
    const candidates: { prefix: string; step: number; manifest_sha256?: string | null }[] = claim.prefix
      ? [{ prefix: claim.prefix, step: claim.step, manifest_sha256: claim.manifest_sha256 }, ...(claim.previous ?? [])]
      : req.resumeFrom
        ? [req.resumeFrom]
        : [];
    const dir = join(deps.workDir, 'jobs', req.jobId, `attempt-${req.attempt}`);
    await mkdir(dir, { recursive: true });
    const model = modelDir(req.spec);
    const splits = await fetchSplits(req, dir);
    let resume: string | null = null;
    let from: { prefix: string; step: number } | null = null;
    for (const c of candidates) {
      try {
        resume = await fetchCheckpoint(req.jobId, c, dir);
        from = { prefix: c.prefix, step: c.step };
        break;
      } catch (e) {
        if (
          !(e instanceof TunefleetError) ||
          (e.code !== ErrorCode.ChecksumMismatch && e.code !== ErrorCode.ObjectMissing)
        )
          throw e;
        log(`${req.jobId}: checkpoint step ${c.step} is unusable (${e.message}); trying the one before it`);
      }
    }
    if (candidates.length > 0 && !resume)
      log(`${req.jobId}: no committed checkpoint is usable; training starts from step 0`);
    hb.step = from?.step ?? 0;
    hb.checkpoint = from;
    const configPath = join(dir, 'run.json');
    await writeFile(
      configPath,
      JSON.stringify(
        runConfig(req.spec, { model, ...splits, out: join(dir, 'out'), resume }, req.jobId, req.reservedBytes),
        null,
        1,
      ),
    );

    const events = publisher(req.jobId, req.attempt);
    const store = await nats.store(CHECKPOINTS_BUCKET);
    let uploads: Promise<void> = Promise.resolve();
    let uploadError: unknown = null;
    let started_: Extract<TrainerEvent, { type: 'started' }> | null = null;
    let finished: Extract<TrainerEvent, { type: 'finished' }> | null = null;
    let failure: Extract<TrainerEvent, { type: 'error' }> | null = null;
    let oom: Extract<TrainerEvent, { type: 'oom' }> | null = null;
    let fenced: string | null = null;
    let stuck: string | null = null;
    let lastEventAt = Date.now();
    let lastSignal = 0;
    const progress = (force: boolean): void => {
      if (!force && Date.now() - lastSignal < PROGRESS_EVERY_MS) return;
      lastSignal = Date.now();
      deps
        .signalProgress(workflowId, {
          attempt: req.attempt,
          step: hb.step,
          stepsTotal: hb.stepsTotal,
          loss: hb.loss,
          checkpoint: hb.checkpoint,
        })
        .catch((err: unknown) => log(`${req.jobId}: progress signal failed: ${String(err)}`));
    };

    const proc = runTrainer({
      python: deps.python,
      priority: { nice: deps.trainerNice },
      env: threadEnv(deps.trainerThreads),
      command: 'train',
      configPath,
      logPath: join(dir, 'trainer.log'),
      onInvalid: (e) => log(`${req.jobId}: ${e.describe()}`),
      onEvent: (e) => {
        events.publish(e);
        lastEventAt = Date.now();
        if (e.type === 'started') {
          started_ = e;
          hb.stepsTotal = e.steps_total;
          clearInterval(setupBeat);
          ctx.heartbeat(hb);
        } else if (e.type === 'step') {
          // the heartbeat goes out when the step advances: a hung trainer stops it, and the workflow re-places
          hb.step = e.step;
          hb.loss = e.loss;
          ctx.heartbeat(hb);
          progress(false);
        } else if (e.type === 'checkpoint') {
          // upload files first, manifest last, then commit with compare-and-set on the job's epoch
          const prefix = checkpointPrefix(req.jobId, req.attempt, e.step);
          uploads = uploads
            .then(async () => {
              if (fenced) return;
              for (const f of [...e.files.map((x) => x.name), 'manifest.json']) {
                await persistently(`upload ${prefix}${f}`, () => upload(store, `${prefix}${f}`, join(e.path, f)), log);
              }
              const manifestSha = createHash('sha256')
                .update(await readFile(join(e.path, 'manifest.json')))
                .digest('hex');
              // repeating a commit that landed answers 'duplicate': safe to retry through a NATS restart
              const commit = {
                epoch: req.attempt,
                step: e.step,
                prefix,
                manifest_sha256: manifestSha,
                agent_id: agentId,
              };
              const outcome = await persistently(
                `commit step ${e.step}`,
                () => commitCheckpoint(commits, req.jobId, commit),
                log,
              );
              if (outcome === 'fenced') {
                fenced = `checkpoint step ${e.step} refused: a newer attempt owns ${req.jobId}`;
                log(`${req.jobId} attempt ${req.attempt}: ${fenced}; killing the trainer`);
                proc.kill();
                return;
              }
              hb.checkpoint = { prefix, step: e.step };
              ctx.heartbeat(hb);
              progress(true);
            })
            .catch((err: unknown) => {
              uploadError ??= err;
            });
        } else if (e.type === 'finished') finished = e;
        else if (e.type === 'error') failure = e;
        else if (e.type === 'oom') oom = e;
        else if (started_) ctx.heartbeat(hb); // evaluation progress and other signs of life between steps
      },
    });
    session.stop = () => {
      session.stopping = true;
      proc.interrupt(deps.killGraceMs);
    };
    // cancelled by the job's owner: checkpoint and stop (SIGTERM, SIGKILL after the grace);
    // the server no longer knows this attempt (timed out, lost): it is a zombie, kill at once
    const onCancel = (): void => {
      const why = ctx.cancellationDetails;
      if (why?.cancelRequested) proc.interrupt(deps.killGraceMs);
      else {
        log(
          `${req.jobId} attempt ${req.attempt}: the server dropped this attempt (${droppedBecause(why)}); ` +
            'killing the trainer',
        );
        proc.kill();
      }
    };
    ctx.cancellationSignal.addEventListener('abort', onCancel);
    // progress watchdog: a trainer alive but silent for the heartbeat timeout has hung (the server
    // gives up on the attempt then too, but this agent would not hear of it without a heartbeat)
    const limit = ctx.info.heartbeatTimeoutMs ?? 0;
    const watchdog =
      limit > 0
        ? setInterval(
            () => {
              if (!started_ || finished || stuck || Date.now() - lastEventAt <= limit) return;
              const silentS = Math.round((Date.now() - lastEventAt) / 1000);
              stuck = `no progress from the trainer for ${silentS} s (step ${hb.step})`;
              log(`${req.jobId} attempt ${req.attempt}: ${stuck}; killing it`);
              proc.kill();
            },
            Math.min(1000, limit / 4),
          )
        : null;
    let exit: { code: number | null; signal: NodeJS.Signals | null };
    try {
      exit = await proc.exited;
      if (watchdog) clearInterval(watchdog);
      // the adapter upload after training has no steps to heartbeat on
      const tail = setInterval(() => ctx.heartbeat(hb), deps.heartbeatMs);
      try {
        await uploads;
        await events.flush();
      } finally {
        clearInterval(tail);
      }
    } finally {
      ctx.cancellationSignal.removeEventListener('abort', onCancel);
    }
    if (watchdog) clearInterval(watchdog);
    if (fenced) throw attemptFailure(fenced, 'FENCED');
    if (stuck) throw attemptFailure(stuck, 'TRAINER_STUCK', { checkpoint: hb.checkpoint });
    if (uploadError)
      throw attemptFailure(`checkpoint upload failed: ${String(uploadError)}`, 'CHECKPOINT_UPLOAD_FAILED', {
        checkpoint: hb.checkpoint,
      });
    if (ctx.cancellationSignal.aborted) throw new CancelledFailure('train cancelled; trainer checkpointed and stopped');
    const fin = finished as Extract<TrainerEvent, { type: 'finished' }> | null;
    const err = failure as Extract<TrainerEvent, { type: 'error' }> | null;
    if (exit.code === 0 && fin && (fin.stopped === 'completed' || fin.stopped === 'early')) {
      const prefix = trainedAdapterPrefix(req.jobId, req.attempt);
      const beat = setInterval(() => ctx.heartbeat(hb), deps.heartbeatMs);
      try {
        for (const f of fin.adapter_files)
          await persistently(
            `upload ${prefix}${f.name}`,
            () => upload(store, `${prefix}${f.name}`, join(fin.adapter_path, f.name)),
            log,
          );
      } finally {
        clearInterval(beat);
      }
      const s = started_ as Extract<TrainerEvent, { type: 'started' }> | null;
      return {
        attempt: req.attempt,
        agentId,
        steps: fin.step,
        trainLoss: fin.train_loss,
        trainableParams: s?.trainable_params ?? 0,
        totalParams: s?.total_params ?? 0,
        adapterPrefix: prefix,
        adapterFiles: fin.adapter_files,
        seconds: (Date.now() - started) / 1000,
      };
    }
    if (err && inputError(err.code)) throw ApplicationFailure.nonRetryable(err.message, err.code);
    const o = oom as Extract<TrainerEvent, { type: 'oom' }> | null;
    if (o) {
      throw attemptFailure(
        `out of memory at step ${o.step} with micro-batch ${o.micro_batch_size} x ${o.sequence_length} tokens` +
          (o.memory_total ? ` (${(o.memory_total / 2 ** 30).toFixed(1)} GiB device)` : ''),
        'OOM',
        { checkpoint: hb.checkpoint, oom: o },
      );
    }
    if (session.stopping) {
      throw attemptFailure(
        `agent ${agentId} is draining; checkpointed at step ${hb.checkpoint?.step ?? 0}`,
        'AGENT_DRAINING',
        { checkpoint: hb.checkpoint },
      );
    }
    if (err && attemptErrorClass(err.code) === 'disk_full')
      throw attemptFailure(`agent ${agentId}: ${err.message}`, 'DISK_FULL', {
        checkpoint: hb.checkpoint,
      });
    const why = err
      ? `${err.code}: ${err.message}`
      : fin?.stopped === 'signal'
        ? 'the trainer was stopped by a signal'
        : `the trainer exited with ${exit.code ?? exit.signal}\n${proc.stderrTail()}`;
    throw attemptFailure(why, 'TRAINER_FAILED', { checkpoint: hb.checkpoint });
  }

  /** The judge and the tool scorer over every generation; the generations go to the store for review. */
  async function scoreOutputs(
    req: EvaluateRequest,
    r: Extract<TrainerEvent, { type: 'evaluation' }>,
  ): Promise<EvalOutcome> {
    const rows: { prompt: string; reference: string; base: string; tuned: string }[] = r.outputs_path
      ? (await readFile(r.outputs_path, 'utf8'))
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { prompt: string; reference: string; base: string; tuned: string })
      : r.examples;
    const out: EvalOutcome = {
      base: { ...r.base },
      tuned: { ...r.tuned },
      examples: r.examples,
      judge: null,
      tool: null,
      outputs: null,
    };
    const ev = req.spec.evaluation;
    if (ev.judge !== false) {
      const t0 = Date.now();
      const info = { model: 'all-MiniLM-L6-v2 (ONNX, onnxruntime-node, CPU)', answers: 2 * rows.length };
      if (rows.length === 0)
        out.judge = {
          ...info,
          seconds: 0,
          error: 'no generations to judge (evaluation.exact_match is off, or no eval record has a prompt)',
        };
      else {
        try {
          judge ??= Judge.load(deps.judgeDir).catch((e: unknown) => {
            judge = null;
            throw e;
          });
          const j = await judge;
          const refs = await j.embed(rows.map((x) => x.reference));
          const mean = async (answers: string[]): Promise<number> =>
            (await j.embed(answers)).reduce((s, e, i) => s + dot(e, refs[i] as Float32Array), 0) / answers.length;
          out.base.judge = await mean(rows.map((x) => x.base));
          out.tuned.judge = await mean(rows.map((x) => x.tuned));
          out.judge = { ...info, seconds: (Date.now() - t0) / 1000, error: null };
        } catch (e) {
          out.base.judge = out.tuned.judge = null;
          out.judge = {
            ...info,
            seconds: (Date.now() - t0) / 1000,
            error: e instanceof TunefleetError ? e.message : String(e),
          };
          log(`${req.jobId}: judge: ${out.judge.error}`);
        }
      }
    }
    if (ev.tool) {
      const as = (which: 'base' | 'tuned'): { prompt: string; reference: string; output: string }[] =>
        rows.map((x) => ({ prompt: x.prompt, reference: x.reference, output: x[which] }));
      const base = await runTool(ev.tool.command, ev.tool.timeout_s, as('base'));
      const tuned = await runTool(ev.tool.command, ev.tool.timeout_s, as('tuned'));
      out.tool = { command: ev.tool.command, base, tuned };
      out.base.tool = base.scores;
      out.tuned.tool = tuned.scores;
      for (const [w, t] of [
        ['base', base],
        ['fine-tuned', tuned],
      ] as const)
        if (t.error) log(`${req.jobId}: tool scorer on the ${w} outputs: ${t.error}`);
    }
    if (r.outputs_path && rows.length) {
      const object = evalOutputsObjectName(req.jobId);
      await persistently(
        `upload ${object}`,
        async () => upload(await nats.store(ADAPTERS_BUCKET), object, r.outputs_path as string),
        log,
      );
      out.outputs = { object, records: rows.length };
    }
    return out;
  }

  async function evaluateSession(req: EvaluateRequest): Promise<EvalOutcome> {
    const ctx = Context.current();
    const dir = join(deps.workDir, 'jobs', req.jobId, `eval-${req.attempt}`);
    await rm(dir, { recursive: true, force: true });
    await mkdir(join(dir, 'adapter'), { recursive: true });
    const model = modelDir(req.spec);
    const splits = await fetchSplits(req, dir);
    const store = await nats.store(CHECKPOINTS_BUCKET);
    for (const f of req.adapterFiles)
      await download(store, `${req.adapterPrefix}${f.name}`, join(dir, 'adapter', f.name), f.sha256);
    const configPath = join(dir, 'run.json');
    await writeFile(
      configPath,
      JSON.stringify(
        runConfig(
          req.spec,
          { model, ...splits, out: join(dir, 'out'), adapter: join(dir, 'adapter') },
          req.jobId,
          req.reservedBytes,
        ),
        null,
        1,
      ),
    );
    const key = `${req.jobId}#eval${req.attempt}`;
    deps.sessions.set(key, { jobId: req.jobId, attempt: req.attempt, reservedBytes: req.reservedBytes });
    const events = publisher(req.jobId, req.attempt);
    let result: Extract<TrainerEvent, { type: 'evaluation' }> | null = null;
    let failure: Extract<TrainerEvent, { type: 'error' }> | null = null;
    const proc = runTrainer({
      python: deps.python,
      priority: { nice: deps.trainerNice },
      env: threadEnv(deps.trainerThreads),
      command: 'evaluate',
      configPath,
      logPath: join(dir, 'trainer.log'),
      onInvalid: (e) => log(`${req.jobId}: ${e.describe()}`),
      onEvent: (e) => {
        events.publish(e);
        if (e.type === 'evaluation') result = e;
        if (e.type === 'error') failure = e;
      },
    });
    const beat = setInterval(() => ctx.heartbeat(), deps.heartbeatMs);
    const onCancel = (): void => proc.interrupt(deps.killGraceMs);
    ctx.cancellationSignal.addEventListener('abort', onCancel);
    let exit: { code: number | null };
    try {
      exit = await proc.exited;
      await events.flush();
      const r = result as Extract<TrainerEvent, { type: 'evaluation' }> | null;
      if (exit.code === 0 && r) return await scoreOutputs(req, r);
    } finally {
      clearInterval(beat);
      ctx.cancellationSignal.removeEventListener('abort', onCancel);
      deps.sessions.delete(key);
    }
    const err = failure as Extract<TrainerEvent, { type: 'error' }> | null;
    if (err && inputError(err.code)) throw ApplicationFailure.nonRetryable(err.message, err.code);
    throw attemptFailure(
      err ? `${err.code}: ${err.message}` : `evaluation exited with ${exit.code}\n${proc.stderrTail()}`,
      'TRAINER_FAILED',
    );
  }
}
