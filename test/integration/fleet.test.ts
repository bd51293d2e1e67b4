// Two real agent processes on a real stack: the fleet view, kill -9, cordon, drain.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADVERT_TTL_MS, estimateForSpec, shapeFromConfig, type JobResult, type ModelShape } from '../../shared';
import { loadSpecFile } from '../../scheduler/cli/client';
import { fakeGpuHost, fleetStates, processEnv, tinyJob, until } from '../harness/fleet';
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
    fleet.agents.start('agent-a');
    await until('agent-a back', async () => (await fleetStates(fleet.client)).get('agent-a') === 'ready', 60_000);
  });

  it('fleet - an agent given a written-out 8-GPU host offers 8 devices: eight one-device jobs run at once, each with its own CUDA_VISIBLE_DEVICES; a ninth waits and explain names the devices', async () => {
    // each device holds one of these jobs and not two: 1.5 times the job's estimate on a GPU
    const spec = (await loadSpecFile(pinned('devices-0'))).spec;
    const config = JSON.parse(readFileSync(join(fleet.stack.home, 'models', TINY_MODEL, 'config.json'), 'utf8'));
    const need = estimateForSpec(spec, shapeFromConfig(config) as ModelShape, 'cuda').total;
    const smi = fakeGpuHost(8, Math.ceil((1.5 * need) / 2 ** 20));
    fleet.agents.start('gpu-host', { env: { TUNEFLEET_NVIDIA_SMI: smi }, args: ['--max-sessions', '9'] });
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
});
