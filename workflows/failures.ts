// What the fineTune workflow does when an attempt fails: one table, by error class.
// Pure and deterministic (imported by workflow code).

import { ATTEMPT_ERRORS, attemptErrorClass, type FailureClass } from '../shared/errors';

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
