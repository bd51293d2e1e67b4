// Mocha root hooks (loaded with --require by every mocha run that starts processes): the
// safety net under each suite's own after() hooks. Whatever a test started and did not
// stop — because a test or a hook failed or timed out — is stopped when mocha finishes,
// and killed if mocha itself exits early. Finding one is a failure of the run: each suite's
// after() must stop what it started. A mocha that has not exited 20 s after its last hook
// (an open connection, watcher or timer keeps it alive) says what keeps it and exits 1, so
// a leak is a failure with a reason rather than a run that never ends. See procs.ts for how
// processes are found.
import { randomBytes } from 'node:crypto';
import { MARK_VAR, killMarkedNow, stopMarked } from './procs';

// set before any test starts a process, so every child inherits it
const mark = (process.env[MARK_VAR] = `mocha-${process.pid}-${randomBytes(4).toString('hex')}`);

process.once('exit', () => killMarkedNow(MARK_VAR, mark));

/** One line per handle keeping the process alive: what it is and, where Node says, whose it is. */
function describeHandles(): string[] {
  const handles = (process as unknown as { _getActiveHandles(): object[] })._getActiveHandles();
  return handles.map((h) => {
    const r = h as Record<string, unknown> & { constructor: { name: string } };
    if (r.constructor.name === 'Timeout' && typeof r._onTimeout === 'function') {
      const source = String(r._onTimeout).replace(/\s+/g, ' ').slice(0, 160);
      return `timer ${String(r._idleTimeout)} ms${r._repeat ? ' (repeating)' : ''}: ${source}`;
    }
    const handle = r._handle as { fd?: number; constructor?: { name: string } } | undefined;
    const fd = handle?.fd ?? (r.fd as number | undefined);
    const spawnfile = (r as { spawnfile?: string }).spawnfile;
    const remote = r.remoteAddress ? ` to ${String(r.remoteAddress)}:${String(r.remotePort)}` : '';
    return `${r.constructor.name}${handle?.constructor ? `/${handle.constructor.name}` : ''}${fd !== undefined ? ` fd ${fd}` : ''}${remote}${spawnfile ? ` ${spawnfile}` : ''}`;
  });
}

export const mochaHooks = {
  async afterAll(this: Mocha.Context): Promise<void> {
    this.timeout(60_000);
    setTimeout(() => {
      console.error(
        `[harness] mocha is still running 20 s after its last hook; kept alive by: ${process.getActiveResourcesInfo().join(', ')}`,
      );
      for (const line of describeHandles()) console.error(`[harness]   ${line}`);
      process.exit(1);
    }, 20_000).unref();
    const left = await stopMarked(MARK_VAR, mark);
    if (left.length > 0) {
      throw new Error(
        `the tests left ${left.length} process(es) running (now stopped):\n${left.map((p) => `  ${p.pid} ${p.command.slice(0, 160)}`).join('\n')}`,
      );
    }
  },
};
