// Gangs across hosts on a real stack: three agent processes on this machine (each a "host"
// with its own rendezvous port range), 2-node LoRA jobs on the tiny model trained with gloo
// on the CPU (torchrun --nnodes 2, static rendezvous at rank 0). Scenario 19 of the chaos
// table (kill -9 of a gang's rank-1 agent) is here; every case runs in `npm test`.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LEASES_BUCKET, type JobResult } from '../../shared';
import { downloadAdapter, loadSpecFile } from '../../scheduler/cli/client';
import { readLeases } from '../../scheduler/leases';
import { place } from '../../scheduler/placement';
import { openFleet } from '../../scheduler/cli/fleetcmd';
import { rejection } from '../harness/expect';
import { adapterDiff, assertMonotonic, commitHistory, commitOf, readyAgents, tinyJob, until } from '../harness/fleet';
import { useRunningFleet } from '../harness/running-fleet';
import { TINY_MODEL, installedHome, runCli } from '../harness/stack';

const AGENTS = ['gang-a', 'gang-b', 'gang-c'];
/** each agent's rendezvous ports: its own ten, away from the ephemeral range and from torch's 29500 */
const PORT_BASE = 20_000 + Math.floor(Math.random() * 500) * 20;
const portsOf = (id: string): [number, number] => {
  const lo = PORT_BASE + AGENTS.indexOf(id) * 10;
  return [lo, lo + 9];
};
type Ev = Record<string, unknown>;

/** A 2-node (or `nodes`) LoRA job of `steps` steps on the tiny model; the same name, the same data. */
function gangJob(name: string, steps: number, every: number, nodes = 2): string {
  const path = tinyJob(name, steps, every);
  // dropout 0: a data-parallel run's dropout masks depend on its number of processes
  writeFileSync(path, `${readFileSync(path, 'utf8')}lora: {dropout: 0}\nresources: {nodes: ${nodes}}\n`);
  return path;
}

