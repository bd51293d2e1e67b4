// Placement: pure functions over the fleet, the leases and the job. Filters decide who can
// take the job (every reason kept), scores rank those who can, a seed from the job id
// breaks ties, and the whole decision is returned for `tunefleet explain`.
import {
  capacityBytes,
  deviceLabel,
  estimateForSpec,
  formatBytes,
  type Advert,
  type MemoryEstimate,
  type ModelShape,
} from '../../shared';
import * as F from './filters';
import { decideGang } from './gang';
import * as S from './scores';
import type { AgentDecision, AgentView, Decision, FilterCode, Job } from './types';

export type { AgentDecision, Decision, Job } from './types';

/** The pipeline, one stage per line. Order matters only for the order of reasons. */
const FILTERS: [string, F.Filter][] = [
  ['ready', F.ready], //             the agent accepts work (not cordoned, draining or drained)
  ['excluded', F.notExcluded], //    it did not fail this job before
  ['selector', F.selector], //       its labels match the spec's selector
  ['model', F.modelCached], //       it holds the base model and knows its shape
  ['method', F.method], //           its trainer and GPU can run the method and precision
  ['memory', F.memory], //           capacity less reservations covers the estimate
  ['sessions', F.sessions], //       a session slot is free
];
const SCORES: [string, S.Score, number][] = [
  ['best_fit', S.bestFit, 2], //             fill agents, keep big holes for big jobs
  ['holds_checkpoint', S.holdsCheckpoint, 1], // resume where the checkpoint already is
  ['least_busy', S.leastBusy, 1], //          spread sessions when the fit is equal
];

export interface FleetState {
  adverts: Advert[];
  /** bytes and sessions held by live leases, per agent, and on each of its devices */
  reserved: (agentId: string) => { bytes: number; sessions: number; onDevice?: (uuid: string) => number };
  /** agent that committed the job's newest checkpoint */
  checkpointAgent: string | null;
}

/**
 * A fleet larger than this is not scored whole: once SAMPLE_MIN agents (or SAMPLE_SHARE of the fleet, if more) fit,
 * the rest are not looked at and the best of those that fit wins (kube-scheduler's percentageOfNodesToScore).
 * A job that fits nowhere is still checked against every agent, so "no agent can ever run it" stays exact.
 */
export const SAMPLE_MIN = 100;
export const SAMPLE_SHARE = 0.1;

/**
 * The order agents are looked at: the fleet's own while it is small enough to be looked at whole; otherwise from an
 * offset fixed by the job id (jobs spread over the fleet, a job's decision is repeatable), the agent holding the
 * job's newest checkpoint first.
 */
function visitOrder(fleet: FleetState, jobId: string, enough: number): Advert[] {
  const all = fleet.adverts;
  if (all.length <= enough) return all;
  const start = Math.floor(tieBreak(jobId, '') * 1000 * all.length) % all.length;
  const rotated = [...all.slice(start), ...all.slice(0, start)];
  const holder = rotated.findIndex((a) => a.agent_id === fleet.checkpointAgent);
  if (holder > 0) rotated.unshift(...rotated.splice(holder, 1));
  return rotated;
}

