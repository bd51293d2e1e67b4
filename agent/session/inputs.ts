// What a session is given, checked again on the agent: the request came through Temporal,
// not through the CLI's checks, and its job id and model name become paths here. The run
// configuration is the trainer's one input file (run.json).
import { ApplicationFailure } from '@temporalio/activity';
import { existsSync, lstatSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ErrorCode,
  ID_PATTERN,
  MODEL_NAME_PATTERN,
  jobSpecSchema,
  type JobSpec,
  type TrainRequest,
} from '../../shared';

export function checkJobId(jobId: string): void {
  if (!ID_PATTERN.test(jobId))
    throw ApplicationFailure.nonRetryable(
      `job id ${JSON.stringify(jobId)} is not a job id (it becomes a directory name here)`,
      ErrorCode.SpecInvalid,
    );
}

/** What CUDA_VISIBLE_DEVICES may name: a GPU or MIG UUID as nvidia-smi prints it, or the CPU device. */
const DEVICE = /^(cpu|(GPU|MIG)-[0-9A-Za-z/-]{1,120})$/;

/**
 * A request as Temporal delivered it, checked again: the job id (it becomes a directory), the spec (the same schema
 * the CLI checked, defaults filled in for a spec from an older client) and the devices (they become the trainer's
 * environment). Refused without retry when any is not what it claims.
 */
export function checkRequest<R extends { jobId: string; spec: JobSpec; devices?: string[] }>(req: R): R {
  checkJobId(req.jobId);
  const r = jobSpecSchema.safeParse(req.spec);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = issue?.path.length ? `${issue.path.join('.')}: ` : '';
    throw ApplicationFailure.nonRetryable(
      `the job's spec as this agent received it is not valid (${field}${issue?.message ?? 'invalid'})`,
      ErrorCode.SpecInvalid,
    );
  }
  const bad = (req.devices ?? []).find((d) => !DEVICE.test(d));
  if (bad !== undefined)
    throw ApplicationFailure.nonRetryable(`device ${JSON.stringify(bad)} is not a device name`, ErrorCode.SpecInvalid);
  return { ...req, spec: r.data };
}

/** A gang request's shape: a rank inside the gang, every rank once, a rendezvous port that can be one. */
export function checkGang(req: TrainRequest): TrainRequest {
  const g = req.gang;
  if (!g) return req;
  const ranks = g.members.map((m) => m.rank).sort((a, b) => a - b);
  const problem =
    !Number.isInteger(g.nodes) || g.nodes < 2 || g.nodes > 64
      ? `a gang of ${g.nodes} nodes (2 to 64)`
      : !Number.isInteger(g.rank) || g.rank < 0 || g.rank >= g.nodes
        ? `rank ${g.rank} outside the gang of ${g.nodes}`
        : ranks.length !== g.nodes || ranks.some((r, i) => r !== i)
          ? `members with ranks ${ranks.join(', ')} for a gang of ${g.nodes}`
          : !Number.isInteger(g.rendezvous.port) || g.rendezvous.port < 1024 || g.rendezvous.port > 65535
            ? `rendezvous port ${g.rendezvous.port}`
            : !/^[A-Za-z0-9.:_-]{1,253}$/.test(g.rendezvous.address)
              ? `rendezvous address ${JSON.stringify(g.rendezvous.address)}`
              : null;
  if (problem)
    throw ApplicationFailure.nonRetryable(
      `the gang this agent was given is not valid: ${problem}`,
      ErrorCode.SpecInvalid,
    );
  return req;
}

/** The base model's directory under the agent's models directory; refused if missing, a symlink or a path. */
export function modelDir(spec: JobSpec, modelsDir: string, agentId: string): string {
  if (!MODEL_NAME_PATTERN.test(spec.model))
    throw ApplicationFailure.nonRetryable(
      `model name ${JSON.stringify(spec.model)} is not a model name`,
      ErrorCode.SpecInvalid,
    );
  const dir = join(modelsDir, spec.model);
  if (existsSync(dir) && lstatSync(dir).isSymbolicLink()) {
    throw ApplicationFailure.nonRetryable(
      `base model ${spec.model} on agent ${agentId} is a symlink (${dir}); ` +
        "models are loaded only from the agent's models directory",
      ErrorCode.SpecInvalid,
    );
  }
  if (!existsSync(join(dir, 'config.json')))
    throw ApplicationFailure.nonRetryable(
      `base model ${spec.model} is not on agent ${agentId} (${dir})`,
      ErrorCode.ModelMissing,
    );
  return dir;
}

export interface RunPaths {
  model: string;
  train: string;
  eval: string;
  out: string;
  resume?: string | null;
  adapter?: string;
  /** train: the registered adapter it continues from (spec init_adapter) */
  initAdapter?: string | null;
  /** train: stop at this step, checkpointed and evaluated (a sweep trial's rung) */
  pauseAt?: number | null;
}

/** The trainer's run.json: the spec's training fields, the paths on this agent, the memory budget. */
export function runConfig(spec: JobSpec, paths: RunPaths, jobId: string, memoryBudget: number): object {
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
    init_adapter: paths.initAdapter ?? null,
    ...(paths.pauseAt ? { pause_at: paths.pauseAt } : {}),
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

/** Write run.json into `dir`; returns its path. */
export async function writeRunConfig(
  dir: string,
  spec: JobSpec,
  paths: RunPaths,
  jobId: string,
  memoryBudget: number,
): Promise<string> {
  const path = join(dir, 'run.json');
  await writeFile(path, JSON.stringify(runConfig(spec, paths, jobId, memoryBudget), null, 1));
  return path;
}
