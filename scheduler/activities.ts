// Control activities (task queue tunefleet-control), built over their dependencies so
// tests can hand in real NATS and a fleet view of their choosing.
import { ApplicationFailure } from '@temporalio/activity';
import type { KV } from 'nats';
import {
  ADAPTERS_BUCKET, CHECKPOINTS_BUCKET, DATASETS_BUCKET, ErrorCode, TunefleetError, TunefleetErrors, adapterPrefix, resultObjectName,
  type ControlActivities, type JobResult,
} from '../shared';
import type { FleetView } from './fleet';
import type { Nats } from './nats';
import { sha256Hex } from './nats';
import { place } from './placement';

export interface ControlDeps {
  nats: Nats;
  fleet: FleetView;
  leases: KV;
  log: (msg: string) => void;
}

/** Turn our typed errors into Temporal failures the workflow can reason about. */
export function asFailure(e: unknown): unknown {
  if (e instanceof TunefleetError) {
    const message = e instanceof TunefleetErrors ? e.message : e.describe();
    return e.retryable ? ApplicationFailure.retryable(message, e.code) : ApplicationFailure.nonRetryable(message, e.code);
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

const leaseKey = (agentId: string, jobId: string): string => `${agentId}.${jobId}`;

export function createControlActivities(deps: ControlDeps): ControlActivities {
  const { nats, fleet, leases, log } = deps;

  async function sessionsByAgent(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for await (const k of await leases.keys()) {
      const agent = k.split('.')[0] ?? '';
      counts.set(agent, (counts.get(agent) ?? 0) + 1);
    }
    return counts;
  }

  return {
    prepare: wrap(async (input) => {
      const { prepareDataset } = await import('./prepare');
      const report = await prepareDataset(await nats.objects(DATASETS_BUCKET), input);
      log(`${input.jobId}: prepared ${report.train_records} train / ${report.eval_records} eval records (${report.format})`);
      return report;
    }),

    place: wrap(async (req) => {
      await fleet.ready;
      const counts = await sessionsByAgent();
      const decision = place(fleet.snapshot().map((e) => e.advert), req, (id) => counts.get(id) ?? 0);
      log(`${req.jobId} attempt ${req.attempt} (${req.purpose}): ${decision.summary}`);
      if (!decision.chosen) return { placement: null, waiting: decision.summary };
      const entry = fleet.snapshot().find((e) => e.advert.agent_id === decision.chosen);
      await leases.put(leaseKey(decision.chosen, req.jobId), JSON.stringify({ jobId: req.jobId, attempt: req.attempt, agentId: decision.chosen, purpose: req.purpose, time: Date.now() }));
      return { placement: { agentId: decision.chosen, attempt: req.attempt, reason: decision.summary, device: entry?.advert.accelerator ?? 'cpu' }, waiting: null };
    }),

    release: wrap(async (jobId, attempt, agentId) => {
      // safe to repeat: only this attempt's lease is removed
      const key = leaseKey(agentId, jobId);
      const e = await leases.get(key);
      if (!e || e.operation !== 'PUT') return;
      const lease = e.json<{ attempt: number }>();
      if (lease.attempt === attempt) await leases.delete(key);
    }),

    register: wrap(async (input, data, training, evaluation) => {
      const from = await nats.objects(CHECKPOINTS_BUCKET);
      const to = await nats.objects(ADAPTERS_BUCKET);
      const prefix = adapterPrefix(input.jobId);
      for (const f of training.adapterFiles) {
        const blob = await from.getBlob(`${training.adapterPrefix}${f.name}`);
        if (!blob) throw new TunefleetError(ErrorCode.ChecksumMismatch, `adapter file ${f.name} is missing from the checkpoint store`);
        if (sha256Hex(blob) !== f.sha256) throw new TunefleetError(ErrorCode.ChecksumMismatch, `adapter file ${f.name} does not match its sha256`);
        await to.putBlob({ name: `${prefix}${f.name}` }, blob);
      }
      const result: JobResult = {
        jobId: input.jobId, state: 'succeeded', model: input.spec.model, method: input.spec.method, data, training, evaluation,
        adapter: { bucket: ADAPTERS_BUCKET, prefix, files: training.adapterFiles },
      };
      await to.putBlob({ name: resultObjectName(input.jobId) }, new TextEncoder().encode(JSON.stringify(result, null, 1)));
      log(`${input.jobId}: registered adapter (${training.adapterFiles.length} files) and result`);
      return result;
    }),
  };
}
