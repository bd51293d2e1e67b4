// Placement per device: a job gets one device whose capacity less its leases covers the
// estimate (best fit), leases name their device, and a job that finds no device waits with
// the devices named.
import { expect } from 'chai';
import { estimateForSpec, type Advert, type Device, type GpuAdvert } from '../../shared';
import { SAMPLE_MIN, place } from '../../scheduler/placement';
import { heldOn, type Lease } from '../../scheduler/leases';
import { GiB, SMOL, advert, job, spec } from '../harness/placement-fixtures';

const need = estimateForSpec(spec, SMOL, 'cuda').total;

function gpu(index: number, total: number): GpuAdvert {
  return {
    index,
    uuid: `GPU-${index}`,
    name: 'NVIDIA A100-SXM4-80GB',
    memory_total: total,
    memory_used: 0,
    memory_free: total,
    utilization_pct: 0,
    temperature_c: 30,
    compute_capability: '8.0',
    power_w: null,
    driver_version: null,
    cuda_version: null,
    mig_mode: 'disabled',
    mig_instances: [],
    ecc_uncorrectable: null,
  };
}

function device(uuid: string, index: number, total: number, kind: Device['kind'] = 'gpu'): Device {
  return {
    uuid,
    kind,
    index,
    name: kind === 'mig' ? `${Math.round(total / GiB)}gb` : 'A100',
    parent: kind === 'mig' ? 'GPU-0' : null,
    memory_total: total,
    memory_free: total,
    compute_capability: '8.0',
    nvlink: [],
    pcie_switch: [],
    numa_node: null,
  };
}

const gpuAgent = (id: string, devices: Device[], gpus: GpuAdvert[]): Advert =>
  advert(id, { v: 2, accelerator: 'cuda', gpus, devices, max_sessions: 16 });

/** Place `n` jobs one after another, each taking a lease on the device it was given. */
function placeAll(a: Advert, n: number): { leases: Lease[]; decisions: ReturnType<typeof place>[] } {
  const leases: Lease[] = [];
  const decisions = [];
  for (let i = 0; i < n; i++) {
    const held = heldOn(leases, a, 0);
    const d = place({ adverts: [a], checkpointAgent: null, reserved: () => held }, job({ jobId: `job-${i}` }));
    decisions.push(d);
    if (d.device)
      leases.push({ jobId: `job-${i}`, attempt: 1, bytes: need, purpose: 'train', time: 0, devices: [d.device] });
  }
  return { leases, decisions };
}

describe('placement - per device', () => {
  it('placement - eight jobs that each need most of one device go to eight different devices; a ninth waits naming them', () => {
    const size = Math.ceil(need * 1.3);
    const a = gpuAgent(
      'gpu-8x',
      Array.from({ length: 8 }, (_, i) => device(`GPU-${i}`, i, size)),
      Array.from({ length: 8 }, (_, i) => gpu(i, size)),
    );
    const { decisions } = placeAll(a, 9);
    const devices = decisions.slice(0, 8).map((d) => d.device);
    expect(decisions.slice(0, 8).every((d) => d.chosen === 'gpu-8x')).to.equal(true);
    expect(new Set(devices).size).to.equal(8);
    const ninth = decisions[8];
    expect(ninth?.chosen).to.equal(null);
    expect(ninth?.impossible).to.equal(false);
    expect(ninth?.summary).to.match(/needs .* on one device; free: GPU 0 .*GPU 7 /);
  });

  it('placement - small jobs share a device while each fits in what is left of it', () => {
    const a = gpuAgent('gpu-1', [device('GPU-0', 0, Math.ceil(need * 2.5))], [gpu(0, Math.ceil(need * 2.5))]);
    const { decisions } = placeAll(a, 3);
    expect(decisions.map((d) => d.device)).to.deep.equal(['GPU-0', 'GPU-0', null]);
  });

  it('placement - on a MIG host the job is pinned to the instance whose memory fits (best fit among those)', () => {
    const small = device('MIG-small', 0, Math.floor(need * 0.8), 'mig');
    const mid = device('MIG-mid', 0, Math.ceil(need * 1.5), 'mig');
    const big = device('MIG-big', 0, Math.ceil(need * 4), 'mig');
    const a = gpuAgent('mig-host', [small, big, mid], [gpu(0, 80 * GiB)]);
    const { decisions } = placeAll(a, 3);
    expect(decisions.map((d) => d.device)).to.deep.equal(['MIG-mid', 'MIG-big', 'MIG-big']);
  });

  it('placement - a job larger than every device is impossible, with the largest device named', () => {
    const a = gpuAgent(
      'gpu-2x',
      [device('GPU-0', 0, Math.floor(need / 2)), device('GPU-1', 1, Math.floor(need / 3))],
      [gpu(0, Math.floor(need / 2)), gpu(1, Math.floor(need / 3))],
    );
    const d = place({ adverts: [a], checkpointAgent: null, reserved: () => heldOn([], a, 0) }, job());
    expect(d.impossible).to.equal(true);
    expect(d.summary).to.match(/its largest device offers/);
  });

  it('placement - a CPU agent has one device, the CPU: leases name it and hold its RAM', () => {
    const a = advert('cpu-1', { v: 2, max_sessions: 8 });
    const { decisions } = placeAll(a, 2);
    expect(decisions.map((d) => d.device)).to.deep.equal(['cpu', 'cpu']);
  });
});

describe('placement - a large fleet is looked at until enough agents fit', () => {
  const many = (n: number, over: Partial<Advert> = {}): Advert[] =>
    Array.from({ length: n }, (_, i) => advert(`agent-${String(i).padStart(3, '0')}`, { v: 2, ...over }));
  const free = (): { bytes: number; sessions: number } => ({ bytes: 0, sessions: 0 });

  it('placement - 300 agents that all fit: 100 are looked at, the summary says how many were not; the decision repeats', () => {
    const adverts = many(300);
    const d = place({ adverts, checkpointAgent: null, reserved: free }, job({ jobId: 'big-fleet' }));
    expect(d.agents).to.have.length(SAMPLE_MIN);
    expect(d.chosen).to.be.a('string');
    expect(d.summary).to.match(/100 of 100 agents fit, 200 more not looked at/);
    expect(place({ adverts, checkpointAgent: null, reserved: free }, job({ jobId: 'big-fleet' })).chosen).to.equal(
      d.chosen,
    );
    // another job starts somewhere else in the fleet
    const other = place({ adverts, checkpointAgent: null, reserved: free }, job({ jobId: 'another-job' }));
    expect(other.agents[0]?.agentId).to.not.equal(d.agents[0]?.agentId);
  });

  it('placement - a job no agent can hold is still checked against every agent', () => {
    const adverts = many(300, { memory: { total: 24 * GiB, available: 0.01 * GiB } });
    const d = place({ adverts, checkpointAgent: null, reserved: free }, job());
    expect(d.agents).to.have.length(300);
    expect(d.impossible).to.equal(true);
  });

  it("placement - the agent holding the job's checkpoint is looked at first, and wins when it fits as well", () => {
    const adverts = many(300);
    const d = place({ adverts, checkpointAgent: 'agent-250', reserved: free }, job({ jobId: 'resume-me' }));
    expect(d.agents[0]?.agentId).to.equal('agent-250');
    expect(d.chosen).to.equal('agent-250');
  });
});
