// Prometheus /metrics of a real agent process and a real control worker: both parse with a
// Prometheus text-format parser, the agent's step gauge moves while a job trains, and after
// kill -9 of that agent the worker has counted the failed attempt and the recovery.
import { expect } from 'chai';
import { commitOf, tinyJob, until } from '../harness/fleet';
import { samples, scrape, value, type Scrape } from '../harness/metrics';
import { useRunningFleet } from '../harness/running-fleet';
import { loadSpecFile } from '../../scheduler/cli/client';

describe('metrics - Prometheus /metrics of agents and control workers', function () {
  this.timeout(600_000);
  const fleet = useRunningFleet({ agents: ['metrics-a', 'metrics-b'], workerMetrics: true, readyMs: 60_000 });
  /** the URL an agent process printed ("metrics on http://127.0.0.1:PORT/metrics"), soon after its first advert */
  const printed = (id: string): string | undefined =>
    /metrics on (http:\/\/\S+\/metrics)/.exec(fleet.agents.log(id))?.[1];
  const agentUrl = (id: string): string => {
    const url = printed(id);
    if (!url) throw new Error(`${id} printed no metrics address:\n${fleet.agents.log(id)}`);
    return url;
  };
  before(async () => {
    for (const id of ['metrics-a', 'metrics-b'])
      await until(`${id} prints its metrics address`, async () => printed(id) !== undefined, 60_000);
  });

  it('metrics - agent and worker pages parse; the step gauge moves; a kill -9 is counted as a failed attempt and a recovery', async () => {
    const workerUrl = fleet.workers[0]?.metrics?.url as string;
    expect(workerUrl).to.match(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const idle = await scrape(agentUrl('metrics-a'));
    // the device, the agent's state and the Temporal SDK's own worker metrics on one page
    expect(value(idle, 'tunefleet_device_memory_total_bytes', { agent: 'metrics-a', device: 'cpu' })).to.be.above(
      2 ** 30,
    );
    expect(value(idle, 'tunefleet_agent_state', { state: 'ready' })).to.equal(1);
    expect(value(idle, 'tunefleet_agent_sessions')).to.equal(0);
    expect(
      idle.some((f) => f.name.startsWith('temporal_')),
      'the SDK metrics',
    ).to.equal(true);

    const spec = await loadSpecFile(tinyJob('metrics', 100_000, 10));
    const id = await fleet.client.submit(spec, 'metrics-job');
    await until('a commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= 10, 180_000);
    const on = (await fleet.client.describe(id)).status?.agentId as string;
    const other = on === 'metrics-a' ? 'metrics-b' : 'metrics-a';
    const first = await scrape(agentUrl(on));
    const step1 = value(first, 'tunefleet_job_step', { job_id: id, attempt: '1' });
    expect(step1).to.be.at.least(10);
    expect(value(first, 'tunefleet_job_loss', { job_id: id })).to.be.above(0);
    expect(value(first, 'tunefleet_agent_sessions')).to.equal(1);
    expect(value(first, 'tunefleet_device_job_info', { device: 'cpu', job_id: id, attempt: '1' })).to.equal(1);
    let second: Scrape = first;
    await until(
      'the step gauge moves',
      async () => {
        second = await scrape(agentUrl(on));
        return value(second, 'tunefleet_job_step', { job_id: id, attempt: '1' }) > step1;
      },
      60_000,
    );
    expect(value(second, 'tunefleet_job_steps_total', { job_id: id })).to.be.above(step1 - 1);

    const w1 = await scrape(workerUrl);
    expect(value(w1, 'tunefleet_placements_total', { purpose: 'train', outcome: 'placed' })).to.equal(1);
    expect(value(w1, 'tunefleet_placement_duration_seconds'), 'observations').to.equal(1);
    expect(value(w1, 'tunefleet_leases_taken_total')).to.equal(1);
    expect(value(w1, 'tunefleet_jobs', { state: 'training' })).to.be.at.least(0);
    expect(samples(w1, 'tunefleet_jobs').map((m) => m.labels?.state)).to.include.members(['queued', 'training']);
    expect(w1.some((f) => f.name.startsWith('temporal_'))).to.equal(true);

    fleet.agents.get(on)?.kill('SIGKILL');
    await until(
      'resumed on the other agent',
      async () => (await fleet.client.describe(id)).status?.agentId === other,
      120_000,
    );
    const w2 = await scrape(workerUrl);
    expect(value(w2, 'tunefleet_attempts_failed_total', { cause: 'lost_agent' })).to.equal(1);
    expect(value(w2, 'tunefleet_recoveries_total', { cause: 'lost_agent' })).to.equal(1);
    expect(value(w2, 'tunefleet_recovery_seconds'), 'one recovery timed').to.equal(1);
    expect(value(w2, 'tunefleet_fault_detection_seconds'), 'one detection timed').to.equal(1);
    expect(value(w2, 'tunefleet_placements_total', { purpose: 'train', outcome: 'placed' })).to.equal(2);
    const resumed = await scrape(agentUrl(other));
    await until(
      'the other agent reports the attempt-2 steps',
      async () => value(await scrape(agentUrl(other)), 'tunefleet_job_step', { job_id: id, attempt: '2' }) > 10,
      120_000,
    );
    expect(resumed.length).to.be.above(0);
    await fleet.client.cancel(id);
    const text = await (await fetch(workerUrl)).text();
    const sum = /^tunefleet_recovery_seconds_sum\{[^}]*\} (\S+)$/m.exec(text)?.[1];
    // from the killed agent's last heartbeat to the release: about the heartbeat timeout, never more than a minute here
    const detected = Number(/^tunefleet_fault_detection_seconds_sum\{[^}]*\} (\S+)$/m.exec(text)?.[1]);
    expect(detected).to.be.within(0.1, 60);
    console.log(`      fault detection (last heartbeat to release): ${detected.toFixed(2)} s`);
    console.log(`      recovery (release of the lost attempt to the new placement): ${Number(sum).toFixed(2)} s`);
  });
});
