// The live progress line of `submit --follow` and `watch`.
import { expect } from 'chai';
import { type JobEvent } from '../../shared';
import { Progress } from '../../scheduler/cli/progress';

describe('progress bar', () => {
  it('progress - step/total, loss, tokens/s, ETA from the step times, agent and attempt; resumed attempts count from their start', () => {
    const from = { v: 1 as const, job_id: 'j', agent_id: 'agent-a', attempt: 2 };
    const step = (n: number, loss: number, tokensPerS: number, time: number): JobEvent => ({
      ...from,
      type: 'step',
      time,
      step: n,
      steps_total: 100,
      epoch: 0,
      loss,
      lr: 0.001,
      grad_norm: null,
      tokens_per_s: tokensPerS,
    });
    const p = new Progress();
    p.update({
      ...from,
      type: 'started',
      time: 990,
      method: 'lora',
      device: 'cpu',
      world_size: 1,
      dtype: 'fp32',
      trainable_params: 10,
      total_params: 100,
      train_records: 40,
      eval_records: 4,
      steps_total: 100,
      micro_batch_size: 4,
      grad_accum: 1,
      truncated_records: 0,
      resumed_from_step: 40,
      visible_devices: null,
      cuda_devices: 0,
    });
    p.update(step(41, 2.5, 1234.4, 1000));
    p.update(step(51, 2.25, 1500, 1010));
    // 10 steps in 10 s, 49 to go
    expect(p.line(10)).to.equal('[#####-----] step 51/100  loss 2.2500  1,500 tok/s  ETA 49s  agent-a  attempt 2');
    expect(p.update({ ...from, type: 'log', time: 1011, level: 'info', message: 'x' })).to.equal(false);
  });
});
