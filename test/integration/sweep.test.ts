// Sweeps on the real stack: two agent processes, the real trainer on the tiny model. A 9-trial learning-rate x rank
// grid, then ASHA over the same space: the same best configuration for far fewer steps, each promoted trial's steps
// after its pause equal to the grid's uninterrupted run of it, trials sharing an agent's memory without overbooking
// it; bad sweeps refused before anything starts.
import { expect } from 'chai';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { LEASES_BUCKET, type JobEvent, type SweepStatus } from '../../shared';
import { readLeases } from '../../scheduler/leases';
import { tinyJob, until } from '../harness/fleet';
import { recordHistory, runCli } from '../harness/stack';
import { useRunningFleet } from '../harness/running-fleet';

const LRS = [0.0005, 0.005, 0.05];
const RANKS = [2, 4, 8];
const MAX_STEPS = 27;
const CAPACITY = 1.2 * 2 ** 30;

/** The tiny job every sweep here varies (one dataset: the grid's trials are the uninterrupted runs of ASHA's). */
let jobDir: string | null = null;

/** A sweep file beside the tiny job's spec. */
function sweepFile(name: string, body: string): string {
  jobDir ??= dirname(tinyJob('sweep', MAX_STEPS, 1000, 64));
  const file = join(jobDir, `${name}.yaml`);
  writeFileSync(
    file,
    `name: ${name}\njob: job.yaml\nspace:\n  training.learning_rate: {grid: [${LRS.join(', ')}]}\n` +
      `  lora.r: {grid: [${RANKS.join(', ')}]}\n${body}`,
  );
  return file;
}

const key = (p: Record<string, unknown>): string => `lr ${p['training.learning_rate']} r ${p['lora.r']}`;

