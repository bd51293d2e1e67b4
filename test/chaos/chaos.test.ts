// Chaos: inject a real fault into a running job and check what must hold. Real
// nats-server, Temporal dev server, control worker and two agent processes; the tiny
// model. Prints a table (scenario, outcome, steps lost, time to recover) at the end.
//
//   npm run chaos                  every scenario here
//   npm test                       the ones tagged [ci]
//
// Scenario 10 mounts a small tmpfs (needs root; skipped with the reason otherwise).
// Scenario 7 uses the failpoint place:after-reserve (shared/failpoint.ts).
import { expect } from 'chai';
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import {
  ADAPTERS_BUCKET,
  ADVERTS_BUCKET,
  CHECKPOINTS_BUCKET,
  COMMITS_BUCKET,
  DATASETS_BUCKET,
  DECISIONS_BUCKET,
  EVENTS_STREAM,
  LEASES_BUCKET,
  QUEUE_BUCKET,
  jobEventSubject,
  type CommitRecord,
  type JobResult,
} from '../../shared';
import { connect } from 'nats';
import { claimEpoch, commitCheckpoint } from '../../scheduler/commits';
import { commitClient } from '../../agent/commits';
import { natsConnectOptions } from '../../shared/natsconn';
import { openKv } from '../../shared/objects';
import { rejection } from '../harness/expect';
import { readLeases } from '../../scheduler/leases';
import { sha256File } from '../../scheduler/nats';
import { processAlive, startNats, startTemporal, stopProcess } from '../../infra/services';
import { dirname, join } from 'node:path';
import { JobClient, downloadAdapter, loadSpecFile } from '../../scheduler/cli/client';
import { startControlWorker } from '../../scheduler/worker';
import { useRunningFleet } from '../harness/running-fleet';
import {
  adapterDiff,
  assertMonotonic,
  commitHistory,
  commitOf,
  credentialLeaks,
  readyAgents,
  tinyJob,
  until,
} from '../harness/fleet';
import { ROOT, TINY_MODEL, cliEnv, recordHistory, runCli } from '../harness/stack';
import { WATCHDOG_MIN_S } from '../../agent/session/train';

const HEARTBEAT_TIMEOUT_S = 8;
interface Row {
  scenario: string;
  outcome: string;
  stepsLost: number | string;
  recoverS: string;
}

