// Failpoints for the chaos suite: TUNEFLEET_FAILPOINT=<name> makes the process kill itself
// with SIGKILL when it reaches the named point, the way a machine dies at the worst moment
// (after a side effect, before its reply). Unset in production; a named point is a no-op
// unless the variable names it exactly.
//
//   place:after-reserve   the control worker reserved a lease and dies before answering

export function failpoint(name: string, env: NodeJS.ProcessEnv = process.env): void {
  if (env.TUNEFLEET_FAILPOINT !== name) return;
  process.stderr.write(`failpoint ${name}: SIGKILL\n`);
  process.kill(process.pid, 'SIGKILL');
}
