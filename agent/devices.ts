// An agent's devices from what nvidia-smi says (pure parsers, tested on written-out and
// recorded outputs): `nvidia-smi -L` names every GPU and MIG instance with its UUID;
// `nvidia-smi topo -m` says which GPUs share NVLink, a PCIe switch or a NUMA node. The
// operator's --gpus keeps only the named devices, like CUDA_VISIBLE_DEVICES for the agent.
import { ErrorCode, TunefleetError, type Device, type GpuAdvert } from '../shared';

export interface ListedGpu {
  index: number;
  name: string;
  uuid: string;
  /** MIG instances in the order nvidia-smi lists them (Device 0, 1, …) */
  migs: { device: number; profile: string; uuid: string }[];
}

/**
 * Parse `nvidia-smi -L`: "GPU 0: NAME (UUID: GPU-…)" lines, each followed by its MIG instances'
 * "  MIG 3g.40gb Device 0: (UUID: MIG-…)" lines.
 */
export function parseNvidiaSmiList(out: string): ListedGpu[] {
  const gpus: ListedGpu[] = [];
  for (const raw of out.split(/\r?\n/)) {
    const gpu = /^GPU (\d+): (.*) \(UUID: (GPU-[^)\s]+)\)\s*$/.exec(raw.trim());
    if (gpu) {
      gpus.push({ index: Number(gpu[1]), name: gpu[2] ?? '', uuid: gpu[3] ?? '', migs: [] });
      continue;
    }
    const mig = /^MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)\s]+)\)\s*$/.exec(raw.trim());
    const last = gpus[gpus.length - 1];
    if (mig && last) last.migs.push({ profile: mig[1] ?? '', device: Number(mig[2]), uuid: mig[3] ?? '' });
  }
  return gpus;
}

export type Link = 'nvlink' | 'pcie_switch' | 'host_bridge' | 'numa_node' | 'system';

export interface Topology {
  /** link between two GPU indexes (both ways) */
  link(a: number, b: number): Link | null;
  numaNode(index: number): number | null;
}

const LINKS: Record<string, Link> = { PIX: 'pcie_switch', PXB: 'pcie_switch', PHB: 'host_bridge', NODE: 'numa_node' };

/** Parse `nvidia-smi topo -m`: the GPU rows of the matrix, and the NUMA Affinity column where there is one. */
export function parseTopology(out: string): Topology {
  const lines = out.split(/\r?\n/).filter((l) => l.trim() !== '');
  // the header names the columns (tab separated): GPU0 … GPUn, NICs, CPU Affinity, NUMA Affinity, GPU NUMA ID
  const header = lines.find((l) => !/^GPU\d/.test(l) && /\bGPU0\b/.test(l));
  const links = new Map<string, Link>();
  const numa = new Map<number, number | null>();
  if (!header) return { link: () => null, numaNode: () => null };
  const columns = header.trim().split(/\t+|\s{2,}/);
  const gpuColumns = columns.filter((c) => /^GPU\d+$/.test(c)).length;
  const numaAt = columns.indexOf('NUMA Affinity');
  for (const line of lines) {
    const cells = line.trim().split(/\s+/);
    const row = /^GPU(\d+)$/.exec(cells[0] ?? '');
    if (!row) continue;
    const from = Number(row[1]);
    for (let j = 0; j < gpuColumns; j++) {
      const cell = cells[j + 1] ?? '';
      const kind: Link | undefined = /^NV\d+$/.test(cell) ? 'nvlink' : cell === 'SYS' ? 'system' : LINKS[cell];
      if (kind && j !== from) links.set(`${Math.min(from, j)}-${Math.max(from, j)}`, kind);
    }
    if (numaAt >= 0) {
      // a row is its name, then one cell per header column (CPU Affinity "0-47,96-143" is one cell)
      const n = Number(cells[numaAt + 1] ?? NaN);
      numa.set(from, Number.isInteger(n) ? n : null);
    }
  }
  return {
    link: (a, b) => links.get(`${Math.min(a, b)}-${Math.max(a, b)}`) ?? null,
    numaNode: (i) => numa.get(i) ?? null,
  };
}