describe('chaos - faults injected into running jobs', function () {
  this.timeout(600_000);
  // two sessions at once (a CPU agent on 2 cores defaults to one): scenario 2's uninterrupted
  // baseline and the recovered job run side by side on the surviving agent
  const fleet = useRunningFleet({
    agents: ['agent-a', 'agent-b'],
    agentArgs: ['--heartbeat', '500', '--max-sessions', '2'],
    client: { heartbeatTimeoutS: HEARTBEAT_TIMEOUT_S, scheduleToStartS: 20 },
  });
  const rows: Row[] = [];

  const ready = (): Promise<string[]> => readyAgents(fleet.client);
  /** pid of the trainer process running this job's given attempt */
  const trainerPid = (jobId: string, attempt: number): number => {
    const ps = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
    const line = ps
      .split('\n')
      .find((l) => l.includes('tunefleet_trainer train') && l.includes(`/jobs/${jobId}/attempt-${attempt}/run.json`));
    if (!line) throw new Error(`no trainer process for ${jobId} attempt ${attempt}`);
    return Number(line.trim().split(/\s+/)[0]);
  };
  /** This job's leases, over all agents. */
  const leasesOf = async (jobId: string): Promise<{ agentId: string; attempt: number }[]> => {
    const all = await readLeases(await (await fleet.client.nats()).kv(LEASES_BUCKET));
    return [...all].flatMap(([agentId, a]) =>
      a.leases.filter((l) => l.jobId === jobId).map((l) => ({ agentId, attempt: l.attempt })),
    );
  };
  const stepsOf = (events: Record<string, unknown>[], pred: (e: Record<string, unknown>) => boolean): number[] =>
    events.filter((e) => e.type === 'step' && pred(e)).map((e) => Number(e.step));

  after(async () => {
    if (rows.length) {
      const w = [40, 60, 10, 12];
      const line = (c: (string | number)[]): string => c.map((x, i) => String(x).padEnd(w[i] ?? 10)).join(' | ');
      console.log(
        `\n${line(['scenario', 'outcome', 'steps lost', 'recover s'])}\n${w.map((n) => '-'.repeat(n)).join('-|-')}\n${rows.map((r) => line([r.scenario, r.outcome, r.stepsLost, r.recoverS])).join('\n')}`,
      );
    }
  });

  it('chaos [ci] 1 - kill -9 of the trainer only: the agent reports it, the job resumes from the newest committed checkpoint', async () => {
    const every = 50;
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('trainer-kill', 600, every)), 'chaos-trainer-kill');
    const events: Record<string, unknown>[] = [];
    const done = fleet.client.events.follow(id, (e) => events.push(e));
    await until('a commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= every, 120_000);
    const committed = (await commitOf(fleet.client, id)) as CommitRecord;
    const killedAt = Date.now();
    process.kill(trainerPid(id, committed.epoch), 'SIGKILL');
    const result: JobResult = await done;
    const second = events.find((e) => e.type === 'started' && Number(e.attempt) > committed.epoch);
    const resumed = Number(second?.resumed_from_step);
    const reached = Math.max(...stepsOf(events, (e) => Number(e.attempt) === committed.epoch));
    expect(result.training.attempt).to.be.greaterThan(committed.epoch);
    expect(resumed).to.be.at.least(committed.step);
    expect(reached - resumed).to.be.at.most(every);
    const d = await fleet.client.describe(id);
    expect(d.temporal).to.equal('COMPLETED');
    const firstNew = events.find((e) => e.type === 'step' && Number(e.attempt) > committed.epoch);
    rows.push({
      scenario: '1 kill -9 trainer',
      outcome: `resumed at step ${resumed} on ${String(second?.agent_id)}`,
      stepsLost: reached - resumed,
      recoverS: ((Number(firstNew?.time) * 1000 - killedAt) / 1000).toFixed(1),
    });
  });

  it('chaos [ci] 9 - the newest checkpoint damaged in the store: sha256 refuses it and the job resumes from the one before', async () => {
    const every = 40;
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('corrupt', 600, every)), 'chaos-corrupt');
    const events: Record<string, unknown>[] = [];
    const done = fleet.client.events.follow(id, (e) => events.push(e));
    await until('two commits', async () => ((await commitOf(fleet.client, id))?.previous?.length ?? 0) >= 1, 120_000);
    // stop the attempt for good (its agent dies), then damage what it committed last
    const victim = (await fleet.client.describe(id)).status?.agentId as string;
    const killedAt = Date.now();
    fleet.agents.get(victim)?.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    const rec = (await commitOf(fleet.client, id)) as CommitRecord;
    const store = await (await fleet.client.nats()).objects(CHECKPOINTS_BUCKET);
    const name = `${rec.prefix as string}adapter/adapter_model.safetensors`;
    const blob = (await store.getBlob(name)) as Uint8Array;
    blob[blob.length - 1] = (blob[blob.length - 1] as number) ^ 0xff; // flip the last byte
    await store.putBlob({ name }, blob);
    const result = await done;
    const previous = rec.previous?.[0]?.step as number;
    const started = events.find((e) => e.type === 'started' && e.agent_id !== victim);
    expect(Number(started?.resumed_from_step)).to.equal(previous);
    expect(result.training.agentId).to.not.equal(victim);
    const other = victim === 'agent-a' ? 'agent-b' : 'agent-a';
    expect(fleet.agents.log(other)).to.match(new RegExp(`checkpoint step ${rec.step} is unusable`));
    const reached = Math.max(...stepsOf(events, (e) => e.agent_id === victim));
    const firstNew = events.find((e) => e.type === 'step' && e.agent_id !== victim);
    rows.push({
      scenario: '9 damaged newest checkpoint',
      outcome: `step ${rec.step} refused (sha256), resumed at ${previous}`,
      stepsLost: reached - previous,
      recoverS: ((Number(firstNew?.time) * 1000 - killedAt) / 1000).toFixed(1),
    });
    await fleet.agents.start(victim);
    await until('victim back', async () => (await ready()).includes(victim), 60_000);
  });

  it('chaos 3 - SIGTERM to the agent (graceful stop): it checkpoints at once and the job resumes elsewhere with no step lost', async () => {
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('sigterm', 1500, 1000)), 'chaos-sigterm');
    const events: Record<string, unknown>[] = [];
    const done = fleet.client.events.follow(id, (e) => events.push(e));
    await until('training', async () => events.some((e) => e.type === 'step' && Number(e.step) >= 20), 120_000);
    const victim = (await fleet.client.describe(id)).status?.agentId as string;
    const stoppedAt = Date.now();
    fleet.agents.get(victim)?.kill('SIGTERM');
    const result = await done;
    const signal = events.find((e) => e.type === 'checkpoint' && e.reason === 'signal' && e.agent_id === victim);
    expect(signal, 'a checkpoint on SIGTERM').to.not.equal(undefined);
    const reached = Math.max(...stepsOf(events, (e) => e.agent_id === victim));
    const resumed = Number(events.find((e) => e.type === 'started' && e.agent_id !== victim)?.resumed_from_step);
    expect(resumed).to.equal(Number(signal?.step));
    expect(resumed).to.equal(reached);
    expect(result.training.agentId).to.not.equal(victim);
    const firstNew = events.find((e) => e.type === 'step' && e.agent_id !== victim);
    rows.push({
      scenario: '3 SIGTERM agent',
      outcome: `checkpointed at ${resumed}, resumed on ${result.training.agentId}`,
      stepsLost: reached - resumed,
      recoverS: ((Number(firstNew?.time) * 1000 - stoppedAt) / 1000).toFixed(1),
    });
    await fleet.agents.start(victim);
    await until('victim back', async () => (await ready()).includes(victim), 60_000);
  });

  it('chaos 8 - a commit that landed but whose reply was lost: retrying it is a no-op (same epoch, step and sha256)', async () => {
    const kv = await (await fleet.client.nats()).kv(COMMITS_BUCKET);
    const jobId = 'chaos-lost-reply';
    await claimEpoch(kv, jobId, 1, 'agent-x');
    const c = {
      epoch: 1,
      step: 10,
      prefix: `${jobId}/a1/step-00000010/`,
      manifest_sha256: 'ab'.repeat(32),
      agent_id: 'agent-x',
    };
    expect(await commitCheckpoint(kv, jobId, c)).to.equal('committed');
    const before = await kv.get(jobId);
    expect(await commitCheckpoint(kv, jobId, c), 'the retry').to.equal('duplicate');
    expect((await kv.get(jobId))?.revision, 'nothing written by the retry').to.equal(before?.revision);
    // a newer epoch claims the job: the old epoch's retry, or a later step from it, is refused
    await claimEpoch(kv, jobId, 2, 'agent-y');
    expect(await commitCheckpoint(kv, jobId, { ...c, step: 20, prefix: `${jobId}/a1/step-00000020/` })).to.equal(
      'fenced',
    );
    const rec = (await commitOf(fleet.client, jobId)) as CommitRecord;
    expect([rec.epoch, rec.step, rec.prefix]).to.deep.equal([2, 10, c.prefix]);
    rows.push({
      scenario: '8 lost commit reply',
      outcome: 'retry is a no-op; old epoch refused',
      stepsLost: 0,
      recoverS: '-',
    });
  });

  it('chaos 11 - the same job submitted twice with the same id: one workflow, one lease', async () => {
    const spec = await loadSpecFile(tinyJob('twice', 200, 1000));
    const tries = await Promise.allSettled([
      fleet.client.submit(spec, 'chaos-twice'),
      fleet.client.submit(spec, 'chaos-twice'),
    ]);
    expect(tries.filter((t) => t.status === 'fulfilled')).to.have.length(1);
    expect(String((tries.find((t) => t.status === 'rejected') as PromiseRejectedResult).reason)).to.match(
      /already exists/,
    );
    await until(
      'training',
      async () => (await fleet.client.describe('chaos-twice')).status?.state === 'training',
      120_000,
    );
    const leases = await readLeases(await (await fleet.client.nats()).kv(LEASES_BUCKET));
    const mine = [...leases.values()].flatMap((a) => a.leases).filter((l) => l.jobId === 'chaos-twice');
    expect(mine).to.have.length(1);
    const runs = (await fleet.client.list({ query: "TunefleetJobId='chaos-twice'" })).length;
    expect(runs).to.equal(1);
    await fleet.client.events.follow('chaos-twice', () => {});
    rows.push({
      scenario: '11 same id twice',
      outcome: 'one workflow, one lease; second submit refused',
      stepsLost: 0,
      recoverS: '-',
    });
  });

  it('chaos 5 - nats-server restarted mid-job (file store): the job continues; no checkpoint, dataset or event is lost; agents re-advertise', async () => {
    const steps = 2500;
    const spec = await loadSpecFile(tinyJob('nats-restart', steps, 100));
    const id = await fleet.client.submit(spec, 'chaos-nats-restart');
    await until('a commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= 100, 120_000);
    const before = (await commitOf(fleet.client, id)) as CommitRecord;
    const n = await fleet.client.nats();
    const manifestBefore = await (
      await n.objects(CHECKPOINTS_BUCKET)
    ).getBlob(`${before.prefix as string}manifest.json`);
    const datasetName = `sha256-${await sha256File(spec.datasetPath)}`;
    const t0 = Date.now();
    await stopProcess(fleet.stack.nats.pid, 10_000);
    await new Promise((r) => setTimeout(r, 2000));
    const port = Number(new URL(fleet.stack.nats.address).port);
    fleet.stack.nats = await startNats({
      home: fleet.stack.home,
      dataDir: join(fleet.stack.home, 'data'),
      logDir: join(fleet.stack.home, 'logs'),
      port,
    });
    const down = (Date.now() - t0) / 1000;
    // JetStream recovers its streams from the file store before it answers again
    // (no API check when making the manager: the client may not have reconnected yet)
    const jsm = await n.nc.jetstreamManager({ checkAPI: false });
    await until(
      'JetStream answers again',
      async () =>
        jsm.streams.info(EVENTS_STREAM).then(
          () => true,
          () => false,
        ),
      60_000,
    );
    // the client reconnects by itself; follow replays the job's stored events from the start
    const events: Record<string, unknown>[] = [];
    const result = await fleet.client.events.follow(id, (e) => events.push(e));
    expect(result.state).to.equal('succeeded');
    // what was stored before the restart is still there, byte for byte
    const manifestAfter = await (
      await n.objects(CHECKPOINTS_BUCKET)
    ).getBlob(`${before.prefix as string}manifest.json`);
    expect(Buffer.from(manifestAfter as Uint8Array).equals(Buffer.from(manifestBefore as Uint8Array))).to.equal(true);
    expect(await (await n.objects(DATASETS_BUCKET)).info(datasetName)).to.not.equal(null);
    // every step event of the attempt that finished is stored once: none lost, none doubled
    const last = stepsOf(events, (e) => Number(e.attempt) === result.training.attempt);
    const from = Number(
      events.find((e) => e.type === 'started' && Number(e.attempt) === result.training.attempt)?.resumed_from_step ?? 0,
    );
    expect(last).to.deep.equal(Array.from({ length: steps - from }, (_, i) => from + 1 + i));
    await until('both agents advertise again', async () => (await ready()).length === 2, 30_000);
    rows.push({
      scenario: '5 nats-server restart',
      outcome: `down ${down.toFixed(1)} s; finished on attempt ${result.training.attempt}, every event stored once`,
      stepsLost: result.training.attempt > 1 ? `${before.step}→${from}` : 0,
      recoverS: '-',
    });
  });

  it('chaos 12 - a trainer alive but stuck (SIGSTOP): the progress watchdog fails the attempt within its limit', async () => {
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('stuck', 1000, 50)), 'chaos-stuck');
    const events: Record<string, unknown>[] = [];
    const done = fleet.client.events.follow(id, (e) => events.push(e));
    await until('a commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= 50, 120_000);
    const rec = (await commitOf(fleet.client, id)) as CommitRecord;
    const agentId = (await fleet.client.describe(id)).status?.agentId as string;
    const pid = trainerPid(id, rec.epoch);
    const stoppedAt = Date.now();
    process.kill(pid, 'SIGSTOP');
    await until(
      'the watchdog kills it',
      async () => fleet.agents.log(agentId).includes(`${id} attempt ${rec.epoch}: no progress from the trainer`),
      (Math.max(HEARTBEAT_TIMEOUT_S, WATCHDOG_MIN_S) + 5) * 1000,
    );
    const detected = (Date.now() - stoppedAt) / 1000;
    await until('the stuck trainer is gone (killed and reaped)', async () => !processAlive(pid), 5_000);
    const result = await done;
    expect(result.training.attempt).to.be.greaterThan(rec.epoch);
    const resumed = Number(
      events.find((e) => e.type === 'started' && Number(e.attempt) > rec.epoch)?.resumed_from_step,
    );
    const reached = Math.max(...stepsOf(events, (e) => Number(e.attempt) === rec.epoch));
    // the next attempt resumed from a committed checkpoint no older than the one seen before
    // the stop, losing at most one checkpoint interval
    expect(resumed, 'the next attempt resumed from a checkpoint').to.be.at.least(rec.step);
    expect(resumed % 50, 'a checkpoint step').to.equal(0);
    expect(reached - resumed).to.be.at.most(50);
    rows.push({
      scenario: '12 stuck trainer (SIGSTOP)',
      outcome: `watchdog killed it after ${detected.toFixed(1)} s; resumed at ${resumed}`,
      stepsLost: reached - resumed,
      recoverS: detected.toFixed(1),
    });
  });
  it('chaos [ci] 2 - kill -9 of the agent: placed again elsewhere, at most one checkpoint interval lost, never two trainers committing, adapter equal to an uninterrupted run', async () => {
    const every = 100;
    const steps = 600;
    const spec = await loadSpecFile(tinyJob('kill9', steps, every));
    const id = await fleet.client.submit(spec, 'chaos-kill9');
    const events: Record<string, unknown>[] = [];
    const done = fleet.client.events.follow(id, (e) => events.push(e));
    await until('first commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= every, 120_000);
    const victim = (await fleet.client.describe(id)).status?.agentId as string;
    const killedAt = Date.now();
    fleet.agents.get(victim)?.kill('SIGKILL');
    // meanwhile, the uninterrupted run of the same job (same data, seed and settings) on the
    // surviving agent: the selector only steers placement
    const survivor = victim === 'agent-a' ? 'agent-b' : 'agent-a';
    const baselineId = await fleet.client.submit(
      { ...spec, spec: { ...spec.spec, selector: { host: survivor } } },
      'chaos-kill9-baseline',
    );
    const [result, baseline] = await Promise.all([done, fleet.client.events.follow(baselineId, () => {})]);
    expect(baseline.training.attempt, 'the baseline ran uninterrupted').to.equal(1);
    expect(result.training.agentId).to.not.equal(victim);
    expect(result.training.attempt).to.be.at.least(2);
    // steps lost: what the dead attempt reached past its last committed checkpoint
    const reached = Math.max(...stepsOf(events, (e) => e.agent_id === victim));
    const resumed = Number(events.find((e) => e.type === 'started' && e.agent_id !== victim)?.resumed_from_step);
    expect(resumed).to.be.at.least(every);
    expect(reached - resumed).to.be.at.most(every);
    // the final attempt trains each remaining step exactly once
    const last = stepsOf(events, (e) => Number(e.attempt) === result.training.attempt);
    expect(last).to.deep.equal(Array.from({ length: steps - resumed }, (_, i) => resumed + 1 + i));
    // two trainers never commit for the job: each write of the record is by one epoch, in order
    assertMonotonic(await commitHistory(fleet.client, id));
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-adapters-'));
    await downloadAdapter(fleet.client, baselineId, join(dir, 'baseline'));
    await downloadAdapter(fleet.client, id, join(dir, 'recovered'));
    const diff = adapterDiff(join(dir, 'baseline'), join(dir, 'recovered'));
    expect(diff, 'max |baseline - recovered| over the adapter tensors').to.be.lessThan(1e-5);
    expect(result.training.trainLoss).to.be.closeTo(baseline.training.trainLoss as number, 1e-4);
    await recordHistory(fleet.client.client, id, 'recovered-after-kill9');
    const firstNew = events.find((e) => e.type === 'step' && e.agent_id !== victim);
    rows.push({
      scenario: '2 kill -9 agent',
      outcome: `resumed at ${resumed} on ${result.training.agentId}; adapter max diff ${diff.toExponential(0)} vs uninterrupted`,
      stepsLost: reached - resumed,
      recoverS: ((Number(firstNew?.time) * 1000 - killedAt) / 1000).toFixed(1),
    });
    await fleet.agents.start(victim);
    await until('victim back', async () => (await ready()).includes(victim), 60_000);
  });

  it('chaos [ci] 4 - an agent frozen past the heartbeat timeout (SIGSTOP) then thawed: its commits are refused; the commit record never moves back', async () => {
    // 600 steps: the frozen attempt's trainer stalls on its full stdout pipe long before the end
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('sigstop', 600, 50)), 'chaos-sigstop');
    const events: Record<string, unknown>[] = [];
    const done = fleet.client.events.follow(id, (e) => events.push(e));
    await until('first commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= 50, 120_000);
    const frozen = (await fleet.client.describe(id)).status?.agentId as string;
    const proc = fleet.agents.get(frozen) as NonNullable<ReturnType<typeof fleet.agents.get>>;
    const stoppedAt = Date.now();
    proc.kill('SIGSTOP');
    // a new epoch claims the job and commits elsewhere
    await until(
      'a newer epoch commits',
      async () => {
        const c = await commitOf(fleet.client, id);
        return !!c && c.epoch >= 2 && c.agent_id !== frozen && c.step > 0;
      },
      120_000,
    );
    proc.kill('SIGCONT');
    const result = await done;
    expect(result.training.agentId).to.not.equal(frozen);
    const history = await commitHistory(fleet.client, id);
    assertMonotonic(history);
    const firstNew = history.findIndex((c) => c.epoch >= 2);
    expect(
      history.slice(firstNew).every((c) => c.epoch >= 2),
      'no epoch-1 write after epoch 2 claimed the job',
    ).to.equal(true);
    // the thawed agent saw that it lost the job and stopped its trainer
    await until(
      'the zombie noticed',
      async () => /refused: a newer attempt owns|the server dropped this attempt/.test(fleet.agents.log(frozen)),
      30_000,
    );
    const resumed = Number(events.find((e) => e.type === 'started' && e.agent_id !== frozen)?.resumed_from_step);
    const reached = Math.max(...stepsOf(events, (e) => e.agent_id === frozen));
    const firstStep = events.find((e) => e.type === 'step' && e.agent_id !== frozen);
    rows.push({
      scenario: '4 SIGSTOP agent, then SIGCONT',
      outcome: `zombie refused; ${history.length} commits, monotonic; resumed at ${resumed}`,
      stepsLost: reached - resumed,
      recoverS: ((Number(firstStep?.time) * 1000 - stoppedAt) / 1000).toFixed(1),
    });
  });

  it('chaos 6 - Temporal dev server restarted mid-job (SQLite file): the workflow continues', async () => {
    const steps = 2500;
    const id = await fleet.client.submit(
      await loadSpecFile(tinyJob('temporal-restart', steps, 100)),
      'chaos-temporal-restart',
    );
    await until('a commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= 100, 120_000);
    const before = (await commitOf(fleet.client, id)) as CommitRecord;
    const t0 = Date.now();
    await stopProcess(fleet.stack.temporal.pid, 10_000);
    await new Promise((r) => setTimeout(r, 2000));
    const port = Number(fleet.stack.temporal.address.split(':').pop());
    fleet.stack.temporal = await startTemporal({
      home: fleet.stack.home,
      dataDir: join(fleet.stack.home, 'data'),
      logDir: join(fleet.stack.home, 'logs'),
      port,
    });
    const down = (Date.now() - t0) / 1000;
    // the workers and this client reconnect by themselves; the history is in the SQLite file
    const events: Record<string, unknown>[] = [];
    const result = await fleet.client.events.follow(id, (e) => events.push(e));
    expect(result.state).to.equal('succeeded');
    expect((await fleet.client.describe(id)).temporal).to.equal('COMPLETED');
    assertMonotonic(await commitHistory(fleet.client, id));
    const last = stepsOf(events, (e) => Number(e.attempt) === result.training.attempt);
    const from = Number(
      events.find((e) => e.type === 'started' && Number(e.attempt) === result.training.attempt)?.resumed_from_step ?? 0,
    );
    expect(last).to.deep.equal(Array.from({ length: steps - from }, (_, i) => from + 1 + i));
    await until('both agents advertise', async () => (await ready()).length === 2, 60_000);
    rows.push({
      scenario: '6 Temporal dev server restart',
      outcome: `down ${down.toFixed(1)} s; finished on attempt ${result.training.attempt}`,
      stepsLost: result.training.attempt > 1 ? `${before.step}→${from}` : 0,
      recoverS: '-',
    });
  });

  it('chaos 7 - kill -9 of the control worker right after it reserved a lease: another worker completes the placement; no lease leaks', async () => {
    // the only control worker is one that dies at the worst moment: lease written, reply not sent
    await fleet.workers[0]?.stop();
    const doomed = spawn(process.execPath, [join(ROOT, 'bin', 'tunefleet'), 'worker'], {
      env: { ...cliEnv(fleet.stack), TUNEFLEET_FAILPOINT: 'place:after-reserve' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let doomedLog = '';
    for (const st of [doomed.stdout, doomed.stderr]) st?.on('data', (b: Buffer) => (doomedLog += b.toString()));
    const gone = new Promise<NodeJS.Signals | null>((res) => doomed.on('exit', (_c, sig) => res(sig)));
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('worker-kill', 300, 1000)), 'chaos-worker-kill');
    const signal = await Promise.race([gone, new Promise<null>((r) => setTimeout(() => r(null), 120_000))]);
    expect(signal, `the worker died at the failpoint\n${doomedLog}`).to.equal('SIGKILL');
    const killedAt = Date.now();
    const orphan = await leasesOf(id);
    expect(orphan, 'the dead worker reserved before dying').to.have.length(1);
    // a restarted worker: the place activity times out (20 s) and is retried there
    fleet.workers[0] = await startControlWorker(fleet.stack.cfg, () => {});
    await until('training', async () => (await fleet.client.describe(id)).status?.state === 'training', 120_000);
    const recover = (Date.now() - killedAt) / 1000;
    const held = await leasesOf(id);
    const agentId = (await fleet.client.describe(id)).status?.agentId;
    expect(held, 'one lease, on the agent that runs the job').to.deep.equal([{ agentId, attempt: 1 }]);
    const result = await fleet.client.events.follow(id, () => {});
    expect(result.training.attempt).to.equal(1);
    expect(await leasesOf(id), 'released when the job ended').to.deep.equal([]);
    rows.push({
      scenario: '7 kill -9 worker mid-placement',
      outcome: `orphan on ${orphan[0]?.agentId}; placed on ${agentId} by the new worker; 0 leases left`,
      stepsLost: 0,
      recoverS: recover.toFixed(1),
    });
  });

  it('chaos 10 - disk full on the agent during a checkpoint: a typed error, the previous checkpoint intact, no empty "latest"', async function () {
    const agentDir = join(fleet.stack.home, 'agents', 'agent-disk');
    mkdirSync(agentDir, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tunefleet-chaos', agentDir], { stdio: 'pipe' });
    } catch (e) {
      console.log(
        `      skipped: cannot mount a tmpfs here (${String((e as { stderr?: Buffer }).stderr ?? e).trim()})`,
      );
      this.skip();
    }
    try {
      // only agent-disk takes new work until its disk is full
      await runCli(fleet.stack, 'cordon', 'agent-a');
      await runCli(fleet.stack, 'cordon', 'agent-b');
      await fleet.agents.start('agent-disk');
      await until('agent-disk advertises', async () => (await ready()).includes('agent-disk'), 90_000);
      const every = 50;
      const id = await fleet.client.submit(await loadSpecFile(tinyJob('disk-full', 1500, every)), 'chaos-disk-full');
      const events: Record<string, unknown>[] = [];
      const done = fleet.client.events.follow(id, (e) => events.push(e));
      await until(
        'a commit on agent-disk',
        async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= every,
        120_000,
      );
      const rec = (await commitOf(fleet.client, id)) as CommitRecord;
      expect(rec.agent_id).to.equal('agent-disk');
      // fill the file system to the last block
      const filledAt = Date.now();
      const fd = openSync(join(agentDir, 'filler'), 'w');
      for (const size of [1 << 20, 4096, 1]) {
        const buf = Buffer.alloc(size, 1);
        try {
          for (;;) writeSync(fd, buf);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
        }
      }
      closeSync(fd);
      await runCli(fleet.stack, 'uncordon', 'agent-a');
      await runCli(fleet.stack, 'uncordon', 'agent-b');
      const result = await done;
      const err = events.find((e) => e.type === 'error' && e.agent_id === 'agent-disk');
      expect(err?.code, 'the trainer says what happened').to.equal('DISK_FULL');
      expect(result.training.agentId).to.not.equal('agent-disk');
      const resumed = Number(
        events.find((e) => e.type === 'started' && e.agent_id !== 'agent-disk')?.resumed_from_step,
      );
      expect(resumed, 'resumed from the checkpoint committed before the disk filled').to.be.at.least(rec.step);
      // on the full disk: no half-written checkpoint, and every step-* directory has its manifest
      const ckpts = join(agentDir, 'jobs', id, `attempt-${rec.epoch}`, 'out', 'checkpoints');
      const names = existsSync(ckpts) ? readdirSync(ckpts) : [];
      expect(
        names.filter((n) => n.endsWith('.tmp')),
        'no temporary checkpoint left',
      ).to.deep.equal([]);
      for (const n of names)
        expect(existsSync(join(ckpts, n, 'manifest.json')), `${n} has its manifest`).to.equal(true);
      expect(names.length, `checkpoints kept under ${ckpts}`).to.be.at.least(1);
      expect(fleet.agents.get('agent-disk')?.exitCode, 'the agent is still running').to.equal(null);
      const reached = Math.max(...stepsOf(events, (e) => e.agent_id === 'agent-disk'));
      const firstNew = events.find((e) => e.type === 'step' && e.agent_id !== 'agent-disk');
      rows.push({
        scenario: '10 disk full during a checkpoint',
        outcome: `DISK_FULL at step ${reached}; step ${rec.step} intact; resumed at ${resumed} on ${result.training.agentId}`,
        stepsLost: reached - resumed,
        recoverS: ((Number(firstNew?.time) * 1000 - filledAt) / 1000).toFixed(1),
      });
    } finally {
      fleet.agents.get('agent-disk')?.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 500));
      execFileSync('umount', ['-l', agentDir], { stdio: 'ignore' });
      await runCli(fleet.stack, 'uncordon', 'agent-a');
      await runCli(fleet.stack, 'uncordon', 'agent-b');
    }
  });

  it('chaos [ci] 20 - kill -9 of the control worker and of an agent during an ASHA sweep: it finishes with the best trial and rung results of an undisturbed run; no trial step trained twice beyond the checkpoint interval', async () => {
    const every = 5;
    const job = tinyJob('sweep-chaos', 30, every, 64);
    const file = join(dirname(job), 'sweep.yaml');
    writeFileSync(
      file,
      'name: sweep-chaos\njob: job.yaml\nspace:\n  training.learning_rate: {grid: [0.0005, 0.005, 0.05]}\n' +
        'budget: {max_trials: 3, max_concurrent: 2, max_steps: 30}\n' +
        'searcher: {type: asha, min_steps: 10, reduction_factor: 3}\n',
    );
    // the only control worker is a process of its own, killed -9 while the sweep's trials train
    await fleet.workers[0]?.stop();
    const doomed = spawn(process.execPath, [join(ROOT, 'bin', 'tunefleet'), 'worker'], {
      env: cliEnv(fleet.stack),
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    const id = await fleet.client.sweeps.submit(file, 'chaos-sweep');
    const trials = ['chaos-sweep-t0', 'chaos-sweep-t1', 'chaos-sweep-t2'];
    const stepOf = async (jobId: string): Promise<number> =>
      (await fleet.client.describe(jobId).catch(() => null))?.status?.progress?.step ?? 0;
    await until('a trial trains', async () => (await Promise.all(trials.map(stepOf))).some((n) => n >= 2), 180_000);
    doomed.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 3000));
    fleet.workers[0] = await startControlWorker(fleet.stack.cfg, () => {});
    // then the agent of a trial that has committed a checkpoint
    let victim = '';
    await until(
      'a trial with a commit',
      async () => {
        for (const t of trials) {
          const c = await commitOf(fleet.client, t);
          const d = await fleet.client.describe(t).catch(() => null);
          if (c && c.step >= every && d?.status?.state === 'training' && d.status.agentId) victim = d.status.agentId;
        }
        return victim !== '';
      },
      180_000,
    );
    fleet.agents.get(victim)?.kill('SIGKILL');
    const hit = await fleet.client.sweeps.wait(id);
    expect(hit.temporal, `${hit.failure} ${JSON.stringify(hit.trials)}`).to.equal('COMPLETED');
    await fleet.agents.start(victim);
    await until('victim back', async () => (await ready()).includes(victim), 60_000);
    // an undisturbed run of the same sweep, continuing as new past 20 history events (its history stays bounded)
    const small = await JobClient.connect({ ...fleet.stack.cfg, sweepHistoryEvents: 20 });
    let calm;
    let runs = 0;
    try {
      calm = await small.sweeps.wait(await small.sweeps.submit(file, 'chaos-sweep-calm'));
      for await (const _ of small.client.workflow.list({ query: `WorkflowId = 'chaos-sweep-calm'` })) runs += 1;
    } finally {
      await small.close();
    }
    expect(calm.temporal, calm.failure ?? '').to.equal('COMPLETED');
    expect(runs, 'runs of the calm sweep (continued as new)').to.be.at.least(2);
    expect(hit.best?.params).to.deep.equal(calm.best?.params);
    for (const t of calm.trials) {
      const twin = hit.trials.find((x) => x.index === t.index);
      expect(twin?.results.length, `t${t.index} rungs`).to.equal(t.results.length);
      for (const [k, r] of t.results.entries())
        expect(twin?.results[k], `t${t.index} rung ${k}`).to.be.closeTo(r as number, 1e-4);
    }
    // each trial's steps: trained again only after a failure, from the last commit (at most a checkpoint interval)
    let again = 0;
    for (const t of trials) {
      const steps: number[] = [];
      await fleet.client.events.read(t, (e) => {
        if (e.type === 'step') steps.push(e.step);
      });
      const twice = steps.length - new Set(steps).size;
      expect(twice, `${t}: steps trained twice`).to.be.at.most(every);
      again += twice;
    }
    rows.push({
      scenario: '20 kill -9 worker, agent in a sweep',
      outcome:
        `best ${JSON.stringify(hit.best?.params)} as undisturbed (${runs} runs); rung results within 1e-4; ` +
        `killed ${victim}`,
      stepsLost: again,
      recoverS: '-',
    });
  });

  it('chaos [ci] 13 - bad input through the CLI and straight onto NATS: each refused with a clear error; no daemon crashes; nothing stored changes', async () => {
    const n = await fleet.client.nats();
    // forged events on a running job's subjects: readers skip them, the job is not affected
    const target = await fleet.client.submit(
      await loadSpecFile(tinyJob('forged-events', 200, 1000)),
      'chaos-forged-events',
    );
    const events: Record<string, unknown>[] = [];
    const warnings: string[] = [];
    const done = fleet.client.events.follow(
      target,
      (e) => events.push(e),
      (w) => warnings.push(w),
    );
    const forged = [
      '{"type": "finished", "job_id": "chaos-forged-events"',
      JSON.stringify({ type: 'step', step: 'many', job_id: target, attempt: 1, agent_id: 'agent-a' }),
      JSON.stringify({ type: 'finished', step: 200, job_id: 'someone-else', attempt: 1, agent_id: 'agent-a' }),
      '\xff\xfe',
    ];
    for (const f of forged)
      await n.js.publish(
        jobEventSubject(target, 'step'),
        typeof f === 'string' && f === '\xff\xfe' ? new Uint8Array([0xff, 0xfe]) : new TextEncoder().encode(f),
      );
    const ok = await done;
    expect(ok.state).to.equal('succeeded');
    expect(warnings.filter((w) => w.startsWith('skipped a malformed event'))).to.have.length(forged.length);
    expect(events.every((e) => e.job_id === target && typeof e.step !== 'string')).to.equal(true);
    const logs = await runCli(fleet.stack, 'logs', target);
    expect(logs.status, logs.stderr).to.equal(0);
    expect(logs.stderr).to.match(/skipped a malformed event on tunefleet\.job\.chaos-forged-events\.step/);

    const storedState = async (): Promise<Record<string, string>> => {
      const out: Record<string, string> = {};
      for (const b of [COMMITS_BUCKET, LEASES_BUCKET, QUEUE_BUCKET, DECISIONS_BUCKET]) {
        const kv = await n.kv(b);
        for await (const k of await kv.keys()) out[`${b}/${k}`] = String((await kv.get(k))?.revision);
      }
      for (const b of [DATASETS_BUCKET, CHECKPOINTS_BUCKET, ADAPTERS_BUCKET])
        for (const i of await (await n.objects(b)).list()) out[`${b}/${i.name}`] = i.digest;
      out.workflows = String((await fleet.client.list()).length);
      return out;
    };
    const before = await storedState();

    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-bad-'));
    writeFileSync(join(dir, 'data.jsonl'), '{"text": "a good record"}\n');
    writeFileSync(
      join(dir, 'bad-utf8.jsonl'),
      Buffer.concat([Buffer.from('{"text": "fine"}\n{"text": "bad '), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n')]),
    );
    writeFileSync(join(dir, 'empty.jsonl'), '\n\n');
    const huge = openSync(join(dir, 'huge.jsonl'), 'w');
    writeSync(huge, '{"text": "');
    const mb = Buffer.alloc(1 << 20, 0x61);
    for (let i = 0; i < 100; i++) writeSync(huge, mb);
    writeSync(huge, '"}\n');
    closeSync(huge);
    const outside = mkdtempSync(join(tmpdir(), 'tunefleet-outside-'));
    writeFileSync(join(outside, 'secret.jsonl'), '{"text": "not yours"}\n');
    symlinkSync(join(outside, 'secret.jsonl'), join(dir, 'link.jsonl'));
    let k = 0;
    const spec = (body: string): string => {
      const p = join(dir, `bad-${(k += 1)}.yaml`);
      writeFileSync(p, body);
      return p;
    };
    const head = `name: bad\nmodel: ${TINY_MODEL}\nmethod: lora\n`;
    const good = spec(`${head}dataset: {path: data.jsonl}\n`);
    const cases: [string, string[], RegExp][] = [
      ['YAML syntax error', ['submit', spec(`${head}dataset: {path: data.jsonl\n`)], /bad-\d+\.yaml:\d+/],
      ['unknown key', ['submit', spec(`${head}dataset: {path: data.jsonl}\ntrainig: {max_steps: 5}\n`)], /trainig/],
      [
        'wrong type',
        ['submit', spec(`${head}dataset: {path: data.jsonl}\ntraining: {learning_rate: fast}\n`)],
        /learning_rate/,
      ],
      [
        'duplicate key',
        ['submit', spec(`${head}method: qlora\ndataset: {path: data.jsonl}\n`)],
        /bad-\d+\.yaml:4: Map keys must be unique/,
      ],
      ['not a mapping', ['submit', spec('- just\n- a list\n')], /bad-\d+\.yaml/],
      ['job id with ../', ['submit', good, '--id', '../../etc'], /job id/],
      ['dataset ../', ['submit', spec(`${head}dataset: {path: ../data.jsonl}\n`)], /leaves the spec's directory/],
      [
        'dataset absolute path',
        ['submit', spec(`${head}dataset: {path: ${join(outside, 'secret.jsonl')}}\n`)],
        /absolute path/,
      ],
      [
        'dataset symlink out of the data root',
        ['submit', spec(`${head}dataset: {path: link.jsonl}\n`)],
        /symlink to .*outside the spec's directory/,
      ],
      [
        'model name ../',
        ['submit', spec(`name: bad\nmodel: ../../etc/passwd\nmethod: lora\ndataset: {path: data.jsonl}\n`)],
        /model: a model name/,
      ],
      [
        'model absolute path',
        ['submit', spec(`name: bad\nmodel: /etc\nmethod: lora\ndataset: {path: data.jsonl}\n`)],
        /model: a model name/,
      ],
      [
        'invalid UTF-8',
        ['submit', spec(`${head}dataset: {path: bad-utf8.jsonl}\n`)],
        /bad-utf8\.jsonl:2: not valid UTF-8/,
      ],
      [
        'a 100 MB JSONL line',
        ['submit', spec(`${head}dataset: {path: huge.jsonl}\n`)],
        /huge\.jsonl:1: the line is 100\.0 MiB, over the 16 MiB limit/,
      ],
      [
        'empty dataset',
        ['submit', spec(`${head}dataset: {path: empty.jsonl}\n`)],
        /empty\.jsonl: no record to train on/,
      ],
      ['unknown flag', ['submit', good, '--gpus', '8'], /unknown option '--gpus'/],
    ];
    for (const [what, args, why] of cases) {
      const r = await runCli(fleet.stack, ...args);
      expect(r.status, `${what}: exit status (stderr: ${r.stderr})`).to.not.equal(0);
      expect(r.stderr, `${what}: says why`).to.match(why);
      expect(r.stderr, `${what}: an error, not a stack trace`).to.not.match(/\n\s+at .+:\d+:\d+/);
    }

    // straight onto NATS: forged adverts (impossible numbers, not JSON) are skipped by the scheduler
    const adverts = await n.adverts();
    const real = (await adverts.get('agent-a'))?.json<Record<string, unknown>>() as Record<string, unknown>;
    await adverts.put(
      'agent-forged',
      JSON.stringify({
        ...real,
        agent_id: 'agent-forged',
        memory: { total: 1, available: 2 ** 60 },
        capacity: 2 ** 70,
        time: Date.now(),
      }),
    );
    await adverts.put('agent-junk', 'not JSON {');
    await new Promise((r) => setTimeout(r, 1500));
    const shown = await runCli(fleet.stack, 'fleet', '--json');
    expect(shown.status, shown.stderr).to.equal(0);
    const ids = (JSON.parse(shown.stdout) as { agent_id: string }[]).map((a) => a.agent_id);
    expect(ids, 'the forged adverts are not in the fleet')
      .to.include.members(['agent-a', 'agent-b'])
      .and.not.include.members(['agent-forged']);
    expect(ids).to.not.include('agent-junk');
    await adverts.delete('agent-forged');
    await adverts.delete('agent-junk');

    expect(await storedState(), 'nothing stored changed').to.deep.equal(before);
    expect(await ready(), 'both agents still up').to.include.members(['agent-a', 'agent-b']);
    for (const a of ['agent-a', 'agent-b']) expect(fleet.agents.get(a)?.exitCode, `${a} did not crash`).to.equal(null);

    // a model directory with only a pickle is never advertised, so never loaded: the job says so
    const pickled = join(fleet.stack.home, 'models', 'pickle-only');
    mkdirSync(pickled, { recursive: true });
    copyFileSync(join(fleet.stack.home, 'models', TINY_MODEL, 'config.json'), join(pickled, 'config.json'));
    writeFileSync(join(pickled, 'pytorch_model.bin'), Buffer.from('not really a pickle'));
    await new Promise((r) => setTimeout(r, 1500)); // a re-advert or two
    const pj = await fleet.client.submit(
      await loadSpecFile(spec(`name: bad\nmodel: pickle-only\nmethod: lora\ndataset: {path: data.jsonl}\n`)),
      'chaos-pickle-only',
    );
    const failed = await fleet.client.events
      .follow(pj, () => {})
      .then(
        () => null,
        (e: unknown) => String(e),
      );
    expect(failed).to.match(/pickle-only/);
    rmSync(pickled, { recursive: true, force: true });
    rows.push({
      scenario: '13 bad input (CLI and NATS)',
      outcome: `${cases.length} CLI inputs, 4 forged events, 2 forged adverts, a pickle-only model: all refused`,
      stepsLost: 0,
      recoverS: '-',
    });
  });

  it("chaos 14 - wrong credentials against a running job: anonymous and plaintext connections, another agent writing this agent's advert, committing for its job, deleting the commits bucket, the cli writing a lease: each refused by the server or the commit service; the job finishes on its genuine commits; no log or event holds a key", async () => {
    const id = await fleet.client.submit(
      await loadSpecFile(tinyJob('wrong-credentials', 240, 40)),
      'chaos-wrong-creds',
    );
    await until('a commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= 40, 120_000);
    const owner = ((await commitOf(fleet.client, id)) as CommitRecord).agent_id;
    const other = owner === 'agent-a' ? 'agent-b' : 'agent-a';
    const cfg = fleet.stack.cfg;
    const as = (identity: string) => connect({ ...natsConnectOptions(cfg, identity), reconnect: false, timeout: 5000 });
    const refused: string[] = [];
    const denied = async (what: string, p: Promise<unknown>, pattern = /permissions violation/i) => {
      const e = await rejection(p, what);
      expect(e.message, what).to.match(pattern);
      refused.push(what);
    };
    // no credential, and no TLS
    const tls = natsConnectOptions(cfg, 'cli').tls as { caFile: string; certFile: string; keyFile: string };
    await denied('anonymous', connect({ servers: cfg.natsUrl, tls, reconnect: false }), /authorization violation/i);
    await denied(
      'plaintext',
      connect({
        ...natsConnectOptions(cfg, 'cli'),
        tls: null,
        servers: cfg.natsUrl.replace('tls://', 'nats://'),
        reconnect: false,
        timeout: 5000,
      }),
      /./,
    );
    // another agent's credentials
    const nc = await as(`agent-${other}`);
    const advertBefore = (await (await (await fleet.client.nats()).adverts()).get(owner))?.revision;
    try {
      const js = nc.jetstream();
      await denied(`${other} writes ${owner}'s advert`, (await openKv(js, ADVERTS_BUCKET)).put(owner, '{}'));
      await denied(`${other} commits on ${owner}'s subject`, commitClient(nc, owner).claim(id, 99));
      await denied(
        `${other} claims ${id} for itself`,
        commitClient(nc, other).claim(id, 99),
        new RegExp(`holds no lease for ${id} attempt 99`),
      );
      await denied(
        `${other} writes the commits bucket`,
        (await openKv(js, COMMITS_BUCKET)).put(id, JSON.stringify({ epoch: 1e9 })),
      );
      await denied(
        `${other} deletes the commits bucket`,
        (await nc.jetstreamManager()).streams.delete(`KV_${COMMITS_BUCKET}`),
      );
    } finally {
      await nc.close();
    }
    const cli = await as('cli');
    try {
      await denied('cli writes a lease', (await openKv(cli.jetstream(), LEASES_BUCKET)).put(owner, '{"leases":[]}'));
    } finally {
      await cli.close();
    }
    const advertAfter = await (await (await fleet.client.nats()).adverts()).get(owner);
    expect(advertAfter?.json<{ agent_id: string }>().agent_id).to.equal(owner);
    expect(advertAfter?.revision ?? 0).to.be.at.least(advertBefore ?? 0);
    const events: Record<string, unknown>[] = [];
    const result = await fleet.client.events.follow(id, (e) => events.push(e));
    expect(result.state).to.equal('succeeded');
    const history = await commitHistory(fleet.client, id);
    assertMonotonic(history);
    expect(history.every((h) => h.epoch < 99 && [owner, other].includes(h.agent_id))).to.equal(true);
    // no credential leaked: no seed, no private key in any log or event
    const texts = {
      workers: fleet.logs.join('\n'),
      'agent-a': fleet.agents.log('agent-a'),
      'agent-b': fleet.agents.log('agent-b'),
      events: JSON.stringify(events),
    };
    expect(credentialLeaks(fleet.stack.home, texts)).to.deep.equal([]);
    rows.push({
      scenario: '14 wrong credentials',
      outcome: `${refused.length} refused: 2 connections, 1 by the commit service, ${refused.length - 3} by permissions; job succeeded on ${owner}`,
      stepsLost: 0,
      recoverS: '-',
    });
  });
});