/** FNV-1a: a stable tie-breaker from the job id and agent id. */
function tieBreak(jobId: string, agentId: string): number {
  let h = 0x811c9dc5;
  for (const ch of `${jobId}/${agentId}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h / 2 ** 32 / 1000;
}

/** Whole GPUs an agent offers (what a job of several devices can be given). */
const gpuCount = (v: AgentView): number => F.deviceRooms(v).filter(F.combinable).length;

/**
 * The device counts a job may run on, most first: resources.gpus, then (elastic, min_gpus below it) every smaller
 * count down to min_gpus that divides batch_size (and leaves whole micro-batches).
 */
export function deviceCounts(spec: Job['spec']): number[] {
  const most = spec.resources?.gpus ?? 1;
  const least = spec.resources?.min_gpus ?? most;
  const t = spec.training;
  const counts: number[] = [];
  for (let n = most; n >= least; n--) {
    const share = t.batch_size / n;
    if (
      n === most ||
      (Number.isInteger(share) && (t.micro_batch_size === undefined || share % t.micro_batch_size === 0))
    )
      counts.push(n);
  }
  return counts;
}

/**
 * Where the job runs, on how many devices: its resources.gpus on one agent; an elastic job (min_gpus) that fits
 * nowhere with that many now takes the most devices an agent has free, down to min_gpus. It is impossible only when
 * no count could ever be placed. Agents that failed this job are avoided at every count before any of them is
 * tried again.
 */
export function place(fleet: FleetState, job: Job): Decision {
  // a gang is one decision over several agents, each judged as a host of `gpus` devices
  const judge =
    (job.spec.resources?.nodes ?? 1) > 1 ? (f: FleetState, j: Job) => decideGang(f, j, decide) : onSomeCount;
  const first = judge(fleet, job);
  // Agents that failed this job are avoided, not banned: when no other agent fits, one of
  // them gets another try (the workflow's attempt budget bounds the retries). Having failed
  // the job never makes it impossible: that is decided as if no agent had failed it (every
  // agent failed it once and all are busy now: the job waits; none could ever hold it: it fails).
  if (first.chosen || job.exclude.length === 0) return first;
  const again = judge(fleet, { ...job, exclude: [] });
  // a gang waits for members that have not failed it while they could fit later: right after a gang fails, its
  // healthy members still show their ending sessions for a moment, and taking the failed agent instead would repeat
  // the failure (its port, its host) until the job gives up
  const gangWaits = (job.spec.resources?.nodes ?? 1) > 1 && !first.impossible;
  if (again.chosen && !gangWaits)
    return { ...again, summary: `${again.summary}; no agent that has not failed this job fits, so it is tried again` };
  return { ...first, impossible: again.impossible };
}

function onSomeCount(fleet: FleetState, job: Job): Decision {
  const counts = deviceCounts(job.spec);
  const most = counts[0] as number;
  const first = decide(fleet, job);
  if (first.chosen || counts.length === 1) return first;
  let impossible = first.impossible;
  for (const n of counts.slice(1)) {
    const d = decide(fleet, { ...job, spec: { ...job.spec, resources: { ...job.spec.resources, gpus: n } } });
    if (d.chosen) return { ...d, summary: `${d.summary}; on ${n} of ${most} devices: no agent has ${most} for it now` };
    impossible &&= d.impossible;
  }
  return { ...first, impossible };
}

function decide(fleet: FleetState, job: Job): Decision {
  // one estimate per model shape and accelerator, not one per agent
  const estimates = new Map<ModelShape, Map<Advert['accelerator'], MemoryEstimate>>();
  const estimate = (shape: ModelShape, accelerator: Advert['accelerator']): MemoryEstimate => {
    const byAcc = estimates.get(shape) ?? new Map<Advert['accelerator'], MemoryEstimate>();
    estimates.set(shape, byAcc);
    const e = byAcc.get(accelerator) ?? estimateForSpec(job.spec, shape, accelerator);
    byAcc.set(accelerator, e);
    return e;
  };
  const view = (advert: Advert): AgentView => {
    const r = fleet.reserved(advert.agent_id);
    const shape = advert.model_shapes[job.spec.model];
    return {
      advert,
      reserved: r.bytes,
      // without a per-device count every device carries all the agent holds
      onDevice: r.onDevice ?? (() => r.bytes),
      sessions: r.sessions,
      holdsCheckpoint: fleet.checkpointAgent === advert.agent_id,
      estimate: shape ? estimate(shape, advert.accelerator) : null,
    };
  };
  const judge = (v: AgentView): AgentDecision => {
    const rooms = F.deviceRooms(v);
    const results = FILTERS.map(([, f]) => f(v, job));
    const code: FilterCode = results.some((r) => r.code === 'never')
      ? 'never'
      : results.some((r) => r.code === 'not_now')
        ? 'not_now'
        : 'fits';
    const scores: Record<string, number> = {};
    let total: number | null = null;
    if (code === 'fits') {
      let sum = 0;
      let weights = 0;
      for (const [name, s, w] of SCORES) {
        scores[name] = Math.round(s(v, job) * 10) / 10;
        sum += scores[name] * w;
        weights += w;
      }
      total = sum / weights + tieBreak(job.jobId, v.advert.agent_id);
    }
    return {
      agentId: v.advert.agent_id,
      code,
      reasons: results.flatMap((r) => r.reasons),
      scores,
      total,
      estimate: v.estimate?.total ?? null,
      free: Math.max(0, ...rooms.map((r) => r.free)),
      devices:
        v.estimate && code === 'fits'
          ? (F.pickDevices(rooms, v.estimate.total, F.devicesWanted(job))?.map((r) => r.device.uuid) ?? [])
          : [],
    };
  };
  // a large fleet is looked at until enough agents fit, then the best of those wins
  const enough = Math.max(SAMPLE_MIN, Math.ceil(SAMPLE_SHARE * fleet.adverts.length));
  const views: AgentView[] = [];
  const agents: AgentDecision[] = [];
  // the highest total wins (one pass: a large fleet need not be sorted to find it)
  let best: AgentDecision | null = null;
  let fitting = 0;
  for (const advert of visitOrder(fleet, job.jobId, enough)) {
    if (fitting >= enough) break;
    const v = view(advert);
    const d = judge(v);
    views.push(v);
    agents.push(d);
    if (d.total === null) continue;
    fitting += 1;
    if (!best || d.total > (best.total as number)) best = d;
  }
  const unseen = fleet.adverts.length - agents.length;
  const chosen = best?.agentId ?? null;
  const impossible = agents.length > 0 && agents.every((d) => d.code === 'never');
  let summary: string;
  // every agent's reasons, for a job that is not placed (not built for one that is: a large fleet pays for it)
  // agents with the same reasons are named together (a fleet of 100 hosts without the model is one line, not 100)
  const reasons = (): string => {
    const groups = new Map<string, string[]>();
    for (const d of agents) {
      const why = d.reasons.join('; ');
      groups.set(why, [...(groups.get(why) ?? []), d.agentId]);
    }
    const named = (ids: string[]): string =>
      ids.length <= 3 ? ids.join(', ') : `${ids.slice(0, 3).join(', ')} and ${ids.length - 3} more`;
    return [...groups].map(([why, ids]) => `${named(ids)}: ${why}`).join(' | ');
  };
  if (chosen) {
    const reserves = formatBytes(agents.find((a) => a.agentId === chosen)?.estimate ?? 0);
    const uuids = agents.find((a) => a.agentId === chosen)?.devices ?? [];
    const offered = views.find((v) => v.advert.agent_id === chosen)?.advert.devices ?? [];
    const labels = uuids.flatMap((u) => offered.filter((x) => x.uuid === u && x.kind !== 'cpu').map(deviceLabel));
    const where = labels.length ? `${chosen} ${labels.join(', ')}` : chosen;
    const looked = unseen > 0 ? `, ${unseen} more not looked at` : '';
    summary = `placed on ${where} (${fitting} of ${agents.length} agents fit${looked}; reserves ${reserves})`;
  } else if (agents.length === 0) summary = 'no agent is advertising';
  else if (impossible) {
    const withEstimate = agents.filter((d) => d.estimate !== null);
    const largest = views.reduce<AgentView | null>(
      (m, v) => (!m || capacityBytes(v.advert) > capacityBytes(m.advert) ? v : m),
      null,
    );
    const need = withEstimate.length ? Math.min(...withEstimate.map((d) => d.estimate as number)) : null;
    const n = F.devicesWanted(job);
    const most = views.reduce<AgentView | null>((m, v) => (!m || gpuCount(v) > gpuCount(m) ? v : m), null);
    let numbers = '';
    if (n > 1 && most && gpuCount(most) < n)
      numbers =
        `: needs ${n} GPUs on one host, ` + `the most any agent has is ${gpuCount(most)} (${most.advert.agent_id})`;
    else if (need !== null && largest)
      numbers =
        `: needs ${formatBytes(need)}${n > 1 ? ` on each of ${n} devices` : ''}, the largest agent ` +
        `(${largest.advert.agent_id}) offers ${formatBytes(capacityBytes(largest.advert))}`;
    summary = `no agent can ever run this job${numbers} — ${reasons()}`;
  } else summary = `no agent fits now: ${reasons()}`;
  const chosenView = views.find((v) => v.advert.agent_id === chosen);
  const devices = agents.find((a) => a.agentId === chosen)?.devices ?? [];
  return { jobId: job.jobId, chosen, devices, estimate: chosenView?.estimate ?? null, agents, impossible, summary };
}
