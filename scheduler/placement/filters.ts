// Filter plugins: can this agent take this job? Each answers fits, not_now (it may later:
// busy, cordoned, memory reserved by others) or never (it cannot, even idle), with every
// reason. Pure functions of the agent's view and the request.
import { capacityBytes, formatBytes, type Advert } from '../../shared';
import type { AgentView, FilterResult, Job } from './types';

export type Filter = (agent: AgentView, job: Job) => FilterResult;

const FITS: FilterResult = { code: 'fits', reasons: [] };
export const EXCLUDED = 'agent failed this job before';
const notNow = (...reasons: string[]): FilterResult => ({ code: 'not_now', reasons });
const never = (...reasons: string[]): FilterResult => ({ code: 'never', reasons });

/** Lowest compute capability of the agent's GPUs as a number (8.0), or null. */
function computeCapability(a: Advert): number | null {
  const caps = a.gpus.map((g) => Number(g.compute_capability)).filter((n) => Number.isFinite(n));
  return caps.length ? Math.min(...caps) : null;
}

export const ready: Filter = ({ advert }) => (advert.state === 'ready' ? FITS : notNow(`agent is ${advert.state}`));

export const notExcluded: Filter = ({ advert }, job) =>
  job.exclude.includes(advert.agent_id) ? never(EXCLUDED) : FITS;

export const selector: Filter = ({ advert }, job) => {
  const missing = Object.entries(job.spec.selector).filter(([k, v]) => advert.labels[k] !== v);
  return missing.length === 0
    ? FITS
    : never(
        `labels do not match ${missing.map(([k, v]) => `${k}=${v}`).join(', ')} (agent has ${
          Object.entries(advert.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(', ') || 'no labels'
        })`,
      );
};

export const modelCached: Filter = ({ advert }, job) =>
  advert.models.includes(job.spec.model)
    ? advert.model_shapes[job.spec.model]
      ? FITS
      : never(`base model ${job.spec.model} has no readable config.json on this agent`)
    : never(`base model ${job.spec.model} is not on this agent`);

export const method: Filter = ({ advert }, job) => {
  const m = job.spec.method;
  if (!advert.trainer.methods.includes(m)) return never(`trainer does not offer method ${m}`);
  const cc = computeCapability(advert);
  if (m === 'qlora' && (advert.accelerator !== 'cuda' || !advert.trainer.bitsandbytes))
    return never('qlora needs a CUDA GPU with bitsandbytes');
  if (m === 'qlora' && cc !== null && cc < 7.5)
    return never(`qlora needs compute capability 7.5 or newer (GPU has ${cc.toFixed(1)})`);
  if (
    job.spec.training.precision === 'bf16' &&
    advert.accelerator === 'cuda' &&
    (!advert.trainer.bf16 || (cc !== null && cc < 8))
  ) {
    return never(`bf16 needs compute capability 8.0 or newer (GPU has ${cc?.toFixed(1) ?? 'unknown'})`);
  }
  if (job.spec.training.precision === 'fp16' && advert.accelerator !== 'cuda')
    return never('fp16 training needs a CUDA GPU');
  if (job.spec.training.optimizer === 'adamw_8bit' && (advert.accelerator !== 'cuda' || !advert.trainer.bitsandbytes))
    return never('adamw_8bit needs a CUDA GPU with bitsandbytes');
  return FITS;
};

/** Free memory: capacity less what leases hold. Never: the estimate exceeds the capacity itself. */
export const memory: Filter = ({ advert, reserved, estimate }) => {
  if (!estimate) return FITS; // no shape: modelCached has said why
  const capacity = capacityBytes(advert);
  const need = estimate.total;
  if (need > capacity) return never(`needs ${formatBytes(need)}, the agent offers ${formatBytes(capacity)} in all`);
  const free = capacity - reserved;
  if (need > free)
    return notNow(
      `needs ${formatBytes(need)}, ${formatBytes(free)} free ` +
        `(${formatBytes(reserved)} of ${formatBytes(capacity)} reserved)`,
    );
  // a GPU shared with processes that hold no lease: what the driver says is free also bounds
  if (advert.accelerator === 'cuda' && reserved === 0) {
    const gpuFree = Math.max(...advert.gpus.map((g) => g.memory_free));
    if (need > gpuFree)
      return notNow(
        `needs ${formatBytes(need)}, the GPU has ${formatBytes(gpuFree)} free outside tunefleet's reservations`,
      );
  }
  return FITS;
};

/**
 * Session slots: an agent runs at most max_sessions at once (more would wait in its task queue until taken for gone).
 */
export const sessions: Filter = ({ advert, sessions: held }) =>
  advert.max_sessions !== undefined && held >= advert.max_sessions
    ? notNow(`runs ${held} of ${advert.max_sessions} sessions`)
    : FITS;
