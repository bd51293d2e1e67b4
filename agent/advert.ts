// Building and publishing this agent's advert: host facts from systeminformation, GPUs
// from nvidia-smi, the trainer's capabilities from one probe of its Python environment.
import type { Session } from './session/deps';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import si from 'systeminformation';
import {
  ADVERT_PROTOCOL_VERSION,
  MODEL_NAME_PATTERN,
  shapeFromConfig,
  type Advert,
  type AgentState,
  type GpuAdvert,
  type ModelShape,
  cpuDevice,
} from '../shared';
import { selectDevices } from './devices';
import { probeGpus } from './gpu';
import { TRAINER_DIR } from '../shared/trainerenv';

export interface TrainerCaps {
  methods: string[];
  bitsandbytes: boolean;
  bf16: boolean;
  cuda: boolean;
}

/** Ask the trainer's Python what it can do (once, at start). */
export function probeTrainer(python: string): Promise<TrainerCaps> {
  const code = [
    'import json, importlib.util as u',
    'import torch',
    'cuda = torch.cuda.is_available()',
    'bnb = cuda and u.find_spec("bitsandbytes") is not None',
    'bf16 = bool(cuda and torch.cuda.is_bf16_supported())',
    'print(json.dumps({"cuda": cuda, "bitsandbytes": bnb, "bf16": bf16}))',
  ].join('\n');
  return new Promise((resolve) => {
    execFile(python, ['-c', code], { cwd: TRAINER_DIR, timeout: 120_000 }, (err, stdout) => {
      const base = ['lora', 'dora', 'ia3', 'prefix', 'prompt', 'adapter', 'full'];
      if (err) {
        resolve({ methods: [], bitsandbytes: false, bf16: false, cuda: false });
        return;
      }
      try {
        const line = stdout.trim().split('\n').pop() ?? '{}';
        const caps = JSON.parse(line) as { cuda: boolean; bitsandbytes: boolean; bf16: boolean };
        resolve({
          methods: caps.bitsandbytes ? [...base, 'qlora'] : base,
          bitsandbytes: caps.bitsandbytes,
          bf16: caps.bf16,
          cuda: caps.cuda,
        });
      } catch {
        resolve({ methods: [], bitsandbytes: false, bf16: false, cuda: false });
      }
    });
  });
}

/** Models this agent holds: sub-directories with a config.json and safetensors weights. */
export function cachedModels(modelsDir: string): string[] {
  if (!existsSync(modelsDir)) return [];
  return readdirSync(modelsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && MODEL_NAME_PATTERN.test(d.name))
    .filter((d) => {
      const files = readdirSync(join(modelsDir, d.name));
      return files.includes('config.json') && files.some((f) => f.endsWith('.safetensors'));
    })
    .map((d) => d.name)
    .sort();
}

/** Each model's shape from its config.json (a model whose config is unreadable is left out: placement then says so). */
export function modelShapes(modelsDir: string, models: string[]): Record<string, ModelShape> {
  const out: Record<string, ModelShape> = {};
  for (const m of models) {
    try {
      const shape = shapeFromConfig(
        JSON.parse(readFileSync(join(modelsDir, m, 'config.json'), 'utf8')) as Record<string, unknown>,
      );
      if (shape) out[m] = shape;
    } catch {
      // unreadable or not JSON: no shape
    }
  }
  return out;
}

export interface HostFacts {
  hostname: string;
  os: string;
  cpuModel: string;
  cores: number;
  nvidiaControllers: number;
}

export async function hostFacts(): Promise<HostFacts> {
  const [cpu, os, graphics] = await Promise.all([
    si.cpu(),
    si.osInfo(),
    si.graphics().catch(() => ({ controllers: [] })),
  ]);
  const nvidiaControllers = graphics.controllers.filter((c) => /nvidia/i.test(`${c.vendor} ${c.model}`)).length;
  return {
    nvidiaControllers,
    hostname: os.hostname,
    os: `${os.distro} ${os.release} (${os.kernel}, ${os.arch})`.trim(),
    cpuModel: `${cpu.manufacturer} ${cpu.brand}`.trim(),
    cores: cpu.cores,
  };
}

