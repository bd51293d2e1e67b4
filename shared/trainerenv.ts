// Where the Python trainer lives and what of a process's environment it may inherit. Shared by the agent, which
// runs the trainer for its sessions, and the CLI, which runs it on the user's machine (export --merged).
import { resolve } from 'node:path';

export const TRAINER_DIR = resolve(__dirname, '..', '..', 'agent', 'trainer');

/** What a trainer may inherit from the agent's environment: locale, paths, and the CUDA / NCCL / torch / HF knobs. */
const INHERITED = new RegExp(
  '^(PATH|HOME|USER|LOGNAME|LANG|LANGUAGE|TZ|TMPDIR|LD_LIBRARY_PATH|XDG_CACHE_HOME|' +
    '(LC|CUDA|NVIDIA|NCCL|TORCH|PYTORCH|HF|TRANSFORMERS|TRITON|OMP|MKL|KMP|BNB)_\\w+)$',
);
/** ... and never a secret, whatever its name's prefix (HF_TOKEN). */
const SECRET = /TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE/i;

/** The agent's environment, filtered to what a trainer needs: no credentials, no tunefleet settings. */
export function trainerEnv(parent: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(parent)) if (v !== undefined && INHERITED.test(k) && !SECRET.test(k)) out[k] = v;
  return out;
}
