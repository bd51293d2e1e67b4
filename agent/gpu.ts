// GPU discovery. Parsing nvidia-smi output is pure (parseNvidiaSmiCsv, parseNvidiaSmiXml,
// mergeGpuViews), tested on captured and documented outputs; running the commands is
// separate (probeGpus). "N/A" and "[Not Supported]" read as null; a missing nvidia-smi, a
// driver error or garbage means "no usable GPU" with a note why, never a crash.
import { execFile } from 'node:child_process';
import { XMLParser } from 'fast-xml-parser';
import type { Device, GpuAdvert } from '../shared';
import { buildDevices, parseNvidiaSmiList, parseTopology } from './devices';

export const NVIDIA_SMI_FIELDS = [
  'index',
  'uuid',
  'name',
  'memory.total',
  'memory.used',
  'memory.free',
  'utilization.gpu',
  'temperature.gpu',
  'power.draw',
  'compute_cap',
  'driver_version',
] as const;

const MiB = 2 ** 20;

/** A number from nvidia-smi text ("81559", "81559 MiB", "70.10 W", "31 C"), or null for N/A and friends. */
export function smiNumber(s: unknown): number | null {
  if (typeof s === 'number') return Number.isFinite(s) ? s : null;
  if (typeof s !== 'string') return null;
  const t = s.trim();
  if (t === '' || /N\/A|not supported|unknown|insufficient permissions|err!/i.test(t)) return null;
  const m = /^(-?\d+(?:\.\d+)?)\s*(MiB|W|C|%)?$/.exec(t);
  return m ? Number(m[1]) : null;
}

function smiText(s: unknown): string | null {
  if (typeof s !== 'string' && typeof s !== 'number') return null;
  const t = String(s).trim();
  return t === '' || /N\/A|not supported/i.test(t) ? null : t;
}

export interface GpuParse {
  gpus: GpuAdvert[];
  errors: string[];
}

/** Parse `nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits`. */
export function parseNvidiaSmiCsv(out: string): GpuParse {
  const gpus: GpuAdvert[] = [];
  const errors: string[] = [];
  out.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const cols = line.split(',').map((c) => c.trim());
    if (cols.length !== NVIDIA_SMI_FIELDS.length) {
      errors.push(
        `line ${i + 1}: expected ${NVIDIA_SMI_FIELDS.length} fields, got ${cols.length}: ${line.slice(0, 80)}`,
      );
      return;
    }
    const [index, uuid, name, total, used, free, util, temp, power, cc, driver] = cols;
    const idx = smiNumber(index);
    const t = smiNumber(total);
    if (idx === null || t === null || t <= 0) {
      errors.push(`line ${i + 1}: no index or total memory: ${line.slice(0, 80)}`);
      return;
    }
    const u = smiNumber(used);
    const f = smiNumber(free);
    gpus.push({
      index: idx,
      uuid: uuid ?? '',
      name: name ?? '',
      memory_total: Math.round(t * MiB),
      memory_used: Math.round((u ?? (f !== null ? t - f : 0)) * MiB),
      memory_free: Math.round((f ?? (u !== null ? t - u : 0)) * MiB),
      utilization_pct: smiNumber(util),
      temperature_c: smiNumber(temp),
      compute_capability: smiNumber(cc) !== null ? (cc as string) : null,
      power_w: smiNumber(power),
      driver_version: smiText(driver),
      cuda_version: null,
      mig_mode: null,
      mig_instances: [],
      ecc_uncorrectable: null,
    });
  });
  return { gpus, errors };
}

export interface XmlGpu {
  uuid: string;
  minor: number | null;
  cuda_version: string | null;
  driver_version: string | null;
  mig_mode: 'enabled' | 'disabled' | null;
  mig_instances: GpuAdvert['mig_instances'];
  ecc_uncorrectable: number | null;
  ecc_correctable: number | null;
}

const asArray = <T>(x: T | T[] | undefined | null): T[] =>
  x === undefined || x === null || x === '' ? [] : Array.isArray(x) ? x : [x];

/**
 * Sum every counter under an ECC block whose path says (un)correctable: new (sram_/dram_) and old
 * (single_bit/double_bit) layouts.
 */
function eccSum(block: unknown, kind: 'uncorrectable' | 'correctable'): number | null {
  let sum = 0;
  let seen = false;
  const walk = (node: unknown, path: string): void => {
    if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node as Record<string, unknown>)) walk(v, `${path}/${k}`);
      return;
    }
    const isUnc = /uncorrectable|double_bit/.test(path);
    const isCor = /(^|[/_])correctable|single_bit/.test(path) && !/uncorrectable/.test(path);
    if ((kind === 'uncorrectable' && !isUnc) || (kind === 'correctable' && !isCor)) return;
    if (/total$/.test(path) && /single_bit|double_bit/.test(path)) return; // old layout repeats a total
    const n = smiNumber(node);
    if (n !== null) {
      sum += n;
      seen = true;
    }
  };
  walk(block, '');
  return seen ? sum : null;
}

