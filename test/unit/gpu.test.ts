import { expect } from 'chai';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mergeGpuViews, parseNvidiaSmiCsv, parseNvidiaSmiXml, probeGpus } from '../../agent/gpu';
import { advertSchema, allocatableBytes } from '../../shared';

const DIR = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'nvidia-smi');
const fixture = (name: string): string => readFileSync(join(DIR, name), 'utf8');
const MiB = 2 ** 20;

function both(name: string): ReturnType<typeof mergeGpuViews> {
  const csv = parseNvidiaSmiCsv(fixture(`${name}.csv`));
  const xml = parseNvidiaSmiXml(fixture(`${name}.xml`));
  expect(csv.errors).to.deep.equal([]);
  expect(xml.errors).to.deep.equal([]);
  return mergeGpuViews(csv.gpus, xml.gpus);
}

/** A stand-in nvidia-smi: prints a fixture per mode, or fails like a real one. */
function fakeSmi(script: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'fake-smi-'));
  const p = join(dir, 'nvidia-smi');
  writeFileSync(p, `#!/bin/sh\n${script}\n`);
  chmodSync(p, 0o755);
  return p;
}

describe('gpu - nvidia-smi parsing', () => {
  it('gpu - H100 SXM: every number in bytes, CUDA and driver from the XML', () => {
    const [g] = both('h100-sxm');
    expect(g).to.deep.equal({
      index: 0,
      uuid: 'GPU-5f1d0a2c-3b7e-4c59-9a47-0d2b6e1f8c31',
      name: 'NVIDIA H100 80GB HBM3',
      memory_total: 81559 * MiB,
      memory_used: 4 * MiB,
      memory_free: (81559 - 4 - 475) * MiB,
      utilization_pct: 0,
      temperature_c: 31,
      compute_capability: '9.0',
      power_w: 70.1,
      driver_version: '550.54.15',
      cuda_version: '12.4',
      mig_mode: 'disabled',
      mig_instances: [],
      ecc_uncorrectable: 0,
    });
  });

  it('gpu - recorded on a real H200 (nvidia-smi 580.159.04): both outputs parse and agree', () => {
    const [g] = both('recorded-h200');
    expect(g).to.deep.equal({
      index: 0,
      uuid: 'GPU-74423cb5-e90b-9e17-0cac-cb6c187dc3db',
      name: 'NVIDIA H200',
      memory_total: 143771 * MiB,
      memory_used: 0,
      memory_free: 143156 * MiB,
      utilization_pct: 0,
      temperature_c: 38,
      compute_capability: '9.0',
      power_w: 80.35,
      driver_version: '580.159.04',
      cuda_version: '13.0',
      mig_mode: 'disabled',
      mig_instances: [],
      ecc_uncorrectable: 0,
    });
    // the driver keeps 615 MiB for itself on an idle H200 (the written fixtures assumed 475): free is what placement may use
    const advert = advertSchema.parse({
      v: 1,
      agent_id: 'a',
      hostname: 'a',
      state: 'ready',
      labels: {},
      accelerator: 'cuda',
      gpus: [g],
      cpu: { model: 'x', cores: 16 },
      memory: { total: 2 ** 37, available: 2 ** 36 },
      sessions: [],
      models: [],
      trainer: { methods: [], bitsandbytes: true, bf16: true },
      time: 1,
    });
    expect(allocatableBytes(advert)).to.equal(143156 * MiB);
  });

  it('gpu - H200: 141 GB card with a job on it', () => {
    const [g] = both('h200');
    expect(g?.name).to.equal('NVIDIA H200');
    expect(g?.memory_total).to.equal(143771 * MiB);
    expect(g?.memory_used).to.equal(52311 * MiB);
    expect(g?.memory_free).to.equal((143771 - 52311 - 475) * MiB);
    expect(g?.utilization_pct).to.equal(88);
    expect(g?.cuda_version).to.equal('12.6');
    expect(g?.ecc_uncorrectable).to.equal(0);
  });

  it('gpu - A100 with MIG on: the instances, and placement sees the largest free instance', () => {
    const [g] = both('a100-mig');
    expect(g?.mig_mode).to.equal('enabled');
    expect(g?.utilization_pct).to.equal(null);
    expect(g?.mig_instances).to.deep.equal([
      { gpu_instance: 1, compute_instance: 0, memory_total: 40192 * MiB, memory_free: (40192 - 37) * MiB },
      { gpu_instance: 2, compute_instance: 0, memory_total: 40192 * MiB, memory_free: (40192 - 30500) * MiB },
    ]);
    const advert = advertSchema.parse({
      v: 1,
      agent_id: 'a',
      hostname: 'a',
      state: 'ready',
      labels: {},
      accelerator: 'cuda',
      gpus: [g],
      cpu: { model: 'x', cores: 8 },
      memory: { total: 2 ** 40, available: 2 ** 39 },
      sessions: [],
      models: [],
      trainer: { methods: [], bitsandbytes: true, bf16: true },
      time: 1,
    });
    expect(allocatableBytes(advert)).to.equal((40192 - 37) * MiB);
  });

  it('gpu - an 8-GPU node: all eight, busy ones with less free memory, the ECC error on GPU 6', () => {
    const gpus = both('a100-8x');
    expect(gpus.map((g) => g.index)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(gpus[2]?.memory_free).to.equal((81920 - 61234 - 475) * MiB);
    expect(gpus[2]?.utilization_pct).to.equal(97);
    expect(gpus[2]?.power_w).to.equal(350.5);
    expect(gpus[7]?.temperature_c).to.equal(47);
    expect(gpus.map((g) => g.ecc_uncorrectable)).to.deep.equal([0, 0, 0, 0, 0, 0, 1, 0]);
  });

  it('gpu - RTX 4090: [N/A] and [Not Supported] read as null; ECC off reads as null', () => {
    const [g] = both('rtx4090-na');
    expect(g?.utilization_pct).to.equal(null);
    expect(g?.temperature_c).to.equal(null);
    expect(g?.power_w).to.equal(null);
    expect(g?.compute_capability).to.equal('8.9');
    expect(g?.memory_free).to.equal(22680 * MiB);
    expect(g?.ecc_uncorrectable).to.equal(null);
    expect(g?.cuda_version).to.equal('12.5');
  });

  it('gpu - a driver error or garbage yields no GPU and says why', () => {
    const a = parseNvidiaSmiCsv(fixture('driver-error.txt'));
    expect(a.gpus).to.deep.equal([]);
    expect(a.errors[0]).to.match(/expected 11 fields/);
    const b = parseNvidiaSmiCsv(fixture('garbage.txt'));
    expect(b.gpus).to.deep.equal([]);
    expect(b.errors).to.have.length(3);
    const x = parseNvidiaSmiXml(fixture('garbage.txt'));
    expect(x.gpus).to.deep.equal([]);
    expect(x.errors[0]).to.match(/nvidia_smi_log|not XML/);
  });
});

describe('gpu - running nvidia-smi', function () {
  this.timeout(10_000);
  it('gpu - a missing nvidia-smi means a CPU agent', async () => {
    const r = await probeGpus('/nonexistent/nvidia-smi');
    expect(r.gpus).to.deep.equal([]);
    expect(r.note).to.match(/not found.*CPU agent/);
  });

  it('gpu - nvidia-smi failing with a driver error means a CPU agent, with the message', async () => {
    const r = await probeGpus(fakeSmi(`cat '${join(DIR, 'driver-error.txt')}'; exit 9`));
    expect(r.gpus).to.deep.equal([]);
    expect(r.note).to.match(/couldn't communicate with the NVIDIA driver/);
  });

  it('gpu - garbage on stdout means a CPU agent', async () => {
    const r = await probeGpus(fakeSmi(`cat '${join(DIR, 'garbage.txt')}'`));
    expect(r.gpus).to.deep.equal([]);
    expect(r.note).to.match(/not understood/);
  });

  it('gpu - both queries run and are merged', async () => {
    const r = await probeGpus(
      fakeSmi(`if [ "$1" = "-q" ]; then cat '${join(DIR, 'a100-8x.xml')}'; else cat '${join(DIR, 'a100-8x.csv')}'; fi`),
    );
    expect(r.note).to.equal(null);
    expect(r.gpus).to.have.length(8);
    expect(r.gpus[6]?.ecc_uncorrectable).to.equal(1);
    expect(r.gpus[0]?.cuda_version).to.equal('12.2');
  });
});
