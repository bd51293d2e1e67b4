// GPU discovery. Parsing nvidia-smi output is a pure function, tested on captured and
// documented outputs; running the command is separate. "N/A" and "[Not Supported]" read
// as null; a missing nvidia-smi or a driver error means "no usable GPU", never a crash.
import { execFile } from 'node:child_process';
import type { GpuAdvert } from '../shared';

export const NVIDIA_SMI_FIELDS = ['index', 'uuid', 'name', 'memory.total', 'memory.used', 'memory.free', 'utilization.gpu', 'temperature.gpu', 'compute_cap'] as const;

const MiB = 2 ** 20;

function num(s: string | undefined): number | null {
  if (s === undefined) return null;
  const t = s.trim();
  if (t === '' || /^\[?N\/A\]?$/i.test(t) || /not supported/i.test(t) || /unknown/i.test(t)) return null;
  const n = Number(t);
  return Number.isFinite(n) ? n : null;
}

export interface GpuParse { gpus: GpuAdvert[]; errors: string[] }

/** Parse `nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits`. */
export function parseNvidiaSmiCsv(out: string): GpuParse {
  const gpus: GpuAdvert[] = [];
  const errors: string[] = [];
  out.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const cols = line.split(',').map((c) => c.trim());
    if (cols.length !== NVIDIA_SMI_FIELDS.length) {
      errors.push(`line ${i + 1}: expected ${NVIDIA_SMI_FIELDS.length} fields, got ${cols.length}: ${line.slice(0, 80)}`);
      return;
    }
    const [index, uuid, name, total, used, free, util, temp, cc] = cols;
    const idx = num(index);
    const t = num(total);
    if (idx === null || t === null) {
      errors.push(`line ${i + 1}: no index or total memory: ${line.slice(0, 80)}`);
      return;
    }
    const u = num(used);
    const f = num(free);
    gpus.push({
      index: idx,
      uuid: uuid ?? '',
      name: name ?? '',
      memory_total: Math.round(t * MiB),
      memory_used: Math.round((u ?? (f !== null ? t - f : 0)) * MiB),
      memory_free: Math.round((f ?? (u !== null ? t - u : 0)) * MiB),
      utilization_pct: num(util),
      temperature_c: num(temp),
      compute_capability: num(cc) !== null ? (cc as string) : null,
    });
  });
  return { gpus, errors };
}

export interface GpuProbe { gpus: GpuAdvert[]; note: string | null }

/** Run nvidia-smi; no binary, a driver error or garbage all mean no GPUs, with a note why. */
export function probeGpus(bin = 'nvidia-smi'): Promise<GpuProbe> {
  return new Promise((resolve) => {
    execFile(bin, [`--query-gpu=${NVIDIA_SMI_FIELDS.join(',')}`, '--format=csv,noheader,nounits'], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        resolve({ gpus: [], note: code === 'ENOENT' ? 'nvidia-smi not found: CPU agent' : `nvidia-smi failed: ${(stderr || err.message).trim().split('\n')[0]}` });
        return;
      }
      const parsed = parseNvidiaSmiCsv(stdout);
      resolve({ gpus: parsed.gpus, note: parsed.errors.length ? `nvidia-smi output not understood: ${parsed.errors[0]}` : null });
    });
  });
}
