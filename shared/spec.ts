// The job spec: what a user writes in job.yaml. One zod schema is the source of truth;
// unknown keys are refused everywhere so a typo never silently falls back to a default.
// The reference for users is docs/spec.md; keep both in step.
import { z } from 'zod';
import { parseDocument, LineCounter, isNode } from 'yaml';
import { ErrorCode, TunefleetError, TunefleetErrors } from './errors';
import { ID_PATTERN, MODEL_NAME_PATTERN } from './names';
import { parseGate } from './gates';

export const METHODS = ['lora', 'dora', 'qlora', 'ia3', 'prefix', 'prompt', 'adapter', 'full'] as const;
export type Method = (typeof METHODS)[number];

const positiveInt = z.number().int().positive();

export const loraSchema = z.strictObject({
  /** rank of the low-rank update */
  r: positiveInt.max(1024).default(8),
  /** scaling numerator: the update is scaled by alpha / r */
  alpha: z.number().positive().default(16),
  dropout: z.number().min(0).lt(1).default(0.05),
  /** module names to adapt; default: the attention and MLP projections of the architecture */
  target_modules: z.array(z.string().min(1)).min(1).optional(),
});

export const promptSchema = z.strictObject({
  /** prefix and prompt tuning: number of learned virtual tokens */
  num_virtual_tokens: positiveInt.max(1024).default(20),
});

export const adapterSchema = z.strictObject({
  /** LLaMA-Adapter (PEFT AdaptionPrompt): prompt length per adapted layer */
  adapter_len: positiveInt.max(1024).default(10),
  /** how many of the top layers get an adaption prompt (capped at the model's layers) */
  adapter_layers: positiveInt.max(1024).default(8),
});

export const cleanSchema = z.strictObject({
  /** Unicode NFC normalisation */
  nfc: z.boolean().default(true),
  /** collapse runs of spaces and tabs, trim lines, at most one blank line in a row */
  whitespace: z.boolean().default(true),
  /** remove control and zero-width characters; CRLF to LF */
  control_chars: z.boolean().default(true),
  /** remove HTML tags and the common entities */
  strip_html: z.boolean().default(false),
  /** drop records whose content has fewer characters */
  min_chars: z.number().int().min(0).default(1),
  /** drop records whose content has more characters (the trainer counts tokens and truncates separately) */
  max_chars: positiveInt.default(100_000),
});

export const dedupSchema = z.strictObject({
  /** drop records whose cleaned content equals an earlier one */
  exact: z.boolean().default(true),
  /** drop near duplicates: MinHash over character 5-grams, LSH */
  near: z.boolean().default(true),
  /** Jaccard similarity at or above which a record is a near duplicate */
  threshold: z.number().gt(0).max(1).default(0.85),
});

export const augmentSchema = z.strictObject({
  /**
   * chat records only: add a copy of each training record that has a system message, without
   * it, so the model also answers well when no system prompt is given. Label-preserving (the
   * assistant turns are unchanged); never applied to the eval split.
   */
  drop_system_prompt: z.boolean().default(false),
});

export const datasetSchema = z.strictObject({
  /** local JSONL file, relative to the spec file; uploaded to the object store at submit */
  path: z.string().min(1),
  /** share of records held out for evaluation when no eval_path is given */
  eval_fraction: z.number().gt(0).lt(1).default(0.1),
  /** optional separate eval file, relative to the spec file */
  eval_path: z.string().min(1).optional(),
  /** seed of the train/eval split */
  seed: z.number().int().min(0).default(42),
  /** strict: any malformed record fails the job before a GPU is used; lenient: such records are dropped and counted */
  policy: z.enum(['strict', 'lenient']).default('strict'),
  clean: cleanSchema.default(() => cleanSchema.parse({})),
  dedup: dedupSchema.default(() => dedupSchema.parse({})),
  /** augmentation, off by default; only kinds that cannot change what the model should answer */
  augment: augmentSchema.default(() => augmentSchema.parse({})),
});

/** a setting the trainer may choose: true, false or auto (documented per setting) */
const autoSwitch = z.union([z.boolean(), z.literal('auto')]).default('auto');

