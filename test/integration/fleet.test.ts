// Two real agent processes on a real stack: the fleet view, kill -9, cordon, drain.
import { expect } from 'chai';
import { ADVERT_TTL_MS, type JobResult } from '../../shared';
import { JobClient, loadSpecFile } from '../../scheduler/cli/client';
import { startControlWorker, type RunningWorker } from '../../scheduler/worker';
import { AgentProcesses, fleetStates, readyAgents, tinyJob, until } from '../harness/fleet';
import { runCli, startTestStack, stopAll, type TestStack } from '../harness/stack';

describe('fleet - two real agents', function () {
  this.timeout(600_000);
  let stack: TestStack;
  let worker: RunningWorker;
  let client: JobClient;
  // three sessions at once (a CPU agent on 2 cores defaults to one): the cordon test's three
  // tiny jobs run side by side on the one ready agent instead of one after another
  const agents = new AgentProcesses(() => stack, ['--max-sessions', '3']);

  const cli = (...args: string[]): ReturnType<typeof runCli> => runCli(stack, ...args);
  const fleet = async (): Promise<
    { agent_id: string; state: string; memory: { total: number }; cpu: { cores: number }; sessions: unknown[] }[]
  > => {
    const r = await cli('fleet', '--json');
    expect(r.status, r.stderr).to.equal(0);
    return JSON.parse(r.stdout) as never;
  };
  before(async () => {
    stack = await startTestStack();
    worker = await startControlWorker(stack.cfg, () => {});
    client = await JobClient.connect(stack.cfg);
    agents.start('agent-a');
    agents.start('agent-b');
    await until('both agents advertise', async () => (await readyAgents(client)).length === 2, 60_000);
  });

  after(() =>
    stopAll(
      () => agents.killAll(),
      () => client?.close(),
      () => worker?.stop(),
      () => stack?.stop(),
    ),
  );

  it('fleet - fleet --json lists both agents with their capacity', async () => {
    const f = await fleet();
    expect(f.map((a) => a.agent_id)).to.deep.equal(['agent-a', 'agent-b']);
    for (const a of f) {
      expect(a.state).to.equal('ready');
      expect(a.memory.total).to.be.greaterThan(2 ** 30);
      expect(a.cpu.cores).to.be.greaterThan(0);
    }
    const table = await cli('fleet');
    expect(table.stdout).to.match(/agent-a\s+ready\s+cpu/);
  });

  it('fleet - a cordoned agent shows as cordoned at once and receives no new job', async () => {
    const r = await cli('cordon', 'agent-b');
    expect(r.stdout.trim()).to.equal('agent-b: cordoned');
    expect((await fleet()).find((a) => a.agent_id === 'agent-b')?.state).to.equal('cordoned');
    // three at once: agent-b has room for them, and still none goes there
    const spec = await loadSpecFile(tinyJob('cordon', 2, 1000, 40));
    const results: JobResult[] = await Promise.all(
      [1, 2, 3].map(async (n) => client.events.follow(await client.submit(spec, `cordon-job-${n}`), () => {})),
    );
    results.forEach((r, i) => expect(r.training.agentId, `job ${i + 1}`).to.equal('agent-a'));
    expect((await cli('uncordon', 'agent-b')).stdout.trim()).to.equal('agent-b: ready');
  });

  it('fleet - drain: the running job checkpoints and resumes on the other agent; the agent ends drained', async () => {
    // 1,000 steps (about 15 s on 2 cores) leave the drain, sent at step 5, time to land mid-run
    const id = await client.submit(await loadSpecFile(tinyJob('drain', 1000, 1000, 40)), 'drain-job');
    const events: Record<string, unknown>[] = [];
    let drained: string | null = null;
    const done = client.events.follow(id, (e) => {
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
      async () => (await fleetStates(client)).get(drained as unknown as string) === 'drained',
      10_000,
    );
    await cli('uncordon', drained as unknown as string);
  });

  it('fleet - after kill -9 an agent leaves the view within the TTL + 1 s; restarted, it comes back', async () => {
    const victim = agents.get('agent-a') as NonNullable<ReturnType<typeof agents.get>>;
    // the last advert was written at most one interval ago; the TTL counts from it
    victim.kill('SIGKILL');
    const t0 = Date.now();
    await until('agent-a gone', async () => !(await fleetStates(client)).has('agent-a'), ADVERT_TTL_MS + 1000);
    const gone = Date.now() - t0;
    expect(gone).to.be.at.most(ADVERT_TTL_MS + 1000);
    expect((await fleet()).map((a) => a.agent_id)).to.deep.equal(['agent-b']);
    agents.start('agent-a');
    await until('agent-a back', async () => (await fleetStates(client)).get('agent-a') === 'ready', 60_000);
  });
});
