// The tool-based scorer: a command from the spec (a JSON-schema check, a compiler, a test
// runner) gets one model's generations as JSONL on stdin — {"prompt", "reference",
// "output"} per line — and prints a JSON object of scores as its last stdout line, e.g.
// {"valid_json": 0.93}. It runs in a fresh temporary directory (its cwd and HOME, removed
// afterwards), with a minimal environment, without network (a new network namespace via
// unshare: only a loopback that is down), and is killed with its process group at the
// timeout. Whatever goes wrong is reported in the result, never fatal to the job.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ToolRun } from '../shared';

const MAX_STDOUT = 1 << 20;

let isolation: { argv: string[] } | { error: string } | null = null;

/** How this machine cuts a process off the network, or why it cannot (probed once per process). */
export function networkIsolation(): { argv: string[] } | { error: string } {
  if (isolation) return isolation;
  for (const argv of [
    ['unshare', '--net', '--'],
    ['unshare', '--map-root-user', '--net', '--'],
  ]) {
    const r = spawnSync(argv[0] as string, [...argv.slice(1), 'true'], { stdio: 'ignore', timeout: 5000 });
    if (r.status === 0) return (isolation = { argv });
  }
  return (isolation = {
    error: 'cannot run the tool without network here: unshare --net (or a user namespace) is not permitted',
  });
}

export async function runTool(
  command: string[],
  timeoutS: number,
  rows: { prompt: string; reference: string; output: string }[],
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
    const child = spawn(iso.argv[0] as string, [...iso.argv.slice(1), ...command], {
      cwd: dir,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, TMPDIR: dir, LANG: 'C.UTF-8' },
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
