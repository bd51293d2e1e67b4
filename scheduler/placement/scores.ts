// Score plugins: 0-100 each, for agents that passed every filter. The pipeline takes their
// weighted mean, so each plugin's range means the same thing.
import { deviceRooms, pickDevice } from './filters';
import type { AgentView, Job } from './types';

export type Score = (agent: AgentView, job: Job) => number;

/** Best fit: the job uses most of what is free on the device it gets (large holes stay open for large jobs). */
export const bestFit: Score = (view) => {
  if (!view.estimate) return 0;
  const free = pickDevice(deviceRooms(view), view.estimate.total)?.free ?? 0;
  return free > 0 ? Math.min(100, (100 * view.estimate.total) / free) : 0;
};

/** The agent that wrote the newest checkpoint may still have it on disk. */
export const holdsCheckpoint: Score = ({ holdsCheckpoint: holds }) => (holds ? 100 : 0);

/** Fewer running sessions first. */
export const leastBusy: Score = ({ sessions }) => Math.max(0, 100 - 25 * sessions);
