// The records tunefleet keeps in KV buckets, checked on every read: a value that is not
// JSON, or not the record it should be (written by a buggy or hostile client), is skipped
// with a warning naming the bucket, key and revision, and never makes a reader throw.
import { z } from 'zod';

const count = z.number().int().nonnegative();
const time = z.number().nonnegative();
const id = z.string().min(1).max(200);

export const leaseSchema = z.object({
  jobId: id,
  attempt: count,
  bytes: count,
  purpose: z.enum(['train', 'evaluate']),
  time,
  devices: z.array(z.string().min(1).max(200)).max(1024).optional(),
  /** a gang member's rank (the gang's other members hold leases of the same attempt on their agents) */
  rank: z.number().int().nonnegative().max(63).optional(),
});
export type Lease = z.infer<typeof leaseSchema>;

/** One agent's key in the leases bucket. */
export const agentLeasesSchema = z.object({ leases: z.array(leaseSchema).max(10_000) });

export const queueEntrySchema = z.object({
  jobId: id,
  priority: z.number().int().min(0).max(100),
  submitted: z.string().max(64),
  bytes: count.nullable(),
  refreshed: time,
  /** when the job started waiting (absent in entries of older workers) */
  since: time.optional(),
});
export type QueueEntry = z.infer<typeof queueEntrySchema>;

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 in hex');

export const commitRecordSchema = z.object({
  epoch: count,
  step: count,
  prefix: z.string().max(500).nullable(),
  manifest_sha256: sha256.nullable(),
  agent_id: id,
  time,
  previous: z
    .array(z.object({ step: count, prefix: z.string().max(500), manifest_sha256: sha256.nullable() }))
    .max(64)
    .optional(),
});

/** What an agent asks of the commit service (tunefleet.commit.<agent id>). */
export const commitRequestSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('claim'), jobId: id, epoch: count }),
  z.object({
    op: z.literal('commit'),
    jobId: id,
    epoch: count,
    step: count,
    prefix: z.string().min(1).max(500),
    manifest_sha256: sha256,
  }),
]);
export type CommitRequest = z.infer<typeof commitRequestSchema>;

/** The commit service's answer: the claimed record, or a commit's outcome, or why it was refused. */
export const commitReplySchema = z.union([
  z.object({
    ok: z.literal(true),
    record: z.lazy(() => commitRecordSchema).optional(),
    outcome: z.enum(['committed', 'duplicate', 'fenced', 'older']).optional(),
  }),
  z.object({ ok: z.literal(false), code: z.string().max(64), message: z.string().max(4000) }),
]);
export type CommitReply = z.infer<typeof commitReplySchema>;

/** A job's key in the decisions bucket: its recent placement decisions (what explain prints is checked). */
export const decisionsSchema = z.object({
  decisions: z
    .array(
      z.looseObject({
        jobId: id,
        chosen: id.nullable(),
        attempt: count,
        purpose: z.enum(['train', 'evaluate']),
        time,
        position: count.nullable(),
        impossible: z.boolean(),
        summary: z.string().max(1_000_000),
        /** a gang's members by rank */
        members: z.array(z.looseObject({ agentId: id, rank: z.number().int().nonnegative().max(63) })).optional(),
        agents: z.array(
          z.looseObject({ agentId: id, code: z.enum(['fits', 'not_now', 'never']), reasons: z.array(z.string()) }),
        ),
      }),
    )
    .max(100),
});

export type Warn = (message: string) => void;

/**
 * Parse one KV value as `schema`; null (and a warning naming `where`) when it is not JSON or not that record.
 */
export function readRecord<T>(schema: z.ZodType<T>, value: Uint8Array, where: string, warn: Warn): T | null {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(value));
  } catch (e) {
    warn(`skipped ${where}: not JSON (${(e as Error).message.slice(0, 120)})`);
    return null;
  }
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue?.path.length ? `${issue.path.join('.')}: ` : '';
  warn(`skipped ${where}: not a valid record (${field}${issue?.message ?? 'invalid'})`);
  return null;
}

/** Text from another process made safe to print: control characters (escape sequences above all) removed. */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069]/g, '');
}
