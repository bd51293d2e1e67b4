// The control worker: runs fineTune workflows and the control activities on
// tunefleet-control. Several may run at once; Temporal spreads the work.
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, type LogLevel } from '@temporalio/worker';
import { CAPACITY_SIGNAL, COMMITS_BUCKET, CONTROL_TASK_QUEUE, LEASES_BUCKET, type Config } from '../shared';
import { serveCommits } from './commits';
import { createControlActivities, newControlStats, type ControlStats } from './activities';
import { FleetView } from './fleet';
import { ADVERT_TTL_MS, checkAssets, connectNats } from './nats';
import { temporalConnectOptions } from '../shared/temporalconn';

/** The SDK logs every worker state change at INFO; WARN unless TUNEFLEET_LOG_LEVEL says otherwise. */
export function quietSdkLogs(): void {
  try {
    Runtime.install({ logger: new DefaultLogger((process.env.TUNEFLEET_LOG_LEVEL ?? 'WARN') as LogLevel) });
  } catch {
    // already installed in this process (a second worker): keep it
  }
}

export interface RunningWorker {
  worker: Worker;
  run: Promise<void>;
  /** what this worker's placements ran into (lease compare-and-set conflicts, leases taken) */
  stats: ControlStats;
  stop(): Promise<void>;
}

/**
 * identity: how Temporal's history names this worker's pollers (default: pid@hostname, the same for every worker of one
 * process)
 */
export async function startControlWorker(
  cfg: Config,
  log: (m: string) => void = (m) => console.log(`[worker] ${m}`),
  o: { identity?: string } = {},
): Promise<RunningWorker> {
  quietSdkLogs();
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
      wake: (jobId) => client.workflow.getHandle(jobId).signal(CAPACITY_SIGNAL),
    }),
  });
  const run = worker.run();
  return {
    worker,
    run,
    stats,
    async stop() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await run.catch(() => {});
      commitService.unsubscribe();
      await fleet.stop();
      await connection.close();
      await clientConnection.close();
      await nats.close();
    },
  };
}
