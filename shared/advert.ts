// Agent adverts: what each agent writes to the KV bucket tunefleet-adverts every few
// seconds (key = agent id). Protocol version 2 (adds `devices`); a version-1 advert is still
// read, its devices derived from its GPUs (shared/devices.ts). Placement reads only adverts
// that pass this schema; impossible numbers are rejected here, not in placement.
import { z } from 'zod';
import { ErrorCode, TunefleetError } from './errors';
import { ID_PATTERN, MODEL_NAME_PATTERN } from './names';
import { advertDevices, deviceSchema } from './devices';

export const ADVERT_PROTOCOL_VERSION = 2;
/** the oldest advert version readers still accept */
export const ADVERT_OLDEST_READ = 1;
/** No single accelerator or host in this decade has more than this; more means a bug or a forgery. */
const MAX_BYTES = 64 * 2 ** 40; // 64 TiB

const bytes = z.number().int().nonnegative().max(MAX_BYTES);

export const gpuAdvert = z
  .object({
    index: z.number().int().nonnegative(),
    uuid: z.string(),
    name: z.string(),
    memory_total: bytes,
    memory_used: bytes,
    memory_free: bytes,
    utilization_pct: z.number().min(0).max(100).nullable(),
    temperature_c: z.number().min(-50).max(150).nullable(),
    compute_capability: z.string().nullable(),
    power_w: z.number().min(0).max(10_000).nullable().default(null),
    driver_version: z.string().nullable().default(null),
    cuda_version: z.string().nullable().default(null),
    mig_mode: z.enum(['enabled', 'disabled']).nullable().default(null),
    /** MIG instances when MIG is on: each is a separate placement target */
    mig_instances: z
      .array(
        z.object({
          gpu_instance: z.number().int().nonnegative(),
          compute_instance: z.number().int().nonnegative(),
          memory_total: bytes,
          memory_free: bytes,
        }),
      )
      .default([]),
    /** uncorrectable ECC errors since the driver loaded (volatile); null where ECC is off or unsupported */
    ecc_uncorrectable: z.number().int().nonnegative().nullable().default(null),
  })
  .refine(
    (g) => g.memory_free <= g.memory_total && g.memory_used <= g.memory_total,
    'free and used memory cannot exceed total memory',
  );
export type GpuAdvert = z.infer<typeof gpuAdvert>;
export type GpuAdvertInput = z.input<typeof gpuAdvert>;

const count = z
  .number()
  .int()
  .positive()
  .max(2 ** 50);
const modelShapeSchema = z.object({
  params: count,
  layers: count.max(10_000),
  hidden: count.max(1_000_000),
  intermediate: count.max(10_000_000),
  vocab: count.max(100_000_000),
  heads: count.max(100_000),
  kv_heads: count.max(100_000),
  tied_embeddings: z.boolean(),
});

export const AGENT_STATES = ['ready', 'cordoned', 'draining', 'drained'] as const;
export type AgentState = (typeof AGENT_STATES)[number];

