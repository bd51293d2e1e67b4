// The activity contracts between workflows and the processes that run them. The control
// worker (scheduler/) implements ControlActivities on task queue tunefleet-control; each
// agent (agent/) implements AgentActivities on its own queue agent-<id>.
import type { DataReport, EvalOutcome, FineTuneInput, JobResult, Placement, Rendezvous, TrainOutcome } from './jobs';
import type { FileEntry } from './events';
import type { JobSpec } from './spec';

export interface PlaceRequest {
  jobId: string;
  spec: JobSpec;
  /** the attempt this placement is for; also its epoch (checkpoint commits of older epochs are refused) */
  attempt: number;
  /** queue order among equal priorities */
  submittedAt: string;
  /** agents that failed this job before */
  exclude: string[];
  purpose: 'train' | 'evaluate';
  /** the failure class of the attempt before, when this placement follows a failed attempt (a recovery) */
  after?: string;
}

/** null: nothing fits now (the job waits); a placement; or a thrown NO_AGENT_FITS that is final. */
export type PlaceResult =
  { placement: Placement; waiting: null; position: null } | { placement: null; waiting: string; position: number };

export interface TrainRequest {
  jobId: string;
  spec: JobSpec;
  /** also the epoch: the agent claims it before training, and commits of older epochs are refused */
  attempt: number;
  /** bytes reserved for this session (the trainer's automatic micro-batch stays inside it) */
  reservedBytes: number;
  /** the device UUIDs reserved for it: the trainer sees only these (absent from older workflows: any) */
  devices?: string[];
  data: DataReport;
  /** a gang (multi-node job): this member's rank, the gang's size and members, where rank 0 listens */
  gang?: GangRequest;
  /** checkpoints-bucket prefix of the newest committed checkpoint to resume from */
  resumeFrom: { prefix: string; step: number; manifest_sha256?: string | null } | null;
  /** a sweep trial: stop at this step (its rung), checkpointed and evaluated; the outcome says paused */
  pauseAt?: number;
}

export interface GangRequest {
  nodes: number;
  rank: number;
  members: { agentId: string; rank: number }[];
  rendezvous: Rendezvous;
}

export interface EvaluateRequest {
  jobId: string;
  spec: JobSpec;
  attempt: number;
  reservedBytes: number;
  devices?: string[];
  data: DataReport;
  adapterPrefix: string;
  adapterFiles: TrainOutcome['adapterFiles'];
}

export interface ControlActivities {
  prepare(input: FineTuneInput): Promise<DataReport>;
  place(req: PlaceRequest): Promise<PlaceResult>;
  /**
   * free the attempt's lease and the job's queue entry; safe to repeat. agentId null: the job has ended, and every
   * lease it still holds on any agent goes too. `failed`: the attempt failed with this class and the job will be
   * placed again (counted once per attempt); `lastBeatAt`: a lost agent's last heartbeat (ms epoch)
   */
  release(jobId: string, attempt: number, agentId: string | null, failed?: string, lastBeatAt?: number): Promise<void>;
  register(input: FineTuneInput, data: DataReport, training: TrainOutcome, evaluation: EvalOutcome): Promise<JobResult>;
}

/** Ask a registered adapter (and with `base` its base model) some prompts, on an agent that holds the base. */
export interface GenerateRequest {
  /** the request's own id: its token and answer events go to this id's job subjects */
  jobId: string;
  /** the job whose registered adapter answers */
  model: string;
  /** that job's spec: base model, method, precision */
  spec: JobSpec;
  adapter: { bucket: string; prefix: string; files: FileEntry[] };
  prompts: string[];
  base: boolean;
  maxNewTokens: number;
  /** 0: greedy (what the evaluation step generated); above 0: sampled, seeded by `seed` */
  temperature: number;
  seed: number;
  attempt: number;
  reservedBytes: number;
  devices?: string[];
}

export interface GenerateOutcome {
  agentId: string;
  answers: { prompt: string; tuned: string; base: string | null; tokens: number }[];
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/**
 * One turn of a chat with a registered adapter: the conversation so far, ending with the user's message. The agent
 * keeps the chat's trainer (the model loaded once) between turns, keyed by the chat's id and attempt.
 */
export interface ChatTurnRequest extends Omit<GenerateRequest, 'prompts' | 'base'> {
  /** the turn's number, from 0: its token and answer events carry it as `prompt` */
  turn: number;
  messages: ChatMessage[];
  /** the agent stops a chat's trainer after this long without a turn (the workflow's idle limit and a margin) */
  idleSeconds: number;
}

export interface ChatTurnOutcome {
  agentId: string;
  text: string;
  tokens: number;
}

export interface AgentActivities {
  train(req: TrainRequest): Promise<TrainOutcome>;
  evaluate(req: EvaluateRequest): Promise<EvalOutcome>;
  generate(req: GenerateRequest): Promise<GenerateOutcome>;
  chatTurn(req: ChatTurnRequest): Promise<ChatTurnOutcome>;
  /** end the chat's trainer on this agent (none running: nothing to do) */
  chatEnd(chatId: string, attempt: number): Promise<void>;
}

/** Heartbeat details of the train activity: what survives the agent's death. */
export interface TrainHeartbeat {
  step: number;
  stepsTotal: number;
  loss: number | null;
  /** the newest committed checkpoint, with its manifest's sha256: a next attempt downloads only that manifest */
  checkpoint: { prefix: string; step: number; manifest_sha256?: string | null } | null;
  /**
   * when this heartbeat was sent (ms since the epoch, the agent's clock): after a heartbeat timeout the control worker
   * measures the time to detect the fault from the last one (absent from older agents)
   */
  at?: number;
}

/** Progress from the agent running an attempt, sent to the workflow as the 'progress' signal (throttled). */
export interface ProgressUpdate {
  attempt: number;
  step: number;
  stepsTotal: number;
  loss: number | null;
  checkpoint: TrainHeartbeat['checkpoint'];
}
