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
// A lease names the devices it holds (GPU or MIG UUIDs, 'cpu'): bytes are held on each of
// them, and the compare-and-set re-checks every device's capacity. A lease or session that
// names no device (written before devices existed) is counted on every device.
//
// Queue: one key per waiting job (priority, submit time, refreshed on every poll); a job
// is placed only when no fresher job ahead of it in (priority desc, submit time asc)
// order could use the same agent, and its position is shown by `tunefleet list`.
import type { KV } from 'nats';
import { advertDevices, capacityBytes, deviceCapacity, type Advert } from '../shared';
import {
  agentLeasesSchema,
  queueEntrySchema,
  readRecord,
  type Lease,
  type QueueEntry,
  type Warn,
} from '../shared/records';

export type { Lease, QueueEntry } from '../shared/records';
const stderrWarn: Warn = (m) => console.warn(`[tunefleet] ${m}`);

/** A lease not yet seen among the agent's sessions counts this long (schedule-to-start + slack). */
export const LEASE_GRACE_MS = 150_000;
/** A queue entry not refreshed for this long belongs to a job that no longer waits. */
export const QUEUE_STALE_MS = 30_000;

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

/** What is held on one agent: bytes in all, session slots, and bytes on each device. */
export interface Held {
  bytes: number;
  sessions: number;
  onDevice(uuid: string): number;
}

/**
 * Memory and session slots held on one agent: its live leases, plus every session its
 * advert still reports without a lease. `except` (an earlier try of the placement being
 * made) is not counted.
 */
export function heldOn(leases: Lease[], advert: Advert | undefined, now: number, except?: Attempt): Held {
  const same = (a: Attempt, b: Attempt): boolean => a.jobId === b.jobId && a.attempt === b.attempt;
  const live = leases.filter((l) => leaseLive(l, advert, now) && !(except && same(l, except)));
  const unleased = (advert?.sessions ?? []).filter((s) => {
    const a = { jobId: s.job_id, attempt: s.attempt };
    return !leases.some((l) => same(l, a)) && !(except && same(a, except));
  });
  const holds = [
    ...live.map((l) => ({ bytes: l.bytes, devices: l.devices ?? [] })),
    ...unleased.map((s) => ({ bytes: s.reserved_bytes, devices: s.devices })),
  ];
  return {
    // a lease on several devices holds its bytes on each
    bytes: holds.reduce((n, h) => n + h.bytes * Math.max(1, h.devices.length), 0),
    sessions: holds.length,
    onDevice: (uuid) =>
      holds.filter((h) => h.devices.length === 0 || h.devices.includes(uuid)).reduce((n, h) => n + h.bytes, 0),
  };
}

/**
 * Every agent's leases. A value that is not a lease list is read as none (with a warning): the next reservation on
 * that agent replaces it, compare-and-set on its revision.
 */
export async function readLeases(kv: KV, warn: Warn = stderrWarn): Promise<Map<string, AgentLeases>> {
  const out = new Map<string, AgentLeases>();
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  for (const k of keys) {
    const e = await kv.get(k);
    if (!e || e.operation !== 'PUT') continue;
    const rec = readRecord(agentLeasesSchema, e.value, `leases/${k} (revision ${e.revision})`, warn);
    out.set(k, { revision: e.revision, leases: rec?.leases ?? [] });
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
 * Add a lease with compare-and-set. Every device it names is re-checked against the value
 * being replaced (its capacity less what the live leases hold on it), so a stale decision
 * can never overbook a device. Leaked leases are dropped in the same write. Throws
 * LeaseConflict when the key moved on or a device no longer has room.
 */
export async function reserve(
  kv: KV,
  agentId: string,
  current: AgentLeases | undefined,
  lease: Lease,
  /** what a device offers in all ('*': the whole agent, for a lease that names no device) */
  capacityOf: (uuid: string) => number,
  advert: Advert | undefined,
): Promise<void> {
  const now = Date.now();
  const leases = current?.leases ?? [];
  const live = leases.filter(
    (l) => leaseLive(l, advert, now) && !(l.jobId === lease.jobId && l.attempt === lease.attempt),
  );
  const held = heldOn(leases, advert, now, lease);
  const named = lease.devices?.length ? lease.devices : null;
  for (const uuid of named ?? ['*']) {
    const on = named ? held.onDevice(uuid) : held.bytes;
    const capacity = capacityOf(uuid);
    if (on + lease.bytes > capacity)
      throw new LeaseConflict(`${agentId} ${uuid}: ${on} + ${lease.bytes} bytes exceed its capacity ${capacity}`);
  }
  await writeLeases(kv, agentId, [...live, lease], current?.revision ?? 0);
}

/** What each device of the agent offers ('*': the agent in all), for reserve(). */
export function capacitiesOf(advert: Advert | undefined): (uuid: string) => number {
  if (!advert) return () => 0;
  const devices = advertDevices(advert);
  return (uuid) => {
    if (uuid === '*') return capacityBytes(advert);
    const d = devices.find((x) => x.uuid === uuid);
    return d ? deviceCapacity(advert, d) : 0;
  };
}

/** Remove one attempt's lease; safe to repeat. */
export async function releaseLease(kv: KV, agentId: string, jobId: string, attempt: number): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const e = await kv.get(agentId);
    if (!e || e.operation !== 'PUT') return;
    const leases = readRecord(agentLeasesSchema, e.value, `leases/${agentId}`, stderrWarn)?.leases ?? [];
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

/**
 * A job that has ended holds nothing: release each of its leases on every agent. A placement cancelled in flight (the
 * job cancelled while its place activity ran) may have written a lease the workflow never saw.
 */
export async function releaseJob(kv: KV, jobId: string): Promise<number> {
  let released = 0;
  for (const [agentId, held] of await readLeases(kv))
    for (const attempt of new Set(held.leases.filter((l) => l.jobId === jobId).map((l) => l.attempt))) {
      await releaseLease(kv, agentId, jobId, attempt);
      released += 1;
    }
  return released;
}

/** The jobs waiting for a place, in queue order; an entry that is not one is skipped with a warning. */
export async function readQueue(kv: KV, now = Date.now(), warn: Warn = stderrWarn): Promise<QueueEntry[]> {
  const out: QueueEntry[] = [];
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  for (const k of keys) {
    const e = await kv.get(k);
    if (!e || e.operation !== 'PUT') continue;
    const q = readRecord(queueEntrySchema, e.value, `queue/${k} (revision ${e.revision})`, warn);
    if (q && now - q.refreshed < QUEUE_STALE_MS) out.push(q);
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
