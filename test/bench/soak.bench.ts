// Soak: many jobs at once on a real stack — real nats-server, Temporal dev server, N agent
// processes and M control workers racing for the same agents' leases, the tiny model. The
// big brother of the 9-job test in test/integration/recovery.test.ts (same code:
// test/harness/load.ts). Prints jobs, agents, control workers, the most memory reserved
// on one agent, lease conflicts, the longest fineTune workflow task (the target is under
// 5 s, half of Temporal's 10 s workflow-task timeout) and the wall time, and adds the table
// to test/bench/RESULTS.md. Exits 1 if a job failed or an agent was ever overbooked.
//
//   npm run soak                               30 jobs, 3 agents, 2 control workers
//   npm run soak -- --jobs 12 --agents 2       smaller
//   npm run soak -- --compare                  also the same run with trainers at the agents'
//                                              own priority (--trainer-nice 0), as a baseline
import { availableParallelism, cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { JobClient } from '../../scheduler/cli/client';
import { startControlWorker, type RunningWorker } from '../../scheduler/worker';
import { DEFAULT_TRAINER_NICE, threadsPerSession } from '../../agent/priority';
import { AgentProcesses, readyAgents, until } from '../harness/fleet';
import { describeLoad, runLoad, type LoadFigures } from '../harness/load';
import { adminCfg, startTestStack, stopAll, type TestStack } from '../harness/stack';
import { MARK_VAR, stopMarked } from '../harness/procs';
import { recordResult } from './results';

const GiB = 2 ** 30;
/** Each agent offers this much: two tiny CPU jobs (about 0.55 GiB each) at a time. */
const CAPACITY = 1.2 * GiB;
const TARGET_WORKFLOW_TASK_MS = 5_000;

async function soak(jobs: number, agentCount: number, workerCount: number, nice: number): Promise<LoadFigures> {
  let stack: TestStack | undefined;
  const workers: RunningWorker[] = [];
  let client: JobClient | undefined;
  const agents = new AgentProcesses(
    () => stack as TestStack,
    ['--heartbeat', '500', '--capacity', String(CAPACITY), '--max-sessions', '4', '--trainer-nice', String(nice)],
  );
  try {
    stack = await startTestStack();
    for (let i = 0; i < workerCount; i++)
      workers.push(await startControlWorker(stack.cfg, () => {}, { identity: `control-${i}@${process.pid}` }));
    client = await JobClient.connect({ ...adminCfg(stack), heartbeatTimeoutS: 8, scheduleToStartS: 20 });
    for (let i = 0; i < agentCount; i++) await agents.start(`agent-${String.fromCharCode(97 + i)}`);
    const c = client;
    await until(`${agentCount} agents advertise`, async () => (await readyAgents(c)).length === agentCount, 120_000);
    return await runLoad(stack, client, workers, agents, {
      name: 'soak',
      jobs,
      capacity: CAPACITY,
      maxSteps: 4,
      trainerNice: nice,
      trainerThreads: threadsPerSession(availableParallelism(), 4),
    });
  } finally {
    await stopAll(
      () => agents.killAll(),
      () => client?.close(),
      ...workers.map((w) => () => w.stop()),
      () => stack?.stop(),
    );
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      jobs: { type: 'string', default: '30' },
      agents: { type: 'string', default: '3' },
      workers: { type: 'string', default: '2' },
      'trainer-nice': { type: 'string', default: String(DEFAULT_TRAINER_NICE) },
      compare: { type: 'boolean', default: false },
    },
  });
  const n = (k: 'jobs' | 'agents' | 'workers' | 'trainer-nice', lo: number, hi: number): number => {
    const v = Number(values[k]);
    if (!Number.isInteger(v) || v < lo || v > hi)
      throw new Error(`--${k} '${values[k]}' must be a whole number from ${lo} to ${hi}`);
    return v;
  };
  const [jobs, agents, workers, nice] = [
    n('jobs', 1, 200),
    n('agents', 1, 26),
    n('workers', 1, 8),
    n('trainer-nice', 0, 19),
  ];
  const runs: { nice: number; f: LoadFigures; load: number }[] = [];
  for (const runNice of values.compare && nice !== 0 ? [nice, 0] : [nice]) {
    console.log(`soak: ${jobs} jobs, ${agents} agents, ${workers} control workers, trainers at nice +${runNice} ...`);
    const f = await soak(jobs, agents, workers, runNice);
    runs.push({ nice: runNice, f, load: loadavg()[0] ?? 0 });
    for (const line of describeLoad(f, CAPACITY)) console.log(`  ${line}`);
  }
  const row = (r: (typeof runs)[number]): string => {
    const f = r.f;
    const task = f.longestCompletedTaskMs;
    const verdict = task < TARGET_WORKFLOW_TASK_MS ? '(< 5 s)' : '(over 5 s)';
    const notAnswered = `${f.workflowTaskTimeouts}${f.workflowTaskProblems.length ? ` (${f.workflowTaskProblems.join(', ')})` : ''}`;
    return `| +${r.nice} | ${f.jobs - f.failed.length} of ${f.jobs} | ${f.agents} | ${f.workers} | ${(f.maxHeldBytes / GiB).toFixed(2)} of ${(CAPACITY / GiB).toFixed(2)} GiB${f.overbooked ? ' OVERBOOKED' : ''} | ${(f.maxRunningBytes / GiB).toFixed(2)} GiB${f.overrun ? ' OVERRUN' : ''} | ${f.maxQueuePosition} | ${f.leaseConflicts} | ${(task / 1000).toFixed(2)} s ${verdict} | ${(f.p99CompletedTaskMs / 1000).toFixed(2)} s | ${notAnswered} | ${f.wallS.toFixed(0)} s | ${[f.cpuSeconds.tests, f.cpuSeconds.agents, f.cpuSeconds.trainers, f.cpuSeconds.nats, f.cpuSeconds.temporal].map((x) => x.toFixed(0)).join(' / ')} | ${r.load.toFixed(1)} |`;
  };
  const base = runs.find((r) => r.nice === 0 && runs.length > 1);
  const tuned = runs[0] as (typeof runs)[number];
  const ratio =
    base && tuned.f.longestCompletedTaskMs > 0
      ? `\n\nLongest workflow task with trainers at the agents' priority ÷ with trainers at nice +${tuned.nice}: ${(base.f.longestCompletedTaskMs / tuned.f.longestCompletedTaskMs).toFixed(2)}x; wall time ${(base.f.wallS / tuned.f.wallS).toFixed(2)}x.`
      : '';
  recordResult(`### Soak, ${new Date().toISOString().slice(0, 10)} — ${cpus().length} × ${cpus()[0]?.model.trim() ?? 'CPU'}, node ${process.version} (\`npm run soak${values.compare ? ' -- --compare' : ''}\`)

Tiny CPU jobs (4 steps, then evaluation) submitted at once; each agent offers ${(CAPACITY / GiB).toFixed(1)} GiB (two jobs). Longest workflow task: WorkflowTaskStarted → Completed in each job's history, the longest and the p99 over every task a worker answered (the target is under 5 s; Temporal's timeout is 10 s). Started, never answered: tasks that Temporal recorded as started and that timed out after 10 s with no reply from any worker (the soak prints each one with its job, time and the poller that took it). CPU seconds during the run by role (trainers: the agents' finished children). Load: 1-minute load average at the end.

| trainers | finished | agents | control workers | most reserved on one agent | most running (adverts) | highest queue position | lease CAS conflicts | longest workflow task | p99 | started, never answered | wall | CPU s: workers+test / agents / trainers / nats / Temporal | load |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
${runs.map(row).join('\n')}${ratio}`);
  const bad = runs.flatMap((r) => [
    ...r.f.failed,
    ...(r.f.overbooked ? [r.f.overbooked] : []),
    ...(r.f.overrun ? [r.f.overrun] : []),
  ]);
  if (bad.length) {
    console.error(`soak failed:\n${bad.map((b) => `  ${b}`).join('\n')}`);
    process.exitCode = 1;
  }
  console.log('table added to test/bench/RESULTS.md');
}

// the processes this run started carry its mark (the harness's safety net, as under mocha)
process.env[MARK_VAR] = `soak-${process.pid}`;
main()
  .catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(async () => {
    await stopMarked(MARK_VAR, `soak-${process.pid}`, 5_000);
    process.exit();
  });
