// Two real agent processes on a real stack: the fleet view, kill -9, cordon, drain.
import { expect } from 'chai';
import { ADVERT_TTL_MS, type JobResult } from '../../shared';
import { loadSpecFile } from '../../scheduler/cli/client';
import { fleetStates, tinyJob, until } from '../harness/fleet';
import { runCli } from '../harness/stack';
import { useRunningFleet } from '../harness/running-fleet';

describe('fleet - two real agents', function () {
  this.timeout(600_000);
  // three sessions at once (a CPU agent on 2 cores defaults to one): the cordon test's three
  // tiny jobs run side by side on the one ready agent instead of one after another
  const fleet = useRunningFleet({
    agents: ['agent-a', 'agent-b'],
    agentArgs: ['--max-sessions', '3'],
    readyMs: 60_000,
  });

  const cli = (...args: string[]): ReturnType<typeof runCli> => runCli(fleet.stack, ...args);
  const fleetJson = async (): Promise<
    {
      agent_id: string;
      v: number;
      state: string;
      memory: { total: number };
      cpu: { cores: number };
      sessions: unknown[];
      devices: { kind: string; uuid: string; memory_total: number }[];
    }[]
  > => {
    const r = await cli('fleet', '--json');
    expect(r.status, r.stderr).to.equal(0);
    return JSON.parse(r.stdout) as never;
  };

  it('fleet - fleet --json lists both agents with their capacity', async () => {
    const f = await fleetJson();
    expect(f.map((a) => a.agent_id)).to.deep.equal(['agent-a', 'agent-b']);
    for (const a of f) {
      expect(a.state).to.equal('ready');
      expect(a.memory.total).to.be.greaterThan(2 ** 30);
      expect(a.cpu.cores).to.be.greaterThan(0);
      // a CPU agent offers one device: the CPU, with the RAM it offers
      expect(a.v).to.equal(2);
      expect(a.devices.map((d) => [d.kind, d.uuid])).to.deep.equal([['cpu', 'cpu']]);
      expect(a.devices[0]?.memory_total).to.be.greaterThan(2 ** 30);
    }
    const table = await cli('fleet');
    expect(table.stdout).to.match(/agent-a\s+ready\s+cpu/);
  });

  it('fleet - a cordoned agent shows as cordoned at once and receives no new job', async () => {
    const r = await cli('cordon', 'agent-b');
    expect(r.stdout.trim()).to.equal('agent-b: cordoned');
    expect((await fleetJson()).find((a) => a.agent_id === 'agent-b')?.state).to.equal('cordoned');
    // three at once: agent-b has room for them, and still none goes there
    const spec = await loadSpecFile(tinyJob('cordon', 2, 1000, 40));
    const results: JobResult[] = await Promise.all(
      [1, 2, 3].map(async (n) =>
        fleet.client.events.follow(await fleet.client.submit(spec, `cordon-job-${n}`), () => {}),
      ),
    );
    results.forEach((r, i) => expect(r.training.agentId, `job ${i + 1}`).to.equal('agent-a'));
    expect((await cli('uncordon', 'agent-b')).stdout.trim()).to.equal('agent-b: ready');
  });

  it('fleet - drain: the running job checkpoints and resumes on the other agent; the agent ends drained', async () => {
    // 1,000 steps (about 15 s on 2 cores) leave the drain, sent at step 5, time to land mid-run
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('drain', 1000, 1000, 40)), 'drain-job');
    const events: Record<string, unknown>[] = [];
    let drained: string | null = null;
    const done = fleet.client.events.follow(id, (e) => {
      events.push(e);
      if (!drained && e.type === 'step' && Number(e.step) >= 5) {
        drained = String(e.agent_id);
        void cli('drain', drained);
      }
    });
    const result = await done;
    expect(drained).to.not.equal(null);
    const other = drained === 'agent-a' ? 'agent-b' : 'agent-a';
    expect(result.training.agentId).to.equal(other);
    const signalCkpt = events.find((e) => e.type === 'checkpoint' && e.reason === 'signal');
    expect(signalCkpt, 'a checkpoint on drain').to.not.equal(undefined);
    const resumed = events.find((e) => e.type === 'started' && e.agent_id === other);
    expect(Number(resumed?.resumed_from_step)).to.equal(Number(signalCkpt?.step));
    const steps = events.filter((e) => e.type === 'step').map((e) => Number(e.step));
    expect(steps[steps.length - 1]).to.equal(1000);
    await until(
      'drained',
      async () => (await fleetStates(fleet.client)).get(drained as unknown as string) === 'drained',
      10_000,
    );
    await cli('uncordon', drained as unknown as string);
  });

  it('fleet - after kill -9 an agent leaves the view within the TTL + 1 s; restarted, it comes back', async () => {
    const victim = fleet.agents.get('agent-a') as NonNullable<ReturnType<typeof fleet.agents.get>>;
    // the last advert was written at most one interval ago; the TTL counts from it
    victim.kill('SIGKILL');
    const t0 = Date.now();
    await until('agent-a gone', async () => !(await fleetStates(fleet.client)).has('agent-a'), ADVERT_TTL_MS + 1000);
    const gone = Date.now() - t0;
    expect(gone).to.be.at.most(ADVERT_TTL_MS + 1000);
    expect((await fleetJson()).map((a) => a.agent_id)).to.deep.equal(['agent-b']);
    fleet.agents.start('agent-a');
    await until('agent-a back', async () => (await fleetStates(fleet.client)).get('agent-a') === 'ready', 60_000);
  });
});
