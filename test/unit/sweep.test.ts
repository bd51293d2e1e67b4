// Sweep specs (validation naming each field), the trials each searcher proposes, ASHA's rungs and decisions.
import { expect } from 'chai';
import { TunefleetErrors } from '../../shared/errors';
import {
  ashaNext,
  bestTrial,
  checkSweep,
  proposeTrials,
  rungs,
  type SweepSpec,
  type SweepStatus,
  type TrialState,
} from '../../shared/sweep';
import { formatSweep, sweepSvg } from '../../scheduler/cli/commands/sweep';

const JOB = { name: 'lr', model: 'tiny', method: 'lora', dataset: { path: 'data.jsonl' } };

const sweep = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  name: 'lr-rank',
  job: 'job.yaml',
  space: { 'training.learning_rate': { grid: [1e-4, 1e-3, 1e-2] }, 'lora.r': { choice: [4, 8, 16] } },
  budget: { max_trials: 9, max_steps: 60 },
  ...extra,
});

function problems(raw: Record<string, unknown>): string[] {
  try {
    checkSweep(raw, JOB, 'sweep.yaml');
  } catch (e) {
    expect(e).to.be.instanceOf(TunefleetErrors);
    return (e as TunefleetErrors).problems.map((p) => p.describe());
  }
  throw new Error('expected the sweep to be refused');
}

describe('sweep - specs', () => {
  it('sweep - a valid sweep: defaults (eval_loss, min, grid searcher, one trial at a time)', () => {
    const s = checkSweep(sweep(), JOB);
    expect(s.metric).to.equal('eval_loss');
    expect(s.mode).to.equal('min');
    expect(s.searcher.type).to.equal('grid');
    expect(s.budget.max_concurrent).to.equal(1);
    expect(checkSweep(sweep({ metric: 'exact_match' }), JOB).mode).to.equal('max');
  });

  it('sweep - bad sweeps are refused before anything starts, each problem naming its field', () => {
    const cases: [Record<string, unknown>, string][] = [
      [
        sweep({ space: { 'training.nope': { grid: [1] } } }),
        'sweep.yaml: space.training.nope: not a field of the job spec',
      ],
      [
        sweep({ space: { 'dataset.path': { choice: ['a'] } } }),
        'space.dataset.path: not a numeric or enumerated field',
      ],
      [
        sweep({ space: { 'training.learning_rate': { uniform: [0.1, 0.1] } } }),
        'space.training.learning_rate.uniform: an empty range',
      ],
      [
        sweep({ space: { 'training.learning_rate': { loguniform: [0, 0.1] } } }),
        'space.training.learning_rate.loguniform: a log scale needs bounds above 0',
      ],
      [sweep({ space: { 'lora.r': { choice: [] } } }), 'space.lora.r.choice: an empty list'],
      [sweep({ space: { 'lora.r': { choice: [0, 8] } } }), 'space.lora.r: 0:'],
      [sweep({ space: { 'lora.r': { int: [4.5, 8] } } }), 'space.lora.r.int: whole-number bounds'],
      [
        sweep({ space: { 'training.lr_scheduler': { uniform: [0, 1] } } }),
        'space.training.lr_scheduler: an enumerated field takes grid or choice',
      ],
      [
        sweep({ space: { 'training.lr_scheduler': { choice: ['cosine', 'step'] } } }),
        'space.training.lr_scheduler: "step":',
      ],
      [sweep({ space: { 'training.max_steps': { grid: [10, 20] } } }), 'space.training.max_steps: not searched'],
      [
        sweep({ space: { 'lora.r': { range: [1, 2] } } }),
        "space.lora.r: 'range' is not one of grid, choice, uniform, loguniform, int",
      ],
      [sweep({ space: {} }), 'space: an empty search space'],
      [sweep({ budget: { max_trials: 9, max_steps: 60, max_concurrent: 0 } }), 'budget.max_concurrent:'],
      [
        sweep({ budget: { max_trials: 4, max_steps: 60 } }),
        'budget.max_trials: the grid has 9 points, more than max_trials 4',
      ],
      [
        sweep({ space: { 'training.learning_rate': { uniform: [1e-4, 1e-2] } } }),
        'space.training.learning_rate: the grid searcher takes grid or choice values, not uniform',
      ],
      [sweep({ searcher: { type: 'asha' } }), 'searcher.min_steps: ASHA needs its first rung'],
      [sweep({ searcher: { type: 'asha', min_steps: 60 } }), 'searcher.min_steps: 60 is not below budget.max_steps 60'],
      [sweep({ searcher: { type: 'asha', min_steps: 10 }, metric: 'exact_match' }), 'metric: ASHA ranks trials'],
      [sweep({ searcher: { type: 'random', min_steps: 10 } }), 'searcher.min_steps: only ASHA has rungs'],
      [sweep({ metric: 'accuracy' }), "metric: 'accuracy' is not one of"],
      [sweep({ extra: 1 }), 'unknown key(s) extra'],
    ];
    for (const [raw, want] of cases) expect(problems(raw).join('\n'), want).to.include(want);
    // every problem at once
    expect(problems(sweep({ space: { 'training.nope': { grid: [1] }, 'lora.r': { choice: [] } } }))).to.have.length(2);
  });
});