/** Parse `nvidia-smi -q -x`: what the CSV lacks (CUDA version, MIG, ECC). */
export function parseNvidiaSmiXml(xml: string): { gpus: XmlGpu[]; errors: string[] } {
  let doc: Record<string, unknown>;
  try {
    doc = new XMLParser({ ignoreAttributes: true, parseTagValue: false, trimValues: true }).parse(xml, true) as Record<
      string,
      unknown
    >;
  } catch (e) {
    return { gpus: [], errors: [`not XML: ${(e as Error).message.split('\n')[0]}`] };
  }
  const log = doc.nvidia_smi_log as Record<string, unknown> | undefined;
  if (!log || typeof log !== 'object') return { gpus: [], errors: ['no <nvidia_smi_log> element'] };
  const cuda = smiText(log.cuda_version);
  const driver = smiText(log.driver_version);
  const gpus = asArray(log.gpu as Record<string, unknown> | Record<string, unknown>[]).map((g): XmlGpu => {
    const mig = g.mig_mode as Record<string, unknown> | undefined;
    const current = smiText(mig?.current_mig)?.toLowerCase();
    const devices = asArray(
      (g.mig_devices as Record<string, unknown> | undefined)?.mig_device as
        Record<string, unknown> | Record<string, unknown>[],
    );
    const ecc = g.ecc_errors as Record<string, unknown> | undefined;
    const eccMode = smiText((g.ecc_mode as Record<string, unknown> | undefined)?.current_ecc)?.toLowerCase();
    const eccOn = eccMode === undefined || eccMode === 'enabled';
    return {
      uuid: smiText(g.uuid) ?? '',
      minor: smiNumber(g.minor_number),
      cuda_version: cuda,
      driver_version: driver,
      mig_mode: current === 'enabled' ? 'enabled' : current === 'disabled' ? 'disabled' : null,
      mig_instances: devices.flatMap((d) => {
        const mem = d.fb_memory_usage as Record<string, unknown> | undefined;
        const gi = smiNumber(d.gpu_instance_id);
        const ci = smiNumber(d.compute_instance_id);
        const total = smiNumber(mem?.total);
        const free = smiNumber(mem?.free);
        if (gi === null || ci === null || total === null) return [];
        return [
          {
            gpu_instance: gi,
            compute_instance: ci,
            memory_total: Math.round(total * MiB),
            memory_free: Math.round((free ?? total) * MiB),
          },
        ];
      }),
      ecc_uncorrectable: eccOn && ecc ? eccSum(ecc.volatile, 'uncorrectable') : null,
      ecc_correctable: eccOn && ecc ? eccSum(ecc.volatile, 'correctable') : null,
    };
  });
  return { gpus, errors: gpus.length === 0 ? ['no <gpu> elements'] : [] };
}

/** The CSV's numbers, completed by the XML's facts for the same uuid. */
export function mergeGpuViews(csv: GpuAdvert[], xml: XmlGpu[]): GpuAdvert[] {
  const byUuid = new Map(xml.map((x) => [x.uuid, x]));
  return csv.map((g) => {
    const x = byUuid.get(g.uuid);
    if (!x) return g;
    return {
      ...g,
      cuda_version: x.cuda_version,
      driver_version: g.driver_version ?? x.driver_version,
      mig_mode: x.mig_mode,
      mig_instances: x.mig_instances,
      ecc_uncorrectable: x.ecc_uncorrectable,
    };
  });
}

export interface GpuProbe {
  gpus: GpuAdvert[];
  /** every GPU, or its MIG instances, with UUIDs and topology (empty when there is no GPU) */
  devices: Device[];
  note: string | null;
}

/**
 * The nvidia-smi to run: `TUNEFLEET_NVIDIA_SMI` names another executable taking the same arguments and printing the
 * same formats (a test seam: a recorded or written-out 8-GPU or MIG host on a machine without one).
 */
export function nvidiaSmi(): string {
  return process.env.TUNEFLEET_NVIDIA_SMI || 'nvidia-smi';
}

function run(bin: string, args: string[]): Promise<{ ok: true; out: string } | { ok: false; why: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { timeout: 15_000, maxBuffer: 32 * MiB }, (err, stdout, stderr) => {
      if (!err) return resolve({ ok: true, out: stdout });
      const code = (err as NodeJS.ErrnoException).code;
      resolve({
        ok: false,
        why:
          code === 'ENOENT'
            ? 'nvidia-smi not found'
            : `nvidia-smi failed: ${(stderr || stdout || err.message).trim().split('\n')[0]}`,
      });
    });
  });
}

/**
 * Run nvidia-smi: CSV for numbers, XML for CUDA/MIG/ECC, -L for the MIG instances' UUIDs, topo -m for NVLink and NUMA.
 * No binary, a driver error or garbage all mean no GPUs; a missing detail only means less is known.
 */
export async function probeGpus(bin = nvidiaSmi()): Promise<GpuProbe> {
  const csv = await run(bin, [`--query-gpu=${NVIDIA_SMI_FIELDS.join(',')}`, '--format=csv,noheader,nounits']);
  if (!csv.ok) return { gpus: [], devices: [], note: `${csv.why}: CPU agent` };
  const parsed = parseNvidiaSmiCsv(csv.out);
  if (parsed.gpus.length === 0)
    return {
      gpus: [],
      devices: [],
      note: `nvidia-smi output not understood (${parsed.errors[0] ?? 'empty'}): CPU agent`,
    };
  const [xml, list, topo] = await Promise.all([run(bin, ['-q', '-x']), run(bin, ['-L']), run(bin, ['topo', '-m'])]);
  const notes: string[] = parsed.errors.slice(0, 1);
  let gpus = parsed.gpus;
  if (xml.ok) {
    const details = parseNvidiaSmiXml(xml.out);
    gpus = mergeGpuViews(parsed.gpus, details.gpus);
    notes.push(...details.errors.slice(0, 1));
  } else notes.push(`${xml.why} (-q -x): no CUDA/MIG/ECC details`);
  const listed = list.ok ? parseNvidiaSmiList(list.out) : [];
  const topology = parseTopology(topo.ok ? topo.out : '');
  const devices = buildDevices(gpus, listed, topology);
  const unnamed = gpus.filter((g) => g.mig_mode === 'enabled').length > 0 && devices.length === 0;
  if (unnamed) notes.push('MIG is on but nvidia-smi -L names no MIG instance: none is offered');
  return { gpus, devices, note: notes[0] ?? null };
}
