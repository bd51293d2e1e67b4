// A chat with a registered adapter on this agent: the trainer's chat command loads the model once
// and answers one turn per line on its stdin; the process lives between the chat workflow's
// turn activities (keyed by the chat's id and attempt), counted as a session (the advert, drain,
// stop), and ends on chatEnd, after idleSeconds without a turn, or with the agent.
import { ApplicationFailure, type Context } from '@temporalio/activity';
import { rm } from 'node:fs/promises';
import { ErrorCode, type ChatTurnOutcome, type ChatTurnRequest } from '../../shared';
import type { TrainerRun } from '../trainer';
import { heartbeating, startTrainer, type AgentDeps, type Session } from './deps';
import { attemptFailure, inputFailure, type TrainerErrorEvent } from './failures';
import { answerSession } from './generate';
import { EventPublisher } from './publish';

interface LiveChat {
  proc: TrainerRun;
  events: EventPublisher;
  /** the turn being answered: settled by its answer event or by the trainer's end */
  pending: { turn: number; resolve: (o: ChatTurnOutcome) => void; reject: (e: Error) => void } | null;
  failure: TrainerErrorEvent | null;
  idle: NodeJS.Timeout | null;
  /** resolves once the trainer has exited and its directory is gone */
  gone: Promise<void>;
}

/** Each agent's live chats (tests run several agents in one process). */
const live = new WeakMap<AgentDeps, Map<string, LiveChat>>();

function chatsOf(deps: AgentDeps): Map<string, LiveChat> {
  let m = live.get(deps);
  if (!m) live.set(deps, (m = new Map()));
  return m;
}

const keyOf = (chatId: string, attempt: number): string => `${chatId}#chat${attempt}`;

async function startChat(deps: AgentDeps, req: ChatTurnRequest): Promise<LiveChat> {
  const key = keyOf(req.jobId, req.attempt);
  const { dir, configPath } = await answerSession(deps, req, `chat-${req.attempt}`, {
    max_new_tokens: req.maxNewTokens,
    temperature: req.temperature,
    seed: req.seed,
  });
  const session: Session = {
    jobId: req.jobId,
    attempt: req.attempt,
    reservedBytes: req.reservedBytes,
    devices: req.devices ?? [],
  };
  const events = new EventPublisher(deps.nats, req.jobId, req.attempt, deps.agentId, deps.log);
  const chat = { events, pending: null, failure: null, idle: null } as unknown as LiveChat;
  chat.proc = startTrainer(deps, 'chat', session, configPath, dir, (e) => {
    events.publish(e);
    if (e.type === 'error') chat.failure = e;
    const p = chat.pending;
    if (e.type === 'answer' && p && e.prompt === p.turn) {
      chat.pending = null;
      p.resolve({ agentId: deps.agentId, text: e.text, tokens: e.tokens });
    }
  });
  // a drain or the agent's stop ends the chat: its workflow places the next turn elsewhere
  session.stop = () => chat.proc.interrupt(deps.killGraceMs);
  deps.sessions.set(key, session);
  chatsOf(deps).set(key, chat);
  chat.gone = chat.proc.exited.then(async (exit) => {
    if (chat.idle) clearTimeout(chat.idle);
    chatsOf(deps).delete(key);
    deps.sessions.delete(key);
    await events.flush();
    const p = chat.pending;
    chat.pending = null;
    if (p) {
      const err = chat.failure as TrainerErrorEvent | null;
      p.reject(
        inputFailure(err) ??
          attemptFailure(
            err
              ? `${err.code}: ${err.message}`
              : `the chat's trainer exited with ${exit.code ?? exit.signal}\n${chat.proc.stderrTail()}`,
            'TRAINER_FAILED',
          ),
      );
    }
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  });
  return chat;
}

/** Answer one turn: the chat's trainer (started at its first turn here) gets the conversation on its stdin. */
export async function chatTurn(deps: AgentDeps, req: ChatTurnRequest, ctx: Context): Promise<ChatTurnOutcome> {
  const key = keyOf(req.jobId, req.attempt);
  let chat = chatsOf(deps).get(key);
  if (!chat) {
    if (deps.draining())
      throw attemptFailure(`agent ${deps.agentId} is draining: the chat goes on elsewhere`, 'AGENT_DRAINING');
    chat = await startChat(deps, req);
  }
  if (chat.pending)
    throw attemptFailure(`chat ${req.jobId}: turn ${chat.pending.turn + 1} is still being answered`, 'TRAINER_FAILED');
  const c = chat;
  if (c.idle) clearTimeout(c.idle);
  const answered = new Promise<ChatTurnOutcome>((resolve, reject) => {
    c.pending = { turn: req.turn, resolve, reject };
  });
  const line = JSON.stringify({ turn: req.turn, messages: req.messages });
  c.proc.child.stdin?.write(`${line}\n`);
  const onCancel = (): void => c.proc.interrupt(deps.killGraceMs);
  ctx.cancellationSignal.addEventListener('abort', onCancel);
  try {
    return await heartbeating(ctx, undefined, deps.heartbeatMs, () => answered);
  } finally {
    ctx.cancellationSignal.removeEventListener('abort', onCancel);
    // nobody talking to the chat for idleSeconds: its trainer ends (the workflow's own idle limit comes first)
    if (chatsOf(deps).get(key) === c)
      c.idle = setTimeout(() => void endChat(deps, req.jobId, req.attempt), (req.idleSeconds + 60) * 1000);
  }
}

/** End the chat's trainer (end of input: it exits 0; after the grace, killed); nothing to do when none runs. */
export async function endChat(deps: AgentDeps, chatId: string, attempt: number): Promise<void> {
  const chat = chatsOf(deps).get(keyOf(chatId, attempt));
  if (!chat) return;
  chat.proc.child.stdin?.end();
  const grace = setTimeout(() => chat.proc.kill(), deps.killGraceMs);
  try {
    await chat.gone;
  } finally {
    clearTimeout(grace);
  }
}

/** A turn's messages as the agent accepts them: the shape the trainer reads, checked before anything starts. */
export function checkChatTurn(req: ChatTurnRequest): ChatTurnRequest {
  const roles = ['system', 'user', 'assistant'];
  const ok =
    Number.isInteger(req.turn) &&
    req.turn >= 0 &&
    Array.isArray(req.messages) &&
    req.messages.length > 0 &&
    req.messages.every((m) => roles.includes(m?.role) && typeof m?.content === 'string') &&
    req.messages[req.messages.length - 1]?.role === 'user' &&
    Number.isFinite(req.idleSeconds) &&
    req.idleSeconds > 0;
  if (!ok)
    throw ApplicationFailure.nonRetryable(
      `chat ${req.jobId}: turn ${req.turn} is not a conversation ending with the user's message`,
      ErrorCode.SpecInvalid,
    );
  return req;
}
