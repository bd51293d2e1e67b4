// The agent daemon: one per GPU machine. Advertises its capacity every few seconds and
// runs train/evaluate activities from its own task queue (agent-<id>).
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import si from 'systeminformation';
import {
  ID_PATTERN,
  PROGRESS_SIGNAL,
  agentTaskQueue,
  desiredStateSchema,
  type AgentState,
  type Config,
  type DesiredState,
} from '../shared';
import { createAgentActivities, type AgentDeps } from './activities';
import { buildAdvert, hostFacts, probeTrainer } from './advert';
import { selectDevices } from './devices';
import { probeGpus } from './gpu';
import { connectAgentNats } from './nats';
import { temporalConnectOptions } from '../shared/temporalconn';
import { closeNats, natsFailure } from '../shared/natsconn';
import { installRuntime, serveMetrics } from '../shared/metrics';
import { AgentMetrics } from './metrics';
import { DEFAULT_TRAINER_NICE, defaultMaxSessions, threadsPerSession, withPriority } from './priority';

export interface AgentOptions {
  agentId: string;
  labels: Record<string, string>;
  advertIntervalMs: number;
  heartbeatMs?: number;
  /** bytes offered to jobs on each device; unset: the device's memory, or on CPU the RAM available at start */
  capacity?: number;
  /** sessions at once, advertised so placement never sends more (default: defaultMaxSessions) */
  maxSessions?: number;
  /** trainers run this many nice levels below the agent (default DEFAULT_TRAINER_NICE; 0: same priority) */
  trainerNice?: number;
  /** CPU threads per trainer (default: the cores split over maxSessions) */
  trainerThreads?: number;
  /** --gpus: the GPU indexes or UUIDs (GPU-…, MIG-…) this agent offers; unset: all */
  gpus?: string[];
  /** where gang peers reach this agent: its address and the ports its rank 0 may listen on (unset: no gangs) */
  rendezvous?: { address: string; ports: [number, number] };
  /** where to serve Prometheus /metrics (unset: not served) */
  metricsAddress?: { host: string; port: number };
}

export interface RunningAgent {
  agentId: string;
  stop(): Promise<void>;
  done: Promise<void>;
}

