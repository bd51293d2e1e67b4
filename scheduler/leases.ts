// Memory reservations ("leases") and the wait queue, both in NATS KV.
//
// Leases: one key per agent holding every reservation on it. A placement reads the key's
// revision, decides, and writes back with compare-and-set on that revision: when two
// scheduler workers place at once, one write fails and that worker decides again on the
// fresh value, so an agent is never booked beyond its capacity. A lease is released when
// its attempt ends (however it ends: the workflow releases in a non-cancellable scope);
// one that leaked (a worker died between reserving and starting the work) stops counting
// once it is older than LEASE_GRACE_MS and the agent does not report the session. The
// other way round, a session the agent still reports after its lease was released (the
// workflow gave the attempt up, the agent has not stopped its trainer yet) still holds
// its memory and counts until the agent's advert drops it.
//
// Queue: one key per waiting job (priority, submit time, refreshed on every poll); a job
// is placed only when no fresher job ahead of it in (priority desc, submit time asc)
// order could use the same agent, and its position is shown by `tunefleet list`.
import type { KV } from 'nats';
import type { Advert } from '../shared';

/** A lease not yet seen among the agent's sessions counts this long (schedule-to-start + slack). */
export const LEASE_GRACE_MS = 150_000;
/** A queue entry not refreshed for this long belongs to a job that no longer waits. */
export const QUEUE_STALE_MS = 30_000;

export interface Lease {
  jobId: string;
  attempt: number;
  bytes: number;
  purpose: 'train' | 'evaluate';
  time: number;
}
export interface AgentLeases {
  revision: number;
  leases: Lease[];
}

export class LeaseConflict extends Error {}

/** Is the lease still holding memory? */
export function leaseLive(l: Lease, advert: Advert | undefined, now: number): boolean {
  if (now - l.time < LEASE_GRACE_MS) return true;
  return !!advert?.sessions.some((s) => s.job_id === l.jobId && s.attempt === l.attempt);
}

type Attempt = Pick<Lease, 'jobId' | 'attempt'>;

/**
 * Memory and session slots held on one agent: its live leases, plus every session its
 * advert still reports without a lease. `except` (an earlier try of the placement being
 * made) is not counted.
 */
export function heldOn(
  leases: Lease[],
  advert: Advert | undefined,
  now: number,
  except?: Attempt,
): { bytes: number; sessions: number } {
  const same = (a: Attempt, b: Attempt): boolean => a.jobId === b.jobId && a.attempt === b.attempt;
  const live = leases.filter((l) => leaseLive(l, advert, now) && !(except && same(l, except)));
  const unleased = (advert?.sessions ?? []).filter((s) => {
    const a = { jobId: s.job_id, attempt: s.attempt };
    return !leases.some((l) => same(l, a)) && !(except && same(a, except));
  });
  return {
    bytes: live.reduce((n, l) => n + l.bytes, 0) + unleased.reduce((n, s) => n + s.reserved_bytes, 0),
    sessions: live.length + unleased.length,
  };
}

export async function readLeases(kv: KV): Promise<Map<string, AgentLeases>> {
  const out = new Map<string, AgentLeases>();
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  for (const k of keys) {
    const e = await kv.get(k);
    if (!e || e.operation !== 'PUT') continue;
    out.set(k, { revision: e.revision, leases: e.json<{ leases: Lease[] }>().leases ?? [] });
  }
  return out;
}

/** Write the agent's lease list back iff nobody changed it since `revision` (0: the key did not exist). */
async function writeLeases(kv: KV, agentId: string, leases: Lease[], revision: number): Promise<void> {
  const body = JSON.stringify({ leases });
  try {
    if (revision === 0) await kv.create(agentId, body);
    else await kv.update(agentId, body, revision);
  } catch (e) {
    throw new LeaseConflict(`leases of ${agentId} changed since revision ${revision}: ${String(e)}`);
  }
}

/**
 * Add a lease with compare-and-set. `capacity` and the live leases are re-checked against
 * the value being replaced, so a stale decision can never overbook. Leaked leases are
 * dropped in the same write. Throws LeaseConflict when the key moved on.
 */
export async function reserve(
  kv: KV,
  agentId: string,
  current: AgentLeases | undefined,
  lease: Lease,
  capacity: number,
  advert: Advert | undefined,
): Promise<void> {
  const now = Date.now();
  const leases = current?.leases ?? [];
  const live = leases.filter(
    (l) => leaseLive(l, advert, now) && !(l.jobId === lease.jobId && l.attempt === lease.attempt),
  );
  const held = heldOn(leases, advert, now, lease).bytes;
  if (held + lease.bytes > capacity)
    throw new LeaseConflict(`${agentId}: ${held} + ${lease.bytes} bytes exceed its capacity ${capacity}`);
  await writeLeases(kv, agentId, [...live, lease], current?.revision ?? 0);
}

/** Remove one attempt's lease; safe to repeat. */
export async function releaseLease(kv: KV, agentId: string, jobId: string, attempt: number): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const e = await kv.get(agentId);
    if (!e || e.operation !== 'PUT') return;
    const leases = e.json<{ leases: Lease[] }>().leases ?? [];
    const kept = leases.filter((l) => !(l.jobId === jobId && l.attempt === attempt));
    if (kept.length === leases.length) return;
    try {
      await writeLeases(kv, agentId, kept, e.revision);
      return;
    } catch (err) {
      if (!(err instanceof LeaseConflict)) throw err;
    }
  }
  throw new LeaseConflict(`could not release ${jobId} attempt ${attempt} on ${agentId}: the key kept changing`);
}

export interface QueueEntry {
  jobId: string;
  priority: number;
  submitted: string;
  bytes: number | null;
  refreshed: number;
}

export async function readQueue(kv: KV, now = Date.now()): Promise<QueueEntry[]> {
  const out: QueueEntry[] = [];
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  for (const k of keys) {
    const e = await kv.get(k);
    if (!e || e.operation !== 'PUT') continue;
    const q = e.json<QueueEntry>();
    if (now - q.refreshed < QUEUE_STALE_MS) out.push(q);
  }
  return out.sort(queueOrder);
}

/** Higher priority first, then earlier submission, then job id. */
export function queueOrder(
  a: Pick<QueueEntry, 'priority' | 'submitted' | 'jobId'>,
  b: Pick<QueueEntry, 'priority' | 'submitted' | 'jobId'>,
): number {
  return b.priority - a.priority || a.submitted.localeCompare(b.submitted) || a.jobId.localeCompare(b.jobId);
}

/** Jobs ahead of `me` in the queue. */
export function ahead(queue: QueueEntry[], me: Pick<QueueEntry, 'priority' | 'submitted' | 'jobId'>): QueueEntry[] {
  return queue.filter((q) => q.jobId !== me.jobId && queueOrder(q, me) < 0);
}
