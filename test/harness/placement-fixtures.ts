// Unit-test fixtures for placement: adverts, a job on SmolLM2's shape, a fleet view with
// reservations. Pure values, no services.
import { parseSpec, shapeFromConfig, type Advert, type ModelShape } from '../../shared';
import { type Job } from '../../scheduler/placement';

export const GiB = 2 ** 30;
// SmolLM2-135M's config.json fields
export const SMOL = shapeFromConfig({
  hidden_size: 576,
  intermediate_size: 1536,
  num_hidden_layers: 30,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  vocab_size: 49152,
  tie_word_embeddings: true,
}) as ModelShape;
export function advert(id: string, over: Partial<Advert> = {}): Advert {
  return {
    v: 1,
    agent_id: id,
    hostname: id,
    os: 'Debian',
    state: 'ready',
    labels: {},
    accelerator: 'cpu',
    gpus: [],
    cpu: { model: 'x', cores: 2 },
    memory: { total: 24 * GiB, available: 20 * GiB },
    sessions: [],
    models: ['SmolLM2-135M-Instruct'],
    model_shapes: { 'SmolLM2-135M-Instruct': SMOL },
    trainer: { methods: ['lora', 'dora', 'ia3', 'full'], bitsandbytes: false, bf16: false },
    time: 1,
    ...over,
  };
}
export const spec = parseSpec('name: j\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\n');
export const job = (over: Partial<Job> = {}): Job => ({ jobId: 'job-1', spec, exclude: [], ...over });
export const fleet = (
  adverts: Advert[],
  reserved: Record<string, number> = {},
  checkpointAgent: string | null = null,
) => ({
  adverts,
  checkpointAgent,
  reserved: (id: string) => ({ bytes: reserved[id] ?? 0, sessions: reserved[id] ? 1 : 0 }),
});
