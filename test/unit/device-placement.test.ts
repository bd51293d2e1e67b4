// Placement per device: a job gets one device whose capacity less its leases covers the
// estimate (best fit), leases name their device, and a job that finds no device waits with
// the devices named.
import { expect } from 'chai';
import { estimateForSpec, parseSpec, type Advert, type Device, type GpuAdvert } from '../../shared';
import { SAMPLE_MIN, deviceCounts, place } from '../../scheduler/placement';
import { heldOn, type Lease } from '../../scheduler/leases';
import { GiB, SMOL, advert, job, spec } from '../harness/placement-fixtures';

const need = estimateForSpec(spec, SMOL, 'cuda').total;
const spec2 = parseSpec(
  'name: j\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\nresources: {gpus: 2}\n',
);
/** per device, for a two-device job */
const need2 = estimateForSpec(spec2, SMOL, 'cuda').total;

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
    if (d.devices.length)
      leases.push({ jobId: `job-${i}`, attempt: 1, bytes: need, purpose: 'train', time: 0, devices: d.devices });
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
    const devices = decisions.slice(0, 8).map((d) => d.devices[0]);
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
    expect(decisions.map((d) => d.devices[0] ?? null)).to.deep.equal(['GPU-0', 'GPU-0', null]);
  });

  it('placement - on a MIG host the job is pinned to the instance whose memory fits (best fit among those)', () => {
    const small = device('MIG-small', 0, Math.floor(need * 0.8), 'mig');
    const mid = device('MIG-mid', 0, Math.ceil(need * 1.5), 'mig');
    const big = device('MIG-big', 0, Math.ceil(need * 4), 'mig');
    const a = gpuAgent('mig-host', [small, big, mid], [gpu(0, 80 * GiB)]);
    const { decisions } = placeAll(a, 3);
    expect(decisions.map((d) => d.devices[0] ?? null)).to.deep.equal(['MIG-mid', 'MIG-big', 'MIG-big']);
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
    expect(decisions.map((d) => d.devices[0] ?? null)).to.deep.equal(['cpu', 'cpu']);
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

/** A device with its topology: NVLink peers, PCIe switch peers, NUMA node. */
function linked(uuid: string, index: number, total: number, nvlink: string[], pcie: string[], numa: number): Device {
  return { ...device(uuid, index, total), nvlink, pcie_switch: pcie, numa_node: numa };
}

describe('placement - several devices on one host', () => {
  const size = Math.ceil(need2 * 1.3);
  const place2 = (a: Advert, leases: Lease[] = []): ReturnType<typeof place> =>
    place({ adverts: [a], checkpointAgent: null, reserved: () => heldOn(leases, a, 0) }, job({ spec: spec2 }));
  const hold = (uuid: string): Lease => ({
    jobId: `x-${uuid}`,
    attempt: 1,
    bytes: size,
    purpose: 'train',
    time: 0,
    devices: [uuid],
  });

  it('placement - two devices come from one NVLink island, even when the fuller devices are in another', () => {
    // islands {0,1,2,3} and {4,5,6,7}; 0, 1, 2 and 5 are taken: the island 4-7 holds three free devices, 0-3 one
    const island = (i: number): string[] =>
      [0, 1, 2, 3].map((k) => `GPU-${k + (i < 4 ? 0 : 4)}`).filter((u) => u !== `GPU-${i}`);
    const devices = Array.from({ length: 8 }, (_, i) => linked(`GPU-${i}`, i, size, island(i), [], i < 4 ? 0 : 1));
    const a = gpuAgent(
      'nv-8x',
      devices,
      devices.map((_, i) => gpu(i, size)),
    );
    const d = place2(a, ['GPU-0', 'GPU-1', 'GPU-2', 'GPU-5'].map(hold));
    expect(d.chosen).to.equal('nv-8x');
    expect(d.devices).to.have.length(2);
    expect(d.devices.every((u) => ['GPU-4', 'GPU-6', 'GPU-7'].includes(u))).to.equal(true);
    expect(d.summary).to.match(/placed on nv-8x GPU \d, GPU \d/);
  });

  it('placement - without NVLink, two devices behind one PCIe switch, then on one NUMA node', () => {
    // GPU 0-1 behind one switch and GPU 2-3 behind another; GPU 4 alone; NUMA node 0 holds 0, 1 and 4, node 1 holds 2-3
    const devices = [
      linked('GPU-0', 0, size, [], ['GPU-1'], 0),
      linked('GPU-1', 1, size, [], ['GPU-0'], 0),
      linked('GPU-2', 2, size, [], ['GPU-3'], 1),
      linked('GPU-3', 3, size, [], ['GPU-2'], 1),
      linked('GPU-4', 4, size, [], [], 0),
    ];
    const a = gpuAgent(
      'pcie-5x',
      devices,
      devices.map((_, i) => gpu(i, size)),
    );
    // GPU 1 taken: the two behind the other switch
    expect([...place2(a, [hold('GPU-1')]).devices].sort()).to.deep.equal(['GPU-2', 'GPU-3']);
    // GPU 1 and 3 taken: no switch has two free; NUMA node 0 has GPU 0 and 4 (not GPU 0 and 2, across nodes)
    expect([...place2(a, [hold('GPU-1'), hold('GPU-3')]).devices].sort()).to.deep.equal(['GPU-0', 'GPU-4']);
  });

  it('placement - a two-device lease holds its bytes on both devices and twice on the agent', () => {
    const a = gpuAgent('gpu-2x', [device('GPU-0', 0, size), device('GPU-1', 1, size)], [gpu(0, size), gpu(1, size)]);
    const d = place2(a);
    expect([...d.devices].sort()).to.deep.equal(['GPU-0', 'GPU-1']);
    const lease: Lease = { jobId: 'j2', attempt: 1, bytes: need2, purpose: 'train', time: 0, devices: d.devices };
    const held = heldOn([lease], a, 0);
    expect(held.onDevice('GPU-0')).to.equal(need2);
    expect(held.onDevice('GPU-1')).to.equal(need2);
    expect(held.bytes).to.equal(2 * need2);
  });

  it('placement - a job waits, naming the devices, while only one has room; more devices than any agent has is impossible', () => {
    const a = gpuAgent('gpu-2x', [device('GPU-0', 0, size), device('GPU-1', 1, size)], [gpu(0, size), gpu(1, size)]);
    const waiting = place2(a, [hold('GPU-1')]);
    expect(waiting.chosen).to.equal(null);
    expect(waiting.impossible).to.equal(false);
    expect(waiting.summary).to.match(
      /needs 2 devices with .* each on one host; 1 has that much free now \(free: GPU 0 .*, GPU 1 /,
    );
    const spec4 = { ...spec2, resources: { gpus: 4, nodes: 1 } };
    const d = place({ adverts: [a], checkpointAgent: null, reserved: () => heldOn([], a, 0) }, job({ spec: spec4 }));
    expect(d.impossible).to.equal(true);
    expect(d.summary).to.match(/needs 4 GPUs on one host, the most any agent has is 2 \(gpu-2x\)/);
    const cpu = advert('cpu-1', { v: 2 });
    const onCpu = place(
      { adverts: [cpu], checkpointAgent: null, reserved: () => heldOn([], cpu, 0) },
      job({ spec: spec2 }),
    );
    expect(onCpu.impossible).to.equal(true);
    expect(onCpu.summary).to.match(/the most any agent has is 0/);
  });

  it('placement - MIG instances serve one-device jobs only: a two-device job never combines them', () => {
    const big = Math.ceil(need2 * 4);
    const migs = [device('MIG-a', 0, big, 'mig'), device('MIG-b', 0, big, 'mig'), device('MIG-c', 0, big, 'mig')];
    const a = gpuAgent('mig-host', migs, [gpu(0, 80 * GiB)]);
    const d = place2(a);
    expect(d.impossible).to.equal(true);
    expect(d.agents[0]?.reasons.join('; ')).to.match(/the agent has no whole GPU \(MIG instances are not combined/);
  });

  it('placement - the per-device estimate of a two-device job counts half the batch per device', () => {
    const big = parseSpec(
      'name: j\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\ntraining: {batch_size: 16}\n',
    );
    const split = parseSpec(
      'name: j\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\n' +
        'training: {batch_size: 16}\nresources: {gpus: 4}\n',
    );
    const one = estimateForSpec(big, SMOL, 'cuda');
    const each = estimateForSpec(split, SMOL, 'cuda');
    expect(each.breakdown.activations).to.equal(one.breakdown.activations / 2);
    expect(each.breakdown.gradients).to.equal(2 * one.breakdown.gradients);
  });
});

describe('placement - elastic device counts (min_gpus)', () => {
  const elastic = parseSpec(
    'name: j\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\n' +
      'training: {batch_size: 8}\nresources: {gpus: 4, min_gpus: 1}\n',
  );
  const big = Math.ceil(estimateForSpec(elastic, SMOL, 'cuda').total * 4);

  it('placement - the counts tried are gpus down to min_gpus, those that divide the batch', () => {
    expect(deviceCounts(elastic)).to.deep.equal([4, 2, 1]);
    expect(deviceCounts(spec)).to.deep.equal([1]);
  });

  it('placement - an elastic job takes fewer devices when no agent has all it asks for, and says so', () => {
    const a = gpuAgent('gpu-2x', [device('GPU-0', 0, big), device('GPU-1', 1, big)], [gpu(0, big), gpu(1, big)]);
    const d = place({ adverts: [a], checkpointAgent: null, reserved: () => heldOn([], a, 0) }, job({ spec: elastic }));
    expect(d.chosen).to.equal('gpu-2x');
    expect(d.devices).to.have.length(2);
    expect(d.summary).to.match(/on 2 of 4 devices: no agent has 4 for it now/);
  });

  it('placement - an agent that failed the job is passed over at every count before it is tried again', () => {
    const two = gpuAgent('gpu-2x', [device('GPU-0', 0, big), device('GPU-1', 1, big)], [gpu(0, big), gpu(1, big)]);
    const one = gpuAgent('gpu-1x', [device('GPU-9', 0, big)], [gpu(0, big)]);
    const fleetOf = { adverts: [two, one], checkpointAgent: 'gpu-2x', reserved: () => heldOn([], two, 0) };
    const d = place(fleetOf, job({ spec: elastic, exclude: ['gpu-2x'] }));
    expect(d.chosen).to.equal('gpu-1x');
    expect(d.devices).to.deep.equal(['GPU-9']);
  });
});
