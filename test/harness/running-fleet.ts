// A running fleet for an integration suite: the test stack (nats-server, Temporal dev
// server), control workers, a client and agents, started in the suite's `before` and
// stopped in its `after` (everything, even when a start failed half-way). Agents are
// `tunefleet agent start` processes, or one in-process agent where a suite reads its log.
import type { Config } from '../../shared';
import { addAgent } from '../../infra/secrets';
import { reloadNats } from '../../infra/services';
import { JobClient } from '../../scheduler/cli/client';
import { startControlWorker, type RunningWorker } from '../../scheduler/worker';
import { startAgent, type RunningAgent } from '../../agent/daemon';
import { AgentProcesses, readyAgents, until } from './fleet';
import { adminCfg, natsPids, startTestStack, stopAll, type TestStack } from './stack';

export interface FleetOptions {
  /** agent processes to start, by id (each labelled host=<id>) */
  agents?: string[];
  /** extra `tunefleet agent start` flags for every agent process */
  agentArgs?: string[];
  /** one agent inside the test process instead, with its log lines kept */
  inProcessAgent?: string;
  /** how many control workers (two make placements race for the same leases) */
  controlWorkers?: number;
  /** settings of the client's config (timeouts, queue polling) */
  client?: Partial<Config>;
  /** how long the agents may take to advertise */
  readyMs?: number;
  /** NATS as a JetStream cluster of this many nodes, every stream and bucket replicated on all (default: 1 server) */
  natsNodes?: number;
  /** control workers serve Prometheus /metrics (on a free loopback port: RunningWorker.metrics.url) */
  workerMetrics?: boolean;
  /** Temporal's real server on PostgreSQL with mutual TLS instead of the dev server */
  temporalServer?: boolean;
}

export interface RunningFleet {
  readonly stack: TestStack;
  readonly client: JobClient;
  readonly workers: RunningWorker[];
  readonly agents: AgentProcesses;
  /** the in-process agent, if asked for */
  readonly agent: RunningAgent | null;
  /** worker and in-process agent log lines */
  readonly logs: string[];
}

/** Register `before`/`after` hooks in the calling `describe` that start and stop a fleet; read it inside tests. */
export function useRunningFleet(o: FleetOptions): RunningFleet {
  let stack: TestStack | null = null;
  let client: JobClient | null = null;
  let agent: RunningAgent | null = null;
  const workers: RunningWorker[] = [];
  // TUNEFLEET_TEST_LOGS=1 prints worker and agent log lines as they come (to see where a suite stands)
  const logs: string[] = [];
  const keep = (line: string): void => {
    logs.push(line);
    if (process.env.TUNEFLEET_TEST_LOGS) console.error(line);
  };
  const agents = new AgentProcesses(() => started(stack, 'stack'), o.agentArgs ?? []);
  const want = (o.agents?.length ?? 0) + (o.inProcessAgent ? 1 : 0);

  before(async () => {
    stack = await startTestStack({ natsNodes: o.natsNodes, temporalServer: o.temporalServer });
    const s = stack;
    for (let i = 0; i < (o.controlWorkers ?? 1); i++)
      workers.push(
        await startControlWorker(
          s.cfg,
          (m) => keep(`[worker${i + 1}] ${m}`),
          o.workerMetrics ? { metricsAddress: { host: '127.0.0.1', port: 0 } } : {},
        ),
      );
    // the test's own client inspects every bucket, so it is admin on NATS; workers run as control, agents as
    // agent-<id>, and `runCli` as cli: each with its own role's permissions
    client = await JobClient.connect({ ...adminCfg(s), ...o.client });
    const c = client;
    if (o.inProcessAgent && (await addAgent(s.home, o.inProcessAgent)))
      await reloadNats(s.home, natsPids(s), s.cfg.natsUrl, `agent-${o.inProcessAgent}`);
    if (o.inProcessAgent)
      agent = await startAgent(
        s.cfg,
        { agentId: o.inProcessAgent, labels: {}, advertIntervalMs: 500, heartbeatMs: 1000 },
        (m) => keep(`[agent] ${m}`),
      );
    for (const id of o.agents ?? []) await agents.start(id);
    await until(`${want} agents advertise`, async () => (await readyAgents(c)).length === want, o.readyMs ?? 90_000);
  });

  after(() =>
    stopAll(
      () => agents.killAll(),
      () => client?.close(),
      () => agent?.stop(),
      ...workers
        .map((w) => async () => {
          // a stop that hangs shows what the workers and the agent said last (kept, not printed, unless it does)
          const slow = setTimeout(
            () => console.error(`[harness] last log lines:\n${logs.slice(-40).join('\n')}`),
            30_000,
          );
          try {
            await w.stop();
          } finally {
            clearTimeout(slow);
          }
        })
        .reverse(),
      () => stack?.stop(),
    ),
  );

  return {
    get stack() {
      return started(stack, 'stack');
    },
    get client() {
      return started(client, 'client');
    },
    workers,
    agents,
    get agent() {
      return agent;
    },
    logs,
  };
}

function started<T>(x: T | null, what: string): T {
  if (x === null) throw new Error(`the fleet's ${what} is not started (read it inside a test, not at describe time)`);
  return x;
}

/**
 * `fn` run once, by the first caller; later callers get the same promise. For a job several cases read: each case
 * asks for it, so any case can run alone (mocha --grep) and the whole suite still runs it once.
 */
export function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | null = null;
  return () => (p ??= fn());
}