describe('sweep - searchers', () => {
  it('sweep - grid: every point, the last field fastest; ASHA over the same space: the same 9 points, seeded order', () => {
    const grid = proposeTrials(checkSweep(sweep(), JOB));
    expect(grid.map((t) => [t.params['training.learning_rate'], t.params['lora.r']])).to.deep.equal([
      [1e-4, 4],
      [1e-4, 8],
      [1e-4, 16],
      [1e-3, 4],
      [1e-3, 8],
      [1e-3, 16],
      [1e-2, 4],
      [1e-2, 8],
      [1e-2, 16],
    ]);
    const asha = checkSweep(sweep({ searcher: { type: 'asha', min_steps: 10, seed: 3 } }), JOB);
    const a = proposeTrials(asha).map((t) => JSON.stringify(t.params));
    expect([...a].sort()).to.deep.equal(grid.map((t) => JSON.stringify(t.params)).sort());
    expect(a).to.not.deep.equal(grid.map((t) => JSON.stringify(t.params)));
    expect(proposeTrials(asha).map((t) => JSON.stringify(t.params))).to.deep.equal(a);
  });

  it('sweep - random: max_trials seeded samples inside each range (loguniform, int inclusive), the same for the same seed', () => {
    const s = checkSweep(
      sweep({
        space: {
          'training.learning_rate': { loguniform: [1e-5, 1e-2] },
          'lora.r': { int: [2, 4] },
          'training.warmup_ratio': { uniform: [0, 0.2] },
          method: { choice: ['lora', 'dora'] },
        },
        budget: { max_trials: 200, max_steps: 10 },
        searcher: { type: 'random', seed: 7 },
      }),
      JOB,
    );
    const trials = proposeTrials(s);
    expect(trials).to.have.length(200);
    const lr = trials.map((t) => t.params['training.learning_rate'] as number);
    expect(Math.min(...lr)).to.be.at.least(1e-5);
    expect(Math.max(...lr)).to.be.below(1e-2);
    // log-uniform: about a third of the samples in each decade
    expect(lr.filter((x) => x < 1e-4).length).to.be.within(40, 95);
    expect(new Set(trials.map((t) => t.params['lora.r']))).to.deep.equal(new Set([2, 3, 4]));
    expect(new Set(trials.map((t) => t.params.method))).to.deep.equal(new Set(['lora', 'dora']));
    expect(proposeTrials(s)).to.deep.equal(trials);
    expect(proposeTrials({ ...s, searcher: { ...s.searcher, seed: 8 } })).to.not.deep.equal(trials);
  });
});

