// Two real agent processes on a real stack: the fleet view, kill -9, cordon, drain.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADVERT_TTL_MS, type JobResult } from '../../shared';
import { Stack, loadSpecFile } from '../../scheduler/client';
import { startControlWorker, type RunningWorker } from '../../scheduler/worker';
import { ROOT, TINY_MODEL, cliEnv, runCli, startTestStack, type TestStack } from '../harness/stack';

describe('fleet - two real agents', function () {
  this.timeout(600_000);
  let stack: TestStack;
  let worker: RunningWorker;
  let client: Stack;
  const agents = new Map<string, ChildProcess>();

  const cli = (...args: string[]): ReturnType<typeof runCli> => runCli(stack, ...args);
  const fleet = async (): Promise<{ agent_id: string; state: string; memory: { total: number }; cpu: { cores: number }; sessions: unknown[] }[]> => {
    const r = await cli('fleet', '--json');
    expect(r.status, r.stderr).to.equal(0);
    return JSON.parse(r.stdout) as never;
  };
  const startAgentProcess = (id: string): ChildProcess => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'tunefleet'), 'agent', 'start', '--id', id, '--advert-interval', '500'], { env: cliEnv(stack), stdio: 'ignore' });
    agents.set(id, child);
    return child;
  };
  const until = async (what: string, check: () => Promise<boolean>, ms: number): Promise<number> => {
    const t0 = Date.now();
    while (!(await check())) {
      if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return Date.now() - t0;
  };
  const job = (name: string, maxSteps: number): string => {
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-fleet-'));
    const records = Array.from({ length: 40 }, (_, i) => ({ text: `record ${i} of the fleet test, word ${i * 7}` }));
    writeFileSync(join(dir, 'data.jsonl'), records.map((r) => JSON.stringify(r)).join('\n') + '\n');
    writeFileSync(join(dir, 'job.yaml'), `name: ${name}\nmodel: ${TINY_MODEL}\nmethod: lora\ndataset: {path: data.jsonl, eval_fraction: 0.1}\ntraining: {max_steps: ${maxSteps}, batch_size: 4, learning_rate: 0.01, checkpoint_every: 1000}\nevaluation: {exact_match: false}\n`);
    return join(dir, 'job.yaml');
  };

  before(async () => {
    stack = await startTestStack();
    worker = await startControlWorker(stack.cfg, () => {});
    client = await Stack.connect(stack.cfg);
    startAgentProcess('agent-a');
    startAgentProcess('agent-b');
    await until('both agents advertise', async () => (await fleet()).length === 2, 60_000);
  });

  after(async () => {
    for (const a of agents.values()) if (a.exitCode === null) a.kill('SIGKILL');
    await client?.close();
    await worker?.stop();
    await stack?.stop();
  });

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
    for (const n of [1, 2, 3]) {
      const id = await client.submit(await loadSpecFile(job('cordon', 2)), `cordon-job-${n}`);
      const result: JobResult = await client.follow(id, () => {});
      expect(result.training.agentId, `job ${n}`).to.equal('agent-a');
    }
    expect((await cli('uncordon', 'agent-b')).stdout.trim()).to.equal('agent-b: ready');
  });

  it('fleet - drain: the running job checkpoints and resumes on the other agent; the agent ends drained', async () => {
    const id = await client.submit(await loadSpecFile(job('drain', 4000)), 'drain-job');
    const events: Record<string, unknown>[] = [];
    let drained: string | null = null;
    const done = client.follow(id, (e) => {
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
    expect(steps[steps.length - 1]).to.equal(4000);
    await until('drained', async () => (await fleet()).find((a) => a.agent_id === drained)?.state === 'drained', 10_000);
    await cli('uncordon', drained as unknown as string);
  });

  it('fleet - after kill -9 an agent leaves the view within the TTL + 1 s; restarted, it comes back', async () => {
    const victim = agents.get('agent-a') as ChildProcess;
    // the last advert was written at most one interval ago; the TTL counts from it
    victim.kill('SIGKILL');
    const t0 = Date.now();
    await until('agent-a gone', async () => !(await fleet()).some((a) => a.agent_id === 'agent-a'), ADVERT_TTL_MS + 1000);
    const gone = Date.now() - t0;
    expect(gone).to.be.at.most(ADVERT_TTL_MS + 1000);
    expect((await fleet()).map((a) => a.agent_id)).to.deep.equal(['agent-b']);
    startAgentProcess('agent-a');
    await until('agent-a back', async () => (await fleet()).some((a) => a.agent_id === 'agent-a' && a.state === 'ready'), 60_000);
  });
});
