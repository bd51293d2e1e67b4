import type { Advert, JobSpec, MemoryEstimate } from '../../shared';
import type { DeviceRoom } from './filters';

export type FilterCode = 'fits' | 'not_now' | 'never';
export interface FilterResult {
  code: FilterCode;
  reasons: string[];
}

export interface Job {
  jobId: string;
  spec: JobSpec;
  exclude: string[];
}

/** One agent as placement sees it: its advert, the memory its leases hold, the job's estimate there. */
export interface AgentView {
  advert: Advert;
  /** bytes held by leases on the agent in all */
  reserved: number;
  /** bytes held on one device */
  onDevice: (uuid: string) => number;
  sessions: number;
  /** null when the agent does not know the model's shape */
  estimate: MemoryEstimate | null;
  /** true when this agent wrote the job's newest committed checkpoint (it may still have it on disk) */
  holdsCheckpoint: boolean;
  /** its devices' room, computed once (filters.deviceRooms) */
  rooms?: DeviceRoom[];
}

export interface AgentDecision {
  agentId: string;
  code: FilterCode;
  reasons: string[];
  /** each score plugin's 0-100 answer, for agents that fit */
  scores: Record<string, number>;
  /** weighted mean of the scores (0-100) plus a tie-breaker below 0.001 */
  total: number | null;
  estimate: number | null;
  /** bytes free on the agent's roomiest device */
  free: number;
  /** the devices the job would get here (best fit, by topology for several); empty when it does not fit */
  devices: string[];
}

export interface Decision {
  jobId: string;
  chosen: string | null;
  /** the chosen agent's devices the job gets (UUIDs; ['cpu'] on a CPU agent; empty when not placed) */
  devices: string[];
  /** bytes reserved on the chosen agent */
  estimate: MemoryEstimate | null;
  agents: AgentDecision[];
  /** a gang (resources.nodes above 1): its members by rank, rank 0 first (chosen is rank 0); absent otherwise */
  members?: { agentId: string; rank: number; devices: string[]; bytes: number }[];
  /** every agent answered never: the job cannot run on this fleet as it is */
  impossible: boolean;
  summary: string;
}