export const trainingSchema = z
  .strictObject({
    epochs: z.number().positive().max(1000).default(1),
    /** stop after this many optimizer steps (overrides epochs when set) */
    max_steps: positiveInt.optional(),
    learning_rate: z.number().positive().max(1).default(2e-4),
    /** effective batch size = micro_batch_size x gradient accumulation */
    batch_size: positiveInt.max(65536).default(32),
    /** sequences per forward pass; default: the largest power of two whose activations fit in free memory */
    micro_batch_size: positiveInt.optional(),
    max_seq_len: positiveInt.max(131072).default(512),
    warmup_ratio: z.number().min(0).max(1).default(0.05),
    lr_scheduler: z.enum(['cosine', 'linear', 'constant']).default('cosine'),
    weight_decay: z.number().min(0).default(0),
    max_grad_norm: z.number().positive().default(1.0),
    /** recompute activations in backward (less memory, about a third more compute); auto: on for qlora only */
    gradient_checkpointing: autoSwitch,
    precision: z.enum(['auto', 'bf16', 'fp16', 'fp32']).default('auto'),
    seed: z.number().int().min(0).default(42),
    /** save a checkpoint every N optimizer steps (and always at the end and on SIGTERM) */
    checkpoint_every: positiveInt.default(50),
    /** adamw, or adamw_8bit (bitsandbytes; CUDA agents only) */
    optimizer: z.enum(['adamw', 'adamw_8bit']).default('adamw'),
    /**
     * whole training records into max_seq_len blocks, each attending only to itself (position ids restart per
     * record); auto: on where that is exact (lora, dora, qlora, ia3, full on a model that keeps packed records apart)
     */
    packing: autoSwitch,
    /** attention kernels; auto: flex_attention on CUDA when packing (a document block mask), else sdpa */
    attention: z.enum(['auto', 'sdpa', 'flex_attention', 'flash_attention_2', 'eager']).default('auto'),
    /** torch.compile each decoder layer (regional compilation); auto: on CUDA agents, off on CPU agents */
    compile: autoSwitch,
    /** the loss in chunks from the last hidden state, full logits never held (where the model's head allows) */
    chunked_loss: z.boolean().default(true),
    /** evaluate on the eval split every N steps and export the best adapter (0: only at the end) */
    eval_every: z.number().int().min(0).default(0),
    /** early stopping: stop after this many evaluations without improvement (needs eval_every) */
    patience: positiveInt.optional(),
  })
  .refine((t) => t.patience === undefined || t.eval_every > 0, {
    message: 'patience needs eval_every > 0',
    path: ['patience'],
  });

export const toolSchema = z.strictObject({
  /**
   * argv of a command on the agent; gets the outputs as JSONL on stdin, prints a JSON object of scores as its last line
   */
  command: z.array(z.string().min(1)).min(1),
  /** seconds per run (base, then fine-tuned) before it is killed */
  timeout_s: positiveInt.max(3600).default(60),
});

export const evaluationSchema = z.strictObject({
  /** greedy generation on eval prompts, compared to the reference completion */
  exact_match: z.boolean().default(true),
  max_new_tokens: positiveInt.max(4096).default(32),
  /** evaluate at most this many eval records (all when unset) */
  max_samples: positiveInt.optional(),
  /** the model-based judge: semantic similarity of each answer to its reference (all-MiniLM-L6-v2 on onnxruntime) */
  judge: z.boolean().default(true),
  /** a tool-based scorer (a JSON-schema check, a compiler, a test runner); its failure is reported, not fatal */
  tool: toolSchema.optional(),
  /** thresholds the fine-tuned model must meet, e.g. 'exact_match >= base + 0.05', 'judge >= 0.8' (see docs/spec.md) */
  gates: z
    .array(
      z.string().superRefine((g, ctx) => {
        try {
          parseGate(g);
        } catch (e) {
          ctx.addIssue({ code: 'custom', message: (e as Error).message });
        }
      }),
    )
    .default([]),
});