export async function startAgent(
  cfg: Config,
  o: AgentOptions,
  log: (m: string) => void = (m) => console.log(`[agent ${o.agentId}] ${m}`),
): Promise<RunningAgent> {
  if (!ID_PATTERN.test(o.agentId))
    throw new Error(`agent id '${o.agentId}' must be lowercase letters, digits and dashes`);
  await installRuntime();
  // a --gpus that names a device this host lacks is refused before anything starts
  if (o.gpus) selectDevices((await probeGpus()).devices, o.gpus);
  const nats = await connectAgentNats(cfg, o.agentId);
  const kv = await nats.adverts();
  const [host, caps, mem] = await Promise.all([hostFacts(), probeTrainer(cfg.python), si.mem()]);
  // a CPU agent offers the RAM available when it started (what jobs use later must not shrink the offer)
  const capacity = o.capacity ?? (caps.cuda ? undefined : Math.min(mem.total, mem.available));
  const maxSessions = o.maxSessions ?? defaultMaxSessions(caps.cuda, availableParallelism());
  if (caps.methods.length === 0) log(`warning: the trainer at ${cfg.python} did not answer; run 'npm run bootstrap'`);
  const workDir = join(cfg.home, 'agents', o.agentId);
  await mkdir(workDir, { recursive: true });
  const sessions: AgentDeps['sessions'] = new Map();
  // state machine: ready <-> cordoned (operator); any -> draining (operator) -> drained
  // (no session left); uncordon from drained/draining -> ready.
  let desired: DesiredState = 'ready';
  let lastNote: string | null = null;
  const metrics = new AgentMetrics(o.agentId);
  const state = (): AgentState => (desired === 'draining' ? (sessions.size === 0 ? 'drained' : 'draining') : desired);

  const publish = async (): Promise<void> => {
    const { advert, gpuNote } = await buildAdvert({
      agentId: o.agentId,
      state: state(),
      labels: o.labels,
      host,
      caps,
      modelsDir: cfg.modelsDir,
      sessions: [...sessions.values()],
      capacity,
      maxSessions,
      ...(o.gpus ? { gpuSelection: o.gpus } : {}),
      ...(o.rendezvous ? { rendezvous: o.rendezvous } : {}),
    });
    if (gpuNote !== lastNote && gpuNote) log(gpuNote);
    lastNote = gpuNote;
    await kv.put(o.agentId, JSON.stringify(advert));
    metrics.advert(advert);
  };
  await publish();

  // operator intent: a cordon or drain written to the agent-states bucket applies at once
  const states = await nats.agentStates();
  // the watch is made again when it fails (its NATS node was lost, say): a watch error must not end the agent
  let intent = await states.watch({ key: o.agentId });
  let watching = true;
  const intentLoop = (async () => {
    while (watching) {
      try {
        for await (const e of intent) {
          let next: DesiredState = 'ready';
          if (e.operation === 'PUT') {
            const parsed = desiredStateSchema.safeParse(
              (() => {
                try {
                  return e.json();
                } catch {
                  return null;
                }
              })(),
            );
            if (!parsed.success) {
              log(`ignored an unreadable desired state for ${o.agentId}`);
              continue;
            }
            next = parsed.data.state;
          }
          if (next === desired) continue;
          log(`state: ${desired} -> ${next}`);
          desired = next;
          if (desired === 'draining') {
            for (const s of sessions.values()) s.stop?.();
          }
          await publish().catch((err: unknown) => log(`advert failed: ${String(err)}`));
        }
        if (!watching) return;
        log('the operator-intent watch ended; watching again in 1 s');
      } catch (err) {
        if (!watching) return;
        log(`the operator-intent watch failed (${natsFailure(err)}); watching again in 1 s`);
      }
      await new Promise((r) => setTimeout(r, 1000));
      if (!watching) return;
      intent = await states.watch({ key: o.agentId }).catch((err: unknown) => {
        log(`watching the operator intent again failed (${natsFailure(err)})`);
        return intent;
      });
    }
  })();
  let advertising = true;
  const advertLoop = (async () => {
    while (advertising) {
      await new Promise((r) => setTimeout(r, o.advertIntervalMs));
      if (!advertising) break;
      await publish().catch((e: unknown) => log(`advert failed: ${String(e)}`));
    }
  })();

  const connection = await NativeConnection.connect(temporalConnectOptions(cfg, `agent-${o.agentId}`));
  // a client connection, for the progress signals sessions send to their workflows
  const clientConnection = await Connection.connect(temporalConnectOptions(cfg, `agent-${o.agentId}`));
  const client = new Client({ connection: clientConnection, namespace: cfg.namespace });
  const heartbeatMs = o.heartbeatMs ?? 5_000;
  const trainerNice = o.trainerNice ?? DEFAULT_TRAINER_NICE;
  const priority = withPriority(['python'], { nice: trainerNice });
  const trainerThreads = o.trainerThreads ?? threadsPerSession(availableParallelism(), maxSessions);
  if (priority.note) log(`warning: ${priority.note}`);
  const worker = await Worker.create({
    connection,
    namespace: cfg.namespace,
    taskQueue: agentTaskQueue(o.agentId),
    activities: createAgentActivities({
      agentId: o.agentId,
      nats,
      python: cfg.python,
      modelsDir: cfg.modelsDir,
      judgeDir: cfg.judgeDir,
      workDir,
      heartbeatMs,
      killGraceMs: 120_000,
      trainerNice,
      trainerThreads,
      sessions,
      log,
      metrics,
      draining: () => desired === 'draining',
      signalProgress: async (workflowId, update) => {
        await client.workflow.getHandle(workflowId).signal(PROGRESS_SIGNAL, update);
      },
    }),
    // several small jobs may share this machine: placement reserves memory per session
    maxConcurrentActivityTaskExecutions: maxSessions,
    // heartbeats must reach the server well inside the workflow's heartbeat timeout
    maxHeartbeatThrottleInterval: heartbeatMs,
    defaultHeartbeatThrottleInterval: heartbeatMs,
    shutdownGraceTime: '2 minutes',
    // an activity that ignores its cancellation must not hold the stop for ever
    shutdownForceTime: '3 minutes',
  });
  log(
    `ready: queue ${agentTaskQueue(o.agentId)}, ${caps.cuda ? 'CUDA' : 'CPU'}, models in ${cfg.modelsDir}, ` +
      `trainers as: ${priority.argv.slice(0, -1).join(' ') || '(same priority)'}, ` +
      `${maxSessions} session(s) at once, ${trainerThreads} CPU thread(s) each`,
  );
  const served = o.metricsAddress ? await serveMetrics(o.metricsAddress, metrics.registry, log) : null;
  if (served) log(`metrics on ${served.url}`);
  const run = worker.run();
  /** A stop step that may not hang the stop: after `ms` it is left behind, and the log says which. */
  const bounded = async (what: string, p: Promise<unknown>, ms = 10_000): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((res) => (timer = setTimeout(() => res(false), ms)));
    const ok = await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      late,
    ]);
    clearTimeout(timer);
    if (!ok) log(`stop: ${what} did not finish in ${ms / 1000} s; going on`);
    return ok;
  };
  const done = (async () => {
    await run.catch((e: unknown) => log(`stop: the Temporal worker ended with ${String(e)}`));
    advertising = false;
    watching = false;
    intent.stop();
    await bounded('the operator-intent watch', intentLoop);
    await bounded('the advert loop', advertLoop);
    await bounded('removing the advert', kv.delete(o.agentId));
    if (served) await bounded('closing the metrics server', served.close());
    await bounded('closing the worker connection', connection.close());
    await bounded('closing the client connection', clientConnection.close());
    await bounded('closing NATS', closeNats(nats.nc), 20_000);
  })();
  return {
    agentId: o.agentId,
    done,
    async stop() {
      desired = 'draining';
      // graceful stop: running trainers checkpoint now and their jobs move elsewhere
      for (const s of sessions.values()) s.stop?.();
      await publish().catch(() => {});
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await done;
    },
  };
}
