// Many jobs at once against real agents and several control workers: what `npm test`
// runs small (recovery.test.ts, 9 jobs) and `npm run soak` runs big (30 jobs). Watches
// the leases and adverts the whole time (never more reserved, nor more running, than an
// agent offers), polls the job list (queue positions) one call after another, checks that
// every trainer runs below its agent's CPU priority, and reads each workflow's history
// afterwards for the longest workflow task.
import { readFileSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { LEASES_BUCKET } from '../../shared';
import { JobClient, loadSpecFile } from '../../scheduler/cli/client';
import type { Lease } from '../../scheduler/leases';
import type { RunningWorker } from '../../scheduler/worker';
import { tinyJob, type AgentProcesses } from './fleet';
import { statFields } from './procs';
import type { TestStack } from './stack';

const GiB = 2 ** 30;

export interface LoadOptions {
  name: string;
  jobs: number;
  /** bytes each agent offers (the agents must be started with it) */
  capacity: number;
  maxSteps: number;
  /** nice levels trainers must run below their agent */
  trainerNice: number;
  /** CPU threads each trainer must be held to (OMP_NUM_THREADS) */
  trainerThreads: number;
}

export interface LoadFigures {
  jobs: number;
  agents: number;
  workers: number;
  /** "<job>: <error>" for each job that did not finish */
  failed: string[];
  maxHeldBytes: number;
  /** the first lease write that held more than the capacity, if any */
  overbooked: string | null;
  maxRunningBytes: number;
  /** the first advert whose sessions held more than the capacity, if any */
  overrun: string | null;
  /** the highest queue position `list` showed */
  maxQueuePosition: number;
  leaseConflicts: number;
  leasesTaken: number;
  /** the longest fineTune workflow task (started -> completed), over every job */
  longestWorkflowTaskMs: number;
  longestWorkflowTaskJob: string;
  workflowTasks: number;
  /** workflow tasks that timed out or failed (Temporal retried them) */
  workflowTaskTimeouts: number;
  /** those, by kind: "3 timed_out START_TO_CLOSE" */
  workflowTaskProblems: string[];
  /** each of those: job, when, which poller had taken it */
  workflowTaskProblemDetails: string[];
  /** the longest stall of this process's event loop (where the control workers deliver activations), ms */
  eventLoopMaxMs: number;
  p99CompletedTaskMs: number;
  longestCompletedTaskMs: number;
  /** scheduled -> started: waiting for a worker to poll */
  p99TaskWaitMs: number;
  longestTaskWaitMs: number;
  /** trainer processes (threads) seen running, and any that did not run below their agent */
  trainersSeen: number;
  priorityViolations: string[];
  wallS: number;
  /** CPU seconds used during the run: this process (control workers and the test), the agents, their trainers, nats-server, Temporal */
  cpuSeconds: { tests: number; agents: number; trainers: number; nats: number; temporal: number };
}

/** user + system seconds of a process (`self`) or of its waited-for children (`children`: an agent's finished trainers); 100 clock ticks a second on Linux. */
function cpuOf(pid: number): { self: number; children: number } {
  const f = statFields(`/proc/${pid}/stat`) ?? [];
  return { self: ((f[11] ?? 0) + (f[12] ?? 0)) / 100, children: ((f[13] ?? 0) + (f[14] ?? 0)) / 100 };
}

function cpuByRole(stack: TestStack, agentPids: number[]): LoadFigures['cpuSeconds'] {
  const agents = agentPids.map(cpuOf);
  const me = process.cpuUsage();
  return {
    tests: (me.user + me.system) / 1e6,
    agents: agents.reduce((s, a) => s + a.self, 0),
    trainers: agents.reduce((s, a) => s + a.children, 0),
    nats: cpuOf(stack.nats.pid).self,
    temporal: cpuOf(stack.temporal.pid).self,
  };
}

const niceOf = (statPath: string): number | null => statFields(statPath)?.[16] ?? null;
const parentOf = (pid: number): number | null => statFields(`/proc/${pid}/stat`)?.[1] ?? null;

/** Trainers of this stack now running: every thread of each must be `nice` below its parent agent, and held to `threads` CPU threads. */
export function checkTrainerPriority(
  home: string,
  nice: number,
  threads: number,
  seen: Set<number>,
  violations: string[],
): void {
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    } catch {
      continue;
    }
    // the trainer itself, not `nice` or `ionice` on their way to exec it (nice is set by then)
    if (argv[1] !== '-m' || argv[2] !== 'tunefleet_trainer' || !argv.some((a) => a.startsWith(home))) continue;
    const agent = parentOf(pid);
    // a process the trainer forked (a worker, or a child between fork and exec) carries the trainer's command line and
    // its nice: it is not a trainer under its agent (seen once in a CI run: "nice 10, its agent <trainer pid> 10")
    if (agent !== null && isTrainer(agent)) continue;
    const agentNice = agent === null ? null : niceOf(`/proc/${agent}/stat`);
    if (agentNice === null) continue;
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    let environ = '';
    try {
      environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
    } catch {
      continue;
    }
    seen.add(pid);
    const omp = environ.split('\0').find((v) => v.startsWith('OMP_NUM_THREADS='));
    if (omp !== `OMP_NUM_THREADS=${threads}` && violations.length < 10)
      violations.push(`trainer ${pid}: ${omp ?? 'no OMP_NUM_THREADS'}, expected ${threads}`);
    for (const t of tasks) {
      const n = niceOf(`/proc/${pid}/task/${t}/stat`);
      if (n !== null && n !== Math.min(19, agentNice + nice) && violations.length < 10)
        violations.push(`trainer ${pid} thread ${t}: nice ${n}, its agent ${agent} ${agentNice}`);
    }
  }
}