export const resourcesSchema = z.strictObject({
  /**
   * devices on one host (one GPU or MIG instance; above 1 whole GPUs), trained data-parallel (torchrun, DDP): each
   * gets batch_size / gpus sequences per step, so the effective batch stays batch_size
   */
  gpus: positiveInt.max(64).default(1),
  /**
   * elastic: when no agent has `gpus` devices free (or none is left that has them), run on fewer, down to this many
   * (only counts that divide batch_size); a job resumes from its checkpoint on any count. Default: gpus (not elastic)
   */
  min_gpus: positiveInt.max(64).optional(),
  /**
   * hosts (agents) the job runs on at once, `gpus` devices on each: a gang, placed all or nothing, trained
   * data-parallel across hosts (torchrun --nnodes); every rank takes batch_size / (nodes x gpus) sequences per step
   */
  nodes: positiveInt.max(64).default(1),
});

export const jobSpecSchema = z
  .strictObject({
    /** a label for the job; the job id starts with it */
    name: z
      .string()
      .regex(ID_PATTERN, 'lowercase letters, digits and dashes, at most 63, starting with a letter or digit'),
    /** base model: a name in the agents' model store, e.g. SmolLM2-135M-Instruct */
    model: z.string().regex(MODEL_NAME_PATTERN, 'a model name (letters, digits, . _ -), not a path'),
    method: z.enum(METHODS),
    dataset: datasetSchema,
    lora: loraSchema.default(() => loraSchema.parse({})),
    prompt: promptSchema.default(() => promptSchema.parse({})),
    adapter: adapterSchema.default(() => adapterSchema.parse({})),
    training: trainingSchema.default(() => trainingSchema.parse({})),
    evaluation: evaluationSchema.default(() => evaluationSchema.parse({})),
    /** higher runs first when the fleet is full */
    priority: z.number().int().min(0).max(100).default(50),
    /**
     * seconds without a training step (or evaluation progress) before the attempt counts as lost and moves; default 10,
     * 60 for full fine-tuning
     */
    heartbeat_timeout: positiveInt.min(2).max(3600).optional(),
    /** run only on agents whose labels include all of these (agent start --label key=value) */
    selector: z.record(z.string().regex(/^[A-Za-z0-9_.\/-]{1,63}$/, 'a label key'), z.string().max(63)).default({}),
    resources: resourcesSchema.default(() => resourcesSchema.parse({})),
    /**
     * start from the adapter a finished job registered (its id) rather than fresh weights: same base model and kind of
     * adapter (lora and qlora continue each other); the parent's adapter configuration (rank, alpha, targets) rules
     */
    init_adapter: z.string().regex(ID_PATTERN, 'a job id (the id `tunefleet submit` printed)').optional(),
  })
  .superRefine((s, ctx) => {
    const { gpus, min_gpus: least, nodes } = s.resources;
    const t = s.training;
    const ranks = gpus * nodes;
    if (s.init_adapter !== undefined && s.method === 'full')
      ctx.addIssue({
        code: 'custom',
        path: ['init_adapter'],
        message: 'continues a PEFT adapter; method full trains the whole model (no adapter to start from)',
      });
    const across = nodes > 1 ? `${nodes} nodes x ${gpus} gpus` : `${gpus} gpus`;
    if (nodes > 1 && least !== undefined && least < gpus)
      ctx.addIssue({
        code: 'custom',
        path: ['resources', 'min_gpus'],
        message: `min_gpus (elastic) is for one host; a gang of ${nodes} nodes runs on exactly ${gpus} gpus each`,
      });
    if (least !== undefined && least > gpus)
      ctx.addIssue({
        code: 'custom',
        path: ['resources', 'min_gpus'],
        message: `min_gpus ${least} is more than gpus ${gpus}`,
      });
    if (ranks > 1 && t.batch_size % ranks !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['training', 'batch_size'],
        message:
          `batch_size ${t.batch_size} does not divide over ${across} ` + '(each takes an equal share of every step)',
      });
    else if (ranks > 1 && t.micro_batch_size !== undefined && (t.batch_size / ranks) % t.micro_batch_size !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['training', 'micro_batch_size'],
        message:
          `micro_batch_size ${t.micro_batch_size} does not divide the ${t.batch_size / ranks} sequences ` +
          `each of ${across} takes per step (batch_size / ${nodes > 1 ? '(nodes x gpus)' : 'gpus'})`,
      });
  });

