// Memory a training job needs on its device, from the base model's shape and the job's
// settings, with a breakdown. Placement reserves this much on an agent (scheduler/leases.ts).
//
// Calibrated against peaks the trainer measured on an NVIDIA H200 (test/bench/gpu/,
// `npm run bench:memory` prints estimate vs measured): the model is
//   peak = weights + adapter weights + optimizer states + max(activations + logits, gradients)
//   reservation = peak x (1 + fragmentation) + runtime overhead
// Activations per token and layer without gradient checkpointing are b·(10h + 4I) + 8h bytes
// (b: bytes per element of the compute dtype; the 8h are RMSNorm's fp32 saves); with it,
// each layer keeps only its input (b·h) and one layer is recomputed at a time (its
// activations and their gradients: twice one layer). The loss keeps about 12 bytes per
// vocabulary entry per token in bf16 (logits, their fp32 copy, log-softmax, its gradient),
// 16 in fp32. The reservation adds 15 % for the allocator's fragmentation (measured up to
// 1.7 GiB above the peak with gradient checkpointing) and 0.5 GiB of CUDA context. Full fine-tuning frees activations
// while gradients appear, hence
// the max(). Pure: no I/O.
import type { JobSpec } from './spec';

export const GiB = 2 ** 30;

/** What placement needs to know about a base model: read from its config.json by the agent. */
export interface ModelShape {
  params: number;
  layers: number;
  hidden: number;
  intermediate: number;
  vocab: number;
  heads: number;
  kv_heads: number;
  tied_embeddings: boolean;
}

/** A model's shape from its Hugging Face config.json; null when the fields are not there. */
export function shapeFromConfig(config: Record<string, unknown>): ModelShape | null {
  const num = (k: string): number | null =>
    typeof config[k] === 'number' && Number.isFinite(config[k]) && (config[k] as number) > 0
      ? (config[k] as number)
      : null;
  const hidden = num('hidden_size');
  const layers = num('num_hidden_layers');
  const vocab = num('vocab_size');
  const heads = num('num_attention_heads');
  if (!hidden || !layers || !vocab || !heads) return null;
  const intermediate = num('intermediate_size') ?? 4 * hidden;
  const kvHeads = num('num_key_value_heads') ?? heads;
  const tied = config.tie_word_embeddings === true;
  const kvDim = (kvHeads * hidden) / heads;
  const linear = 2 * hidden * hidden + 2 * hidden * kvDim + 3 * hidden * intermediate;
  const params = layers * (linear + 2 * hidden) + vocab * hidden * (tied ? 1 : 2) + hidden;
  return { params, layers, hidden, intermediate, vocab, heads, kv_heads: kvHeads, tied_embeddings: tied };
}

export interface EstimateInput {
  shape: ModelShape;
  method: JobSpec['method'];
  device: 'cuda' | 'cpu';
  precision: JobSpec['training']['precision'];
  microBatch: number;
  seqLen: number;
  gradientCheckpointing: boolean;
  optimizer: JobSpec['training']['optimizer'];
  loraRank: number;
  /** processes of a data-parallel run (default 1): each holds the whole model on its own device */
  worldSize?: number;
  /** the trainer's chunked loss: one chunk's logits at a time (default false: the whole micro-batch's) */
  chunkedLoss?: boolean;
}

export interface MemoryEstimate {
  /** bytes to reserve */
  total: number;
  breakdown: {
    weights: number;
    adapters: number;
    gradients: number;
    optimizer: number;
    activations: number;
    logits: number;
    overhead: number;
  };
}

/** Linear-layer parameters in one transformer layer (what LoRA adapts and QLoRA quantizes). */
function linearPerLayer(s: ModelShape): number {
  const kvDim = (s.kv_heads * s.hidden) / s.heads;
  return 2 * s.hidden * s.hidden + 2 * s.hidden * kvDim + 3 * s.hidden * s.intermediate;
}

/** Trainable parameters of a LoRA of rank r on every linear layer (PEFT's "all-linear"). */
export function loraParams(s: ModelShape, r: number): number {
  const kvDim = (s.kv_heads * s.hidden) / s.heads;
  return s.layers * r * (9 * s.hidden + 2 * kvDim + 3 * s.intermediate);
}

export function bytesPerElement(device: 'cuda' | 'cpu', precision: JobSpec['training']['precision']): number {
  if (precision === 'fp32') return 4;
  if (precision === 'bf16' || precision === 'fp16') return 2;
  return device === 'cuda' ? 2 : 4; // auto: bf16/fp16 on GPUs, fp32 on CPUs
}