function isTrainer(pid: number): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    return argv[1] === '-m' && argv[2] === 'tunefleet_trainer';
  } catch {
    return false;
  }
}

export interface WorkflowTask {
  /** WorkflowTaskStarted -> Completed / TimedOut / Failed (null: never started, e.g. a sticky queue's schedule-to-start timeout) */
  ms: number | null;
  /** WorkflowTaskScheduled -> Started: how long it waited for a worker */
  waitMs: number | null;
  outcome: 'completed' | 'timed_out' | 'failed';
  /** for a timeout: START_TO_CLOSE or SCHEDULE_TO_START; for a failure: its cause */
  why: string | null;
  /** the poller that took it (WorkflowTaskStarted's identity) and when it ended, ISO */
  identity: string | null;
  at: string;
}

/** Every workflow task of one workflow's history, from the server's event times. */
export async function workflowTasks(client: Client, workflowId: string): Promise<WorkflowTask[]> {
  const T = temporal.api.enums.v1.EventType;
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  const ms = (t: { seconds?: unknown; nanos?: number | null } | null | undefined): number =>
    Number(t?.seconds ?? 0) * 1000 + (t?.nanos ?? 0) / 1e6;
  let scheduled: number | null = null;
  let started: number | null = null;
  let identity: string | null = null;
  const out: WorkflowTask[] = [];
  for (const e of history.events ?? []) {
    const at = ms(e.eventTime);
    if (e.eventType === T.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED) [scheduled, started] = [at, null];
    else if (e.eventType === T.EVENT_TYPE_WORKFLOW_TASK_STARTED)
      [started, identity] = [at, e.workflowTaskStartedEventAttributes?.identity ?? null];
    else if (
      e.eventType === T.EVENT_TYPE_WORKFLOW_TASK_COMPLETED ||
      e.eventType === T.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT ||
      e.eventType === T.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ) {
      const outcome =
        e.eventType === T.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
          ? 'completed'
          : e.eventType === T.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
            ? 'timed_out'
            : 'failed';
      const timeoutType = e.workflowTaskTimedOutEventAttributes?.timeoutType;
      const cause = e.workflowTaskFailedEventAttributes?.cause;
      const why =
        outcome === 'timed_out'
          ? String(temporal.api.enums.v1.TimeoutType[timeoutType ?? 0]).replace(/^TIMEOUT_TYPE_/, '')
          : outcome === 'failed'
            ? String(temporal.api.enums.v1.WorkflowTaskFailedCause[cause ?? 0]).replace(
                /^WORKFLOW_TASK_FAILED_CAUSE_/,
                '',
              )
            : null;
      out.push({
        ms: started === null ? null : at - started,
        waitMs: started === null || scheduled === null ? null : started - scheduled,
        outcome,
        why,
        identity,
        at: new Date(at).toISOString(),
      });
      [scheduled, started] = [null, null];
    }
  }
  return out;
}