export interface AdvertInput {
  agentId: string;
  state: AgentState;
  labels: Record<string, string>;
  host: HostFacts;
  caps: TrainerCaps;
  modelsDir: string;
  sessions: Pick<Session, 'jobId' | 'attempt' | 'reservedBytes' | 'devices' | 'rank' | 'nodes'>[];
  /** where gang peers reach this agent (its rendezvous address and port range); unset: it takes no gang */
  rendezvous?: { address: string; ports: [number, number] };
  /** bytes offered to jobs on each device (--capacity); unset: the device's memory, or on CPU the RAM at start */
  capacity?: number;
  /** sessions the agent runs at once */
  maxSessions: number;
  /** --gpus: the GPU indexes or UUIDs this agent offers (unset: all) */
  gpuSelection?: string[];
}

export async function buildAdvert(i: AdvertInput): Promise<{ advert: Advert; gpuNote: string | null }> {
  const [mem, probed] = await Promise.all([si.mem(), probeGpus()]);
  const seam = process.env.TUNEFLEET_NVIDIA_SMI;
  let gpu: { gpus: GpuAdvert[]; note: string | null } = probed;
  if (probed.gpus.length === 0 && i.host.nvidiaControllers > 0) {
    gpu = {
      gpus: [],
      note:
        `systeminformation sees ${i.host.nvidiaControllers} NVIDIA controller(s) ` +
        `but ${probed.note ?? 'nvidia-smi lists none'}`,
    };
  } else if (probed.gpus.length > 0 && !i.caps.cuda && seam) {
    // the test seam: a recorded or written-out host's GPUs are offered, and trainers run on this CPU
    gpu = {
      gpus: probed.gpus,
      note:
        `TUNEFLEET_NVIDIA_SMI (${seam}): offering ${probed.gpus.length} GPU(s) it lists; ` +
        "the trainer's torch sees no CUDA device, so sessions run on the CPU with their CUDA_VISIBLE_DEVICES set",
    };
  } else if (probed.gpus.length > 0 && !i.caps.cuda) {
    // the GPUs are shown, but this trainer cannot use them: jobs run on CPU here
    gpu = {
      gpus: probed.gpus,
      note: `nvidia-smi lists ${probed.gpus.length} GPU(s) but the trainer's torch sees no CUDA device: CPU agent`,
    };
  }
  const cuda = gpu.gpus.length > 0 && (i.caps.cuda || !!seam);
  // the devices sessions are given: the selected GPUs or MIG instances, or the CPU with the RAM available
  let devices = [cpuDevice(i.host.cpuModel, Math.min(mem.total, mem.available))];
  if (cuda) {
    try {
      devices = selectDevices(probed.devices, i.gpuSelection ?? null);
    } catch (e) {
      // checked at start; a selected GPU gone since (fallen off the bus, driver reset): offer nothing, say why
      devices = [];
      gpu = { ...gpu, note: `${e instanceof Error ? e.message : String(e)}: this agent offers no device` };
    }
  }
  const offered = new Set(devices.flatMap((d) => [d.uuid, d.parent]));
  const gpus = i.gpuSelection && cuda ? gpu.gpus.filter((g) => offered.has(g.uuid)) : gpu.gpus;
  const models = cachedModels(i.modelsDir);
  const advert: Advert = {
    v: ADVERT_PROTOCOL_VERSION,
    agent_id: i.agentId,
    hostname: i.host.hostname,
    os: i.host.os,
    state: i.state,
    labels: i.labels,
    accelerator: cuda ? 'cuda' : 'cpu',
    gpus,
    devices,
    cpu: { model: i.host.cpuModel, cores: Math.max(1, i.host.cores) },
    memory: { total: mem.total, available: Math.min(mem.total, mem.available) },
    sessions: i.sessions.map((s) => ({
      job_id: s.jobId,
      attempt: s.attempt,
      reserved_bytes: s.reservedBytes,
      devices: s.devices,
      ...(s.rank !== undefined ? { rank: s.rank, nodes: s.nodes } : {}),
    })),
    ...(i.rendezvous ? { rendezvous: i.rendezvous } : {}),
    models,
    model_shapes: modelShapes(i.modelsDir, models),
    ...(i.capacity !== undefined ? { capacity: i.capacity } : {}),
    max_sessions: i.maxSessions,
    trainer: { methods: i.caps.methods, bitsandbytes: i.caps.bitsandbytes, bf16: i.caps.bf16 },
    time: Date.now(),
  };
  return { advert, gpuNote: gpu.note };
}
