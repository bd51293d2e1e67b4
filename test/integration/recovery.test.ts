// Placement and recovery with three real agent processes on a real stack: kill -9 of the
// agent running a job, an agent frozen with SIGSTOP (its late commits must be refused),
// cancel, explain, search attributes, and 30 jobs at once without overbooking any agent.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LEASES_BUCKET, type CommitRecord, type JobResult } from '../../shared';
import { Stack, loadSpecFile } from '../../scheduler/client';
import type { Lease } from '../../scheduler/leases';
import { startControlWorker, type RunningWorker } from '../../scheduler/worker';
import { AgentProcesses, commitHistory, commitOf, tinyJob, until } from '../harness/fleet';
import { installedHome, recordHistory, runCli, startTestStack, type TestStack } from '../harness/stack';

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
  const fleetIds = async (): Promise<string[]> => {
    const r = await cli('fleet', '--json');
    return (JSON.parse(r.stdout) as { agent_id: string; state: string }[]).filter((a) => a.state === 'ready').map((a) => a.agent_id);
  };
  /** (epoch, step) never goes backwards, and no older epoch writes after a newer one. */
  const assertMonotonic = (h: CommitRecord[]): void => {
    for (let i = 1; i < h.length; i++) {
      const [a, b] = [h[i - 1] as CommitRecord, h[i] as CommitRecord];
      expect(b.epoch, `commit ${i}: epoch ${a.epoch} -> ${b.epoch}`).to.be.at.least(a.epoch);
      expect(b.step, `commit ${i}: step ${a.step} -> ${b.step} (epochs ${a.epoch} -> ${b.epoch})`).to.be.at.least(a.step);
    }
  };
  /** Max |a - b| over the tensors of two downloaded adapters, by the trainer's Python. */
  const adapterDiff = (a: string, b: string): number => {
    const py = join(installedHome(), 'bin', 'python');
    const out = execFileSync(py, ['-c', `
import sys
from safetensors.torch import load_file
x, y = (load_file(p + "/adapter_model.safetensors") for p in sys.argv[1:3])
assert x.keys() == y.keys(), (sorted(x), sorted(y))
print(max(float((x[k] - y[k]).abs().max()) for k in x))`, a, b], { encoding: 'utf8' });
    return Number(out.trim());
  };

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

  it('recovery - kill -9 of the agent running a job: it finishes elsewhere, loses at most one checkpoint interval, and its adapter equals an uninterrupted run', async () => {
    const every = 100;
    const spec = await loadSpecFile(tinyJob('kill9', 1200, every));
    // the uninterrupted run of the same job (same data, seed and settings)
    const baselineId = await client.submit(spec, 'kill9-baseline');
    const baseline = await client.follow(baselineId, () => {});

    const id = await client.submit(spec, 'kill9-job');
    const events: Record<string, unknown>[] = [];
    const done = client.follow(id, (e) => events.push(e));
    await until('first commit', async () => ((await commitOf(client, id))?.step ?? 0) >= every, 120_000);
    const victim = (await client.describe(id)).status?.agentId as string;
    const killedAt = Date.now();
    agents.get(victim)?.kill('SIGKILL');
    const result: JobResult = await done;
    const recovered = events.find((e) => e.type === 'step' && e.agent_id !== victim);
    expect(result.training.agentId).to.not.equal(victim);
    expect(result.training.attempt).to.be.at.least(2);
    // steps lost: what the dead attempt reached past its last committed checkpoint
    const first = events.filter((e) => e.type === 'step' && e.agent_id === victim).map((e) => Number(e.step));
    const resumedFrom = Number(events.find((e) => e.type === 'started' && e.agent_id !== victim)?.resumed_from_step);
    expect(resumedFrom).to.be.at.least(every);
    expect(Math.max(...first) - resumedFrom).to.be.at.most(every);
    // the final history trains no step twice: the last attempt starts right after the committed step
    const last = events.filter((e) => e.type === 'step' && Number(e.attempt) === result.training.attempt).map((e) => Number(e.step));
    expect(last[0]).to.equal(resumedFrom + 1);
    expect(last).to.deep.equal(Array.from({ length: 1200 - resumedFrom }, (_, i) => resumedFrom + 1 + i));
    assertMonotonic(await commitHistory(client, id));
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-adapters-'));
    await client.download(baselineId, join(dir, 'baseline'));
    await client.download(id, join(dir, 'recovered'));
    const diff = adapterDiff(join(dir, 'baseline'), join(dir, 'recovered'));
    expect(diff, 'max |baseline - recovered| over the adapter tensors').to.be.lessThan(1e-5);
    expect(result.training.trainLoss).to.be.closeTo(baseline.training.trainLoss as number, 1e-4);
    console.log(`      kill -9 ${victim}: resumed from step ${resumedFrom} on ${result.training.agentId}; first step there ${((Number(recovered?.time) * 1000 - killedAt) / 1000).toFixed(1)} s after the kill; adapter max diff ${diff.toExponential(1)}`);
    await recordHistory(client.client, id, 'recovered-after-kill9');
    agents.start(victim);
    await until('victim back', async () => (await fleetIds()).includes(victim), 60_000);
  });

  it('recovery - an agent frozen past the heartbeat timeout (SIGSTOP) and thawed (SIGCONT) never replaces the new attempt\'s commits', async () => {
    const id = await client.submit(await loadSpecFile(tinyJob('sigstop', 3000, 50)), 'sigstop-job');
    const done = client.follow(id, () => {});
    await until('first commit', async () => ((await commitOf(client, id))?.step ?? 0) >= 50, 120_000);
    const frozen = (await client.describe(id)).status?.agentId as string;
    const proc = agents.get(frozen) as NonNullable<ReturnType<typeof agents.get>>;
    proc.kill('SIGSTOP');
    // a new epoch claims the job and commits elsewhere
    await until('a newer epoch commits', async () => {
      const c = await commitOf(client, id);
      return !!c && c.epoch >= 2 && c.agent_id !== frozen && c.step > 0;
    }, 120_000);
    proc.kill('SIGCONT');
    const result = await done;
    expect(result.training.agentId).to.not.equal(frozen);
    const history = await commitHistory(client, id);
    assertMonotonic(history);
    const firstNew = history.findIndex((c) => c.epoch >= 2);
    expect(history.slice(firstNew).every((c) => c.epoch >= 2), 'no epoch-1 write after epoch 2 claimed the job').to.equal(true);
    // the thawed agent saw that it lost the job and stopped its trainer
    await until('the zombie noticed', async () => /refused|dropped this attempt/.test(agents.log(frozen)), 30_000).catch(() => {});
    expect(agents.log(frozen)).to.match(/refused: a newer attempt owns|the server dropped this attempt/);
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
