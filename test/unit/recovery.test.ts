// The failure table: what an out-of-memory retry shrinks, what each class does.
import { expect } from 'chai';
import { parseSpec } from '../../shared';
import { FAILURE_POLICY, shrink } from '../../workflows/failures';

describe('recovery policy', () => {
  it('recovery - OOM halves the micro-batch with gradient checkpointing, same effective batch; then gives up', () => {
    const s = parseSpec(
      'name: j\nmodel: m\nmethod: lora\ndataset: {path: d.jsonl}\ntraining: {batch_size: 32, micro_batch_size: 8}\n',
    );
    const a = shrink(s, null);
    expect(a?.training).to.include({ micro_batch_size: 4, gradient_checkpointing: true, batch_size: 32 });
    const b = shrink(s, { type: 'oom', step: 3, micro_batch_size: 2, sequence_length: 512 } as never);
    expect(b?.training.micro_batch_size).to.equal(1);
    expect(shrink(b as typeof s, null)).to.equal(null);
  });

  it('recovery - the failure table: lost agents and crashes move the job, OOM shrinks it, bad input fails it', () => {
    expect(FAILURE_POLICY.lost_agent).to.deep.equal({ retry: true, avoidAgent: true, shrink: false });
    expect(FAILURE_POLICY.oom).to.deep.equal({ retry: true, avoidAgent: false, shrink: true });
    expect(FAILURE_POLICY.bad_input.retry).to.equal(false);
  });
});
