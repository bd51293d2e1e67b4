// How a session's end becomes an activity failure the workflow's failure table can read:
// every code comes from the shared vocabulary (shared/errors.ts ATTEMPT_ERRORS).
import { ApplicationFailure } from '@temporalio/activity';
import type { ActivityCancellationDetails } from '@temporalio/common';
import { attemptErrorClass, type AttemptError, type TrainHeartbeat, type TrainerEvent } from '../../shared';

export type TrainerErrorEvent = Extract<TrainerEvent, { type: 'error' }>;

/** A retryable activity failure typed with a shared attempt-error code. */
export function attemptFailure(message: string, code: AttemptError, ...details: unknown[]): ApplicationFailure {
  return ApplicationFailure.retryable(message, code, ...details);
}

/** The trainer's error says the input is wrong: the same job fails on any agent, so it is not retried. */
export function inputFailure(err: TrainerErrorEvent | null): ApplicationFailure | null {
  return err && attemptErrorClass(err.code) === 'bad_input'
    ? ApplicationFailure.nonRetryable(err.message, err.code)
    : null;
}

/** Why the server stopped knowing an attempt, for the agent's log. */
export function droppedBecause(why: ActivityCancellationDetails | undefined): string {
  if (why?.timedOut) return 'timed out';
  return why?.notFound ? 'not found' : 'worker shutdown';
}

/** Out of memory: the workflow retries with a smaller micro-batch (or elsewhere), from the checkpoint. */
export function oomFailure(
  o: Extract<TrainerEvent, { type: 'oom' }>,
  checkpoint: TrainHeartbeat['checkpoint'],
): ApplicationFailure {
  const device = o.memory_total ? ` (${(o.memory_total / 2 ** 30).toFixed(1)} GiB device)` : '';
  return attemptFailure(
    `out of memory at step ${o.step} with micro-batch ${o.micro_batch_size} x ${o.sequence_length} tokens${device}`,
    'OOM',
    { checkpoint, oom: o },
  );
}
