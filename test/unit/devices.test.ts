// Devices from nvidia-smi: MIG instances by UUID (-L), NVLink / PCIe switch / NUMA (topo -m),
// --gpus selection, the TUNEFLEET_NVIDIA_SMI seam, and reading adverts of both protocol versions.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDevices, parseGpuSelection, parseNvidiaSmiList, parseTopology, selectDevices } from '../../agent/devices';
import { mergeGpuViews, parseNvidiaSmiCsv, parseNvidiaSmiXml, probeGpus } from '../../agent/gpu';
import { ErrorCode, TunefleetError, advertDevices, allocatableBytes, capacityBytes, parseAdvert } from '../../shared';
import { thrown } from '../harness/expect';
import { ROOT } from '../harness/stack';

const DIR = join(ROOT, 'test', 'fixtures', 'nvidia-smi');
const fixture = (name: string): string => readFileSync(join(DIR, name), 'utf8');
const MiB = 2 ** 20;

const gpusOf = (name: string): ReturnType<typeof mergeGpuViews> =>
  mergeGpuViews(parseNvidiaSmiCsv(fixture(`${name}.csv`)).gpus, parseNvidiaSmiXml(fixture(`${name}.xml`)).gpus);

/** the fake hosts' directories, removed after the suite */
const made: string[] = [];
after(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A host's nvidia-smi from fixtures: the CSV query, -q -x, -L and topo -m, like the real one's arguments. */
function fakeHost(name: string, topo?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'fake-host-'));
  made.push(dir);
  const p = join(dir, 'nvidia-smi');
  const f = (ext: string): string => `'${join(DIR, `${name}.${ext}`)}'`;
  writeFileSync(
    p,
    '#!/bin/sh\ncase "$1" in\n' +
      `  -q) cat ${f('xml')} ;;\n  -L) cat ${f('list')} ;;\n` +
      `  topo) ${topo ? `cat '${join(DIR, topo)}'` : 'echo "topology not supported" >&2; exit 3'} ;;\n` +
      `  *) cat ${f('csv')} ;;\nesac\n`,
  );
  chmodSync(p, 0o755);
  return p;
}

