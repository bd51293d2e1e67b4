// The generate workflow: answer prompts with a registered adapter on an agent that holds its base
// model. Placed by memory like an evaluation (the spec is the adapter's job's, at interactive
// priority), run as one agent activity whose token events the CLI streams, its lease released
// whatever happens. A lost agent is replaced once or twice; a request that finds no room waits
// up to waitSeconds. Deterministic: all I/O is in the activities.
import { ApplicationFailure, CancellationScope, proxyActivities, sleep } from '@temporalio/workflow';
import type {
  AgentActivities,
  ControlActivities,
  GenerateOutcome,
  GenerateRequest,
  PlaceResult,
} from '../shared/activities';
import type { JobSpec } from '../shared/spec';
import { CONTROL_TASK_QUEUE, agentTaskQueue } from '../shared/names';

export interface GenerateInput extends Omit<GenerateRequest, 'attempt' | 'reservedBytes' | 'devices'> {
  submittedAt: string;
  /** how long to wait for room on an agent before giving up */
  waitSeconds: number;
}

/** attempts before a request gives up (each on another agent) */
const MAX_GENERATE_ATTEMPTS = 3;

const quick = proxyActivities<ControlActivities>({
  taskQueue: CONTROL_TASK_QUEUE,
  startToCloseTimeout: '20 seconds',
  retry: { maximumAttempts: 5, initialInterval: '1 second', nonRetryableErrorTypes: ['SPEC_INVALID', 'NO_AGENT_FITS'] },
});

type Placement = NonNullable<PlaceResult['placement']>;

/**
 * Place an interactive request (by memory, like an evaluation) for its attempt `attempt`, trying once a second while
 * no agent has room, until `wait.waited` reaches `wait.limit` seconds (counted across the request's placements).
 */
export async function placeInteractive(
  req: { jobId: string; spec: JobSpec },
  attempt: number,
  submittedAt: string,
  exclude: string[],
  wait: { waited: number; limit: number },
): Promise<Placement> {
  for (;;) {
    const placed = await quick.place({
      jobId: req.jobId,
      spec: req.spec,
      attempt,
      submittedAt,
      exclude,
      purpose: 'evaluate',
    });
    if (placed.placement) return placed.placement;
    if (wait.waited >= wait.limit)
      throw ApplicationFailure.nonRetryable(`no agent had room in ${wait.limit} s: ${placed.waiting}`, 'NO_AGENT_FITS');
    await sleep(1000);
    wait.waited += 1;
  }
}

/** The agent's activities for one interactive attempt: never retried there (the workflow places again instead). */
export function interactiveAgent(agentId: string): AgentActivities {
  return proxyActivities<AgentActivities>({
    taskQueue: agentTaskQueue(agentId),
    scheduleToStartTimeout: '2 minutes',
    startToCloseTimeout: '1 hour',
    heartbeatTimeout: '30 seconds',
    retry: { maximumAttempts: 1 },
  });
}

/** A failure the workflow may try again on another agent (not the input's fault). */
export function retryableOnAnotherAgent(e: unknown): boolean {
  const failure = (e as { cause?: unknown }).cause ?? e;
  return !(failure instanceof ApplicationFailure && failure.nonRetryable);
}

export async function generate(input: GenerateInput): Promise<GenerateOutcome> {
  const { submittedAt, waitSeconds, ...req } = input;
  /** seconds waited for room so far: one per placement that found none */
  const wait = { waited: 0, limit: waitSeconds };
  const exclude: string[] = [];
  let attempt = 0;
  for (;;) {
    const p = await placeInteractive(req, attempt + 1, submittedAt, exclude, wait);
    attempt += 1;
    try {
      return await interactiveAgent(p.agentId).generate({
        ...req,
        attempt,
        reservedBytes: p.reservedBytes,
        ...(p.devices ? { devices: p.devices } : {}),
      });
    } catch (e) {
      if (!retryableOnAnotherAgent(e) || attempt >= MAX_GENERATE_ATTEMPTS) throw e;
      exclude.push(p.agentId);
    } finally {
      await CancellationScope.nonCancellable(() => quick.release(req.jobId, attempt, p.agentId));
    }
  }
}
