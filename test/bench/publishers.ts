// Benchmark helper, run as a child process: N simulated agents writing adverts to the
// real adverts bucket, each every intervalMs (staggered), for durationMs. Prints a JSON
// line with how many adverts it wrote.
import { connect, StorageType } from 'nats';
import { ADVERT_TTL_MS, ADVERTS_BUCKET, type Advert } from '../../shared';
import { adminOptions } from '../harness/stack';

export function simulatedAdvert(i: number, seq: number): Advert {
  const GiB = 2 ** 30;
  const id = `sim-${String(i).padStart(4, '0')}`;
  const gpus = Array.from({ length: 8 }, (_, g) => ({
    index: g,
    uuid: `GPU-${i}-${g}`,
    name: 'NVIDIA H100 80GB HBM3',
    memory_total: 80 * GiB,
    memory_used: ((seq + g) % 8) * GiB,
    memory_free: (80 - ((seq + g) % 8)) * GiB,
    utilization_pct: (seq * 7 + g) % 100,
    temperature_c: 40 + g,
    compute_capability: '9.0',
    power_w: 300,
    driver_version: '550.54.15',
    cuda_version: '12.4',
    mig_mode: 'disabled' as const,
    mig_instances: [],
    ecc_uncorrectable: 0,
  }));
  return {
    v: 1,
    agent_id: id,
    hostname: id,
    os: 'Linux',
    state: 'ready',
    labels: { zone: `z${i % 4}` },
    accelerator: 'cuda',
    gpus,
    cpu: { model: 'AMD EPYC 9654', cores: 96 },
    memory: { total: 2048 * GiB, available: 1500 * GiB },
    sessions: [],
    models: ['SmolLM2-135M-Instruct'],
    // the real shape of SmolLM2-135M-Instruct (its config.json), so placement can estimate a job's memory
    model_shapes: {
      'SmolLM2-135M-Instruct': {
        params: 134_515_008,
        layers: 30,
        hidden: 576,
        intermediate: 1536,
        vocab: 49152,
        heads: 9,
        kv_heads: 3,
        tied_embeddings: true,
      },
    },
    trainer: { methods: ['lora', 'dora', 'qlora', 'ia3', 'full'], bitsandbytes: true, bf16: true },
    time: Date.now(),
  };
}

async function main(): Promise<void> {
  const [url, n, intervalMs, durationMs, connections, home] = process.argv.slice(2);
  const agents = Number(n);
  const conns = await Promise.all(
    Array.from({ length: Number(connections ?? 8) }, () => connect(adminOptions(home as string, url as string))),
  );
  const kvs = await Promise.all(
    conns.map((nc) =>
      nc.jetstream().views.kv(ADVERTS_BUCKET, { ttl: ADVERT_TTL_MS, history: 1, storage: StorageType.File }),
    ),
  );
  const end = Date.now() + Number(durationMs);
  const interval = Number(intervalMs);
  let written = 0;
  let seq = 0;
  // each agent gets a slot in the interval, so writes are spread evenly, as real agents' are
  while (Date.now() < end) {
    const t0 = Date.now();
    seq += 1;
    for (let i = 0; i < agents; i++) {
      const due = t0 + (i * interval) / agents;
      const wait = due - Date.now();
      if (wait > 2) await new Promise((r) => setTimeout(r, wait));
      const kv = kvs[i % kvs.length];
      await kv?.put(`sim-${String(i).padStart(4, '0')}`, JSON.stringify(simulatedAdvert(i, seq)));
      written += 1;
      if (Date.now() >= end) break;
    }
    const rest = t0 + interval - Date.now();
    if (interval > 0 && rest > 0) await new Promise((r) => setTimeout(r, rest));
  }
  for (const nc of conns) await nc.drain();
  process.stdout.write(JSON.stringify({ written }) + '\n');
}

if (require.main === module) void main();
