// A control worker's Prometheus metrics: its placement decisions (by outcome, with their
// latency), lease writes and compare-and-set conflicts, the queue (depth; how long a job
// waited before it was placed), recoveries (an attempt that failed and the job placed
// again, by failure class, with the time from the failed attempt's release to the new
// placement), and the running jobs by state as Temporal's visibility lists them. Served on
// /metrics with the Temporal SDK's worker metrics (shared/metrics.ts).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
/** The states of a job that has not ended. */
const RUNNING_STATES = ['preparing', 'queued', 'placing', 'training', 'evaluating', 'registering'] as const;

/** How long a visibility count of the jobs by state is reused (each scrape would otherwise ask Temporal again). */
const COUNT_TTL_MS = 10_000;
/** Failed attempts remembered for the recovery time (per job; the oldest forgotten first). */
const REMEMBER = 10_000;

export interface ControlMetricsSources {
  /** jobs waiting in the queue now */
  queueDepth(): Promise<number>;
  /** the running jobs, counted by their current state (Temporal visibility) */
  jobsByState(): Promise<Map<string, number>>;
}

export class ControlMetrics {
  readonly registry = new Registry();
  readonly placements: Counter;
  readonly placementSeconds: Histogram;
  readonly leasesTaken: Counter;
  readonly leaseConflicts: Counter;
  readonly queueWait: Histogram;
  readonly failedAttempts: Counter;
  readonly recoveries: Counter;
  readonly recoverySeconds: Histogram;
  readonly detectionSeconds: Histogram;
  private readonly failedAt = new Map<string, number>();

  constructor(worker: string, sources: ControlMetricsSources) {
    const r = [this.registry];
    this.registry.setDefaultLabels({ worker });
    collectDefaultMetrics({ register: this.registry, prefix: 'tunefleet_worker_' });
    this.placements = new Counter({
      name: 'tunefleet_placements_total',
      help: 'placement decisions made by this worker, by purpose and outcome (placed, waiting, impossible)',
      labelNames: ['purpose', 'outcome'],
      registers: r,
    });
    this.placementSeconds = new Histogram({
      name: 'tunefleet_placement_duration_seconds',
      help: 'time to decide and take the leases (or queue) for one placement request',
      labelNames: ['purpose'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: r,
    });
    this.leasesTaken = new Counter({
      name: 'tunefleet_leases_taken_total',
      help: 'leases written (a gang takes one per member)',
      registers: r,
    });
    this.leaseConflicts = new Counter({
      name: 'tunefleet_lease_conflicts_total',
      help: 'lease writes refused by compare-and-set (another placement changed the agent first; decided again)',
      registers: r,
    });
    this.queueWait = new Histogram({
      name: 'tunefleet_queue_wait_seconds',
      help: 'how long a job waited in the queue before it was placed',
      buckets: [1, 5, 15, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600],
      registers: r,
    });
    this.failedAttempts = new Counter({
      name: 'tunefleet_attempts_failed_total',
      help: 'attempts that ended in a failure the job is retried after, by failure class',
      labelNames: ['cause'],
      registers: r,
    });
    this.recoveries = new Counter({
      name: 'tunefleet_recoveries_total',
      help: 'jobs placed again after a failed attempt, by the failure class',
      labelNames: ['cause'],
      registers: r,
    });
    this.recoverySeconds = new Histogram({
      name: 'tunefleet_recovery_seconds',
      help: "from a failed attempt's release to the job's next placement (when this worker saw both)",
      buckets: [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300],
      registers: r,
    });
    this.detectionSeconds = new Histogram({
      name: 'tunefleet_fault_detection_seconds',
      help:
        "from a lost attempt's last heartbeat (the agent's clock) to its release here: the time to detect a dead or " +
        'cut-off agent, by failure class',
      labelNames: ['cause'],
      buckets: [1, 2, 5, 10, 15, 20, 30, 60, 120, 300],
      registers: r,
    });
    new Gauge({
      name: 'tunefleet_queue_depth',
      help: 'jobs waiting in the queue',
      registers: r,
      async collect() {
        this.set(await sources.queueDepth());
      },
    });
    let counted: { at: number; counts: Map<string, number> } | null = null;
    new Gauge({
      name: 'tunefleet_jobs',
      help: 'running jobs by their current state (Temporal visibility; counts reused for 10 s)',
      labelNames: ['state'],
      registers: r,
      async collect() {
        if (!counted || Date.now() - counted.at > COUNT_TTL_MS)
          counted = { at: Date.now(), counts: await sources.jobsByState() };
        // every running state is shown, 0 when no job is in it
        for (const s of RUNNING_STATES) this.set({ state: s }, counted.counts.get(s) ?? 0);
      },
    });
  }

  /** An attempt failed and was released: counted, and remembered for the recovery time. */
  attemptFailed(jobId: string, cause: string): void {
    this.failedAttempts.inc({ cause });
    this.failedAt.delete(jobId);
    this.failedAt.set(jobId, Date.now());
    if (this.failedAt.size > REMEMBER) this.failedAt.delete(this.failedAt.keys().next().value as string);
  }

  /** A lost attempt was detected `seconds` after its agent's last heartbeat. */
  detected(cause: string, seconds: number): void {
    // another host's clock: a negative difference is skew, not a time
    if (Number.isFinite(seconds) && seconds >= 0) this.detectionSeconds.observe({ cause }, seconds);
  }

  /** The job was placed again after a failed attempt. */
  recovered(jobId: string, cause: string): void {
    this.recoveries.inc({ cause });
    const at = this.failedAt.get(jobId);
    if (at !== undefined) this.recoverySeconds.observe((Date.now() - at) / 1000);
    this.failedAt.delete(jobId);
  }
}
