// Agent activities (task queue agent-<id>): train and evaluate, each running the Python
// trainer on this machine as one session (session/train.ts, session/evaluate.ts). Built
// over their dependencies so tests can run them against a real NATS and a real trainer on
// a tiny model.
import { Context } from '@temporalio/activity';
import { homedir } from 'node:os';
import type {
  AgentActivities,
  EvalOutcome,
  EvaluateRequest,
  ChatTurnOutcome,
  ChatTurnRequest,
  GenerateOutcome,
  GenerateRequest,
  TrainOutcome,
  TrainRequest,
} from '../shared';
import type { AgentDeps, Session } from './session/deps';
import { chatTurn, checkChatTurn, endChat } from './session/chat';
import { evaluateSession } from './session/evaluate';
import { generateSession } from './session/generate';
import { attemptFailure } from './session/failures';
import { checkGang, checkRequest } from './session/inputs';
import { Scorer } from './session/scoring';
import { TrainSession } from './session/train';

export type { AgentDeps, Session } from './session/deps';

export function createAgentActivities(deps: AgentDeps): AgentActivities {
  // the tool scorer sees none of the agent's directories (secrets, stack file, trainers' files, other jobs) nor $HOME
  const hidden = [deps.workDir, deps.modelsDir, deps.judgeDir, process.env.TUNEFLEET_HOME ?? '', homedir()];
  const scorer = new Scorer(deps.nats, deps.judgeDir, deps.log, hidden);
  return {
    async train(received: TrainRequest): Promise<TrainOutcome> {
      const req = checkGang(checkRequest(received));
      if (deps.draining())
        throw attemptFailure(`agent ${deps.agentId} is draining: place the job elsewhere`, 'AGENT_DRAINING', {
          checkpoint: req.resumeFrom,
        });
      const key = `${req.jobId}#${req.attempt}`;
      const session: Session = {
        jobId: req.jobId,
        attempt: req.attempt,
        reservedBytes: req.reservedBytes,
        devices: req.devices ?? [],
        ...(req.gang ? { rank: req.gang.rank, nodes: req.gang.nodes } : {}),
      };
      deps.sessions.set(key, session);
      try {
        return await new TrainSession(deps, req, Context.current(), session).run();
      } finally {
        deps.sessions.delete(key);
      }
    },

    async evaluate(req: EvaluateRequest): Promise<EvalOutcome> {
      return evaluateSession(deps, scorer, checkRequest(req), Context.current());
    },

    async generate(req: GenerateRequest): Promise<GenerateOutcome> {
      return generateSession(deps, checkRequest(req), Context.current());
    },

    async chatTurn(req: ChatTurnRequest): Promise<ChatTurnOutcome> {
      return chatTurn(deps, checkChatTurn(checkRequest(req)), Context.current());
    },

    async chatEnd(chatId: string, attempt: number): Promise<void> {
      await endChat(deps, chatId, attempt);
    },
  };
}
