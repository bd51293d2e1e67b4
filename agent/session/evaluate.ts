// One evaluation on this agent: the base model and the trained adapter over the eval
// split (the trainer generates and computes the metrics), then the judge and the tool
// scorer over the generations (scoring.ts).
import type { Context } from '@temporalio/activity';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CHECKPOINTS_BUCKET, type EvalOutcome, type EvaluateRequest } from '../../shared';
import { heartbeating, sessionDir, startTrainer, type AgentDeps } from './deps';
import { attemptFailure, inputFailure, type TrainerErrorEvent } from './failures';
import { modelDir, writeRunConfig } from './inputs';
import { EventPublisher } from './publish';
import type { EvaluationEvent, Scorer } from './scoring';
import { fetchFiles, fetchSplits } from './transfer';

export async function evaluateSession(
  deps: AgentDeps,
  scorer: Scorer,
  req: EvaluateRequest,
  ctx: Context,
): Promise<EvalOutcome> {
  const dir = sessionDir(deps, req.jobId, `eval-${req.attempt}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, 'adapter'), { recursive: true });
  const model = modelDir(req.spec, deps.modelsDir, deps.agentId);
  const splits = await fetchSplits(deps.nats, req.data, dir);
  await fetchFiles(deps.nats, CHECKPOINTS_BUCKET, req.adapterPrefix, req.adapterFiles, join(dir, 'adapter'));
  const paths = { model, ...splits, out: join(dir, 'out'), adapter: join(dir, 'adapter') };
  const configPath = await writeRunConfig(dir, req.spec, paths, req.jobId, req.reservedBytes);

  const key = `${req.jobId}#eval${req.attempt}`;
  const session = {
    jobId: req.jobId,
    attempt: req.attempt,
    reservedBytes: req.reservedBytes,
    devices: req.devices ?? [],
  };
  deps.sessions.set(key, session);
  const events = new EventPublisher(deps.nats, req.jobId, req.attempt, deps.agentId, deps.log);
  const seen: { result: EvaluationEvent | null; failure: TrainerErrorEvent | null } = { result: null, failure: null };
  const proc = startTrainer(deps, 'evaluate', session, configPath, dir, (e) => {
    events.publish(e);
    if (e.type === 'evaluation') seen.result = e;
    if (e.type === 'error') seen.failure = e;
  });
  const onCancel = (): void => proc.interrupt(deps.killGraceMs);
  ctx.cancellationSignal.addEventListener('abort', onCancel);
  // the judge and the tool scorer run under the same heartbeat and reservation as the trainer
  type Ended = { scores: EvalOutcome } | { exit: { code: number | null } };
  const ended = await heartbeating<Ended>(ctx, undefined, deps.heartbeatMs, async () => {
    try {
      const exit = await proc.exited;
      await events.flush();
      return exit.code === 0 && seen.result ? { scores: await scorer.score(req, seen.result) } : { exit };
    } finally {
      ctx.cancellationSignal.removeEventListener('abort', onCancel);
      deps.sessions.delete(key);
    }
  });
  if ('scores' in ended) return ended.scores;
  const err = seen.failure;
  const bad = inputFailure(err);
  if (bad) throw bad;
  throw attemptFailure(
    err ? `${err.code}: ${err.message}` : `evaluation exited with ${ended.exit.code}\n${proc.stderrTail()}`,
    'TRAINER_FAILED',
  );
}
