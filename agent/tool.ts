// The tool-based scorer: a command from the spec (a JSON-schema check, a compiler, a test
// runner) gets one model's generations as JSONL on stdin — {"prompt", "reference",
// "output"} per line — and prints a JSON object of scores as its last stdout line, e.g.
// {"valid_json": 0.93}. It runs in a sandbox (unshare): its own network namespace (only a
// loopback that is down), its own PID namespace (killing its first process at the timeout
// ends every process it started, setsid or not) and its own mount namespace, in which the
// directories it must not see (the agent's home with its secrets and stack file, the agent's
// work directory with the trainer's files and other jobs, the user's home) are covered by
// empty read-only tmpfs mounts. It gets a fresh temporary directory (its cwd and HOME,
// removed afterwards), a minimal environment, and limits on CPU time, address space, file
// size and open files. Whatever goes wrong is reported in the result, never fatal to the job.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ToolRun } from '../shared';

const MAX_STDOUT = 1 << 20;
/** The most scores a tool may report. */
const MAX_SCORES = 64;

let isolation: { argv: string[] } | { error: string } | null = null;

/**
 * What runs inside the namespaces before the tool: cover each directory named in TUNEFLEET_HIDE (colon-separated)
 * with an empty read-only tmpfs, drop every capability, then exec the tool under its resource limits.
 */
const SANDBOX_SH = [
  'set -e',
  'IFS=:',
  'for d in $TUNEFLEET_HIDE; do',
  '  if [ -d "$d" ]; then mount -t tmpfs -o ro,size=4k,mode=000 tunefleet-hidden "$d"; fi',
  'done',
  'unset TUNEFLEET_HIDE IFS',
  // no capability survives into the tool (it cannot unmount what covers the hidden directories), nor can it gain one
  'exec setpriv --no-new-privs --bounding-set=-all --inh-caps=-all \\',
  '  prlimit --cpu="$TUNEFLEET_CPU_S" --as=8589934592 --fsize=268435456 --nofile=256 --core=0 -- "$@"',
].join('\n');

/**
 * How this machine sandboxes a process (network, PID and mount namespaces), or why it cannot (probed once per
 * process). As root the namespaces come directly; otherwise through a user namespace.
 */
export function networkIsolation(): { argv: string[] } | { error: string } {
  if (isolation) return isolation;
  const base = ['--net', '--pid', '--fork', '--kill-child', '--mount-proc'];
  for (const argv of [
    ['unshare', ...base, '--'],
    ['unshare', '--map-root-user', ...base, '--'],
  ]) {
    const probe = [...argv, 'sh', '-c', SANDBOX_SH, 'sandbox', 'true'];
    const r = spawnSync(probe[0] as string, probe.slice(1), {
      stdio: 'ignore',
      timeout: 5000,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TUNEFLEET_HIDE: tmpdir(), TUNEFLEET_CPU_S: '5' },
    });
    if (r.status === 0) return (isolation = { argv });
  }
  return (isolation = {
    error:
      'cannot sandbox the tool here: unshare --net --pid --mount (directly or in a user namespace), setpriv and ' +
      'prlimit are needed',
  });
}

export async function runTool(
  command: string[],
  timeoutS: number,
  rows: { prompt: string; reference: string; output: string }[],
  /** directories the tool must not see (they are covered by empty mounts inside its sandbox) */
  hide: string[] = [],
): Promise<ToolRun> {
  const t0 = Date.now();
  const done = (scores: Record<string, number>, error: string | null): ToolRun => ({
    scores,
    error,
    seconds: (Date.now() - t0) / 1000,
  });
  const iso = networkIsolation();
  if ('error' in iso) return done({}, iso.error);
  const dir = await mkdtemp(join(tmpdir(), 'tunefleet-tool-'));
  try {
    const child = spawn(iso.argv[0] as string, [...iso.argv.slice(1), 'sh', '-c', SANDBOX_SH, 'sandbox', ...command], {
      cwd: dir,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: dir,
        TMPDIR: dir,
        LANG: 'C.UTF-8',
        // its own directory is never hidden, whatever contains it
        TUNEFLEET_HIDE: hide.filter((h) => h && !dir.startsWith(h.endsWith('/') ? h : `${h}/`)).join(':'),
        TUNEFLEET_CPU_S: String(timeoutS + 1),
      },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      if (out.length < MAX_STDOUT) out += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 8192) err += b.toString();
    });
    child.stdin.on('error', () => {}); // a tool that exits without reading its input
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        /* gone */
      }
    }, timeoutS * 1000);
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; spawnError?: string }>((res) => {
      child.on('error', (e) => res({ code: null, signal: null, spawnError: e.message }));
      child.on('close', (code, signal) => res({ code, signal }));
    });
    // one write, never awaited: a tool that exits without reading (or never starts) must not
    // leave us waiting for a 'drain' that cannot come
    child.stdin.end(rows.map((r) => JSON.stringify(r) + '\n').join(''));
    const e = await exit;
    clearTimeout(timer);
    if (e.spawnError) return done({}, `could not start ${command[0]}: ${e.spawnError}`);
    if (timedOut) return done({}, `timed out after ${timeoutS} s (killed)`);
    const tail = err.trim().split('\n').slice(-3).join(' | ');
    if (e.code !== 0) return done({}, `exited with ${e.code ?? e.signal}${tail ? `: ${tail}` : ''}`);
    const last = out.trim().split('\n').pop() ?? '';
    let parsed: unknown;
    try {
      parsed = JSON.parse(last);
    } catch {
      return done({}, `its last line is not JSON: ${JSON.stringify(last.slice(0, 120))}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      return done({}, 'its last line must be a JSON object of scores');
    if (Object.keys(parsed).length > MAX_SCORES)
      return done({}, `it reported ${Object.keys(parsed).length} scores; at most ${MAX_SCORES}`);
    const scores: Record<string, number> = {};
    for (const [k, v] of Object.entries(parsed)) {
      if (!/^[a-z0-9_-]{1,64}$/i.test(k))
        return done({}, `score name ${JSON.stringify(k)}: letters, digits, _ and - only`);
      if (typeof v !== 'number' || !Number.isFinite(v)) return done({}, `score ${k} is not a finite number`);
      scores[k] = v;
    }
    return done(scores, null);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
