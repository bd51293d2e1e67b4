// Control activities (task queue tunefleet-control), built over their dependencies so
// tests can hand in real NATS and a fleet view of their choosing.
import { ApplicationFailure } from '@temporalio/activity';
import {
  ADAPTERS_BUCKET,
  CHECKPOINTS_BUCKET,
  COMMITS_BUCKET,
  DATASETS_BUCKET,
  DECISIONS_BUCKET,
  ErrorCode,
  LEASES_BUCKET,
  QUEUE_BUCKET,
  TunefleetError,
  TunefleetErrors,
  adapterPrefix,
  checkGates,
  logsPrefix,
  metricValues,
  modelCard,
  modelRecord,
  modelRecordObjectName,
  MODEL_CARD,
  resultObjectName,
  type Advert,
  type ControlActivities,
  type FileEntry,
  type JobResult,
  type PlaceRequest,
  type PlaceResult,
  type Rendezvous,
} from '../shared';
import type { KV } from 'nats';
import { commitRecordSchema, decisionsSchema, readRecord } from '../shared/records';
import { failpoint } from '../shared/failpoint';
import {
  LeaseConflict,
  type AgentLeases,
  ahead,
  capacitiesOf,
  heldOn,
  readLeases,
  readQueue,
  releaseJob,
  releaseLease,
  reserve,
  type QueueEntry,
} from './leases';
import type { FleetView } from './fleet';
import type { ControlMetrics } from './metrics';
import type { Nats } from './nats';
import { sha256Hex } from './nats';
import { place, type Decision } from './placement';
import { parentAdapter } from './parent';

export interface ControlDeps {
  nats: Nats;
  fleet: FleetView;
  /** tell a queued job's workflow that capacity was released (errors are ignored: it polls anyway) */
  wake: (jobId: string) => Promise<void>;
  log: (msg: string) => void;
  /** counters this worker's placements keep (read by the tests and the soak run; each conflict is also logged) */
  stats?: ControlStats;
  /** this worker's Prometheus metrics (absent: none kept) */
  metrics?: ControlMetrics;
}

/** What a control worker's placements ran into. */
export interface ControlStats {
  /** leases written (placements that reserved memory on an agent) */
  leasesTaken: number;
  /** lease writes refused because another placement changed the agent's key first (decided again) */
  leaseConflicts: number;
}

export function newControlStats(): ControlStats {
  return { leasesTaken: 0, leaseConflicts: 0 };
}

/** Turn our typed errors into Temporal failures the workflow can reason about. */
export function asFailure(e: unknown): unknown {
  if (e instanceof TunefleetError) {
    const message = e instanceof TunefleetErrors ? e.message : e.describe();
    return e.retryable
      ? ApplicationFailure.retryable(message, e.code)
      : ApplicationFailure.nonRetryable(message, e.code);
  }
  return e;
}

function wrap<A extends unknown[], R>(fn: (...a: A) => Promise<R>): (...a: A) => Promise<R> {
  return async (...a: A) => {
    try {
      return await fn(...a);
    } catch (e) {
      throw asFailure(e);
    }
  };
}

/**
 * Take a gang's leases all or nothing, in agent-id order (two gangs after overlapping agents meet at the same first
 * one, so neither ever holds part of what the other needs while waiting for it). A lease write that loses a race,
 * or a member's device that no longer has room, gives back what this call took: false, decide again.
 */