/** Loads `dir` as a PEFT adapter over the tiny model with stock PEFT; returns its trainable tensor count. */
function loadsInPeft(model: string, dir: string): number {
  const out = execFileSync(
    join(installedHome(), 'bin', 'python'),
    [
      '-c',
      `
import sys
from peft import PeftModel
from transformers import AutoModelForCausalLM
m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[1]), sys.argv[2])
print(sum(1 for n, _ in m.named_parameters() if "lora_" in n))`,
      model,
      dir,
    ],
    { encoding: 'utf8', env: { ...process.env, HF_HUB_OFFLINE: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return Number(out.trim());
}

const stepsOf = (events: Ev[], attempt: number): Ev[] =>
  events.filter((e) => e.type === 'step' && Number(e.attempt) === attempt);

describe('gangs - multi-node jobs on three agent processes', function () {
  this.timeout(900_000);
  const fleet = useRunningFleet({ agents: [], readyMs: 60_000 });
  const args = (id: string): string[] => {
    const [lo, hi] = portsOf(id);
    return [
      ...['--max-sessions', '1', '--trainer-threads', '1', '--heartbeat', '1000'],
      ...['--rendezvous-address', '127.0.0.1', '--rendezvous-ports', `${lo}-${hi}`],
    ];
  };
  const startAgent = (id: string): Promise<unknown> => fleet.agents.start(id, { args: args(id) });
  const rows: string[] = [];

  before(async () => {
    for (const id of AGENTS) await startAgent(id);
    await until('three agents advertise', async () => (await readyAgents(fleet.client)).length === 3, 90_000);
  });
  after(() => {
    if (rows.length) console.log(`\n      gangs:\n${rows.map((r) => `        ${r}`).join('\n')}`);
  });

  const modelDir = (): string => join(fleet.stack.home, 'models', TINY_MODEL);
  /** the uninterrupted 2-node run the chaos case compares with (its adapter) */
  let reference: string | null = null;
  const STEPS = 120;
  const EVERY = 30;

  it('[ci] a 2-node job on 3 agents trains with both ranks, shown with their ranks; the losses of one process within 1e-4, the adapter equal and loadable in stock PEFT', async () => {
    const gang = await loadSpecFile(gangJob('gang', STEPS, EVERY));
    const one = await loadSpecFile(gangJob('gang', STEPS, EVERY, 1));
    const id = await fleet.client.submit(gang, 'gang-full');
    const events: Ev[] = [];
    const done = fleet.client.events.follow(id, (e) => events.push(e));
    // both members run (each agent reports its own session with its rank), and the CLI shows them
    await until(
      'the gang is training',
      async () => (await fleet.client.describe(id)).status?.members?.length === 2 && stepsOf(events, 1).length > 3,
      240_000,
    );
    const members = (await fleet.client.describe(id)).status?.members ?? [];
    expect(members.map((m) => m.rank)).to.deep.equal([0, 1]);
    const status = await runCli(fleet.stack, 'status', id);
    expect(status.stdout).to.include(`${members[0]?.agentId} (rank 0), ${members[1]?.agentId} (rank 1)`);
    const list = await runCli(fleet.stack, 'list');
    expect(list.stdout).to.include(`${members[0]?.agentId}+${members[1]?.agentId}`);
    const table = await runCli(fleet.stack, 'fleet');
    expect(table.stdout).to.match(new RegExp(`${members[1]?.agentId} .*${id} rank 1/2`));
    // the one-process run of the same job, on the third agent, at the same time
    const oneId = await fleet.client.submit(one, 'gang-one');
    const [result, single] = (await Promise.all([done, fleet.client.events.follow(oneId, () => {})])) as [
      JobResult,
      JobResult,
    ];
    expect(result.training.attempt).to.equal(1);
    const started = events.find((e) => e.type === 'started');
    expect(started?.world_size).to.equal(2);
    expect(
      events.some(
        (e) =>
          e.type === 'log' &&
          /^gang of 2: rank 0 \S+, rank 1 \S+ \(rendezvous 127\.0\.0\.1:\d+\)$/.test(String(e.message)),
      ),
    ).to.equal(true);
    // every step once, from rank 0 alone (the other rank's steps go to its own agent's heartbeat)
    const gangSteps = stepsOf(events, 1);
    expect(gangSteps.map((e) => Number(e.step))).to.deep.equal(Array.from({ length: STEPS }, (_, i) => i + 1));
    const oneEvents: Ev[] = [];
    await fleet.client.events.follow(oneId, (e) => oneEvents.push(e));
    const oneSteps = stepsOf(oneEvents, 1);
    let worst = 0;
    for (const [i, e] of gangSteps.entries()) {
      const a = Number(oneSteps[i]?.loss);
      worst = Math.max(worst, Math.abs(a - Number(e.loss)) / Math.abs(a));
    }
    expect(worst, 'largest relative difference of a step loss, 2 nodes vs 1 process').to.be.lessThan(1e-4);
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-gang-'));
    await downloadAdapter(fleet.client, id, join(dir, 'gang'));
    await downloadAdapter(fleet.client, oneId, join(dir, 'one'));
    const diff = adapterDiff(join(dir, 'gang'), join(dir, 'one'));
    expect(diff).to.be.lessThan(1e-4);
    expect(loadsInPeft(modelDir(), join(dir, 'gang'))).to.be.greaterThan(0);
    expect(single.training.attempt).to.equal(1);
    reference = join(dir, 'gang');
    rows.push(
      `2 nodes (${members.map((m) => m.agentId).join(' + ')}) vs 1 process: ${STEPS} steps, largest relative ` +
        `loss difference ${worst.toExponential(1)}, adapter max diff ${diff.toExponential(1)}; ` +
        `training took ${result.training.seconds.toFixed(1)} s (1 process: ${single.training.seconds.toFixed(1)} s)`,
    );
  });

  it('[ci] 19 kill -9 of the rank-1 agent: rank 0 stopped at once, the gang re-placed on two live agents, resumed from the commit under a new epoch; the adapter equals the uninterrupted run', async () => {
    expect(reference, 'the uninterrupted run of the first case').to.not.equal(null);
    const spec = await loadSpecFile(gangJob('gang', STEPS, EVERY));
    const id = await fleet.client.submit(spec, 'gang-kill');
    const events: Ev[] = [];
    const seen = new Map<string, number>();
    const done = fleet.client.events.follow(id, (e) => {
      events.push(e);
      if (e.type === 'started') seen.set(`started-${String(e.attempt)}`, Date.now());
    });
    await until('first commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= EVERY, 240_000);
    const members = (await fleet.client.describe(id)).status?.members ?? [];
    const [rank0, rank1] = [members[0]?.agentId as string, members[1]?.agentId as string];
    const killedAt = Date.now();
    fleet.agents.get(rank1)?.kill('SIGKILL');
    // rank 0's session ends (its agent killed its trainer): its advert no longer reports attempt 1
    const view = await openFleet(await fleet.client.nats());
    let rank0Stopped: number;
    try {
      rank0Stopped = await until(
        'rank 0 stops its trainer',
        async () =>
          !(view.snapshot().find((e) => e.advert.agent_id === rank0)?.advert.sessions ?? []).some(
            (s) => s.job_id === id && s.attempt === 1,
          ),
        60_000,
      );
    } finally {
      await view.stop();
    }
    const replaced = await until(
      'placed again',
      async () => ((await fleet.client.describe(id)).status?.attempt ?? 0) >= 2,
      120_000,
    );
    const again = (await fleet.client.describe(id)).status?.members ?? [];
    await until('attempt 2 started', async () => seen.has('started-2'), 120_000);
    const resumedAfter = (seen.get('started-2') as number) - killedAt;
    const result = await done;
    expect(result.training.attempt).to.equal(2);
    expect(again.map((m) => m.agentId)).to.not.include(rank1);
    expect(again).to.have.length(2);
    const started = events.find((e) => e.type === 'started' && Number(e.attempt) === 2);
    const from = Number(started?.resumed_from_step);
    expect(from).to.be.at.least(EVERY);
    const lost = Math.max(...stepsOf(events, 1).map((e) => Number(e.step))) - from;
    expect(stepsOf(events, 2).map((e) => Number(e.step))).to.deep.equal(
      Array.from({ length: STEPS - from }, (_, i) => from + 1 + i),
    );
    // no commit of the old epoch after the new one claimed the job
    const history = await commitHistory(fleet.client, id);
    assertMonotonic(history);
    expect(history.at(-1)?.epoch).to.equal(2);
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-gang-kill-'));
    await downloadAdapter(fleet.client, id, join(dir, 'recovered'));
    const diff = adapterDiff(reference as string, join(dir, 'recovered'));
    expect(diff, 'max |uninterrupted - recovered| over the adapter tensors').to.be.lessThan(1e-4);
    rows.push(
      `19 kill -9 of rank 1 (${rank1}) at step ~${EVERY}: rank 0 (${rank0}) stopped ${(rank0Stopped / 1000).toFixed(1)} s ` +
        `after the kill; placed again (${again.map((m) => `rank ${m.rank} ${m.agentId}`).join(', ')}) after ` +
        `${(replaced / 1000 + rank0Stopped / 1000).toFixed(1)} s; resumed from step ${from} (${lost} steps lost) ` +
        `${(resumedAfter / 1000).toFixed(1)} s after the kill; adapter max diff ${diff.toExponential(1)}`,
    );
    await startAgent(rank1);
    await until('the killed agent is back', async () => (await readyAgents(fleet.client)).length === 3, 90_000);
  });

  it('[ci] two 2-node gangs at once on 3 agents: both finish, one after the other, and neither ever holds part of its leases beyond one placement', async () => {
    const spec = await loadSpecFile(gangJob('gang-pair', 8, 1000));
    const ids = [await fleet.client.submit(spec, 'gang-pair-1'), await fleet.client.submit(spec, 'gang-pair-2')];
    const kv = await (await fleet.client.nats()).kv(LEASES_BUCKET);
    // sample the leases: a job holding a lease on only one agent must not stay so across samples for long
    let watching = true;
    let longestPartialMs = 0;
    let samples = 0;
    const partialSince = new Map<string, number>();
    const watch = (async () => {
      while (watching) {
        const now = Date.now();
        const held = new Map<string, number>();
        for (const [, a] of await readLeases(kv, () => {}))
          for (const l of a.leases.filter((x) => x.purpose === 'train'))
            held.set(`${l.jobId}#${l.attempt}`, (held.get(`${l.jobId}#${l.attempt}`) ?? 0) + 1);
        for (const [k, n] of held) {
          if (n === 1) partialSince.set(k, partialSince.get(k) ?? now);
          else partialSince.delete(k);
        }
        for (const k of [...partialSince.keys()]) if (!held.has(k)) partialSince.delete(k);
        for (const t of partialSince.values()) longestPartialMs = Math.max(longestPartialMs, now - t);
        samples += 1;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const events = new Map<string, Ev[]>(ids.map((i) => [i, []]));
    try {
      await Promise.all(ids.map((i) => fleet.client.events.follow(i, (e) => events.get(i)?.push(e))));
    } finally {
      watching = false;
      await watch;
    }
    // the training of one ended before the other's began (3 agents hold one gang of 2 at a time)
    const span = (i: string): [number, number] => {
      const t = (events.get(i) ?? [])
        .filter((e) => e.type === 'started' || e.type === 'step')
        .map((e) => Number(e.time));
      return [Math.min(...t), Math.max(...t)];
    };
    const [s1, s2] = [span(ids[0] as string), span(ids[1] as string)];
    const [first, second] = s1[0] < s2[0] ? [s1, s2] : [s2, s1];
    expect(second[0], 'the second gang starts training after the first one ended').to.be.greaterThan(first[1]);
    expect(samples).to.be.greaterThan(20);
    expect(longestPartialMs, 'longest time a gang held part of its leases (ms)').to.be.lessThan(1_000);
    rows.push(
      `two gangs on 3 agents: one after the other (second started ${(second[0] - first[1]).toFixed(1)} s after the ` +
        `first's last step); ${samples} lease samples, a partial set seen for at most ${longestPartialMs} ms`,
    );
  });

  it('[ci] a gang no 4 agents could ever hold is refused at submit with the numbers; nothing is started', async () => {
    const spec = await loadSpecFile(gangJob('gang-never', 4, 1000, 4));
    const e = await rejection(fleet.client.submit(spec, 'gang-never'), 'a gang of 4 on 3 agents');
    expect(e.message).to.match(
      /^no 4 agents can ever run this gang: needs 4 agents with 1 free device each \(.*\); 3 of 3 could/,
    );
    const r = await runCli(fleet.stack, 'status', 'gang-never');
    expect(r.status).to.not.equal(0);
  });

  it('[ci] a gang whose rank-0 rendezvous port is taken fails that attempt with a clear error and is placed again', async () => {
    const spec = await loadSpecFile(gangJob('gang-port', 6, 1000));
    // the agent this job's gang gets for rank 0 on this fleet (placement is a pure function of adverts and job)
    const id = 'gang-port';
    const view = await openFleet(await fleet.client.nats());
    let rank0 = '';
    try {
      const adverts = view.snapshot().map((e) => e.advert);
      const idle = { bytes: 0, sessions: 0, onDevice: () => 0 };
      const d = place(
        { adverts, reserved: () => idle, checkpointAgent: null },
        { jobId: id, spec: spec.spec, exclude: [] },
      );
      rank0 = d.members?.[0]?.agentId ?? '';
    } finally {
      await view.stop();
    }
    expect(rank0, 'the gang has a rank 0').to.be.oneOf(AGENTS);
    // another process holds every port of its range
    const [lo, hi] = portsOf(rank0);
    const servers: Server[] = [];
    for (let p = lo; p <= hi; p++)
      servers.push(
        await new Promise<Server>((res) => {
          const s = createServer();
          s.listen(p, () => res(s));
        }),
      );
    let result: JobResult;
    try {
      await fleet.client.submit(spec, id);
      result = await fleet.client.events.follow(id, () => {});
    } finally {
      for (const s of servers) s.close();
    }
    // what the workflow was told: the failures of its activities, from its history
    const failures: { type: string; message: string }[] = [];
    for (const e of (await fleet.client.client.workflow.getHandle(id).fetchHistory()).events ?? []) {
      const f = e.activityTaskFailedEventAttributes?.failure;
      if (f) failures.push({ type: f.applicationFailureInfo?.type ?? '', message: f.message ?? '' });
    }
    const said = failures.find((f) => f.type === 'RENDEZVOUS_PORT_TAKEN')?.message;
    expect(said, JSON.stringify(failures)).to.match(
      new RegExp(`^rendezvous port \\d+ on ${rank0} \\(127\\.0\\.0\\.1\\) cannot be opened \\(EADDRINUSE\\)`),
    );
    expect(result.training.attempt, JSON.stringify(failures)).to.equal(2);
    expect(result.training.agentId).to.not.equal(rank0);
    const members = (await fleet.client.decisions(id))
      .filter((d) => d.purpose === 'train' && d.members)
      .map((d) => d.members);
    expect(
      members[1]?.map((m) => m.agentId),
      'attempt 2 without the agent whose port was taken',
    ).to.not.include(rank0);
    rows.push(`rendezvous port taken on ${rank0}: "${said?.slice(0, 140)}…"; finished on attempt 2`);
  });
});
