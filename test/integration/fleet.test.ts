// Two real agent processes on a real stack: the fleet view, kill -9, cordon, drain.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADVERT_TTL_MS, estimateForSpec, shapeFromConfig, type JobResult, type ModelShape } from '../../shared';
import { downloadAdapter, loadSpecFile } from '../../scheduler/cli/client';
import {
  adapterDiff,
  commitOf,
  fakeGpuHost,
  fleetStates,
  processEnv,
  recordedGpuHost,
  tinyJob,
  until,
} from '../harness/fleet';
import { TINY_MODEL, runCli } from '../harness/stack';
import { useRunningFleet } from '../harness/running-fleet';

/** A tiny job pinned to the gpu-host agent, long enough to be running when the test looks. */
function pinned(name: string): string {
  const path = tinyJob(name, 100_000, 100_000);
  writeFileSync(path, readFileSync(path, 'utf8') + 'selector: {host: gpu-host}\n');
  return path;
}

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
    await fleet.agents.start('agent-a');
    await until('agent-a back', async () => (await fleetStates(fleet.client)).get('agent-a') === 'ready', 60_000);
  });

  it('fleet - an agent given a written-out 8-GPU host offers 8 devices: eight one-device jobs run at once, each with its own CUDA_VISIBLE_DEVICES; a ninth waits and explain names the devices', async () => {
    // each device holds one of these jobs and not two: 1.5 times the job's estimate on a GPU
    const spec = (await loadSpecFile(pinned('devices-0'))).spec;
    const config = JSON.parse(readFileSync(join(fleet.stack.home, 'models', TINY_MODEL, 'config.json'), 'utf8'));
    const need = estimateForSpec(spec, shapeFromConfig(config) as ModelShape, 'cuda').total;
    const smi = fakeGpuHost(8, Math.ceil((1.5 * need) / 2 ** 20));
    await fleet.agents.start('gpu-host', { env: { TUNEFLEET_NVIDIA_SMI: smi }, args: ['--max-sessions', '9'] });
    await until(
      'gpu-host offers 8 devices',
      async () => (await fleetJson()).find((a) => a.agent_id === 'gpu-host')?.devices.length === 8,
      60_000,
    );
    const ids: string[] = [];
    for (let i = 0; i < 9; i++)
      ids.push(await fleet.client.submit(await loadSpecFile(pinned(`devices-${i}`)), `devices-${i}`));
    try {
      // every trainer's environment, read from /proc while they run
      const pinnedTo = (): Map<string, string> => {
        const out = new Map<string, string>();
        for (const line of execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n')) {
          const id = ids.find((j) => line.includes('tunefleet_trainer train') && line.includes(`/jobs/${j}/attempt-`));
          const visible = id ? processEnv(Number(line.trim().split(/\s+/)[0]))?.CUDA_VISIBLE_DEVICES : undefined;
          if (id && visible) out.set(id, visible);
        }
        return out;
      };
      await until('eight trainers run at once', async () => pinnedTo().size === 8, 180_000);
      const running = pinnedTo();
      expect(new Set(running.values()).size, [...running.values()].join(' ')).to.equal(8);
      for (const v of running.values()) expect(v).to.match(/^GPU-0000000[0-7]-aaaa-bbbb-cccc-00000000000[0-7]$/);
      const waiting = ids.find((j) => !running.has(j)) as string;
      await until(
        'the ninth is queued',
        async () => (await fleet.client.describe(waiting)).status?.state === 'queued',
        60_000,
      );
      expect((await fleet.client.describe(waiting)).status?.queuePosition).to.equal(1);
      // the operator's view says which job runs on which device
      await until(
        'fleet shows jobs on devices',
        async () => /devices-\d@GPU \d/.test((await cli('fleet')).stdout),
        10_000,
      );
      const explained = await cli('explain', waiting);
      expect(explained.stdout).to.match(/gpu-host.*needs .* on one device; free: GPU 0 .*GPU 7 /s);
    } finally {
      for (const id of ids) await fleet.client.cancel(id).catch(() => {});
      for (const id of ids)
        await until('cancelled', async () => (await fleet.client.describe(id)).temporal !== 'RUNNING', 60_000);
      fleet.agents.get('gpu-host')?.kill('SIGTERM');
    }
  });

  it('fleet - an agent on a MIG host (instances of 10, 20 and 40 GB) offers the instances; a job needing 13.7 GiB is pinned to the 20 GB instance by its MIG UUID', async () => {
    await fleet.agents.start('mig-host', { env: { TUNEFLEET_NVIDIA_SMI: recordedGpuHost('a100-mig-mixed') } });
    await until(
      'mig-host offers its instances',
      async () => (await fleetJson()).find((a) => a.agent_id === 'mig-host')?.devices.length === 3,
      60_000,
    );
    const devices = (await fleetJson()).find((a) => a.agent_id === 'mig-host')?.devices ?? [];
    expect(devices.map((d) => d.kind)).to.deep.equal(['mig', 'mig', 'mig']);
    // 16 sequences of up to 65,536 tokens at once with the plain loss (its logits over the whole micro-batch): the
    // estimate outgrows the 10 GB instance (the tiny records are short, so the trainer itself stays small on this CPU)
    const path = tinyJob('mig', 2, 2);
    const text = readFileSync(path, 'utf8').replace(
      /training: \{[^}]*\}/,
      'training: {max_steps: 2, batch_size: 16, micro_batch_size: 16, max_seq_len: 65536, learning_rate: 0.01, ' +
        'chunked_loss: false, packing: false}',
    );
    writeFileSync(path, `${text}selector: {host: mig-host}\n`);
    const spec = await loadSpecFile(path);
    const config = JSON.parse(readFileSync(join(fleet.stack.home, 'models', TINY_MODEL, 'config.json'), 'utf8'));
    const need = estimateForSpec(spec.spec, shapeFromConfig(config) as ModelShape, 'cuda').total;
    const [small, mid] = [...devices].sort((a, b) => a.memory_total - b.memory_total);
    expect(need).to.be.greaterThan(small?.memory_total ?? 0);
    expect(need).to.be.at.most(mid?.memory_total ?? 0);
    const id = await fleet.client.submit(spec, 'mig-job');
    const events: Record<string, unknown>[] = [];
    try {
      await fleet.client.events.follow(id, (e) => events.push(e));
      const started = events.find((e) => e.type === 'started');
      expect(started?.agent_id).to.equal('mig-host');
      expect(started?.visible_devices).to.equal(mid?.uuid);
      expect(mid?.uuid).to.match(/^MIG-/);
    } finally {
      fleet.agents.get('mig-host')?.kill('SIGTERM');
    }
  });

  it('fleet - a job asking for more GPUs than any agent has fails at once, with the numbers', async () => {
    const path = tinyJob('too-many-gpus', 10, 10);
    writeFileSync(path, readFileSync(path, 'utf8') + 'resources: {gpus: 4}\n');
    const id = await fleet.client.submit(await loadSpecFile(path), 'too-many-gpus');
    const failed = await fleet.client.events
      .follow(id, () => {})
      .then(
        () => null,
        (e: unknown) => e as Error,
      );
    expect(failed?.message).to.match(/needs 4 GPUs on one host, the most any agent has is \d \(/);
    expect((await fleet.client.describe(id)).status?.attempt ?? 1).to.equal(1);
  });

  it('fleet - a two-process job (gpus: 2, gloo on the CPU) on a written-out 2-GPU host: kill -9 of its agent, it resumes on one process elsewhere from the committed checkpoint, each later step trained once, the adapter equal to an uninterrupted run', async () => {
    const steps = 120;
    const every = 30;
    // dropout 0: a data-parallel run's dropout masks depend on its number of processes
    // the same data (tinyJob writes records from the name) and settings for both runs
    const job = (resources: string): string => {
      const path = tinyJob('ddp-kill9', steps, every);
      const text = readFileSync(path, 'utf8').replace('training: {', 'training: {micro_batch_size: 2, ');
      writeFileSync(path, `${text}lora: {dropout: 0}\nresources: ${resources}\n`);
      return path;
    };
    const spec = await loadSpecFile(job('{gpus: 2, min_gpus: 1}'));
    const config = JSON.parse(readFileSync(join(fleet.stack.home, 'models', TINY_MODEL, 'config.json'), 'utf8'));
    const need = estimateForSpec(spec.spec, shapeFromConfig(config) as ModelShape, 'cuda').total;
    await fleet.agents.start('gpu-2x', {
      env: { TUNEFLEET_NVIDIA_SMI: fakeGpuHost(2, Math.ceil((2 * need) / 2 ** 20)) },
    });
    await until(
      'gpu-2x offers 2 devices',
      async () => (await fleetJson()).find((a) => a.agent_id === 'gpu-2x')?.devices.length === 2,
      60_000,
    );
    const id = await fleet.client.submit(spec, 'ddp-kill9');
    const events: Record<string, unknown>[] = [];
    const done = fleet.client.events.follow(id, (e) => events.push(e));
    await until('first commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= every, 180_000);
    const first = events.find((e) => e.type === 'started');
    expect(first?.agent_id, 'only gpu-2x has two devices').to.equal('gpu-2x');
    expect(first?.world_size).to.equal(2);
    expect(String(first?.visible_devices).split(',')).to.have.length(2);
    fleet.agents.get('gpu-2x')?.kill('SIGKILL');
    // the uninterrupted run of the same job on one process, on a live agent (the selector only steers placement)
    const baseline1 = await loadSpecFile(job('{gpus: 1}'));
    const baselineId = await fleet.client.submit(
      { ...baseline1, spec: { ...baseline1.spec, selector: { host: 'agent-a' } } },
      'ddp-base',
    );
    const [result, baseline] = await Promise.all([done, fleet.client.events.follow(baselineId, () => {})]);
    expect(baseline.training.attempt).to.equal(1);
    expect(result.training.agentId).to.not.equal('gpu-2x');
    const last = events.filter((e) => Number(e.attempt) === result.training.attempt);
    const started = last.find((e) => e.type === 'started');
    expect(started?.world_size, 'resumed on one process').to.equal(1);
    const resumed = Number(started?.resumed_from_step);
    expect(resumed).to.be.at.least(every);
    const trained = last.filter((e) => e.type === 'step').map((e) => Number(e.step));
    expect(trained).to.deep.equal(Array.from({ length: steps - resumed }, (_, i) => resumed + 1 + i));
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-ddp-adapters-'));
    await downloadAdapter(fleet.client, baselineId, join(dir, 'baseline'));
    await downloadAdapter(fleet.client, id, join(dir, 'recovered'));
    const diff = adapterDiff(join(dir, 'baseline'), join(dir, 'recovered'));
    expect(diff, 'max |uninterrupted - recovered| over the adapter tensors').to.be.lessThan(1e-4);
    console.log(
      `      2 processes on gpu-2x to step ${resumed}, then 1 process on ${result.training.agentId}: ` +
        `adapter max diff ${diff.toExponential(1)} vs an uninterrupted one-process run`,
    );
  });
});