describe('sweep - ASHA', () => {
  const asha = (minSteps: number, rf: number, maxSteps: number): SweepSpec =>
    checkSweep(
      sweep({
        searcher: { type: 'asha', min_steps: minSteps, reduction_factor: rf },
        budget: { max_trials: 9, max_steps: maxSteps },
      }),
      JOB,
    );

  it('sweep - rungs at min_steps x rf^k below max_steps, then max_steps', () => {
    expect(rungs(asha(10, 3, 60))).to.deep.equal([10, 30, 60]);
    expect(rungs(asha(5, 2, 40))).to.deep.equal([5, 10, 20, 40]);
    expect(rungs(asha(7, 3, 60))).to.deep.equal([7, 21, 60]);
    expect(rungs(checkSweep(sweep(), JOB))).to.deep.equal([60]);
  });

  it('sweep - promotion: the top 1/rf of a rung so far, highest rung first, then new trials, then wait', () => {
    const s = asha(10, 3, 60);
    const t = (index: number, results: number[], running = false): TrialState => ({ index, results, running });
    // two results at rung 0: nobody is in the top third yet
    expect(ashaNext(s, [t(0, [3]), t(1, [2])], 2, 9)).to.deep.equal({ do: 'start', index: 2 });
    // three: the best goes on to rung 1 (30 steps)
    expect(ashaNext(s, [t(0, [3]), t(1, [2]), t(2, [4])], 3, 9)).to.deep.equal({ do: 'promote', index: 1, rung: 1 });
    // it is promoted (training): the next slot starts a trial
    expect(ashaNext(s, [t(0, [3]), t(1, [2, 1.5], true), t(2, [4])], 3, 9)).to.deep.equal({ do: 'start', index: 3 });
    // a higher rung's promotion goes first
    const many = [t(0, [3, 2.5]), t(1, [2, 1.5]), t(2, [4]), t(3, [1, 1.8]), t(4, [5]), t(5, [6])];
    expect(ashaNext(s, many, 6, 9)).to.deep.equal({ do: 'promote', index: 1, rung: 2 });
    // every trial started, nothing promotable: wait
    expect(ashaNext(s, [t(0, [3]), t(1, [2], true)], 9, 9)).to.deep.equal({ do: 'wait' });
  });

  it('sweep - on a space where one learning rate is clearly best, ASHA (one trial at a time) finds the grid best in at most half its steps', () => {
    // a stand-in for training: the loss falls with steps, fastest for lr 1e-3 and a little for a larger rank
    const loss = (lr: number, r: number, steps: number): number =>
      1 + Math.abs(Math.log10(lr) + 3) * 2 + 4 / Math.sqrt(steps) - r / 100;
    const grid = checkSweep(sweep(), JOB);
    const gridTrials = proposeTrials(grid);
    const scored = gridTrials.map((t) =>
      loss(t.params['training.learning_rate'] as number, t.params['lora.r'] as number, 60),
    );
    const gridBest = gridTrials[scored.indexOf(Math.min(...scored))];
    const gridSteps = gridTrials.length * 60;

    const s = asha(10, 3, 60);
    const steps = rungs(s);
    const proposed = proposeTrials(s);
    const trials: TrialState[] = [];
    let trained = 0;
    for (let guard = 0; guard < 100; guard++) {
      const next = ashaNext(s, trials, trials.length, proposed.length);
      if (next.do === 'wait') break;
      const state =
        next.do === 'start'
          ? { index: next.index, results: [], running: false }
          : trials.find((x) => x.index === next.index)!;
      if (next.do === 'start') trials.push(state);
      const rung = state.results.length;
      trained += (steps[rung] as number) - (rung ? (steps[rung - 1] as number) : 0);
      const p = proposed[state.index]!.params;
      state.results.push(loss(p['training.learning_rate'] as number, p['lora.r'] as number, steps[rung] as number));
    }
    const best = bestTrial(s, trials);
    expect(proposed[best!.index]!.params).to.deep.equal(gridBest!.params);
    expect(best!.results).to.have.length(3);
    expect(trained / gridSteps, `${trained} of ${gridSteps} steps`).to.be.at.most(0.5);
  });
});

describe('sweep - what the CLI shows', () => {
  const st: SweepStatus & { temporal: string; failure: string | null } = {
    sweepId: 'lr-1',
    name: 'lr',
    state: 'succeeded',
    searcher: 'asha',
    metric: 'eval_loss',
    mode: 'min',
    rungs: [3, 9, 27],
    proposed: 2,
    trials: [
      {
        index: 0,
        jobId: 'lr-1-t0',
        params: { 'training.learning_rate': 0.005, 'lora.r': 8 },
        state: 'succeeded',
        steps: 27,
        results: [6.1, 5.8, 5.35],
        rungs: [
          { step: 3, evalLoss: 6.1 },
          { step: 9, evalLoss: 5.8 },
          { step: 27, evalLoss: 5.35 },
        ],
        final: 5.35,
        message: null,
      },
      {
        index: 1,
        jobId: 'lr-1-t1',
        params: { 'training.learning_rate': 0.05, 'lora.r': 2 },
        state: 'stopped_early',
        steps: 3,
        results: [6.4],
        rungs: [{ step: 3, evalLoss: 6.4 }],
        final: null,
        message: null,
      },
    ],
    best: {
      index: 0,
      jobId: 'lr-1-t0',
      params: { 'training.learning_rate': 0.005, 'lora.r': 8 },
      metric: 5.35,
      rung: 2,
    },
    stepsTrained: 30,
    message: null,
    temporal: 'COMPLETED',
    failure: null,
  };

  it('sweep - status: a row per trial with its values, state, rung and metric (a running trial as its job says), then the best', () => {
    const text = formatSweep(st, new Map([['lr-1-t1', 'training 2/27']]));
    expect(text).to.match(/TRIAL +TRAINING\.LEARNING_RATE +LORA\.R +STATE +RUNG +STEPS +EVAL_LOSS/);
    expect(text).to.match(/lr-1-t0 +0\.005 +8 +succeeded +3\/3 +27 +5\.3500/);
    expect(text).to.match(/lr-1-t1 +0\.05 +2 +training 2\/27 +1\/3 +3 +6\.4000/);
    expect(text).to.include(
      'best so far: lr-1-t0 {"training.learning_rate":0.005,"lora.r":8} eval_loss 5.3500 (rung 3 of 3)',
    );
    expect(text).to.include('steps trained: 30');
  });

  it('sweep - the plot: a line per trial through its rung results, the rungs dashed', () => {
    const svg = sweepSvg(st);
    expect(svg.match(/<polyline/g)).to.have.length(1); // t1 has one point: a dot
    expect(svg.match(/stroke-dasharray/g)).to.have.length(3);
    expect(svg).to.include('t0 0.005 8').and.include('t1 0.05 2');
  });
});