async function reserveGang(
  kv: KV,
  leases: Map<string, AgentLeases>,
  byId: Map<string, Advert>,
  req: PlaceRequest,
  members: NonNullable<Decision['members']>,
  now: number,
  log: (m: string) => void,
  stats: ControlStats,
  metrics: ControlMetrics | undefined,
): Promise<boolean> {
  const taken: string[] = [];
  for (const m of [...members].sort((a, b) => a.agentId.localeCompare(b.agentId))) {
    const advert = byId.get(m.agentId);
    try {
      await reserve(
        kv,
        m.agentId,
        leases.get(m.agentId),
        {
          jobId: req.jobId,
          attempt: req.attempt,
          bytes: m.bytes,
          purpose: req.purpose,
          time: now,
          rank: m.rank,
          ...(m.devices.length ? { devices: m.devices } : {}),
        },
        capacitiesOf(advert),
        advert,
      );
      taken.push(m.agentId);
    } catch (e) {
      if (!(e instanceof LeaseConflict)) throw e;
      stats.leaseConflicts += 1;
      metrics?.leaseConflicts.inc();
      log(
        `${req.jobId} attempt ${req.attempt}: gang lease on ${m.agentId} lost a race (${e.message}); ` +
          `giving back ${taken.length ? taken.join(', ') : 'nothing'} and deciding again`,
      );
      for (const id of taken) await releaseLease(kv, id, req.jobId, req.attempt);
      return false;
    }
  }
  return true;
}

/**
 * The gang's rendezvous: rank 0's advertised address, and a port of its range picked by the job and the attempt (a
 * port found taken fails the attempt, and the next attempt gets the next port).
 */
export function rendezvousFor(advert: Advert | undefined, jobId: string, attempt: number): Rendezvous {
  if (!advert?.rendezvous) throw new TunefleetError(ErrorCode.Internal, `${advert?.agent_id} has no rendezvous`);
  const [lo, hi] = advert.rendezvous.ports;
  let h = 0x811c9dc5;
  for (const ch of jobId) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return { address: advert.rendezvous.address, port: lo + ((h + attempt) % (hi - lo + 1)) };
}

/** A placement decision as `tunefleet explain` shows it. */
export interface DecisionRecord extends Decision {
  attempt: number;
  purpose: 'train' | 'evaluate';
  time: number;
  position: number | null;
}
const KEEP_DECISIONS = 12;
/** Queued jobs woken when a lease is released. */
const WAKE_AT_MOST = 8;