describe('devices - from nvidia-smi', () => {
  it('devices - nvidia-smi -L names each GPU and its MIG instances with their UUIDs', () => {
    const [g] = parseNvidiaSmiList(fixture('a100-mig.list'));
    expect(g).to.deep.include({ index: 0, uuid: 'GPU-a100a100-0000-4000-8000-000000000001' });
    expect(g?.migs.map((m) => [m.device, m.profile, m.uuid])).to.deep.equal([
      [0, '3g.40gb', 'MIG-1f0c3e7a-5b2d-5c4e-9a10-000000000001'],
      [1, '3g.40gb', 'MIG-1f0c3e7a-5b2d-5c4e-9a10-000000000002'],
    ]);
    expect(parseNvidiaSmiList(fixture('a100-8x.list'))).to.have.length(8);
  });

  it('devices - topo -m: NVLink on an 8-GPU node, PCIe switches and NUMA nodes on a PCIe host', () => {
    const sxm = parseTopology(fixture('a100-8x.topo'));
    expect(sxm.link(0, 7)).to.equal('nvlink');
    expect(sxm.link(7, 0)).to.equal('nvlink');
    expect([sxm.numaNode(3), sxm.numaNode(4)]).to.deep.equal([0, 1]);
    const pcie = parseTopology(fixture('pcie-4x.topo'));
    expect([pcie.link(0, 1), pcie.link(2, 3), pcie.link(1, 2)]).to.deep.equal(['pcie_switch', 'pcie_switch', 'system']);
    expect([pcie.numaNode(1), pcie.numaNode(2)]).to.deep.equal([0, 1]);
    expect(parseTopology('garbage').link(0, 1)).to.equal(null);
  });

  it('devices - an 8-GPU node is eight devices, each with its own free memory and seven NVLink peers', () => {
    const gpus = gpusOf('a100-8x');
    const devices = buildDevices(
      gpus,
      parseNvidiaSmiList(fixture('a100-8x.list')),
      parseTopology(fixture('a100-8x.topo')),
    );
    expect(devices.map((d) => d.uuid)).to.deep.equal(gpus.map((g) => g.uuid));
    expect(devices.every((d) => d.kind === 'gpu' && d.nvlink.length === 7 && d.memory_total === 81920 * MiB)).to.equal(
      true,
    );
    expect(devices[2]?.memory_free).to.equal(20211 * MiB);
    expect(devices[3]?.memory_free).to.equal(81441 * MiB);
    expect(devices[5]?.numa_node).to.equal(1);
  });

  it('devices - with MIG on, the instances are the devices: MIG UUID, profile, parent and memory', () => {
    const devices = buildDevices(gpusOf('a100-mig'), parseNvidiaSmiList(fixture('a100-mig.list')), parseTopology(''));
    expect(devices.map((d) => [d.kind, d.uuid, d.name, d.memory_total / MiB, d.memory_free / MiB])).to.deep.equal([
      ['mig', 'MIG-1f0c3e7a-5b2d-5c4e-9a10-000000000001', '3g.40gb', 40192, 40155],
      ['mig', 'MIG-1f0c3e7a-5b2d-5c4e-9a10-000000000002', '3g.40gb', 40192, 9692],
    ]);
    expect(devices.every((d) => d.parent === 'GPU-a100a100-0000-4000-8000-000000000001')).to.equal(true);
    // no MIG UUID from -L: an instance cannot be pinned, so it is not offered
    expect(buildDevices(gpusOf('a100-mig'), [], parseTopology(''))).to.deep.equal([]);
  });

  it('devices - TUNEFLEET_NVIDIA_SMI gives the agent a written-out 8-GPU host', async () => {
    const before = process.env.TUNEFLEET_NVIDIA_SMI;
    process.env.TUNEFLEET_NVIDIA_SMI = fakeHost('a100-8x', 'a100-8x.topo');
    try {
      const r = await probeGpus();
      expect(r.note).to.equal(null);
      expect(r.devices).to.have.length(8);
      expect(r.devices[0]?.nvlink).to.have.length(7);
    } finally {
      if (before === undefined) delete process.env.TUNEFLEET_NVIDIA_SMI;
      else process.env.TUNEFLEET_NVIDIA_SMI = before;
    }
    // a host whose nvidia-smi has no topo: devices all the same, without peers
    const plain = await probeGpus(fakeHost('a100-mig'));
    expect(plain.devices.map((d) => d.kind)).to.deep.equal(['mig', 'mig']);
  });
});

describe('devices - --gpus', () => {
  const devices = buildDevices(gpusOf('a100-8x'), [], parseTopology(fixture('a100-8x.topo')));
  const migs = buildDevices(gpusOf('a100-mig'), parseNvidiaSmiList(fixture('a100-mig.list')), parseTopology(''));

  it('devices - indexes or UUIDs select; an index that is not there is refused with what there is', () => {
    expect(selectDevices(devices, parseGpuSelection('0,1,5')).map((d) => d.index)).to.deep.equal([0, 1, 5]);
    const uuid = devices[6]?.uuid as string;
    expect(selectDevices(devices, parseGpuSelection(uuid)).map((d) => d.index)).to.deep.equal([6]);
    expect(
      selectDevices(migs, ['MIG-1f0c3e7a-5b2d-5c4e-9a10-000000000002']).map((d) => d.memory_free / MiB),
    ).to.deep.equal([9692]);
    expect(selectDevices(migs, ['0'])).to.have.length(2);
    const e = thrown(() => selectDevices(devices, ['9']), 'selecting a GPU that is not there');
    expect(e).to.be.instanceOf(TunefleetError);
    expect((e as TunefleetError).code).to.equal(ErrorCode.FlagInvalid);
    expect(e.message).to.match(/'9'.*does not have.*7 GPU-00000007/);
    expect(selectDevices(devices, null)).to.have.length(8);
  });

  it('devices - a malformed --gpus is refused naming the bad part', () => {
    for (const [flag, why] of [
      ['0;1', /'0;1' is neither/],
      ['0,,1', /'' is neither/],
      ['gpu-1', /'gpu-1' is neither/],
      ['1,1', /names a device twice/],
    ] as const)
      expect(thrown(() => parseGpuSelection(flag), flag).message, flag).to.match(why);
  });

  it('devices - tunefleet agent start refuses a malformed --gpus, and a GPU the host lacks, before connecting', function () {
    this.timeout(30_000); // two CLI processes, each loading the agent's modules
    const bin = join(ROOT, 'bin', 'tunefleet');
    const env = { ...process.env, TUNEFLEET_NVIDIA_SMI: fakeHost('a100-8x'), TUNEFLEET_NATS_URL: 'nats://127.0.0.1:1' };
    const bad = spawnSync(process.execPath, [bin, 'agent', 'start', '--gpus', 'zero'], { env, encoding: 'utf8' });
    expect(bad.status, bad.stderr).to.equal(2);
    expect(bad.stderr).to.match(/--gpus 'zero'/);
    const missing = spawnSync(process.execPath, [bin, 'agent', 'start', '--gpus', '0,8'], { env, encoding: 'utf8' });
    expect(missing.status, missing.stderr).to.equal(2);
    expect(missing.stderr).to.match(/'8', which this host does not have/);
  });
});

