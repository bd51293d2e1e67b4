// Placement and recovery with three real agent processes on a real stack: cancel, explain,
// search attributes, and 30 jobs at once without overbooking any agent. (kill -9 of the
// agent and the SIGSTOP zombie are chaos scenarios 2 and 4, test/chaos/.)
import { expect } from 'chai';
import { LEASES_BUCKET } from '../../shared';
import { Stack, loadSpecFile } from '../../scheduler/client';
import type { Lease } from '../../scheduler/leases';
import { startControlWorker, type RunningWorker } from '../../scheduler/worker';
import { AgentProcesses, readyAgents, tinyJob, until } from '../harness/fleet';
import { recordHistory, runCli, startTestStack, type TestStack } from '../harness/stack';

const GiB = 2 ** 30;
/** Each agent offers this much: two tiny CPU jobs (about 0.55 GiB each) at a time. */
const CAPACITY = 1.2 * GiB;
const HEARTBEAT_TIMEOUT_S = 8;

describe('recovery - three real agents', function () {
  this.timeout(900_000);
  let stack: TestStack;
  let worker: RunningWorker;
  let worker2: RunningWorker;
  let client: Stack;
  const agents = new AgentProcesses(() => stack, ['--heartbeat', '500', '--capacity', String(CAPACITY), '--max-sessions', '4']);

  const cli = (...args: string[]): ReturnType<typeof runCli> => runCli(stack, ...args);
  const fleetIds = (): Promise<string[]> => readyAgents(stack);
  before(async () => {
    stack = await startTestStack();
    worker = await startControlWorker(stack.cfg, () => {});
    // a second control worker: placements race for the same leases (compare-and-set decides)
    worker2 = await startControlWorker(stack.cfg, () => {});
    client = await Stack.connect({ ...stack.cfg, heartbeatTimeoutS: HEARTBEAT_TIMEOUT_S, scheduleToStartS: 20 });
    for (const id of ['agent-a', 'agent-b', 'agent-c']) agents.start(id);
    await until('three agents advertise', async () => (await fleetIds()).length === 3, 90_000);
  });

  after(async () => {
    agents.killAll();
    await client?.close();
    await worker2?.stop();
    await worker?.stop();
    await stack?.stop();
  });

  it('recovery - cancel stops the trainer and releases the lease; explain says why the job went where it did', async () => {
    const id = await client.submit(await loadSpecFile(tinyJob('cancel', 100000, 1000)), 'cancel-job');
    await until('training', async () => (await client.describe(id)).status?.state === 'training', 120_000);
    const explain = await cli('explain', id);
    expect(explain.status, explain.stderr).to.equal(0);
    const agentId = (await client.describe(id)).status?.agentId as string;
    expect(explain.stdout).to.contain(`* ${agentId}`).and.match(/memory estimate [\d.]+ GiB: weights/).and.match(/best_fit/);
    const r = await cli('cancel', id);
    expect(r.status, r.stderr).to.equal(0);
    await until('cancelled', async () => (await client.describe(id)).temporal === 'CANCELLED', 60_000);
    const leases = await (await client.nats()).kv(LEASES_BUCKET);
    await until('lease released', async () => {
      const e = await leases.get(agentId);
      return !e || e.operation !== 'PUT' || !e.json<{ leases: Lease[] }>().leases.some((l) => l.jobId === id);
    }, 30_000);
    await until('session gone from the advert', async () => {
      const f = JSON.parse((await cli('fleet', '--json')).stdout) as { agent_id: string; sessions: { job_id: string }[] }[];
      return !f.find((a) => a.agent_id === agentId)?.sessions.some((s) => s.job_id === id);
    }, 30_000);
    await recordHistory(client.client, id, 'cancelled');
    const q = await cli('list', '--query', "TunefleetState='cancelled'");
    expect(q.status, q.stderr).to.equal(0);
    expect(q.stdout).to.contain(id);
  });

  it('recovery - 30 jobs at once against 3 agents and 2 control workers: no agent ever holds more reserved memory than it offers, and all 30 finish', async () => {
    const leases = await (await client.nats()).kv(LEASES_BUCKET);
    const watch = await leases.watch({});
    let maxHeld = 0;
    let overbooked: string | null = null;
    const watching = (async () => {
      for await (const e of watch) {
        if (e.operation !== 'PUT') continue;
        const held = e.json<{ leases: Lease[] }>().leases.reduce((s, l) => s + l.bytes, 0);
        maxHeld = Math.max(maxHeld, held);
        if (held > CAPACITY) overbooked ??= `${e.key} revision ${e.revision}: ${held} > ${CAPACITY}`;
      }
    })();
    // what actually runs: every advert lists the agent's sessions with the bytes reserved for each
    const adverts = await (await client.nats()).adverts();
    const advertWatch = await adverts.watch({});
    let maxRunning = 0;
    let overrun: string | null = null;
    const watchingAdverts = (async () => {
      for await (const e of advertWatch) {
        if (e.operation !== 'PUT') continue;
        const a = e.json<{ sessions: { reserved_bytes: number }[] }>();
        const running = a.sessions.reduce((s, x) => s + x.reserved_bytes, 0);
        maxRunning = Math.max(maxRunning, running);
        if (running > CAPACITY) overrun ??= `${e.key}: sessions hold ${running} > ${CAPACITY}`;
      }
    })();
    const spec = await loadSpecFile(tinyJob('many', 4, 1000));
    const ids = await Promise.all(Array.from({ length: 30 }, (_, i) => client.submit(spec, `many-${String(i).padStart(2, '0')}`)));
    let sawQueue = false;
    const poll = setInterval(() => {
      void cli('list', '--json').then((r) => {
        if (r.status === 0 && (JSON.parse(r.stdout) as { state: string | null; position: number | null }[]).some((j) => j.state === 'queued' && (j.position ?? 0) >= 1)) sawQueue = true;
      });
    }, 2000);
    const results = await Promise.allSettled(ids.map((id) => client.follow(id, () => {})));
    await recordHistory(client.client, ids[29] as string, 'queued-then-placed');
    clearInterval(poll);
    watch.stop();
    await watching;
    advertWatch.stop();
    await watchingAdverts;
    const failed = results.map((r, i) => [ids[i], r] as const).filter(([, r]) => r.status === 'rejected');
    expect(failed.map(([id, r]) => `${id}: ${String((r as PromiseRejectedResult).reason)}`)).to.deep.equal([]);
    expect(overbooked).to.equal(null);
    expect(overrun).to.equal(null);
    expect(maxRunning, 'sessions were seen running with their reservations').to.be.greaterThan(0);
    expect(maxHeld).to.be.greaterThan(0).and.at.most(CAPACITY);
    expect(sawQueue, 'some job was shown queued with a position').to.equal(true);
    console.log(`      30 jobs: most reserved on one agent ${(maxHeld / GiB).toFixed(2)} of ${(CAPACITY / GiB).toFixed(2)} GiB`);
  });
});