describe('sweep - hyperparameter sweeps on two agents', function () {
  this.timeout(1_200_000);
  // each agent offers room for two tiny trials (about 0.55 GiB each): two may share one agent's memory
  const fleet = useRunningFleet({
    agents: ['sweep-a', 'sweep-b'],
    agentArgs: ['--capacity', String(CAPACITY), '--max-sessions', '4'],
    readyMs: 60_000,
    // generous: four trainers on a loaded 2-core machine lag their heartbeats
    client: { heartbeatTimeoutS: 30 },
  });
  const cli = (...args: string[]): ReturnType<typeof runCli> => runCli(fleet.stack, ...args);

  /** Each step's loss of a job, as its events have it (the newest per step). */
  async function stepLosses(jobId: string): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    await fleet.client.events.read(jobId, (e: JobEvent) => {
      if (e.type === 'step') out.set(e.step, e.loss);
    });
    return out;
  }

  async function run(file: string, id: string): Promise<SweepStatus> {
    const sub = await cli('sweep', 'submit', file, '--id', id);
    expect(sub.status, sub.stderr).to.equal(0);
    const st = await fleet.client.sweeps.wait(id);
    expect(
      st.temporal,
      `${st.failure} ${JSON.stringify(st.trials.map((t) => [t.jobId, t.state, t.message]))}`,
    ).to.equal('COMPLETED');
    return st;
  }

  let grid: SweepStatus;

  it('sweep - bad sweeps are refused at submit, naming the field; nothing starts', async () => {
    const cases: [string, RegExp][] = [
      ['budget: {max_trials: 9, max_steps: 27}\nsearcher: {type: grid}\nbogus: 1\n', /\(top\): unknown key\(s\) bogus/],
      [
        'budget: {max_trials: 9, max_steps: 27, max_concurrent: 0}\n',
        /budget\.max_concurrent: .*(greater|>=|at least|too small)/i,
      ],
    ];
    for (const [body, msg] of cases) {
      const r = await cli('sweep', 'submit', sweepFile('bad-sweep', body), '--id', 'bad-sweep');
      expect(r.status, r.stdout).to.equal(2);
      expect(r.stderr).to.match(msg);
    }
    const file = sweepFile('bad-space', 'budget: {max_trials: 9, max_steps: 27}\n');
    writeFileSync(file, readFileSync(file, 'utf8').replace('lora.r: {grid', 'lora.nope: {grid'));
    const r = await cli('sweep', 'submit', file, '--id', 'bad-space');
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(/space\.lora\.nope: not a field of the job spec/);
    for (const id of ['bad-sweep', 'bad-space'])
      expect((await cli('sweep', 'status', id)).stderr).to.match(new RegExp(`no sweep '${id}'`));
  });

  it('sweep - grid: 9 trials, each to the end; the best is the clearly best learning rate; download SWEEP fetches its adapter', async () => {
    grid = await run(
      sweepFile(
        'grid',
        `budget: {max_trials: 9, max_concurrent: 2, max_steps: ${MAX_STEPS}}\nsearcher: {type: grid}\n`,
      ),
      'sweep-grid',
    );
    expect(grid.trials).to.have.length(9);
    for (const t of grid.trials) expect(t.state, `${t.jobId}: ${t.message}`).to.equal('succeeded');
    expect(grid.stepsTrained).to.equal(9 * MAX_STEPS);
    // one learning rate is clearly best: every one of its trials beats every trial of the others
    const byLr = (lr: number): number[] =>
      grid.trials.filter((t) => t.params['training.learning_rate'] === lr).map((t) => t.final as number);
    const bestLr = grid.best?.params['training.learning_rate'] as number;
    for (const lr of LRS.filter((x) => x !== bestLr))
      expect(Math.max(...byLr(bestLr)), `lr ${bestLr} vs ${lr}`).to.be.below(Math.min(...byLr(lr)));
    console.log(
      `      grid: ${grid.trials.map((t) => `${key(t.params)}: ${t.final?.toFixed(4)}`).join('; ')}; best ${key(grid.best?.params ?? {})}`,
    );
    const out = join(mkdtempSync(join(tmpdir(), 'tunefleet-sweep-')), 'best');
    const dl = await cli('download', 'sweep-grid', '--out', out);
    expect(dl.status, dl.stderr).to.equal(0);
    expect(dl.stderr).to.include(`its best trial is ${grid.best?.jobId}`);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).to.equal(true);
    const shown = await cli('sweep', 'result', 'sweep-grid');
    expect(shown.status, shown.stderr).to.equal(0);
    expect(shown.stdout).to.include(`best so far: ${grid.best?.jobId}`);
  });

  it('sweep - ASHA: the same best configuration for at most half the steps; promoted trials resume as if never paused; trials share an agent without overbooking it', async () => {
    expect(grid, 'the grid ran first').to.not.equal(undefined);
    // the leases while ASHA runs: how many trials share an agent, and never more memory than it offers
    let most = 0;
    let overbooked: string | null = null;
    let sampling = true;
    const kv = await (await fleet.client.nats()).kv(LEASES_BUCKET);
    const sampler = (async () => {
      while (sampling) {
        for (const [agent, held] of await readLeases(kv)) {
          most = Math.max(most, held.leases.length);
          const bytes = held.leases.reduce((n, l) => n + l.bytes, 0);
          if (bytes > CAPACITY) overbooked = `${agent}: ${bytes} > ${CAPACITY}`;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const file = sweepFile(
      'asha',
      `budget: {max_trials: 9, max_concurrent: 4, max_steps: ${MAX_STEPS}}\n` +
        'searcher: {type: asha, min_steps: 3, reduction_factor: 3, seed: 1}\n',
    );
    let asha: SweepStatus;
    try {
      asha = await run(file, 'sweep-asha');
    } finally {
      sampling = false;
      await sampler;
    }
    expect(asha.rungs).to.deep.equal([3, 9, 27]);
    expect(asha.trials).to.have.length(9);
    expect(key(asha.best?.params ?? {})).to.equal(key(grid.best?.params ?? {}));
    expect(asha.best?.rung).to.equal(2);
    expect(asha.stepsTrained).to.be.at.most(grid.stepsTrained / 2);
    // asynchronous: a rung promotes from the results it has so far, so more than one trial may reach the last rung
    const finished = asha.trials.filter((t) => t.state === 'succeeded');
    expect(finished.length).to.be.within(1, 3);
    expect(asha.trials.filter((t) => t.state === 'stopped_early')).to.have.length(9 - finished.length);
    // each promoted trial's steps after a pause equal the grid's uninterrupted run of the same configuration
    let compared = 0;
    let largest = 0;
    for (const t of asha.trials.filter((x) => x.rungs.length > 1)) {
      const twin = grid.trials.find((g) => key(g.params) === key(t.params));
      const [mine, theirs] = [await stepLosses(t.jobId), await stepLosses(twin?.jobId ?? '')];
      for (const [step, loss] of mine) {
        if (step <= 3) continue;
        const other = theirs.get(step);
        expect(other, `${t.jobId} step ${step}`).to.be.a('number');
        largest = Math.max(largest, Math.abs(loss - (other as number)));
        compared += 1;
      }
    }
    expect(compared).to.be.greaterThan(0);
    expect(largest).to.be.below(1e-4);
    // a stopped trial says so, with its numbers; it has no adapter
    const stopped = asha.trials.find((t) => t.state === 'stopped_early');
    const res = await cli('result', stopped?.jobId ?? '');
    expect(res.status).to.not.equal(0);
    expect(res.stderr).to.match(/stopped early at step \d+ \(eval loss [\d.]+\): it has no adapter/);
    expect(most, 'two trials on one agent at some moment').to.be.at.least(2);
    expect(overbooked).to.equal(null);
    console.log(
      `      asha: best ${key(asha.best?.params ?? {})} (grid's too); ${asha.stepsTrained} steps vs the grid's ` +
        `${grid.stepsTrained} (${((100 * asha.stepsTrained) / grid.stepsTrained).toFixed(0)} %); ` +
        `${compared} steps after a resume, largest loss difference vs the grid ${largest.toExponential(1)}; ` +
        `up to ${most} trials on one agent; ${finished.length} trial(s) reached the last rung`,
    );
    // the sweep's history and a promoted trial's (paused, promoted, paused, promoted, finished) for the replay test
    await recordHistory(fleet.client.client, 'sweep-asha', 'sweep-asha');
    const promoted = asha.trials.find((t) => t.state === 'succeeded');
    if (promoted) await recordHistory(fleet.client.client, promoted.jobId, 'sweep-trial-promoted');
    await until(
      'no lease is left',
      async () => [...(await readLeases(kv)).values()].every((h) => !h.leases.length),
      30_000,
    );
  });
});
