// Filter plugins: can this agent take this job? Each answers fits, not_now (it may later:
// busy, cordoned, memory reserved by others) or never (it cannot, even idle), with every
// reason. Pure functions of the agent's view and the request.
import { advertDevices, deviceCapacity, deviceLabel, formatBytes, type Advert, type Device } from '../../shared';
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

/** One device as placement sees it: what it offers, what leases hold, what is free for a new job. */
export interface DeviceRoom {
  device: Device;
  capacity: number;
  held: number;
  /** capacity less held; on an idle GPU also bounded by what the driver says is free (other processes) */
  free: number;
}

/** The agent's devices with their room; computed once per view (the memory filter and best fit both read it). */
export function deviceRooms(view: AgentView): DeviceRoom[] {
  if (view.rooms) return view.rooms;
  const { advert, onDevice } = view;
  view.rooms = advertDevices(advert).map((device) => {
    const capacity = deviceCapacity(advert, device);
    const held = onDevice(device.uuid);
    // a GPU shared with processes that hold no lease: what the driver says is free also bounds
    const driver = device.kind !== 'cpu' && held === 0 ? device.memory_free : Infinity;
    return { device, capacity, held, free: Math.max(0, Math.min(capacity - held, driver)) };
  });
  return view.rooms;
}

/** The device a job needing `need` bytes gets: the fullest one it still fits (best fit), or null. */
export function pickDevice(rooms: DeviceRoom[], need: number): DeviceRoom | null {
  let best: DeviceRoom | null = null;
  for (const r of rooms) if (r.free >= need && (!best || r.free < best.free)) best = r;
  return best;
}

/** Groups of devices that talk fast to each other, closest first: NVLink islands, PCIe switches, NUMA nodes. */
function topologyGroups(rooms: DeviceRoom[]): DeviceRoom[][] {
  const byUuid = new Map(rooms.map((r) => [r.device.uuid, r]));
  // an NVLink island: devices connected through NVLink links (nvidia-smi topo -m: NV#)
  const linked = (links: (d: Device) => string[]): DeviceRoom[][] => {
    const seen = new Set<string>();
    const groups: DeviceRoom[][] = [];
    for (const r of rooms) {
      if (seen.has(r.device.uuid) || links(r.device).length === 0) continue;
      const group: DeviceRoom[] = [];
      const todo = [r];
      seen.add(r.device.uuid);
      while (todo.length) {
        const x = todo.pop() as DeviceRoom;
        group.push(x);
        for (const u of links(x.device)) {
          const y = byUuid.get(u);
          if (y && !seen.has(u)) {
            seen.add(u);
            todo.push(y);
          }
        }
      }
      groups.push(group);
    }
    return groups;
  };
  const numa = new Map<number, DeviceRoom[]>();
  for (const r of rooms)
    if (r.device.numa_node !== null) numa.set(r.device.numa_node, [...(numa.get(r.device.numa_node) ?? []), r]);
  return [...linked((d) => d.nvlink), ...linked((d) => d.pcie_switch), ...numa.values()];
}

/**
 * The n devices a job needing `need` bytes on each gets: among devices with that much free, n in one NVLink island
 * if some island has them, else behind one PCIe switch, else on one NUMA node, else any n; within a group the fullest
 * that fit (best fit, big holes stay for big jobs). null when fewer than n have room.
 */
export function pickDevices(rooms: DeviceRoom[], need: number, n: number): DeviceRoom[] | null {
  if (n === 1) {
    const one = pickDevice(rooms, need);
    return one ? [one] : null;
  }
  const fit = rooms.filter((r) => combinable(r) && r.free >= need);
  if (fit.length < n) return null;
  const bestFit = (group: DeviceRoom[]): DeviceRoom[] => [...group].sort((a, b) => a.free - b.free).slice(0, n);
  for (const group of topologyGroups(fit)) if (group.length >= n) return bestFit(group);
  return bestFit(fit);
}

/** How many devices the job asks for (spec resources.gpus; 1 for specs from before it). */
export const devicesWanted = (job: Job): number => job.spec.resources?.gpus ?? 1;

/**
 * Memory, per device: a job gets `gpus` devices whose capacity less their leases covers the per-device estimate.
 * Never: the agent does not have that many devices that large, even idle.
 */
export const memory: Filter = (view, job) => {
  const { estimate } = view;
  if (!estimate) return FITS; // no shape: modelCached has said why
  const rooms = deviceRooms(view);
  const need = estimate.total;
  const n = devicesWanted(job);
  if (n > 1) return memoryOnMany(rooms, need, n);
  const largest = Math.max(0, ...rooms.map((r) => r.capacity));
  if (need > largest) {
    const what = rooms.length > 1 ? 'its largest device offers' : 'the agent offers';
    return never(`needs ${formatBytes(need)}, ${what} ${formatBytes(largest)} in all`);
  }
  if (pickDevice(rooms, need)) return FITS;
  if (rooms.length === 1) {
    const [r] = rooms as [DeviceRoom];
    if (r.capacity - r.held >= need)
      return notNow(
        `needs ${formatBytes(need)}, the GPU has ${formatBytes(r.free)} free outside tunefleet's reservations`,
      );
    return notNow(
      `needs ${formatBytes(need)}, ${formatBytes(r.free)} free ` +
        `(${formatBytes(r.held)} of ${formatBytes(r.capacity)} reserved)`,
    );
  }
  return notNow(`needs ${formatBytes(need)} on one device; free: ${freeList(rooms)}`);
};

const freeList = (rooms: DeviceRoom[]): string =>
  rooms.map((r) => `${deviceLabel(r.device)} ${formatBytes(r.free)}`).join(', ');

/**
 * Whole GPUs are what a job of several devices gets: a CUDA process sees one MIG instance at most and NCCL does not
 * span MIG instances, so they serve one-device jobs only.
 */
export const combinable = (r: DeviceRoom): boolean => r.device.kind === 'gpu';

function memoryOnMany(rooms: DeviceRoom[], need: number, n: number): FilterResult {
  const gpus = rooms.filter(combinable);
  const large = gpus.filter((r) => r.capacity >= need).length;
  const what = `needs ${n} devices with ${formatBytes(need)} each on one host`;
  if (large < n) {
    const mig = rooms.some((r) => r.device.kind === 'mig') ? ' (MIG instances are not combined into one job)' : '';
    const has =
      gpus.length === 0
        ? 'the agent has no whole GPU'
        : `the agent has ${gpus.length} GPUs, ${large} of them that large`;
    return never(`${what}; ${has}${mig}`);
  }
  if (pickDevices(rooms, need, n)) return FITS;
  const free = gpus.filter((r) => r.free >= need).length;
  return notNow(`${what}; ${free} ${free === 1 ? 'has' : 'have'} that much free now (free: ${freeList(rooms)})`);
}

/**
 * Session slots: an agent runs at most max_sessions at once (more would wait in its task queue until taken for gone).
 */
export const sessions: Filter = ({ advert, sessions: held }) =>
  advert.max_sessions !== undefined && held >= advert.max_sessions
    ? notNow(`runs ${held} of ${advert.max_sessions} sessions`)
    : FITS;