/**
 * The devices of `gpus`: each GPU, or with MIG on each instance (its UUID from `nvidia-smi -L`, its memory from
 * -q -x, matched by position); NVLink and PCIe-switch peers and the NUMA node from the topology.
 */
export function buildDevices(gpus: GpuAdvert[], listed: ListedGpu[], topo: Topology): Device[] {
  const byUuid = new Map(listed.map((l) => [l.uuid, l]));
  const peers = (g: GpuAdvert, kind: Link): string[] =>
    gpus.filter((o) => o.index !== g.index && topo.link(g.index, o.index) === kind).map((o) => o.uuid);
  return gpus.flatMap((g): Device[] => {
    const shared = {
      index: g.index,
      compute_capability: g.compute_capability,
      nvlink: peers(g, 'nvlink'),
      pcie_switch: peers(g, 'pcie_switch'),
      numa_node: topo.numaNode(g.index),
    };
    const migs = byUuid.get(g.uuid)?.migs ?? [];
    if (g.mig_mode === 'enabled' && g.mig_instances.length > 0) {
      // an instance without a MIG UUID cannot be pinned: it is not offered
      return g.mig_instances.flatMap((m, i) => {
        const named = migs[i];
        if (!named) return [];
        const free = Math.min(m.memory_free, m.memory_total);
        return [
          {
            ...shared,
            uuid: named.uuid,
            kind: 'mig',
            name: named.profile,
            parent: g.uuid,
            memory_total: m.memory_total,
            memory_free: free,
          },
        ];
      });
    }
    return [
      {
        ...shared,
        uuid: g.uuid,
        kind: 'gpu',
        name: g.name,
        parent: null,
        memory_total: g.memory_total,
        memory_free: g.memory_free,
      },
    ];
  });
}

/** `--gpus 0,1,5` or UUIDs (GPU-…, MIG-…): the tokens, or a FlagInvalid error saying what is wrong. */
export function parseGpuSelection(flag: string): string[] {
  const tokens = flag.split(',').map((t) => t.trim());
  const bad = tokens.find((t) => !/^\d{1,3}$/.test(t) && !/^(GPU|MIG)-[A-Za-z0-9-]{1,80}$/.test(t));
  if (tokens.length === 0 || bad !== undefined)
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      `--gpus '${flag}': '${bad ?? ''}' is neither a GPU index nor a GPU-/MIG- UUID (e.g. --gpus 0,1,5)`,
      { field: '--gpus' },
    );
  if (new Set(tokens).size !== tokens.length)
    throw new TunefleetError(ErrorCode.FlagInvalid, `--gpus '${flag}' names a device twice`, { field: '--gpus' });
  return tokens;
}

/**
 * Keep the devices `selection` names: an index keeps that GPU (or all its MIG instances), a UUID that GPU or
 * instance. A name that matches nothing is an error listing what there is.
 */
export function selectDevices(devices: Device[], selection: string[] | null): Device[] {
  if (!selection) return devices;
  const kept = new Set<Device>();
  const has = devices.map((d) => `${d.index} ${d.uuid}`).join(', ');
  for (const t of selection) {
    const hit = devices.filter((d) =>
      /^\d+$/.test(t) ? d.index === Number(t) && d.kind !== 'cpu' : d.uuid === t || d.parent === t,
    );
    if (hit.length === 0)
      throw new TunefleetError(
        ErrorCode.FlagInvalid,
        `--gpus names '${t}', which this host does not have (it has ${has || 'no GPU'})`,
        { field: '--gpus' },
      );
    for (const d of hit) kept.add(d);
  }
  return devices.filter((d) => kept.has(d));
}