export type JobSpec = z.infer<typeof jobSpecSchema>;
export type JobSpecInput = z.input<typeof jobSpecSchema>;

function pathToField(path: ReadonlyArray<PropertyKey>): string {
  return path
    .map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))
    .join('.')
    .replace(/\.\[/g, '[');
}

/** YAML (or JSON) text that must hold a mapping: the plain value, and a way to find the line of a path in the
 * text. Syntax errors name the file and line; `what` names the kind of file ("job spec", "sweep"). */
export function parseYamlMapping(
  text: string,
  file: string,
  what = 'job spec',
): { data: Record<string, unknown>; lineOf: (path: ReadonlyArray<PropertyKey>) => number | undefined } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => {
      const pos = e.linePos?.[0];
      return new TunefleetError(ErrorCode.SpecInvalid, e.message.split('\n')[0] ?? e.message, {
        file,
        ...(pos ? { line: pos.line } : {}),
      });
    });
    throw new TunefleetErrors(ErrorCode.SpecInvalid, problems, `${file}: not valid YAML/JSON`);
  }
  const data: unknown = doc.toJS();
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new TunefleetError(ErrorCode.SpecInvalid, `a ${what} must be a mapping of keys to values`, {
      file,
      line: 1,
    });
  }
  const lineOf = (path: ReadonlyArray<PropertyKey>): number | undefined => {
    // the closest node that exists in the text: the field itself, or its parent for a missing key
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n) as (string | number)[], true);
      if (isNode(node) && node.range) return lineCounter.linePos(node.range[0]).line;
    }
    return undefined;
  };
  return { data: data as Record<string, unknown>, lineOf };
}

/** A value checked as a job spec: every problem named by field, and by line where `lineOf` finds it in the file's
 * text. `what` heads the summary ("the job spec", "trial 3's job spec (lr=0.1)"). */
export function checkJobSpec(
  data: unknown,
  file: string,
  lineOf: (path: ReadonlyArray<PropertyKey>) => number | undefined = () => undefined,
  what = 'the job spec',
): JobSpec {
  const result = jobSpecSchema.safeParse(data);
  if (result.success) return result.data;
  const problems = result.error.issues.flatMap((issue) => {
    // an unknown key is reported on the key itself
    const keys = issue.code === 'unrecognized_keys' ? issue.keys : [undefined];
    return keys.map((key) => {
      const path = key === undefined ? issue.path : [...issue.path, key];
      const field = pathToField(path);
      const line = lineOf(path);
      const message =
        issue.code === 'unrecognized_keys'
          ? `unknown key (allowed: ${allowedKeys(issue.path).join(', ')})`
          : issue.message;
      return new TunefleetError(ErrorCode.SpecInvalid, message, {
        file,
        ...(line !== undefined ? { line } : {}),
        field,
      });
    });
  });
  throw new TunefleetErrors(
    ErrorCode.SpecInvalid,
    problems,
    `${file}: ${what} has ${problems.length} problem${problems.length === 1 ? '' : 's'}`,
  );
}

/**
 * Parse and validate a spec from YAML or JSON text. Every problem is reported with the
 * field and, where the text has it, the line; all problems at once, not just the first.
 */
export function parseSpec(text: string, file = '<spec>'): JobSpec {
  const { data, lineOf } = parseYamlMapping(text, file);
  return checkJobSpec(data, file, lineOf);
}

function allowedKeys(path: ReadonlyArray<PropertyKey>): string[] {
  let schema: z.ZodType = jobSpecSchema;
  for (const p of path) {
    const inner = unwrap(schema);
    if (inner instanceof z.ZodObject) schema = (inner.shape as Record<string, z.ZodType>)[String(p)] ?? inner;
  }
  const obj = unwrap(schema);
  return obj instanceof z.ZodObject ? Object.keys(obj.shape as object) : [];
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  while (s instanceof z.ZodDefault || s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
  return s;
}
