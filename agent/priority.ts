// Trainers run below the agent. A host busy training must still heartbeat, advertise and
// answer Temporal in time, and on a small host (or the embedded stack, where the control
// worker shares the CPU too) a trainer at the same priority starves them. So the agent
// starts each trainer (train and evaluate sessions) `nice` levels below itself:
//
//   nice -n <N> [ionice -c 2 -n 7 -t] python -m tunefleet_trainer ...
//
// `nice` is relative (an agent itself at nice 5 gives its trainers 5 + N) and inherited by
// every thread and process the trainer starts; `ionice` (util-linux, where installed) puts
// its disk I/O in the best-effort class at the lowest level, and `-t` lets the trainer
// start anyway where the kernel refuses (a container without the capability). The
// wrappers exec, so the pid the agent sees is the trainer's own. N = 0 starts trainers at
// the agent's own priority (no wrapper).
//
// Sessions also share the cores instead of each taking all of them: a trainer gets
// OMP_NUM_THREADS (and MKL_NUM_THREADS) = cores / --max-sessions, at least 1, unless
// --trainer-threads says otherwise. PyTorch's OpenMP threads spin while they wait, so two
// trainers each running one thread per core do not share a machine, they fight over it:
// on 2 cores, two tiny-model trainers took 79 s each for 600 steps with 2 threads apiece
// and 11 s each with 1 (one alone: 9-12 s with either). The budget is fixed per agent,
// not per moment, so a session's thread count (and with it the order of its float
// reductions) does not depend on what else happens to run.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Nice levels a trainer runs below its agent unless `--trainer-nice` says otherwise. */
export const DEFAULT_TRAINER_NICE = 10;

export interface Priority {
  /** 0..19 levels below the agent */
  nice: number;
}

/** The executable `name` on PATH, or null. */
export function onPath(name: string, path = process.env.PATH ?? ''): string | null {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

const found = new Map<string, string | null>();
function cachedOnPath(name: string): string | null {
  if (!found.has(name)) found.set(name, onPath(name));
  return found.get(name) ?? null;
}

/**
 * The argv that starts `argv` at the given priority: `nice` (and `ionice` where present)
 * in front, or `argv` itself for nice 0 or where `nice` is not installed (the caller logs
 * `note`).
 */
export function withPriority(
  argv: readonly string[],
  p: Priority,
  find: (name: string) => string | null = cachedOnPath,
): { argv: string[]; note: string | null } {
  if (p.nice === 0) return { argv: [...argv], note: null };
  const nice = find('nice');
  if (!nice) return { argv: [...argv], note: `'nice' is not on PATH: trainers run at the agent's own CPU priority` };
  const ionice = find('ionice');
  return {
    argv: [nice, '-n', String(p.nice), ...(ionice ? [ionice, '-c', '2', '-n', '7', '-t'] : []), ...argv],
    note: null,
  };
}

/**
 * Sessions an agent runs at once unless --max-sessions says otherwise. With CUDA the GPU
 * bounds a session, and placement's memory reservations decide how many fit (at most 4).
 * On CPU the cores are the session: a trainer's speed is its threads, and two sessions on
 * 2 cores are each more than twice slower than one with both cores (the demo's job: 159 s
 * with 2 threads, 376 s with 1). So one session per 2 cores, 1 to 4; more jobs queue.
 */
export function defaultMaxSessions(cuda: boolean, cores: number): number {
  return cuda ? 4 : Math.min(4, Math.max(1, Math.floor(cores / 2)));
}

/** CPU threads each trainer may use: the agent's cores split evenly over its sessions. */
export function threadsPerSession(cores: number, maxSessions: number): number {
  return Math.max(1, Math.floor(cores / Math.max(1, maxSessions)));
}

/** The environment that holds a trainer to `threads` CPU threads. */
export function threadEnv(threads: number): Record<string, string> {
  return { OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) };
}

/** Checks a --trainer-nice value: a whole number from 0 to 19. */
export function parseNice(text: string): number | null {
  const n = Number(text);
  return /^\d+$/.test(text.trim()) && Number.isInteger(n) && n >= 0 && n <= 19 ? n : null;
}
