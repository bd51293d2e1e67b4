import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseNvidiaSmiCsv, probeGpus } from '../../agent/gpu';

const fixture = (name: string): string => readFileSync(join(__dirname, '..', '..', '..', 'test', 'fixtures', 'nvidia-smi', name), 'utf8');
const MiB = 2 ** 20;

describe('gpu - nvidia-smi parsing', () => {
  it('gpu - one H100: every number in bytes', () => {
    const { gpus, errors } = parseNvidiaSmiCsv(fixture('h100-sxm.csv'));
    expect(errors).to.deep.equal([]);
    expect(gpus).to.have.length(1);
    expect(gpus[0]).to.deep.equal({
      index: 0, uuid: 'GPU-5f1d0a2c-3b7e-4c59-9a47-0d2b6e1f8c31', name: 'NVIDIA H100 80GB HBM3',
      memory_total: 81559 * MiB, memory_used: 4 * MiB, memory_free: 81080 * MiB, utilization_pct: 0, temperature_c: 31, compute_capability: '9.0',
    });
  });

  it('gpu - an 8-GPU node: all eight, busy ones with less free memory', () => {
    const { gpus } = parseNvidiaSmiCsv(fixture('a100-8x.csv'));
    expect(gpus.map((g) => g.index)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(gpus[2]?.memory_free).to.equal((81920 - 61234 - 475) * MiB);
    expect(gpus[2]?.utilization_pct).to.equal(97);
    expect(gpus[7]?.temperature_c).to.equal(47);
  });

  it('gpu - [N/A] and [Not Supported] read as null', () => {
    const { gpus } = parseNvidiaSmiCsv(fixture('rtx4090-na.csv'));
    expect(gpus[0]?.utilization_pct).to.equal(null);
    expect(gpus[0]?.temperature_c).to.equal(null);
    expect(gpus[0]?.compute_capability).to.equal('8.9');
    expect(gpus[0]?.memory_free).to.equal(22680 * MiB);
  });

  it('gpu - a driver error is reported, no GPU invented', () => {
    const { gpus, errors } = parseNvidiaSmiCsv(fixture('garbage.txt'));
    expect(gpus).to.deep.equal([]);
    expect(errors[0]).to.match(/expected 9 fields/);
  });

  it('gpu - a missing nvidia-smi means a CPU agent', async () => {
    const r = await probeGpus('/nonexistent/nvidia-smi');
    expect(r.gpus).to.deep.equal([]);
    expect(r.note).to.match(/not found/);
  });
});