export function estimateMemory(i: EstimateInput): MemoryEstimate {
  const s = i.shape;
  const b = bytesPerElement(i.device, i.precision);
  const linear = s.layers * linearPerLayer(s);
  // QLoRA: NF4 linear weights (half a byte, plus double-quantized scales), the rest in the compute dtype
  const weights = i.method === 'qlora' ? linear * 0.53 + (s.params - linear) * b : s.params * b;
  let adapters = 0;
  let gradients: number;
  let optimizer: number;
  if (i.method === 'full') {
    gradients = s.params * b;
    // AdamW keeps its states in the weights' dtype
    optimizer = i.optimizer === 'adamw_8bit' ? 2 * s.params : 2 * s.params * b;
  } else {
    // LoRA family: the measured rank; the prompt/prefix/IA3/adapter methods train far fewer, so this bounds them
    const trainable = loraParams(s, ['lora', 'dora', 'qlora'].includes(i.method) ? i.loraRank : 8);
    adapters = trainable * 4; // PEFT keeps adapter weights in fp32
    gradients = trainable * 4;
    optimizer = i.optimizer === 'adamw_8bit' ? 2 * trainable : 8 * trainable;
  }
  // DDP keeps a second copy of the gradients in its all-reduce buckets
  if ((i.worldSize ?? 1) > 1) gradients *= 2;
  const tokens = i.microBatch * i.seqLen;
  const perTokenLayer = b * (10 * s.hidden + 4 * s.intermediate) + 8 * s.hidden;
  const activations = i.gradientCheckpointing
    ? tokens * s.layers * s.hidden * b + 2 * tokens * perTokenLayer
    : tokens * s.layers * perTokenLayer;
  // the chunked loss holds one chunk's logits (trainer: 2^25 elements, at least 64 tokens) and the label tokens'
  // last hidden state with its gradient
  const logitTokens = i.chunkedLoss ? Math.min(tokens, Math.max(64, Math.floor(2 ** 25 / s.vocab))) : tokens;
  const logits = logitTokens * s.vocab * (b === 2 ? 12 : 16) + (i.chunkedLoss ? 2 * tokens * s.hidden * b : 0);
  const peak =
    weights +
    adapters +
    optimizer +
    (i.method === 'full' ? Math.max(activations + logits, gradients) : activations + logits + gradients);
  // CUDA: context (~0.5 GiB, outside the allocator's count) + allocator fragmentation;
  // CPU: the Python + torch runtime and the allocator's slack
  const overhead = 0.5 * GiB + 0.15 * peak;
  const breakdown = { weights, adapters, gradients, optimizer, activations, logits, overhead };
  for (const k of Object.keys(breakdown) as (keyof typeof breakdown)[]) breakdown[k] = Math.ceil(breakdown[k]);
  return { total: Math.ceil(peak + overhead), breakdown };
}

/**
 * The estimate for a job spec, per device it gets: micro-batch as the trainer will use it (a multi-GPU job's
 * processes each take batch_size / gpus sequences of a step).
 */
export function estimateForSpec(spec: JobSpec, shape: ModelShape, device: 'cuda' | 'cpu'): MemoryEstimate {
  const t = spec.training;
  const gpus = spec.resources?.gpus ?? 1;
  return estimateMemory({
    shape,
    method: spec.method,
    device,
    precision: t.precision,
    microBatch: Math.min(Math.max(1, Math.floor(t.batch_size / gpus)), t.micro_batch_size ?? 8),
    seqLen: t.max_seq_len,
    gradientCheckpointing: gradientCheckpointingOn(spec),
    chunkedLoss: t.chunked_loss && !(spec.lora.target_modules ?? []).includes('lm_head'),
    optimizer: t.optimizer,
    loraRank: spec.lora.r,
    worldSize: gpus,
  });
}

/** Whether the trainer checkpoints activations for this spec ('auto': for qlora, whose point is memory). */
export function gradientCheckpointingOn(spec: JobSpec): boolean {
  const g = spec.training.gradient_checkpointing;
  return g === 'auto' ? spec.method === 'qlora' : g;
}

export function formatBytes(n: number): string {
  if (n >= GiB) return `${(n / GiB).toFixed(1)} GiB`;
  return `${Math.round(n / 2 ** 20)} MiB`;
}