const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number) : 0;
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Submit `o.jobs` tiny jobs at once and measure; the stack, workers and agents are the caller's. */
export async function runLoad(
  stack: TestStack,
  client: JobClient,
  workers: RunningWorker[],
  agentProcs: AgentProcesses,
  o: LoadOptions,
): Promise<LoadFigures> {
  const t0 = Date.now();
  const agentPids = [...agentProcs.procs.values()].map((c) => c.pid ?? -1);
  const agents = agentPids.length;
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
  const cpu0 = cpuByRole(stack, agentPids);
  const conflicts0 = workers.reduce((s, w) => s + w.stats.leaseConflicts, 0);
  const taken0 = workers.reduce((s, w) => s + w.stats.leasesTaken, 0);
  const nats = await client.nats();
  const leases = await nats.kv(LEASES_BUCKET);
  const watch = await leases.watch({});
  let maxHeldBytes = 0;
  let overbooked: string | null = null;
  const watching = (async () => {
    for await (const e of watch) {
      if (e.operation !== 'PUT') continue;
      const held = e.json<{ leases: Lease[] }>().leases.reduce((s, l) => s + l.bytes, 0);
      maxHeldBytes = Math.max(maxHeldBytes, held);
      if (held > o.capacity) overbooked ??= `${e.key} revision ${e.revision}: ${held} > ${o.capacity}`;
    }
  })();
  // what actually runs: every advert lists the agent's sessions with the bytes reserved for each
  const advertWatch = await (await nats.adverts()).watch({});
  let maxRunningBytes = 0;
  let overrun: string | null = null;
  const watchingAdverts = (async () => {
    for await (const e of advertWatch) {
      if (e.operation !== 'PUT') continue;
      const running = e
        .json<{ sessions: { reserved_bytes: number }[] }>()
        .sessions.reduce((s, x) => s + x.reserved_bytes, 0);
      maxRunningBytes = Math.max(maxRunningBytes, running);
      if (running > o.capacity) overrun ??= `${e.key}: sessions hold ${running} > ${o.capacity}`;
    }
  })();

  const spec = await loadSpecFile(tinyJob(o.name, o.maxSteps, 1000));
  const ids = await Promise.all(
    Array.from({ length: o.jobs }, (_, i) => client.submit(spec, `${o.name}-${String(i).padStart(2, '0')}`)),
  );
  const results = Promise.allSettled(ids.map((id) => client.events.follow(id, () => {})));
  let settled = false;
  void results.then(() => (settled = true));
  // one call after another: the next poll starts only when the previous answered
  let maxQueuePosition = 0;
  const trainers = new Set<number>();
  const priorityViolations: string[] = [];
  while (!settled) {
    const rows = await client.list({ state: 'queued' }).catch(() => []);
    for (const r of rows)
      if (r.jobId.startsWith(`${o.name}-`) && r.state === 'queued')
        maxQueuePosition = Math.max(maxQueuePosition, r.position ?? 0);
    checkTrainerPriority(stack.home, o.trainerNice, o.trainerThreads, trainers, priorityViolations);
    await Promise.race([results, sleep(2000)]);
  }
  const failed = (await results).flatMap((r, i) => (r.status === 'rejected' ? [`${ids[i]}: ${String(r.reason)}`] : []));
  const wallS = (Date.now() - t0) / 1000;
  const cpu1 = cpuByRole(stack, agentPids);
  const cpuSeconds = Object.fromEntries(
    Object.entries(cpu1).map(([k, v]) => [k, v - (cpu0[k as keyof typeof cpu0] ?? 0)]),
  ) as Record<keyof typeof cpu1, number>;
  loopDelay.disable();
  watch.stop();
  advertWatch.stop();
  await Promise.all([watching, watchingAdverts]);

  let longestWorkflowTaskMs = 0;
  let longestWorkflowTaskJob = '';
  const tasks: WorkflowTask[] = [];
  const workflowTaskProblemDetails: string[] = [];
  for (const id of ids) {
    const t = await workflowTasks(client.client, id);
    for (const x of t) {
      if (x.ms !== null && x.ms > longestWorkflowTaskMs) [longestWorkflowTaskMs, longestWorkflowTaskJob] = [x.ms, id];
      if (x.outcome !== 'completed')
        workflowTaskProblemDetails.push(
          `${id} ${x.outcome} ${x.why} at ${x.at}, taken by ${x.identity ?? 'no poller'}`,
        );
    }
    tasks.push(...t);
  }
  const done = tasks.filter((t) => t.outcome === 'completed' && t.ms !== null).map((t) => t.ms as number);
  const waits = tasks.filter((t) => t.waitMs !== null).map((t) => t.waitMs as number);
  const notDone = tasks.filter((t) => t.outcome !== 'completed');
  const workflowTaskTimeouts = notDone.length;
  const workflowTaskProblems = [...new Set(notDone.map((t) => `${t.outcome} ${t.why}`))].map(
    (k) => `${notDone.filter((t) => `${t.outcome} ${t.why}` === k).length} ${k}`,
  );
  return {
    jobs: o.jobs,
    agents,
    workers: workers.length,
    failed,
    maxHeldBytes,
    overbooked,
    maxRunningBytes,
    overrun,
    maxQueuePosition,
    leaseConflicts: workers.reduce((s, w) => s + w.stats.leaseConflicts, 0) - conflicts0,
    leasesTaken: workers.reduce((s, w) => s + w.stats.leasesTaken, 0) - taken0,
    cpuSeconds,
    longestWorkflowTaskMs,
    longestWorkflowTaskJob,
    workflowTasks: tasks.length,
    workflowTaskTimeouts,
    workflowTaskProblems,
    workflowTaskProblemDetails,
    eventLoopMaxMs: loopDelay.max / 1e6,
    p99CompletedTaskMs: percentile(done, 99),
    longestCompletedTaskMs: Math.max(0, ...done),
    p99TaskWaitMs: percentile(waits, 99),
    longestTaskWaitMs: Math.max(0, ...waits),
    trainersSeen: trainers.size,
    priorityViolations,
    wallS,
  };
}

