// What every session on an agent is built over (tests build them against a real NATS and
// a real trainer on a tiny model), and the one way a session starts its trainer.
import type { Context } from '@temporalio/activity';
import { join } from 'node:path';
import type { GangRequest, ProgressUpdate, TrainerEvent } from '../../shared';
import type { AgentNats } from '../nats';
import type { AgentMetrics } from '../metrics';
import { threadEnv } from '../priority';
import { runTrainer, type TrainerCommand, type TrainerRun } from '../trainer';

export interface AgentDeps {
  agentId: string;
  nats: AgentNats;
  python: string;
  modelsDir: string;
  /** the exported judge model (loaded at the first evaluation) */
  judgeDir: string;
  workDir: string;
  /** how often the activity heartbeats while the trainer runs */
  heartbeatMs: number;
  /** SIGTERM → SIGKILL grace for the trainer */
  killGraceMs: number;
  /** trainers run this many nice levels below the agent (0: at its priority) */
  trainerNice: number;
  /** CPU threads each trainer may use (OMP_NUM_THREADS) */
  trainerThreads: number;
  sessions: Map<string, Session>;
  /** tell the job's workflow how training goes (throttled by the caller; failures are only logged) */
  signalProgress: (workflowId: string, update: ProgressUpdate) => Promise<void>;
  /** true while an operator drains this agent: no new work starts */
  draining: () => boolean;
  log: (m: string) => void;
  /** this agent's Prometheus metrics (absent: none kept) */
  metrics?: AgentMetrics;
}

/** A session as the agent's advert and drain see it. */
export interface Session {
  jobId: string;
  attempt: number;
  reservedBytes: number;
  /** the device UUIDs it was given */
  devices: string[];
  /** a gang member's rank and the gang's size (absent: a single-host job) */
  rank?: number;
  nodes?: number;
  /** ask the trainer to checkpoint and stop (drain) */
  stop?: () => void;
  stopping?: boolean;
}

/** The session's working directory on this agent. */
export function sessionDir(deps: AgentDeps, jobId: string, name: string): string {
  return join(deps.workDir, 'jobs', jobId, name);
}

/**
 * The trainer sees only its devices: CUDA_VISIBLE_DEVICES names their UUIDs (MIG instances by their MIG UUIDs), in
 * PCI bus order as nvidia-smi numbers them. No GPU device (a CPU session): nothing is set.
 */
export function deviceEnv(devices: string[]): Record<string, string> {
  const gpus = devices.filter((d) => d !== 'cpu');
  return gpus.length > 0 ? { CUDA_DEVICE_ORDER: 'PCI_BUS_ID', CUDA_VISIBLE_DEVICES: gpus.join(',') } : {};
}

/**
 * Start the trainer on `configPath`, below the agent's priority, on its devices, its log in `dir`. Training on several
 * devices runs one process per device (torchrun --standalone, DDP); a gang member's training runs its devices'
 * processes as node `rank` of `nodes` (torchrun --nnodes, rendezvous at rank 0); evaluation runs one process on the
 * first.
 */
export function startTrainer(
  deps: AgentDeps,
  command: TrainerCommand,
  session: Session,
  configPath: string,
  dir: string,
  onEvent: (e: TrainerEvent) => void,
  gang?: GangRequest,
): TrainerRun {
  const jobId = session.jobId;
  const processes = command === 'train' ? Math.max(1, session.devices.filter((d) => d !== 'cpu').length) : 1;
  return runTrainer({
    python: deps.python,
    priority: { nice: deps.trainerNice },
    // the session's CPU threads are shared by its processes
    env: { ...threadEnv(Math.max(1, Math.floor(deps.trainerThreads / processes))), ...deviceEnv(session.devices) },
    processes,
    ...(gang && command === 'train'
      ? { nodes: { count: gang.nodes, rank: gang.rank, address: gang.rendezvous.address, port: gang.rendezvous.port } }
      : {}),
    command,
    configPath,
    stdin: command === 'chat',
    logPath: join(dir, 'trainer.log'),
    onInvalid: (e) => deps.log(`${jobId}: ${e.describe()}`),
    onEvent,
  });
}

/** Run `fn` with a heartbeat timer: work that has no trainer steps to heartbeat on (downloads, uploads). */
export async function heartbeating<T>(
  ctx: Context,
  details: unknown,
  everyMs: number,
  fn: () => Promise<T>,
): Promise<T> {
  const beat = setInterval(() => ctx.heartbeat(details), everyMs);
  try {
    return await fn();
  } finally {
    clearInterval(beat);
  }
}