export const advertSchema = z.object({
  v: z
    .number()
    .int()
    .min(ADVERT_OLDEST_READ, `advert protocol older than ${ADVERT_OLDEST_READ}: upgrade that agent`)
    .max(ADVERT_PROTOCOL_VERSION, `advert protocol newer than ${ADVERT_PROTOCOL_VERSION}: upgrade this reader`),
  agent_id: z.string().regex(ID_PATTERN),
  hostname: z.string(),
  os: z.string().default(''),
  state: z.enum(AGENT_STATES),
  labels: z.record(z.string(), z.string()),
  /** 'cuda' when at least one GPU is usable, else 'cpu' (a valid agent: jobs run on CPU) */
  accelerator: z.enum(['cuda', 'cpu']),
  gpus: z.array(gpuAdvert),
  /** what sessions are given: every GPU or MIG instance offered (after --gpus), or one CPU device (protocol 2) */
  devices: z.array(deviceSchema).max(1024).optional(),
  cpu: z.object({ model: z.string(), cores: z.number().int().positive().max(4096) }),
  memory: z
    .object({ total: bytes, available: bytes })
    .refine((m) => m.available <= m.total, 'available memory cannot exceed total memory'),
  sessions: z.array(
    z.object({
      job_id: z.string(),
      attempt: z.number().int().nonnegative(),
      reserved_bytes: bytes,
      /** the device UUIDs the session was given (absent in adverts of older agents) */
      devices: z.array(z.string()).max(64).default([]),
      /** the session's rank in a gang (a multi-node job): 0 speaks for the job; absent for a single-host job */
      rank: z.number().int().nonnegative().max(63).optional(),
      /** the gang's size (hosts), with rank */
      nodes: z.number().int().positive().max(64).optional(),
    }),
  ),
  /**
   * where the other members of a gang reach this agent when it is rank 0 (torchrun's rendezvous and the process
   * group): an address they can connect to and the ports it may listen on (absent: the agent takes no gang)
   */
  rendezvous: z
    .object({
      address: z.string().min(1).max(253),
      ports: z
        .tuple([z.number().int().min(1024).max(65535), z.number().int().min(1024).max(65535)])
        .refine(([lo, hi]) => lo <= hi, 'the port range is empty (first above last)'),
    })
    .optional(),
  models: z.array(z.string().regex(MODEL_NAME_PATTERN)),
  /** each cached model's shape (from its config.json), for the memory estimate */
  model_shapes: z.record(z.string().regex(MODEL_NAME_PATTERN), modelShapeSchema).default({}),
  /**
   * bytes this agent offers to jobs in all: its largest GPU (or MIG instance), or on CPU what the operator set or the
   * RAM available at start
   */
  capacity: bytes.optional(),
  /**
   * sessions the agent runs at once; placement sends no more (absent in adverts of older agents: memory alone decides)
   */
  max_sessions: z.number().int().positive().max(1024).optional(),
  trainer: z.object({ methods: z.array(z.string()), bitsandbytes: z.boolean(), bf16: z.boolean() }),
  /** wall-clock ms at the agent when written */
  time: z.number().int().positive(),
});
export type Advert = z.infer<typeof advertSchema>;

/** What an operator asks of an agent (KV bucket tunefleet-agent-states, key = agent id). */
export const DESIRED_STATES = ['ready', 'cordoned', 'draining'] as const;
export type DesiredState = (typeof DESIRED_STATES)[number];
export const desiredStateSchema = z.object({ state: z.enum(DESIRED_STATES), by: z.string(), time: z.number().int() });
export type DesiredStateRecord = z.infer<typeof desiredStateSchema>;

/** Parse an advert from KV bytes; a bad one is a typed error naming the agent key and field. */
export function parseAdvert(key: string, data: Uint8Array | string): Advert {
  const text = typeof data === 'string' ? data : new TextDecoder('utf-8', { fatal: false }).decode(data);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new TunefleetError(ErrorCode.AdvertInvalid, `advert is not JSON`, { file: `advert ${key}` }, { cause });
  }
  const parsed = advertSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TunefleetError(ErrorCode.AdvertInvalid, issue?.message ?? 'invalid advert', {
      file: `advert ${key}`,
      field: issue?.path.join('.'),
    });
  }
  if (parsed.data.agent_id !== key) {
    throw new TunefleetError(
      ErrorCode.AdvertInvalid,
      `advert names agent '${parsed.data.agent_id}' but is stored under '${key}'`,
      { file: `advert ${key}`, field: 'agent_id' },
    );
  }
  return parsed.data;
}

/**
 * Bytes the agent offers to jobs in all, before reservations: what it advertises as its
 * capacity, else its largest device (GPU or MIG instance), else the RAM available.
 */
export function capacityBytes(a: Advert): number {
  if (a.capacity !== undefined) return a.capacity;
  if (a.accelerator === 'cuda') return Math.max(0, ...advertDevices(a).map((d) => d.memory_total));
  return a.memory.available;
}

/** Memory the agent can give a new job: its largest device's free memory, or host RAM on CPU agents. */
export function allocatableBytes(a: Advert): number {
  // a MIG-enabled GPU offers its instances, not the whole card (they are the devices)
  if (a.accelerator === 'cuda') return Math.max(0, ...advertDevices(a).map((d) => d.memory_free));
  const reserved = a.sessions.reduce((s, x) => s + x.reserved_bytes, 0);
  return Math.max(0, a.memory.available - reserved);
}
