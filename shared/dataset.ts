// Dataset records: the three formats and the check of one JSONL line. Pure; the prepare
// activity streams a file through it, and the trainer's reader agrees with it.
import { z } from 'zod';

export const DATASET_FORMATS = ['text', 'prompt_completion', 'messages'] as const;
export type DatasetFormat = (typeof DATASET_FORMATS)[number];

// blank values are well-formed; the cleaning rules drop them as empty (counted apart from malformed records)
const textRecord = z.strictObject({ text: z.string() });
const promptRecord = z.strictObject({ prompt: z.string(), completion: z.string() });
const message = z.strictObject({ role: z.enum(['system', 'user', 'assistant']), content: z.string() });
const messagesRecord = z.strictObject({
  messages: z
    .array(message)
    .min(2)
    .refine((m) => m.some((x) => x.role === 'assistant'), 'needs at least one assistant message'),
});

export type CheckedLine = { ok: true; format: DatasetFormat; record: unknown } | { ok: false; message: string };

export function detectFormat(rec: Record<string, unknown>): DatasetFormat | null {
  if ('messages' in rec) return 'messages';
  if ('prompt' in rec || 'completion' in rec) return 'prompt_completion';
  if ('text' in rec) return 'text';
  return null;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Check one line (raw bytes, without its newline). */
export function checkLine(bytes: Uint8Array): CheckedLine {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    return { ok: false, message: 'not valid UTF-8' };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { ok: false, message: `not JSON (${(e as Error).message})` };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return { ok: false, message: 'a record must be a JSON object' };
  const format = detectFormat(raw as Record<string, unknown>);
  if (!format) return { ok: false, message: 'a record needs "text", "prompt" + "completion", or "messages"' };
  const schema = format === 'text' ? textRecord : format === 'prompt_completion' ? promptRecord : messagesRecord;
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    const msg =
      issue?.code === 'unrecognized_keys'
        ? `unknown key(s) ${issue.keys.join(', ')} in a ${format} record`
        : `${field}${issue?.message ?? 'invalid'}`;
    return { ok: false, message: msg };
  }
  return { ok: true, format, record: parsed.data };
}

/** A seeded PRNG (mulberry32): the same seed gives the same split on every machine. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** How many of n records the split holds out for evaluation (at least 1 and at most n - 1 when n >= 2). */
export function evalSplitSize(n: number, fraction: number): number {
  return n < 2 ? 0 : Math.min(n - 1, Math.max(1, Math.round(n * fraction)));
}

/** Fewer held-out records than this make eval loss, exact match and the gates on them mostly noise. */
export const MIN_EVAL_RECORDS = 20;

/** What to tell the user about an eval split of `records` records; null when it is large enough. */
export function smallEvalSplit(records: number): string | null {
  if (records >= MIN_EVAL_RECORDS) return null;
  return (
    `the eval split has ${records} record${records === 1 ? '' : 's'}, fewer than ${MIN_EVAL_RECORDS}: ` +
    'eval loss, exact match and gates on it mean little (add records, raise dataset.eval_fraction ' +
    'or give dataset.eval_path)'
  );
}

/** Indices (0..n-1) of the records held out for evaluation: round(n * fraction), at least 1 when n >= 2. */
export function evalIndices(n: number, fraction: number, seed: number): Set<number> {
  const k = evalSplitSize(n, fraction);
  const idx = Array.from({ length: n }, (_, i) => i);
  const rand = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [idx[i], idx[j]] = [idx[j] as number, idx[i] as number];
  }
  return new Set(idx.slice(0, k));
}