describe('devices - adverts of both protocol versions', () => {
  const base = {
    agent_id: 'gpu-1',
    hostname: 'h',
    state: 'ready',
    labels: {},
    accelerator: 'cuda',
    cpu: { model: 'x', cores: 8 },
    memory: { total: 64 * 2 ** 30, available: 60 * 2 ** 30 },
    sessions: [],
    models: [],
    trainer: { methods: ['lora'], bitsandbytes: true, bf16: true },
    time: 1,
  };

  it('devices - a version-1 advert (no devices) is read, its devices derived from its GPUs', () => {
    const a = parseAdvert('gpu-1', JSON.stringify({ ...base, v: 1, gpus: gpusOf('a100-8x') }));
    const d = advertDevices(a);
    expect(d.map((x) => x.kind)).to.deep.equal(Array(8).fill('gpu'));
    expect(allocatableBytes(a)).to.equal(81441 * MiB);
    expect(capacityBytes(a)).to.equal(81920 * MiB);
  });

  it('devices - a version-2 advert offers only its devices (--gpus 2,5: the two busy GPUs)', () => {
    const gpus = gpusOf('a100-8x');
    const devices = selectDevices(buildDevices(gpus, [], parseTopology('')), ['2', '5']);
    const a = parseAdvert('gpu-1', JSON.stringify({ ...base, v: 2, gpus, devices }));
    expect(advertDevices(a).map((x) => x.index)).to.deep.equal([2, 5]);
    expect(allocatableBytes(a)).to.equal(20211 * MiB);
    const newer = thrown(() => parseAdvert('gpu-1', JSON.stringify({ ...base, v: 3, gpus })), 'a version-3 advert');
    expect(newer).to.be.instanceOf(TunefleetError).and.include({ code: ErrorCode.AdvertInvalid });
    expect(newer.message).to.equal('advert protocol newer than 2: upgrade this reader');
  });

  it('devices - a version-2 advert that lists no device offers nothing (a MIG GPU without MIG UUIDs)', () => {
    const a = parseAdvert('gpu-1', JSON.stringify({ ...base, v: 2, gpus: gpusOf('a100-mig'), devices: [] }));
    expect(advertDevices(a)).to.deep.equal([]);
    expect(allocatableBytes(a)).to.equal(0);
  });

  it('devices - a CPU advert has one CPU device with the RAM available', () => {
    const a = parseAdvert('cpu-1', JSON.stringify({ ...base, agent_id: 'cpu-1', accelerator: 'cpu', v: 1, gpus: [] }));
    expect(advertDevices(a)).to.deep.equal([
      {
        uuid: 'cpu',
        kind: 'cpu',
        index: 0,
        name: 'x',
        parent: null,
        memory_total: 60 * 2 ** 30,
        memory_free: 60 * 2 ** 30,
        compute_capability: null,
        nvlink: [],
        pcie_switch: [],
        numa_node: null,
      },
    ]);
  });
});
