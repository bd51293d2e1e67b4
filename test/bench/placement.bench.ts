// Benchmark: placement decisions per second at fleet scale. 1,000 simulated agents of 8
// devices each (80 GiB A100s, adverts as protocol 2 writes them) and a queue of 10,000
// one-device LoRA jobs on SmolLM2-135M, placed one after another: each decision is the
// real place() (filters and scores over the agents it looks at, per-device rooms, best
// fit) over the leases taken so far, and a placed job's lease is added as the control
// worker would.
// Baseline in the same run: the cost of one decision at 100 agents (the same code, a tenth
// of the fleet). Anchors: Slurm about 500 placements/s, kube-scheduler about 800, Nomad
// 1,500-3,700.
//   npm run bench:placement   (results: test/bench/RESULTS.md)
import { cpus } from 'node:os';
import { estimateForSpec, type Advert, type Device } from '../../shared';
import { place } from '../../scheduler/placement';
import { heldOn, type Lease } from '../../scheduler/leases';
import { GiB, SMOL, advert, spec } from '../harness/placement-fixtures';
import { recordResult } from './results';

function agent(i: number, devices: number): Advert {
  const id = `agent-${String(i).padStart(4, '0')}`;
  const devs: Device[] = Array.from({ length: devices }, (_, d) => ({
    uuid: `GPU-${i}-${d}`,
    kind: 'gpu',
    index: d,
    name: 'NVIDIA A100-SXM4-80GB',
    parent: null,
    memory_total: 80 * GiB,
    memory_free: 80 * GiB,
    compute_capability: '8.0',
    nvlink: [],
    pcie_switch: [],
    numa_node: d < devices / 2 ? 0 : 1,
  }));
  // the unit tests' advert (SmolLM2-135M cached, its shape known) as a protocol-2 CUDA agent of 8 GPUs
  return advert(id, {
    v: 2,
    labels: { zone: `z${i % 4}` },
    accelerator: 'cuda',
    devices: devs,
    cpu: { model: 'x', cores: 128 },
    memory: { total: 1024 * GiB, available: 1000 * GiB },
    max_sessions: 1024,
    trainer: { methods: ['lora'], bitsandbytes: true, bf16: true },
  });
}

interface Row {
  agents: number;
  jobs: number;
  placed: number;
  seconds: number;
  perSecond: number;
  msPerDecision: number;
}

function run(agents: number, jobs: number): Row {
  const adverts = Array.from({ length: agents }, (_, i) => agent(i, 8));
  const leases = new Map<string, Lease[]>(adverts.map((a) => [a.agent_id, []]));
  const byId = new Map(adverts.map((a) => [a.agent_id, a]));
  const bytes = estimateForSpec(spec, SMOL, 'cuda').total;
  let placed = 0;
  const t0 = process.hrtime.bigint();
  for (let j = 0; j < jobs; j++) {
    const decision = place(
      {
        adverts,
        checkpointAgent: null,
        reserved: (id) => heldOn(leases.get(id) ?? [], byId.get(id), 0),
      },
      { jobId: `job-${j}`, spec, exclude: [] },
    );
    if (decision.chosen && decision.devices.length) {
      placed += 1;
      const lease: Lease = {
        jobId: `job-${j}`,
        attempt: 1,
        bytes,
        purpose: 'train',
        time: 0,
        devices: decision.devices,
      };
      leases.get(decision.chosen)?.push(lease);
    }
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { agents, jobs, placed, seconds, perSecond: jobs / seconds, msPerDecision: (1000 * seconds) / jobs };
}

function main(): void {
  const jobs = Number(process.argv[2] ?? 10_000);
  run(100, 200); // warm-up: the JIT, not measured
  const small = run(100, Math.min(jobs, 2_000));
  const big = run(1_000, jobs);
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const date = new Date().toISOString().slice(0, 10);
  const line = (r: Row): string =>
    `| ${r.agents} × 8 devices | ${r.jobs} | ${r.placed} | ${r.seconds.toFixed(1)} | ${r.perSecond.toFixed(0)} | ${r.msPerDecision.toFixed(3)} | ${(r.msPerDecision / small.msPerDecision).toFixed(2)}x |`;
  const table = [
    `### Placement decisions, ${date} — ${cpus().length} × ${cpu}, node ${process.version} (\`npm run bench:placement\`)`,
    '',
    'One-device LoRA jobs on SmolLM2-135M placed one after another by the real `place()` over the leases taken so far; the baseline is the same code at 100 agents, in the same run.',
    '',
    '| fleet | jobs | placed | seconds | decisions/s | ms per decision | vs 100 agents |',
    '|---|---|---|---|---|---|---|',
    line(small),
    line(big),
  ].join('\n');
  console.log(table);
  if (!process.argv.includes('--no-record')) recordResult(table);
}

main();
