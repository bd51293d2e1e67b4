// What the fineTune workflow does when an attempt fails: one table, by error class, and
// which row an error belongs to (classify) and how an out-of-memory retry shrinks the job.
// Pure and deterministic (imported by workflow code).

import {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  TimeoutFailure,
  isCancellation,
} from '@temporalio/workflow';
import type { TrainHeartbeat } from '../shared/activities';
import { ATTEMPT_ERRORS, attemptErrorClass, type FailureClass } from '../shared/errors';
import type { OomEvent } from '../shared/events';
import type { JobSpec } from '../shared/spec';
import { gradientCheckpointingOn } from '../shared/memory';

export type { FailureClass };

export interface FailurePolicy {
  /** try again (a new attempt, a new epoch) */
  retry: boolean;
  /** avoid this agent next time (it is tried again only when no other fits) */
  avoidAgent: boolean;
  /** retry with gradient checkpointing and half the micro-batch (same effective batch) */
  shrink: boolean;
}

export const FAILURE_POLICY: Record<FailureClass, FailurePolicy> = {
  // schedule-to-start or heartbeat timeout: the agent (or its link) is gone
  lost_agent: { retry: true, avoidAgent: true, shrink: false },
  // an operator drained it; the trainer checkpointed
  agent_draining: { retry: true, avoidAgent: true, shrink: false },
  // the job did not fit as configured: smaller micro-batch, same agent is fine
  oom: { retry: true, avoidAgent: false, shrink: true },
  // the trainer died (signal, crash, CUDA error)
  trainer_crash: { retry: true, avoidAgent: true, shrink: false },
  // checkpoint upload to the store failed
  upload_failed: { retry: true, avoidAgent: true, shrink: false },
  // the agent's disk filled while checkpointing; the previous checkpoint stands
  disk_full: { retry: true, avoidAgent: true, shrink: false },
  // a newer epoch owns the job (should not reach the current attempt)
  fenced: { retry: true, avoidAgent: false, shrink: false },
  // dataset, spec or model problems: the same input fails anywhere
  bad_input: { retry: false, avoidAgent: false, shrink: false },
  cancelled: { retry: false, avoidAgent: false, shrink: false },
};

// Error types (ApplicationFailure.type) an attempt ends with come from one shared
// vocabulary, each with its class (shared/errors.ts ATTEMPT_ERRORS); an unknown retryable
// type is a crash.
export { ATTEMPT_ERRORS, attemptErrorClass };

/** How many attempts (epochs) a job gets before it fails. */
export const MAX_ATTEMPTS = 6;

/** Half the micro-batch with gradient checkpointing on, same effective batch; null when nothing is left to shrink. */
export function shrink(spec: JobSpec, oom: OomEvent | null): JobSpec | null {
  const t = spec.training;
  const micro = oom?.micro_batch_size ?? t.micro_batch_size ?? Math.min(t.batch_size, 8);
  if (micro <= 1 && gradientCheckpointingOn(spec)) return null;
  return {
    ...spec,
    training: { ...t, gradient_checkpointing: true, micro_batch_size: Math.max(1, Math.floor(micro / 2)) },
  };
}

/** Which row of the failure table an attempt's error belongs to, with what it carried. */
export function classify(err: unknown): {
  cls: FailureClass;
  why: string;
  checkpoint: TrainHeartbeat['checkpoint'];
  oom: OomEvent | null;
  /** a lost agent's last heartbeat (ms since the epoch, its clock), when it said */
  lastBeatAt?: number;
} {
  const none = { checkpoint: null, oom: null };
  if (!(err instanceof ActivityFailure))
    return { cls: 'trainer_crash', why: err instanceof Error ? err.message : String(err), ...none };
  const cause = err.cause;
  if (cause instanceof TimeoutFailure) {
    const hb = cause.lastHeartbeatDetails as TrainHeartbeat | undefined;
    return {
      cls: 'lost_agent',
      why: `${cause.timeoutType} timeout`,
      checkpoint: hb?.checkpoint ?? null,
      oom: null,
      ...(typeof hb?.at === 'number' ? { lastBeatAt: hb.at } : {}),
    };
  }
  // the workflow itself was not cancelled (that is caught before): the agent's worker went away
  if (cause instanceof CancelledFailure) return { cls: 'lost_agent', why: 'the agent cancelled the activity', ...none };
  if (cause instanceof ApplicationFailure) {
    if (cause.nonRetryable) return { cls: 'bad_input', why: cause.message, ...none };
    const details = cause.details?.[0] as { checkpoint?: TrainHeartbeat['checkpoint']; oom?: OomEvent } | undefined;
    return {
      cls: attemptErrorClass(cause.type ?? ''),
      why: `${cause.type ?? 'error'}: ${cause.message}`,
      checkpoint: details?.checkpoint ?? null,
      oom: details?.oom ?? null,
    };
  }
  return { cls: 'trainer_crash', why: err.message, ...none };
}

/**
 * Why a gang attempt ended, from the members that failed (in the order they ended): a member whose agent was lost
 * (its heartbeat or schedule-to-start timed out) is the cause and the only one avoided; the others' ends follow from
 * it (a rank whose peer died fails its collective; the rest were stopped by the workflow). With none lost, a drained
 * member is the cause (it stopped every rank at a step they agreed on), else the first failure, and its agent is
 * avoided where the failure table says so. The newest checkpoint any member reported comes along.
 */
export function gangCause(ended: { agentId: string; error: unknown }[]): {
  failure: unknown;
  avoid: string[];
  checkpoint: TrainHeartbeat['checkpoint'];
} {
  const lost = ended.filter((e) => classify(e.error).cls === 'lost_agent' && !isCancellation(e.error));
  const own = ended.filter((e) => !isCancellation(e.error));
  const drained = own.filter((e) => classify(e.error).cls === 'agent_draining');
  const cause = lost[0] ?? drained[0] ?? own[0] ?? ended[0];
  if (!cause) throw new Error('a gang attempt ends with at least one member failed');
  const avoid = lost.length
    ? lost.map((e) => e.agentId)
    : FAILURE_POLICY[classify(cause.error).cls].avoidAgent
      ? [cause.agentId]
      : [];
  let checkpoint: TrainHeartbeat['checkpoint'] = null;
  for (const e of ended) {
    const c = classify(e.error).checkpoint;
    if (c && (!checkpoint || c.step > checkpoint.step)) checkpoint = c;
  }
  return { failure: cause.error, avoid, checkpoint };
}
