// Answering prompts with a registered adapter on this agent: its files fetched (sha256-checked),
// the trainer's generate command over the base model the agent holds, every token and answer
// published on the request's subjects as the trainer prints them (the CLI streams them).
import type { Context } from '@temporalio/activity';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GenerateOutcome, GenerateRequest } from '../../shared';
import { heartbeating, sessionDir, startTrainer, type AgentDeps } from './deps';
import { attemptFailure, inputFailure, type TrainerErrorEvent } from './failures';
import { modelDir, runConfig } from './inputs';
import { EventPublisher } from './publish';
import { fetchFiles } from './transfer';

/**
 * A fresh session directory holding the adapter's files (sha256-checked) and a run.json for the trainer over the base
 * model this agent holds, with `generation` settings.
 */
export async function answerSession(
  deps: AgentDeps,
  req: Omit<GenerateRequest, 'prompts' | 'base'>,
  name: string,
  generation: object,
): Promise<{ dir: string; configPath: string }> {
  const dir = sessionDir(deps, req.jobId, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, 'adapter'), { recursive: true });
  const model = modelDir(req.spec, deps.modelsDir, deps.agentId);
  await fetchFiles(deps.nats, req.adapter.bucket, req.adapter.prefix, req.adapter.files, join(dir, 'adapter'));
  const paths = { model, train: '', eval: '', out: join(dir, 'out'), adapter: join(dir, 'adapter') };
  const config = { ...runConfig(req.spec, paths, req.jobId, req.reservedBytes), generation };
  const configPath = join(dir, 'run.json');
  await writeFile(configPath, JSON.stringify(config, null, 1));
  return { dir, configPath };
}

export async function generateSession(deps: AgentDeps, req: GenerateRequest, ctx: Context): Promise<GenerateOutcome> {
  const { dir, configPath } = await answerSession(deps, req, `generate-${req.attempt}`, {
    prompts: req.prompts,
    base: req.base,
    max_new_tokens: req.maxNewTokens,
    temperature: req.temperature,
    seed: req.seed,
  });

  const key = `${req.jobId}#generate${req.attempt}`;
  const session = {
    jobId: req.jobId,
    attempt: req.attempt,
    reservedBytes: req.reservedBytes,
    devices: req.devices ?? [],
  };
  deps.sessions.set(key, session);
  const events = new EventPublisher(deps.nats, req.jobId, req.attempt, deps.agentId, deps.log);
  const answers = req.prompts.map((prompt) => ({ prompt, tuned: '', base: req.base ? '' : null, tokens: 0 }));
  let failure: TrainerErrorEvent | null = null;
  const proc = startTrainer(deps, 'generate', session, configPath, dir, (e) => {
    events.publish(e);
    if (e.type === 'answer') {
      const a = answers[e.prompt];
      if (a && e.side === 'tuned') Object.assign(a, { tuned: e.text, tokens: e.tokens });
      else if (a) a.base = e.text;
    }
    if (e.type === 'error') failure = e;
  });
  const onCancel = (): void => proc.interrupt(deps.killGraceMs);
  ctx.cancellationSignal.addEventListener('abort', onCancel);
  const exit = await heartbeating(ctx, undefined, deps.heartbeatMs, async () => {
    try {
      const ended = await proc.exited;
      await events.flush();
      return ended;
    } finally {
      ctx.cancellationSignal.removeEventListener('abort', onCancel);
      deps.sessions.delete(key);
    }
  });
  await rm(dir, { recursive: true, force: true }).catch(() => {});
  if (exit.code === 0) return { agentId: deps.agentId, answers };
  const bad = inputFailure(failure);
  if (bad) throw bad;
  const err = failure as TrainerErrorEvent | null;
  throw attemptFailure(
    err ? `${err.code}: ${err.message}` : `generate exited with ${exit.code}\n${proc.stderrTail()}`,
    'TRAINER_FAILED',
  );
}