export function createControlActivities(deps: ControlDeps): ControlActivities {
  const { nats, fleet, log } = deps;
  const stats = deps.stats ?? newControlStats();

  /** Keep the job's last decisions; a waiting decision replaces the previous waiting one of the same attempt. */
  async function record(d: DecisionRecord): Promise<void> {
    const kv = await nats.kv(DECISIONS_BUCKET);
    const e = await kv.get(d.jobId);
    const kept = e && e.operation === 'PUT' ? readRecord(decisionsSchema, e.value, `decisions/${d.jobId}`, log) : null;
    const list = (kept?.decisions ?? []) as unknown as DecisionRecord[];
    const last = list[list.length - 1];
    if (last && !last.chosen && last.attempt === d.attempt && last.purpose === d.purpose) list.pop();
    list.push(d);
    await kv.put(d.jobId, JSON.stringify({ decisions: list.slice(-KEEP_DECISIONS) }));
  }

  /** A job was placed: how long it waited in the queue, and whether this placement is a recovery. */
  function placedNow(req: PlaceRequest, queue: QueueEntry[], now: number): void {
    const waited = queue.find((q) => q.jobId === req.jobId)?.since;
    if (waited !== undefined) deps.metrics?.queueWait.observe((now - waited) / 1000);
    if (req.after) deps.metrics?.recovered(req.jobId, req.after);
  }

  /** One placement request: decide, take the leases (compare-and-set) or queue; see place() for the metrics. */
  async function placeNow(req: PlaceRequest): Promise<PlaceResult> {
    await fleet.ready;
    const [leasesKv, queueKv, commitsKv] = await Promise.all([
      nats.kv(LEASES_BUCKET),
      nats.kv(QUEUE_BUCKET),
      nats.kv(COMMITS_BUCKET),
    ]);
    const commit = await commitsKv.get(req.jobId);
    const checkpointAgent =
      commit && commit.operation === 'PUT'
        ? (readRecord(commitRecordSchema, commit.value, `commits/${req.jobId}`, log)?.agent_id ?? null)
        : null;
    const me = { jobId: req.jobId, priority: req.spec.priority, submitted: req.submittedAt };
    // compare-and-set: a decision made on a stale view of the leases fails its write and is made again
    for (let round = 0; round < 20; round++) {
      const now = Date.now();
      const adverts = fleet.snapshot().map((e) => e.advert);
      const byId = new Map(adverts.map((a) => [a.agent_id, a]));
      const leases = await readLeases(leasesKv);
      // a lease of this very attempt is an earlier try of this placement (its worker died after reserving): not a
      // competitor
      const reserved = (id: string): { bytes: number; sessions: number } =>
        heldOn(leases.get(id)?.leases ?? [], byId.get(id), now, req);
      // evaluation runs one process: it needs one device, whatever training used
      const spec =
        req.purpose === 'evaluate'
          ? { ...req.spec, resources: { ...req.spec.resources, gpus: 1, min_gpus: 1, nodes: 1 } }
          : req.spec;
      const decision = place({ adverts, reserved, checkpointAgent }, { jobId: req.jobId, spec, exclude: req.exclude });
      const base = { ...decision, attempt: req.attempt, purpose: req.purpose, time: now };
      if (decision.impossible) {
        await record({ ...base, position: null });
        await queueKv.delete(req.jobId).catch(() => {});
        throw new TunefleetError(ErrorCode.NoAgentFits, decision.summary);
      }
      const queue = await readQueue(queueKv, now);
      let summary = decision.summary;
      if (decision.members) {
        const members = decision.members;
        // a job ahead in the queue that could use any of the members goes first (no backfill past it)
        const blockers = ahead(queue, me).filter((q) =>
          members.some(
            (m) => q.bytes !== null && q.bytes <= (decision.agents.find((a) => a.agentId === m.agentId)?.free ?? 0),
          ),
        );
        if (blockers.length === 0) {
          const taken = await reserveGang(leasesKv, leases, byId, req, members, now, log, stats, deps.metrics);
          if (!taken) continue;
          stats.leasesTaken += members.length;
          deps.metrics?.leasesTaken.inc(members.length);
          placedNow(req, queue, now);
          failpoint('place:after-reserve');
          const ids = new Set(members.map((m) => m.agentId));
          for (const [id, held] of leases) {
            if (!ids.has(id) && held.leases.some((l) => l.jobId === req.jobId && l.attempt === req.attempt))
              await releaseLease(leasesKv, id, req.jobId, req.attempt);
          }
          await queueKv.delete(req.jobId).catch(() => {});
          await record({ ...base, position: null });
          log(`${req.jobId} attempt ${req.attempt} (${req.purpose}): ${decision.summary}`);
          const rank0 = members[0] as (typeof members)[number];
          const advert = byId.get(rank0.agentId);
          return {
            placement: {
              agentId: rank0.agentId,
              attempt: req.attempt,
              reason: decision.summary,
              device: advert?.accelerator ?? 'cpu',
              reservedBytes: rank0.bytes,
              devices: rank0.devices,
              gang: {
                members: members.map((m) => ({
                  agentId: m.agentId,
                  rank: m.rank,
                  devices: m.devices,
                  reservedBytes: m.bytes,
                })),
                rendezvous: rendezvousFor(advert, req.jobId, req.attempt),
              },
            },
            waiting: null,
            position: null,
          };
        }
        summary =
          `the gang has its ${members.length} agents, but ${blockers.length} job(s) ahead in the queue can use ` +
          `them first: ${blockers
            .slice(0, 3)
            .map((b) => b.jobId)
            .join(', ')}`;
      } else if (decision.chosen && decision.estimate) {
        const chosen = decision.chosen;
        const free = decision.agents.find((a) => a.agentId === chosen)?.free ?? 0;
        const blockers = ahead(queue, me).filter((q) => q.bytes !== null && q.bytes <= free);
        if (blockers.length === 0) {
          const advert = byId.get(chosen);
          try {
            await reserve(
              leasesKv,
              chosen,
              leases.get(chosen),
              {
                jobId: req.jobId,
                attempt: req.attempt,
                bytes: decision.estimate.total,
                purpose: req.purpose,
                time: now,
                ...(decision.devices.length ? { devices: decision.devices } : {}),
              },
              capacitiesOf(advert),
              advert,
            );
          } catch (e) {
            if (!(e instanceof LeaseConflict)) throw e;
            stats.leaseConflicts += 1;
            deps.metrics?.leaseConflicts.inc();
            log(
              `${req.jobId} attempt ${req.attempt}: lease write on ${chosen} lost a race (${e.message}); ` +
                'deciding again',
            );
            continue;
          }
          stats.leasesTaken += 1;
          deps.metrics?.leasesTaken.inc();
          placedNow(req, queue, now);
          failpoint('place:after-reserve');
          // an earlier try of this placement that reserved elsewhere and died leaves that lease behind: take it back
          for (const [id, held] of leases) {
            if (id !== chosen && held.leases.some((l) => l.jobId === req.jobId && l.attempt === req.attempt))
              await releaseLease(leasesKv, id, req.jobId, req.attempt);
          }
          await queueKv.delete(req.jobId).catch(() => {});
          await record({ ...base, position: null });
          log(`${req.jobId} attempt ${req.attempt} (${req.purpose}): ${decision.summary}`);
          return {
            placement: {
              agentId: chosen,
              attempt: req.attempt,
              reason: decision.summary,
              device: advert?.accelerator ?? 'cpu',
              reservedBytes: decision.estimate.total,
              devices: decision.devices,
            },
            waiting: null,
            position: null,
          };
        }
        const first = blockers.slice(0, 3).map((b) => b.jobId);
        summary =
          `${chosen} has room, but ${blockers.length} job(s) ahead in the queue (priority, then submit time) ` +
          `can use it first: ${first.join(', ')}`;
      }
      const estimates = decision.agents
        .filter((a) => a.code !== 'never' && a.estimate !== null)
        .map((a) => a.estimate as number);
      await queueKv.put(
        req.jobId,
        JSON.stringify({
          ...me,
          bytes: estimates.length ? Math.min(...estimates) : null,
          refreshed: now,
          since: queue.find((q) => q.jobId === req.jobId)?.since ?? now,
        }),
      );
      const position = ahead(queue, me).length + 1;
      await record({ ...base, chosen: null, summary, position });
      return { placement: null, waiting: summary, position };
    }
    return { placement: null, waiting: 'other placements kept changing the leases; trying again', position: 1 };
  }

  return {
    prepare: wrap(async (input) => {
      const { prepareDataset } = await import('./prepare');
      // the adapter it continues from first: a wrong one fails the job before its data is read
      const parent = await parentAdapter(await nats.objects(ADAPTERS_BUCKET), input.spec);
      const report = await prepareDataset(await nats.objects(DATASETS_BUCKET), input);
      if (parent) report.parent = parent;
      log(
        `${input.jobId}: prepared ${report.train_records} train / ${report.eval_records} eval records ` +
          `(${report.format})`,
      );
      return report;
    }),

    place: wrap(async (req) => {
      const t0 = performance.now();
      const m = deps.metrics;
      try {
        const r = await placeNow(req);
        m?.placements.inc({ purpose: req.purpose, outcome: r.placement ? 'placed' : 'waiting' });
        return r;
      } catch (e) {
        if (e instanceof TunefleetError && e.code === ErrorCode.NoAgentFits)
          m?.placements.inc({ purpose: req.purpose, outcome: 'impossible' });
        throw e;
      } finally {
        m?.placementSeconds.observe({ purpose: req.purpose }, (performance.now() - t0) / 1000);
      }
    }),

    release: wrap(async (jobId, attempt, agentId, failed, lastBeatAt) => {
      if (failed) deps.metrics?.attemptFailed(jobId, failed);
      if (failed && lastBeatAt) deps.metrics?.detected(failed, (Date.now() - lastBeatAt) / 1000);
      const queueKv = await nats.kv(QUEUE_BUCKET);
      await queueKv.delete(jobId).catch(() => {});
      // no agent: the job has ended (failed or cancelled), and nothing of it may hold a place any longer
      const leasesKv = await nats.kv(LEASES_BUCKET);
      if (agentId) await releaseLease(leasesKv, agentId, jobId, attempt);
      else if ((await releaseJob(leasesKv, jobId)) > 0)
        log(`${jobId} has ended: released the leases it still held (a placement cancelled in flight)`);
      // the head of the queue tries again now rather than at its next poll (a job that left the queue may have been
      // what it waited behind)
      const waiting = (await readQueue(queueKv)).filter((q) => q.jobId !== jobId).slice(0, WAKE_AT_MOST);
      await Promise.all(waiting.map((q) => deps.wake(q.jobId).catch(() => {})));
    }),

    register: wrap(async (input, data, training, evaluation) => {
      const from = await nats.objects(CHECKPOINTS_BUCKET);
      const to = await nats.objects(ADAPTERS_BUCKET);
      const prefix = adapterPrefix(input.jobId);
      /** copy files from the checkpoints bucket into the adapters bucket, each checked against its sha256 */
      const copy = async (what: string, src: string, dst: string, files: FileEntry[]): Promise<void> => {
        for (const f of files) {
          const blob = await from.getBlob(`${src}${f.name}`);
          if (!blob)
            throw new TunefleetError(
              ErrorCode.ChecksumMismatch,
              `${what} ${f.name} is missing from the checkpoint store`,
            );
          if (sha256Hex(blob) !== f.sha256)
            throw new TunefleetError(ErrorCode.ChecksumMismatch, `${what} ${f.name} does not match its sha256`);
          await to.putBlob({ name: `${dst}${f.name}` }, blob);
        }
      };
      await copy('adapter file', training.adapterPrefix, prefix, training.adapterFiles);
      const logs =
        training.logPrefix && training.logFiles?.length
          ? { bucket: ADAPTERS_BUCKET, prefix: logsPrefix(input.jobId), files: training.logFiles }
          : undefined;
      if (logs && training.logPrefix) await copy('event file', training.logPrefix, logs.prefix, logs.files);
      const gates = checkGates(
        input.spec.evaluation.gates ?? [],
        metricValues(evaluation.tuned),
        metricValues(evaluation.base),
      );
      const result: JobResult = {
        jobId: input.jobId,
        state: gates.every((g) => g.passed) ? 'succeeded' : 'failed_gate',
        gates,
        model: input.spec.model,
        method: input.spec.method,
        data,
        training,
        evaluation,
        adapter: { bucket: ADAPTERS_BUCKET, prefix, files: training.adapterFiles },
        ...(logs ? { logs } : {}),
      };
      // the registry's record, and the adapter's README.md replaced by the model card made from it
      const record = modelRecord(input, result, new Date());
      const card = new TextEncoder().encode(modelCard(record));
      await to.putBlob({ name: `${prefix}${MODEL_CARD}` }, card);
      const cardEntry = { name: MODEL_CARD, sha256: sha256Hex(card), bytes: card.length };
      result.adapter.files = [...training.adapterFiles.filter((f) => f.name !== MODEL_CARD), cardEntry];
      record.adapter = result.adapter;
      await to.putBlob(
        { name: modelRecordObjectName(input.jobId) },
        new TextEncoder().encode(JSON.stringify(record, null, 1)),
      );
      await to.putBlob(
        { name: resultObjectName(input.jobId) },
        new TextEncoder().encode(JSON.stringify(result, null, 1)),
      );
      log(
        `${input.jobId}: registered adapter (${result.adapter.files.length} files, model card), record and result: ` +
          `${result.state}` +
          (gates.length ? ` (${gates.map((g) => g.message).join('; ')})` : ''),
      );
      return result;
    }),
  };
}
