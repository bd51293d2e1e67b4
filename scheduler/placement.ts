// Placement: pure functions over a fleet snapshot. Filters say whether an agent can take
// the job and, when not, every reason; scores rank the agents that can (0-100 each,
// summed). Ties are broken by a seed from the job id, so a decision can be replayed.
import { allocatableBytes, type Advert } from '../shared';
import type { PlaceRequest } from '../shared/activities';

export type FilterCode = 'fits' | 'not_now' | 'never';
export interface FilterResult { code: FilterCode; reasons: string[] }
export type Filter = (a: Advert, req: PlaceRequest, sessions: number) => FilterResult;
export type Score = (a: Advert, req: PlaceRequest, sessions: number) => number;

const fits: FilterResult = { code: 'fits', reasons: [] };
const EXCLUDED = 'agent failed this job before';

export const filters: Record<string, Filter> = {
  ready: (a) => (a.state === 'ready' ? fits : { code: 'not_now', reasons: [`agent is ${a.state}`] }),
  notExcluded: (a, req) => (req.exclude.includes(a.agent_id) ? { code: 'never', reasons: [EXCLUDED] } : fits),
  modelCached: (a, req) => (a.models.includes(req.spec.model) ? fits : { code: 'never', reasons: [`base model ${req.spec.model} is not on this agent`] }),
  method: (a, req) =>
    a.trainer.methods.includes(req.spec.method)
      ? req.spec.method === 'qlora' && (a.accelerator !== 'cuda' || !a.trainer.bitsandbytes)
        ? { code: 'never', reasons: ['qlora needs a CUDA GPU with bitsandbytes'] }
        : fits
      : { code: 'never', reasons: [`trainer does not offer method ${req.spec.method}`] },
};

export const scores: Record<string, Score> = {
  // fewer running sessions first
  leastBusy: (_a, _req, sessions) => Math.max(0, 100 - 25 * sessions),
  // more memory to spare first (normalised to 0-100 over 0..80 GiB)
  headroom: (a) => Math.min(100, (allocatableBytes(a) / (80 * 2 ** 30)) * 100),
};

export interface AgentDecision { agentId: string; code: FilterCode; reasons: string[]; score: number | null }
export interface Decision { chosen: string | null; agents: AgentDecision[]; summary: string }

/** FNV-1a: a stable tie-breaker from the job id and agent id. */
function tieBreak(jobId: string, agentId: string): number {
  let h = 0x811c9dc5;
  for (const ch of `${jobId}/${agentId}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h / 2 ** 32;
}

export function place(fleet: Advert[], req: PlaceRequest, sessionsOf: (agentId: string) => number): Decision {
  const first = decide(fleet, req, sessionsOf);
  // Agents that failed this job are avoided, not banned: when no other agent fits, one of
  // them gets another try (the workflow's attempt budget bounds the retries).
  if (first.chosen || req.exclude.length === 0) return first;
  const onlyExcluded = first.agents.some((d) => d.reasons.length === 1 && d.reasons[0] === EXCLUDED);
  if (!onlyExcluded) return first;
  const again = decide(fleet, { ...req, exclude: [] }, sessionsOf);
  return again.chosen ? { ...again, summary: `${again.summary}; no agent that has not failed this job fits, so it is tried again` } : first;
}

function decide(fleet: Advert[], req: PlaceRequest, sessionsOf: (agentId: string) => number): Decision {
  const agents: AgentDecision[] = fleet.map((a) => {
    const n = sessionsOf(a.agent_id);
    const results = Object.values(filters).map((f) => f(a, req, n));
    const reasons = results.flatMap((r) => r.reasons);
    const code: FilterCode = results.some((r) => r.code === 'never') ? 'never' : results.some((r) => r.code === 'not_now') ? 'not_now' : 'fits';
    const score = code === 'fits' ? Object.values(scores).reduce((s, f) => s + f(a, req, n), 0) + tieBreak(req.jobId, a.agent_id) : null;
    return { agentId: a.agent_id, code, reasons, score };
  });
  const candidates = agents.filter((d) => d.score !== null).sort((x, y) => (y.score as number) - (x.score as number));
  const chosen = candidates[0]?.agentId ?? null;
  const summary = chosen
    ? `placed on ${chosen} (${candidates.length} of ${agents.length} agents fit)`
    : agents.length === 0
      ? 'no agent is advertising'
      : `no agent fits now: ${agents.map((d) => `${d.agentId}: ${d.reasons.join('; ')}`).join(' | ')}`;
  return { chosen, agents, summary };
}
