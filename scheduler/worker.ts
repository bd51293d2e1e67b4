// The control worker: runs fineTune workflows and the control activities on
// tunefleet-control. Several may run at once; Temporal spreads the work.
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { hostname } from 'node:os';
import {
  CAPACITY_SIGNAL,
  COMMITS_BUCKET,
  CONTROL_TASK_QUEUE,
  LEASES_BUCKET,
  QUEUE_BUCKET,
  type Config,
} from '../shared';
import { SA_STATE } from '../workflows/searchAttributes';
import { serveCommits } from './commits';
import { createControlActivities, newControlStats, type ControlStats } from './activities';
import { FleetView } from './fleet';
import { ADVERT_TTL_MS, checkAssets, connectNats } from './nats';
import { temporalConnectOptions } from '../shared/temporalconn';
import { installRuntime, serveMetrics, type MetricsServer } from '../shared/metrics';
import { ControlMetrics } from './metrics';
import { readQueue } from './leases';

export interface RunningWorker {
  worker: Worker;
  run: Promise<void>;
  /** what this worker's placements ran into (lease compare-and-set conflicts, leases taken) */
  stats: ControlStats;
  /** where its Prometheus /metrics is served (null: not asked for, or the address could not be opened) */
  metrics: MetricsServer | null;
  stop(): Promise<void>;
}

/**
 * identity: how Temporal's history names this worker's pollers (default: pid@hostname, the same for every worker of one
 * process)
 */
export async function startControlWorker(
  cfg: Config,
  log: (m: string) => void = (m) => console.log(`[worker] ${m}`),
  o: { identity?: string; metricsAddress?: { host: string; port: number } } = {},
): Promise<RunningWorker> {
  await installRuntime();
  const nats = await connectNats(cfg, 'control');
  await checkAssets(nats);
  const fleet = new FleetView(await nats.adverts(), ADVERT_TTL_MS, log, Date.now, await nats.agentStates());
  await fleet.start();
  // agents' epoch claims and checkpoint commits (only control workers write the commits bucket)
  const commitService = serveCommits(nats.nc, await nats.kv(COMMITS_BUCKET), await nats.kv(LEASES_BUCKET), log);
  const connection = await NativeConnection.connect(temporalConnectOptions(cfg, 'control'));
  const clientConnection = await Connection.connect(temporalConnectOptions(cfg, 'control'));
  const client = new Client({ connection: clientConnection, namespace: cfg.namespace });
  const stats = newControlStats();
  const queueKv = await nats.kv(QUEUE_BUCKET);
  const metrics = new ControlMetrics(o.identity ?? `${process.pid}@${hostname()}`, {
    queueDepth: async () => (await readQueue(queueKv, Date.now(), () => {})).length,
    // the running jobs by their current state (the state search attribute); one visibility listing per scrape
    jobsByState: async () => {
      const counts = new Map<string, number>();
      const query = `WorkflowType = 'fineTune' AND ExecutionStatus = 'Running'`;
      for await (const w of client.workflow.list({ query })) {
        const state = String(w.typedSearchAttributes.get(SA_STATE) ?? 'preparing');
        counts.set(state, (counts.get(state) ?? 0) + 1);
      }
      return counts;
    },
  });
  const worker = await Worker.create({
    connection,
    namespace: cfg.namespace,
    taskQueue: CONTROL_TASK_QUEUE,
    ...(o.identity ? { identity: o.identity } : {}),
    workflowsPath: require.resolve('../workflows'),
    activities: createControlActivities({
      nats,
      fleet,
      log,
      stats,
      metrics,
      wake: (jobId) => client.workflow.getHandle(jobId).signal(CAPACITY_SIGNAL),
    }),
    // at a stop, activities in flight get a grace to finish, then are cancelled; one that ignores its cancellation
    // (a NATS call that never answers) must not hold the stop for ever: Temporal retries it on another worker
    shutdownGraceTime: '20 seconds',
    shutdownForceTime: '60 seconds',
  });
  const served = o.metricsAddress ? await serveMetrics(o.metricsAddress, metrics.registry, log) : null;
  if (served) log(`metrics on ${served.url}`);
  const run = worker.run();
  return {
    worker,
    run,
    stats,
    metrics: served,
    async stop() {
      // a phase that takes long is said (a stop that hangs says where)
      const phase = async (what: string, p: Promise<unknown> | unknown, detail = (): string => ''): Promise<void> => {
        const t0 = Date.now();
        const slow = setTimeout(() => log(`stopping: still waiting for ${what} after 15 s${detail()}`), 15_000);
        try {
          await p;
        } finally {
          clearTimeout(slow);
          if (Date.now() - t0 > 15_000) log(`stopping: ${what} took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
        }
      };
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await phase(
        'the Temporal worker to finish its tasks',
        run.catch((e: unknown) => log(`stopping: the Temporal worker ended with ${String(e)}`)),
        () => {
          const { numInFlightActivities: a, numInFlightWorkflowActivations: w } = worker.getStatus();
          return ` (${a} activities, ${w} workflow activations in flight)`;
        },
      );
      commitService.unsubscribe();
      await phase('the metrics server', served?.close());
      await phase('the fleet view', fleet.stop());
      await phase('the worker connection', connection.close());
      await phase('the client connection', clientConnection.close());
      await phase('NATS', nats.close());
    },
  };
}
