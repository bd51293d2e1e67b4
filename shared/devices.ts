// Devices: what an agent can hand to a session. Every GPU, or every MIG instance of a GPU
// with MIG on (then the instances, not the card, are the devices), or on a CPU-only agent
// one CPU device (its RAM). Adverts of protocol 2 carry them; for an older advert they are
// derived from its GPU list (tolerant reading).
import { z } from 'zod';
import { capacityBytes, type Advert } from './advert';

const bytes = z
  .number()
  .int()
  .nonnegative()
  .max(64 * 2 ** 40);

export const DEVICE_KINDS = ['gpu', 'mig', 'cpu'] as const;

export const deviceSchema = z
  .object({
    /** what CUDA_VISIBLE_DEVICES names: GPU-…, MIG-…, or 'cpu' */
    uuid: z.string().min(1),
    kind: z.enum(DEVICE_KINDS),
    /** the GPU's index (a MIG instance: its parent's), 0 for the CPU device */
    index: z.number().int().nonnegative(),
    /** the product name, or the MIG profile ("3g.40gb") */
    name: z.string(),
    /** a MIG instance's GPU */
    parent: z.string().nullable().default(null),
    memory_total: bytes,
    memory_free: bytes,
    compute_capability: z.string().nullable().default(null),
    /** devices joined to this one by NVLink (nvidia-smi topo -m: NV#) */
    nvlink: z.array(z.string()).default([]),
    /** devices behind the same PCIe switch (PIX, PXB) */
    pcie_switch: z.array(z.string()).default([]),
    /** its NUMA node, where nvidia-smi topo -m says */
    numa_node: z.number().int().nonnegative().nullable().default(null),
  })
  .refine((d) => d.memory_free <= d.memory_total, 'free memory cannot exceed total memory');
export type Device = z.infer<typeof deviceSchema>;
export type DeviceInput = z.input<typeof deviceSchema>;

/** The advert's devices; for an advert without them (protocol 1), derived from its GPUs and RAM. */
export function advertDevices(a: Advert): Device[] {
  // protocol 2 says what it offers, even nothing (a MIG GPU whose instances have no UUID to pin them by)
  if (a.devices) return a.devices;
  if (a.accelerator !== 'cuda' || a.gpus.length === 0) return [cpuDevice(a.cpu.model, a.memory.available)];
  return a.gpus.flatMap((g): Device[] =>
    g.mig_mode === 'enabled' && g.mig_instances.length > 0
      ? g.mig_instances.map((m) => ({
          ...deviceDefaults,
          uuid: `${g.uuid}/gi${m.gpu_instance}/ci${m.compute_instance}`,
          kind: 'mig',
          index: g.index,
          name: `MIG instance ${m.gpu_instance}/${m.compute_instance}`,
          parent: g.uuid,
          memory_total: m.memory_total,
          memory_free: m.memory_free,
          compute_capability: g.compute_capability,
        }))
      : [
          {
            ...deviceDefaults,
            uuid: g.uuid,
            kind: 'gpu',
            index: g.index,
            name: g.name,
            memory_total: g.memory_total,
            memory_free: g.memory_free,
            compute_capability: g.compute_capability,
          },
        ],
  );
}

const deviceDefaults = { parent: null, nvlink: [], pcie_switch: [], numa_node: null, compute_capability: null };

export function cpuDevice(model: string, available: number): Device {
  return {
    ...deviceDefaults,
    uuid: 'cpu',
    kind: 'cpu',
    index: 0,
    name: model,
    memory_total: available,
    memory_free: available,
  };
}

/**
 * Bytes a device offers to sessions before reservations: a GPU or MIG instance its memory (at most the agent's
 * --capacity when one is set), the CPU device what the agent offers in all.
 */
export function deviceCapacity(a: Advert, d: Device): number {
  if (d.kind === 'cpu') return capacityBytes(a);
  return a.capacity !== undefined ? Math.min(a.capacity, d.memory_total) : d.memory_total;
}

/** A device's short name for people: "GPU 3", "GPU 0 MIG 3g.40gb (MIG-1f0c…)", "CPU". */
export function deviceLabel(d: Device): string {
  if (d.kind === 'cpu') return 'CPU';
  if (d.kind === 'mig') return `GPU ${d.index} MIG ${d.name} (${d.uuid.slice(0, 12)}…)`;
  return `GPU ${d.index}`;
}
