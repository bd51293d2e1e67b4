// The chat workflow: a conversation with a registered adapter, turn by turn. Placed by memory like
// a generate request (interactive priority, an agent that holds the base model) and holding that
// lease while the chat lasts; each user turn is a `turn` signal, answered by the agent's chatTurn
// activity with the whole conversation (the agent keeps the model loaded between turns). A lost
// agent is replaced and the turn asked again there with the conversation kept here; `end` (or
// idleSeconds without a turn) ends the chat. Deterministic: all I/O is in the activities.
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  defineSignal,
  proxyActivities,
  setHandler,
} from '@temporalio/workflow';
import type { AgentActivities, ChatMessage, ChatTurnRequest, ControlActivities } from '../shared/activities';
import { CONTROL_TASK_QUEUE, agentTaskQueue } from '../shared/names';
import { interactiveAgent, placeInteractive, retryableOnAnotherAgent } from './generate';

export interface ChatInput extends Omit<
  ChatTurnRequest,
  'attempt' | 'reservedBytes' | 'devices' | 'turn' | 'messages'
> {
  submittedAt: string;
  /** how long to wait for room on an agent before giving up */
  waitSeconds: number;
  /** a system message that opens the conversation */
  system: string | null;
}

export interface ChatOutcome {
  agentId: string | null;
  messages: ChatMessage[];
  /** why it ended: asked to, or idle for idleSeconds */
  ended: 'asked' | 'idle';
}

export const turnSignal = defineSignal<[string]>('turn');
export const endSignal = defineSignal('end');

/** placements before a chat gives up (each on another agent) */
const MAX_CHAT_ATTEMPTS = 3;
/** turns in one chat: its history carries the conversation once per turn */
export const MAX_CHAT_TURNS = 200;

const quick = proxyActivities<ControlActivities>({
  taskQueue: CONTROL_TASK_QUEUE,
  startToCloseTimeout: '20 seconds',
  retry: { maximumAttempts: 5, initialInterval: '1 second', nonRetryableErrorTypes: ['SPEC_INVALID', 'NO_AGENT_FITS'] },
});

export async function chat(input: ChatInput): Promise<ChatOutcome> {
  const { submittedAt, waitSeconds, system, ...req } = input;
  const messages: ChatMessage[] = system ? [{ role: 'system', content: system }] : [];
  const pending: string[] = [];
  let ending = false;
  setHandler(turnSignal, (text) => void pending.push(text));
  setHandler(endSignal, () => void (ending = true));

  let turn = 0;
  let attempt = 0;
  const wait = { waited: 0, limit: waitSeconds };
  const exclude: string[] = [];
  let placed: { agentId: string; reservedBytes: number; devices?: string[] } | null = null;
  let lastAgent: string | null = null;
  const release = async (): Promise<void> => {
    if (!placed) return;
    const p = placed;
    placed = null;
    await CancellationScope.nonCancellable(async () => {
      // the trainer ends with its chat; an agent that is gone cannot be asked (its chat died with it)
      const agent = proxyActivities<AgentActivities>({
        taskQueue: agentTaskQueue(p.agentId),
        scheduleToStartTimeout: '20 seconds',
        startToCloseTimeout: '1 minute',
        retry: { maximumAttempts: 1 },
      });
      await agent.chatEnd(req.jobId, attempt).catch(() => undefined);
      await quick.release(req.jobId, attempt, p.agentId);
    });
  };
  try {
    for (;;) {
      const active = await condition(() => pending.length > 0 || ending, `${req.idleSeconds} seconds`);
      if (!active || (ending && pending.length === 0))
        return { agentId: lastAgent, messages, ended: active ? 'asked' : 'idle' };
      if (turn >= MAX_CHAT_TURNS)
        throw ApplicationFailure.nonRetryable(`a chat holds at most ${MAX_CHAT_TURNS} turns`, 'SPEC_INVALID');
      const text = pending.shift() as string;
      const asked = [...messages, { role: 'user' as const, content: text }];
      for (;;) {
        if (!placed) {
          placed = await placeInteractive(req, attempt + 1, submittedAt, exclude, wait);
          attempt += 1;
          lastAgent = placed.agentId;
        }
        const agent = interactiveAgent(placed.agentId);
        try {
          const answer = await agent.chatTurn({
            ...req,
            turn,
            messages: asked,
            attempt,
            reservedBytes: placed.reservedBytes,
            ...(placed.devices ? { devices: placed.devices } : {}),
          });
          messages.push(asked[asked.length - 1] as ChatMessage, { role: 'assistant', content: answer.text });
          turn += 1;
          break;
        } catch (e) {
          if (!retryableOnAnotherAgent(e) || attempt >= MAX_CHAT_ATTEMPTS) throw e;
          // the same turn, with the conversation so far, on another agent
          exclude.push(placed.agentId);
          await release();
        }
      }
    }
  } finally {
    await release();
  }
}
