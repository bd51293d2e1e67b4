// The memory estimate placement reserves, from a model's shape and the job's settings.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  estimateForSpec,
  estimateMemory,
  gradientCheckpointingOn,
  parseSpec,
  shapeFromConfig,
  type ModelShape,
} from '../../shared';

import { SMOL } from '../harness/placement-fixtures';

describe('memory estimate', () => {
  const cal = JSON.parse(
    readFileSync(join(__dirname, '..', '..', '..', 'test', 'bench', 'gpu', 'h200-memory-calibration.json'), 'utf8'),
  ) as {
    rows: {
      model: Record<string, unknown>;
      method: string;
      micro_batch_size: number;
      seq_len: number;
      gradient_checkpointing: boolean;
      optimizer: string;
      trainable_params: number;
      total_params: number;
    }[];
  };

  it('memory - parameter counts from config.json equal what PEFT counted on the GPU', () => {
    for (const r of cal.rows) {
      const shape = shapeFromConfig(r.model) as ModelShape;
      expect(shape.params, `${JSON.stringify(r.model)}`).to.equal(
        r.total_params - (r.method === 'full' ? 0 : r.trainable_params),
      );
    }
  });

  it('memory - the breakdown adds up and follows the method, batch and checkpointing', () => {
    const base = {
      shape: SMOL,
      device: 'cuda' as const,
      precision: 'auto' as const,
      microBatch: 8,
      seqLen: 1024,
      gradientCheckpointing: false,
      optimizer: 'adamw' as const,
      loraRank: 16,
    };
    const lora = estimateMemory({ ...base, method: 'lora' });
    const parts = Object.values(lora.breakdown).reduce((a, b) => a + b, 0);
    expect(Math.abs(parts - lora.total)).to.be.lessThan(16);
    expect(estimateMemory({ ...base, method: 'qlora' }).breakdown.weights).to.be.lessThan(lora.breakdown.weights);
    const gc = estimateMemory({ ...base, method: 'lora', gradientCheckpointing: true });
    expect(gc.breakdown.activations).to.be.lessThan(lora.breakdown.activations / 5);
    expect(gc.breakdown.logits).to.equal(lora.breakdown.logits); // checkpointing does not shrink the loss's logits
    expect(estimateMemory({ ...base, method: 'lora', microBatch: 4 }).breakdown.activations).to.be.closeTo(
      lora.breakdown.activations / 2,
      2,
    );
    expect(estimateMemory({ ...base, method: 'full' }).breakdown.optimizer).to.be.greaterThan(
      10 * lora.breakdown.optimizer,
    );
    expect(estimateMemory({ ...base, method: 'lora', device: 'cpu' }).breakdown.weights).to.equal(
      2 * lora.breakdown.weights,
    );
  });

  it("memory - the chunked loss holds one chunk's logits; checkpointing is auto-on for qlora only", () => {
    const base = {
      shape: SMOL, // vocabulary 49,152: a chunk is 682 tokens
      method: 'lora' as const,
      device: 'cuda' as const,
      precision: 'auto' as const,
      microBatch: 8,
      seqLen: 1024,
      gradientCheckpointing: false,
      optimizer: 'adamw' as const,
      loraRank: 16,
    };
    const plain = estimateMemory(base);
    const chunked = estimateMemory({ ...base, chunkedLoss: true });
    expect(chunked.breakdown.logits).to.equal(682 * SMOL.vocab * 12 + 2 * 8 * 1024 * SMOL.hidden * 2);
    expect(chunked.breakdown.logits).to.be.lessThan(plain.breakdown.logits / 10);
    // below one chunk the loss's logits are the micro-batch's either way
    const short = { ...base, microBatch: 1, seqLen: 256 };
    expect(estimateMemory({ ...short, chunkedLoss: true }).breakdown.logits).to.be.at.least(
      estimateMemory(short).breakdown.logits,
    );
    const spec = (method: string, training: Record<string, unknown> = {}) =>
      parseSpec(JSON.stringify({ name: 'x', model: 'm', method, dataset: { path: 'd.jsonl' }, training }));
    expect(gradientCheckpointingOn(spec('qlora'))).to.equal(true);
    expect(gradientCheckpointingOn(spec('lora'))).to.equal(false);
    expect(gradientCheckpointingOn(spec('qlora', { gradient_checkpointing: false }))).to.equal(false);
    expect(estimateForSpec(spec('lora', { max_seq_len: 1024 }), SMOL, 'cuda').breakdown.logits).to.equal(
      chunked.breakdown.logits,
    );
    expect(
      estimateForSpec(spec('lora', { chunked_loss: false, max_seq_len: 1024 }), SMOL, 'cuda').breakdown.logits,
    ).to.equal(plain.breakdown.logits);
  });
});