/** One line per figure, for the test's output and the soak run. */
export function describeLoad(f: LoadFigures, capacity: number): string[] {
  return [
    `${f.jobs} jobs, ${f.agents} agents, ${f.workers} control workers: ${f.jobs - f.failed.length} finished in ${f.wallS.toFixed(0)} s`,
    `most reserved on one agent ${(f.maxHeldBytes / GiB).toFixed(2)} of ${(capacity / GiB).toFixed(2)} GiB; most running ${(f.maxRunningBytes / GiB).toFixed(2)} GiB`,
    `highest queue position shown ${f.maxQueuePosition}; leases taken ${f.leasesTaken}, compare-and-set conflicts ${f.leaseConflicts}`,
    `longest fineTune workflow task ${(f.longestWorkflowTaskMs / 1000).toFixed(2)} s (${f.longestWorkflowTaskJob}) of ${f.workflowTasks}; completed ones p99 ${(f.p99CompletedTaskMs / 1000).toFixed(2)} s, longest ${(f.longestCompletedTaskMs / 1000).toFixed(2)} s; timed out or failed ${f.workflowTaskTimeouts}${f.workflowTaskProblems.length ? ` (${f.workflowTaskProblems.join(', ')})` : ''}`,
    ...f.workflowTaskProblemDetails.map((d) => `  ${d}`),
    `waiting for a worker (scheduled -> started): p99 ${(f.p99TaskWaitMs / 1000).toFixed(2)} s, longest ${(f.longestTaskWaitMs / 1000).toFixed(2)} s; longest event-loop stall of the control workers' process ${(f.eventLoopMaxMs / 1000).toFixed(2)} s`,
    `CPU seconds: control workers and test ${f.cpuSeconds.tests.toFixed(0)}, agents ${f.cpuSeconds.agents.toFixed(0)}, trainers ${f.cpuSeconds.trainers.toFixed(0)}, nats-server ${f.cpuSeconds.nats.toFixed(0)}, Temporal ${f.cpuSeconds.temporal.toFixed(0)} (of ${(f.wallS * cpus().length).toFixed(0)} available)`,
    `trainers seen ${f.trainersSeen}, not below their agent's priority or not held to their threads ${f.priorityViolations.length}${f.priorityViolations.length ? `: ${f.priorityViolations.join('; ')}` : ''}`,
  ];
}
