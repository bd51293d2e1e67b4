// Gang placement: a multi-node job (resources.nodes = M above 1) is one decision over M
// agents. Each agent is judged as for a one-host job of `gpus` devices (the same filters
// and scores); the gang takes the M best that fit now, preferring M that share a network
// segment (the agents' `segment` label) when the fleet has such a group. Rank 0, the
// member that speaks for the job and hosts the rendezvous, is the best-scoring of them (the
// agent holding the job's checkpoint scores higher, so a healthy member is kept when it is
// still the best choice). Pure, like the rest of placement: leases are taken by the caller,
// all or nothing in agent-id order.
import { formatBytes } from '../../shared';
import type { FleetState } from './index';
import type { AgentDecision, Decision, Job } from './types';

/** Agents with the same value of this label are on one network segment: a gang prefers to stay inside one. */
export const SEGMENT_LABEL = 'segment';

/** The reason an agent without a rendezvous address cannot be a member. */
export const NO_RENDEZVOUS = 'advertises no rendezvous address (an agent older than gangs)';

const bySkill = (a: AgentDecision, b: AgentDecision): number =>
  (b.total as number) - (a.total as number) || a.agentId.localeCompare(b.agentId);

export function decideGang(fleet: FleetState, job: Job, decide: (f: FleetState, j: Job) => Decision): Decision {
  const nodes = job.spec.resources?.nodes ?? 1;
  const gpus = job.spec.resources?.gpus ?? 1;
  const one = decide(fleet, job);
  const byId = new Map(fleet.adverts.map((a) => [a.agent_id, a]));
  // every member is reached by the others (the process group connects each pair): it must advertise where
  const agents: AgentDecision[] = one.agents.map((a) =>
    byId.get(a.agentId)?.rendezvous
      ? a
      : { ...a, code: 'never', total: null, devices: [], reasons: [...a.reasons, NO_RENDEZVOUS] },
  );
  const fitting = agents.filter((a) => a.total !== null).sort(bySkill);
  const possible = agents.filter((a) => a.code !== 'never');
  const need = Math.min(...agents.map((a) => a.estimate ?? Infinity));
  const shape =
    `${nodes} agents with ${gpus} free device${gpus > 1 ? 's' : ''} each` +
    (Number.isFinite(need) ? ` (${formatBytes(need)}${gpus > 1 ? ' on each device' : ''})` : '');
  const reasons = (list: AgentDecision[]): string =>
    list.map((d) => `${d.agentId}: ${d.reasons.join('; ') || 'fits'}`).join(' | ');
  const base = { jobId: job.jobId, agents, estimate: null, devices: [] as string[] };
  if (agents.length === 0) return { ...base, chosen: null, impossible: false, summary: 'no agent is advertising' };
  if (possible.length < nodes) {
    const could = possible.length ? ` (${possible.map((a) => a.agentId).join(', ')})` : '';
    return {
      ...base,
      chosen: null,
      impossible: true,
      summary:
        `no ${nodes} agents can ever run this gang: needs ${shape}; ${possible.length} of ${agents.length} ` +
        `could${could} — ${reasons(agents.filter((a) => a.code === 'never'))}`,
    };
  }
  if (fitting.length < nodes) {
    const now = fitting.length ? ` (${fitting.map((a) => a.agentId).join(', ')})` : '';
    return {
      ...base,
      chosen: null,
      impossible: false,
      summary:
        `needs ${shape}; ${fitting.length} fit${fitting.length === 1 ? 's' : ''} now${now} — ` +
        reasons(agents.filter((a) => a.total === null)),
    };
  }
  const members = pickMembers(fitting, nodes, (id) => byId.get(id)?.labels[SEGMENT_LABEL]);
  const chosen = members[0] as AgentDecision;
  const segment = byId.get(chosen.agentId)?.labels[SEGMENT_LABEL];
  const together =
    segment !== undefined && members.every((m) => byId.get(m.agentId)?.labels[SEGMENT_LABEL] === segment);
  return {
    ...base,
    chosen: chosen.agentId,
    devices: chosen.devices,
    estimate: one.chosen === chosen.agentId ? one.estimate : estimateOn(fleet, job, chosen.agentId, decide),
    impossible: false,
    members: members.map((m, rank) => ({
      agentId: m.agentId,
      rank,
      devices: m.devices,
      bytes: m.estimate as number,
    })),
    summary:
      `gang of ${nodes} placed: ${members.map((m, r) => `rank ${r} ${m.agentId}`).join(', ')} ` +
      `(${fitting.length} of ${agents.length} agents fit` +
      `${together ? `; all on segment ${segment}` : ''}; reserves ${formatBytes(chosen.estimate ?? 0)} on each)`,
  };
}

/**
 * The `nodes` best agents, all from one segment when a segment has that many (the segment whose best `nodes` score
 * highest in sum), else the best over the fleet. Rank order: best first.
 */
function pickMembers(
  fitting: AgentDecision[],
  nodes: number,
  segmentOf: (id: string) => string | undefined,
): AgentDecision[] {
  const groups = new Map<string, AgentDecision[]>();
  for (const a of fitting) {
    const s = segmentOf(a.agentId);
    if (s === undefined) continue;
    groups.set(s, [...(groups.get(s) ?? []), a]);
  }
  let best: AgentDecision[] | null = null;
  let bestSum = -Infinity;
  for (const [, list] of [...groups].sort(([a], [b]) => a.localeCompare(b))) {
    if (list.length < nodes) continue;
    const top = list.slice(0, nodes);
    const sum = top.reduce((n, a) => n + (a.total as number), 0);
    if (sum > bestSum) [best, bestSum] = [top, sum];
  }
  return best ?? fitting.slice(0, nodes);
}

/** The memory estimate on one agent (its accelerator's), from a decision made with that agent alone. */
function estimateOn(
  fleet: FleetState,
  job: Job,
  agentId: string,
  decide: (f: FleetState, j: Job) => Decision,
): Decision['estimate'] {
  return decide({ ...fleet, adverts: fleet.adverts.filter((a) => a.agent_id === agentId) }, job).estimate;
}
