// What the command groups share: global flags, a connected client for the command's
// run, following a job with a progress line, and flag parsing.
import { Command } from 'commander';
import { ErrorCode, JOB_STATES, TunefleetError, type Config, type Flags, type JobState } from '../../../shared';
import { JobClient } from '../client';
import { connectionFlags } from '../../../shared/cliflags';
import { loadConfig } from '../../config';
import { formatResult } from '../format';
import { Progress, formatEvent } from '../progress';

/** Redraw in place only on a terminal, and not when NO_COLOR is set (https://no-color.org). */
export function redraws(): boolean {
  return process.stdout.isTTY === true && !process.env.NO_COLOR;
}

export function globalFlags(cmd: Command): Flags {
  return connectionFlags(cmd.optsWithGlobals<Flags>());
}

export async function withClient<T>(
  cmd: Command,
  fn: (s: JobClient, cfg: Config) => Promise<T>,
  identity: 'cli' | 'operator' = 'cli',
): Promise<T> {
  const cfg = loadConfig(globalFlags(cmd));
  const client = await JobClient.connect(cfg, identity);
  try {
    return await fn(client, cfg);
  } finally {
    await client.close();
  }
}

/** A finished job's result with its loss chart; a failed gate exits 3 (the adapter is stored). */
export async function printFinal(
  client: JobClient,
  r: Awaited<ReturnType<JobClient['events']['follow']>>,
): Promise<void> {
  console.log(`\n${formatResult(r, await client.events.lossCurve(r.jobId))}`);
  if (r.state === 'failed_gate') process.exitCode = 3;
}

/**
 * Follow a job: on a terminal one progress line redrawn in place (and notable events above it); else one line per
 * event.
 */
export async function followWithProgress(
  client: JobClient,
  jobId: string,
): Promise<Awaited<ReturnType<JobClient['events']['follow']>>> {
  const tty = redraws();
  const bar = new Progress();
  let drawn = false;
  try {
    return await client.events.follow(jobId, (e) => {
      const changed = bar.update(e);
      const line = formatEvent(e);
      // not a terminal (a pipe, a CI log) or NO_COLOR: one plain line per event, no bar
      if (!tty) {
        if (line) console.log(line);
        return;
      }
      if (line && e.type !== 'step') process.stdout.write(`${drawn ? '\r\x1b[2K' : ''}${line}\n`);
      if (changed || (line && e.type !== 'step')) {
        process.stdout.write(`\r\x1b[2K${bar.line()}`);
        drawn = true;
      }
    });
  } finally {
    if (drawn) process.stdout.write('\n');
  }
}

export function reviewFormat(file: string): 'csv' | 'jsonl' {
  if (/\.csv$/i.test(file)) return 'csv';
  if (/\.jsonl$/i.test(file)) return 'jsonl';
  throw new TunefleetError(ErrorCode.FlagInvalid, `'${file}': a review file is .csv or .jsonl`, { field: 'file' });
}

export function intFlag(v: string, flag: string, min: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < min)
    throw new TunefleetError(ErrorCode.FlagInvalid, `${flag} '${v}' must be a whole number ≥ ${min}`, { field: flag });
  return n;
}

/** A --state value: one of the job states. */
export function jobState(v: string): JobState {
  if ((JOB_STATES as readonly string[]).includes(v)) return v as JobState;
  throw new TunefleetError(ErrorCode.FlagInvalid, `--state '${v}' is not a job state (${JOB_STATES.join(', ')})`, {
    field: '--state',
  });
}

/** A --since value: an ISO time, or an age like 30m, 12h, 7d (counted back from `now`). */
export function sinceFlag(v: string, now: number): Date {
  const age = /^(\d+)([smhd])$/.exec(v.trim());
  if (age) {
    const unit = { s: 1, m: 60, h: 3600, d: 86_400 }[age[2] as 's' | 'm' | 'h' | 'd'];
    return new Date(now - Number(age[1]) * unit * 1000);
  }
  const t = Date.parse(v);
  if (Number.isNaN(t))
    throw new TunefleetError(ErrorCode.FlagInvalid, `--since '${v}' is neither an ISO time nor an age like 12h`, {
      field: '--since',
    });
  return new Date(t);
}
