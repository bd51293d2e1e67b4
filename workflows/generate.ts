// The generate workflow: answer prompts with a registered adapter on an agent that holds its base
// model. Placed by memory like an evaluation (the spec is the adapter's job's, at interactive
// priority), run as one agent activity whose token events the CLI streams, its lease released
// whatever happens. A lost agent is replaced once or twice; a request that finds no room waits
// up to waitSeconds. Deterministic: all I/O is in the activities.
import { ApplicationFailure, CancellationScope, proxyActivities, sleep } from '@temporalio/workflow';
import type { AgentActivities, ControlActivities, GenerateOutcome, GenerateRequest } from '../shared/activities';
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

export async function generate(input: GenerateInput): Promise<GenerateOutcome> {
  const { submittedAt, waitSeconds, ...req } = input;
  /** seconds waited for room so far: one per placement that found none */
  let waited = 0;
  const exclude: string[] = [];
  let attempt = 0;
  for (;;) {
    const placed = await quick.place({
      jobId: req.jobId,
      spec: req.spec,
      attempt: attempt + 1,
      submittedAt,
      exclude,
      purpose: 'evaluate',
    });
    if (!placed.placement) {
      if (waited >= waitSeconds)
        throw ApplicationFailure.nonRetryable(
          `no agent had room in ${waitSeconds} s: ${placed.waiting}`,
          'NO_AGENT_FITS',
        );
      await sleep(1000);
      waited += 1;
      continue;
    }
    attempt += 1;
    const p = placed.placement;
    const agent = proxyActivities<AgentActivities>({
      taskQueue: agentTaskQueue(p.agentId),
      scheduleToStartTimeout: '2 minutes',
      startToCloseTimeout: '1 hour',
      heartbeatTimeout: '30 seconds',
      retry: { maximumAttempts: 1 },
    });
    try {
      return await agent.generate({
        ...req,
        attempt,
        reservedBytes: p.reservedBytes,
        ...(p.devices ? { devices: p.devices } : {}),
      });
    } catch (e) {
      const failure = (e as { cause?: unknown }).cause ?? e;
      const retryable = !(failure instanceof ApplicationFailure && failure.nonRetryable);
      if (!retryable || attempt >= MAX_GENERATE_ATTEMPTS) throw e;
      exclude.push(p.agentId);
    } finally {
      await CancellationScope.nonCancellable(() => quick.release(req.jobId, attempt, p.agentId));
    }
  }
}
