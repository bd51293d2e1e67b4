// Which processes a test run started, found by a marker in their environment: every
// process the tests start (servers, control workers, agents, trainers, CLI calls, pytest's
// subprocesses) inherits TUNEFLEET_TEST_RUN from `npm test`, and a mocha process adds its
// own TUNEFLEET_TEST_MARK (hooks.ts). Marked processes are found in /proc whatever started
// them, even a trainer whose agent was killed; a process that rewrites its environment
// would escape this, and none of ours does.
import { readFileSync, readdirSync } from 'node:fs';

export const RUN_VAR = 'TUNEFLEET_TEST_RUN';
export const MARK_VAR = 'TUNEFLEET_TEST_MARK';

export interface Proc {
  pid: number;
  ppid: number;
  command: string;
}

/**
 * The numeric fields of a /proc/<pid>/stat (or /proc/<pid>/task/<tid>/stat) line after
 * "(comm)", which may hold spaces and parentheses: index 0 is the state, 1 the parent pid,
 * 11-14 utime/stime/cutime/cstime in clock ticks, 16 nice. Null when the process is gone.
 */
export function statFields(path: string): number[] | null {
  try {
    const stat = readFileSync(path, 'latin1');
    return stat
      .slice(stat.lastIndexOf(')') + 2)
      .split(' ')
      .map(Number);
  } catch {
    return null;
  }
}

function readProc(pid: number): { environ: string; command: string; ppid: number } | null {
  try {
    const environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
    const command = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').filter(Boolean).join(' ');
    const ppid = statFields(`/proc/${pid}/stat`)?.[1];
    if (ppid === undefined) return null;
    return { environ, command, ppid };
  } catch {
    return null; // gone, or not ours to read
  }
}

/** The pid and its ancestors: a run's own shell, npm and mocha carry the marker too. */
function ancestors(pid: number): Set<number> {
  const out = new Set<number>();
  for (let p = pid; p > 1 && !out.has(p);) {
    out.add(p);
    p = readProc(p)?.ppid ?? 0;
  }
  return out;
}

/** Live processes whose environment holds `name=value`, except `self` and its ancestors. */
export function markedProcesses(name: string, value: string, self = process.pid): Proc[] {
  const skip = ancestors(self);
  const needle = `${name}=${value}`;
  const out: Proc[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || skip.has(pid)) continue;
    const p = readProc(pid);
    if (!p || !p.environ.split('\0').includes(needle)) continue;
    // a zombie has no cmdline; its parent reaps it
    if (p.command === '') continue;
    out.push({ pid, ppid: p.ppid, command: p.command });
  }
  return out;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** SIGCONT + SIGTERM, then SIGKILL what is left after `graceMs`; returns what was found. */
export async function stopMarked(name: string, value: string, graceMs = 10_000): Promise<Proc[]> {
  const found = markedProcesses(name, value);
  for (const p of found) {
    signal(p.pid, 'SIGCONT'); // a stopped process cannot act on SIGTERM
    signal(p.pid, 'SIGTERM');
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && markedProcesses(name, value).length > 0) await new Promise((r) => setTimeout(r, 200));
  for (const p of markedProcesses(name, value)) signal(p.pid, 'SIGKILL');
  return found;
}

/** SIGKILL every marked process now (for a process that is exiting and cannot wait). */
export function killMarkedNow(name: string, value: string): void {
  for (const p of markedProcesses(name, value)) signal(p.pid, 'SIGKILL');
}

// `node dist/test/harness/procs.js <run id>`: the last step of `npm test`. Lists, stops and
// fails on any process of the run still alive.
if (require.main === module) {
  const run = process.argv[2] ?? '';
  void (async () => {
    if (!run) throw new Error('usage: procs.js <value of TUNEFLEET_TEST_RUN>');
    const left = await stopMarked(RUN_VAR, run);
    if (left.length === 0) {
      console.log('no process of the suite is left');
      return;
    }
    console.log(`${left.length} process(es) of the suite were still running (now stopped):`);
    for (const p of left) console.log(`  ${p.pid} (parent ${p.ppid}) ${p.command.slice(0, 200)}`);
    process.exitCode = 1;
  })().catch((e: unknown) => {
    console.error(String(e));
    process.exitCode = 2;
  });
}
