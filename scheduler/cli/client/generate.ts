// `tunefleet generate`: ask a registered adapter (and with --base its base model) some prompts. The
// request is a `generate` workflow of its own (id gen-...): placed by memory on an agent that holds
// the base model, at interactive priority; its token events are streamed here as the agent
// publishes them, and its result holds every answer whole.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CONTROL_TASK_QUEUE, ErrorCode, TunefleetError, type GenerateOutcome, type JobEvent } from '../../../shared';
import type { GenerateInput } from '../../../workflows/generate';
import { failureMessage } from '../messages';
import type { JobClient } from './jobs';
import { showModel } from './models';

export interface GenerateOptions {
  prompts: string[];
  base: boolean;
  maxNewTokens: number;
  temperature: number;
  seed: number;
  /** how long the request may wait for room on an agent */
  waitSeconds: number;
}

/** Interactive requests go before queued fine-tuning jobs. */
export const INTERACTIVE_PRIORITY = 100;

/** Prompts from a JSONL file: each line {"prompt": "..."} or a JSON string; a bad line is named. */
export function readPrompts(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new TunefleetError(ErrorCode.FlagInvalid, `cannot read ${file}: ${(e as Error).message}`, {
      field: '--file',
    });
  }
  const prompts: string[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (!line.trim()) continue;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      v = undefined;
    }
    const p = typeof v === 'string' ? v : (v as { prompt?: unknown } | undefined)?.prompt;
    if (typeof p !== 'string' || !p)
      throw new TunefleetError(ErrorCode.FlagInvalid, 'each line must be {"prompt": "..."} or a JSON string', {
        file,
        line: i + 1,
      });
    prompts.push(p);
  }
  if (!prompts.length) throw new TunefleetError(ErrorCode.FlagInvalid, `${file} holds no prompt`, { field: '--file' });
  return prompts;
}

export async function generateAnswers(
  jobs: JobClient,
  modelId: string,
  o: GenerateOptions,
  onEvent: (e: JobEvent) => void,
): Promise<GenerateOutcome> {
  const record = await showModel(jobs, modelId);
  const requestId = `gen-${randomBytes(6).toString('hex')}`;
  const input: GenerateInput = {
    jobId: requestId,
    model: modelId,
    spec: { ...record.spec, priority: INTERACTIVE_PRIORITY },
    adapter: record.adapter,
    prompts: o.prompts,
    base: o.base,
    maxNewTokens: o.maxNewTokens,
    temperature: o.temperature,
    seed: o.seed,
    submittedAt: new Date().toISOString(),
    waitSeconds: o.waitSeconds,
  };
  const expected = o.prompts.length * (o.base ? 2 : 1);
  let answered = 0;
  const stop = new AbortController();
  const reading = jobs.events.stream(
    requestId,
    (e) => {
      if (e.type === 'answer') answered += 1;
      onEvent(e);
    },
    stop.signal,
  );
  try {
    const handle = await jobs.client.workflow.start('generate', {
      taskQueue: CONTROL_TASK_QUEUE,
      workflowId: requestId,
      args: [input],
    });
    const outcome = (await handle.result().catch((e: unknown) => {
      throw new TunefleetError(ErrorCode.TrainerFailed, `generate for ${modelId} failed: ${failureMessage(e)}`);
    })) as GenerateOutcome;
    // the answers' last events may still be on their way from the stream
    for (let waited = 0; answered < expected && waited < 5000; waited += 100)
      await new Promise((r) => setTimeout(r, 100));
    return outcome;
  } finally {
    stop.abort();
    await reading.catch(() => {});
  }
}
