// Job commands: submit, status, list, cancel, explain, logs, watch.
import { Command } from 'commander';
import { printable } from '../../../shared/records';
import { JOB_STATES, MIN_EVAL_RECORDS, type JobEvent } from '../../../shared';
import { loadSpecFile, failureMessage } from '../client';
import { formatDecisions, table } from '../format';
import { followWithProgress, intFlag, jobState, printFinal, sinceFlag, withClient } from './common';
import { duration } from '../progress';

export function jobCommands(program: Command): void {
  program
    .command('submit')
    .addHelpText('after', '\nExample:\n  tunefleet submit examples/chat-unit-conversions.yaml --follow')
    .description('validate a job spec, upload its dataset and start the job')
    .argument('<spec>', 'job spec, YAML or JSON (see docs/spec.md)')
    .option('--id <jobId>', 'job id (default: <name>-<timestamp>-<random>)')
    .option('-f, --follow', 'show live progress and print the result when the job ends')
    .option('-w, --watch', 'the same as --follow')
    .option('--dry-run', 'only validate the spec and its files')
    .option('--strict-eval', `refuse an eval split of fewer than ${MIN_EVAL_RECORDS} records (else a warning)`)
    .action(
      async (
        specFile: string,
        opts: { id?: string; follow?: boolean; watch?: boolean; dryRun?: boolean; strictEval?: boolean },
        cmd: Command,
      ) => {
        opts.follow ||= opts.watch;
        const loaded = await loadSpecFile(specFile);
        const warn = (m: string): void => console.error(m);
        if (opts.dryRun) {
          const { checkJobData } = await import('../../prepare');
          const checked = await checkJobData(loaded.spec, loaded.datasetPath, loaded.evalPath, opts);
          for (const w of checked.warnings) warn(`warning: ${w}`);
          console.log(
            `${specFile}: valid (${loaded.spec.method} on ${loaded.spec.model}, ` +
              `dataset ${loaded.datasetPath}: ${checked.records} records, about ${checked.evalRecords} held out)`,
          );
          return;
        }
        await withClient(cmd, async (client) => {
          const id = await client.submit(loaded, opts.id, { strictEval: opts.strictEval, warn });
          console.log(`submitted job ${id}`);
          if (!opts.follow) return;
          await printFinal(client, await followWithProgress(client, id));
        });
      },
    );

  program
    .command('status')
    .addHelpText('after', '\nExample:\n  tunefleet status mime-extensions-mf3k2a --json')
    .description(
      "a job's state (with its queue position), attempt/epoch, agent (a gang: each member's rank), latest step",
    )
    .argument('<job>')
    .option('--json', 'machine-readable output')
    .action(async (job: string, opts: { json?: boolean }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const d = await client.describe(job);
        if (opts.json) return void console.log(JSON.stringify(d, null, 1));
        const s = d.status;
        const last = d.lastStep;
        const step = last ? `step ${last.step}/${last.steps_total}, loss ${last.loss.toFixed(4)}` : '-';
        const state = s ? `${s.state}${s.queuePosition ? ` (#${s.queuePosition})` : ''}` : '-';
        // a gang: every member with its rank
        const agent = s?.members?.length
          ? s.members.map((m) => `${m.agentId} (rank ${m.rank})`).join(', ')
          : (s?.agentId ?? '-');
        console.log(
          table(
            ['job', 'workflow', 'state', 'attempt/epoch', 'agent', 'progress'],
            [[job, d.temporal, state, s ? `${s.attempt}/${s.epoch}` : '-', agent, step]],
          ),
        );
        if (s?.message) console.log(s.message);
        if (d.failure) console.log(`failed: ${d.failure}`);
        if (d.queryError) console.log(`(no live state: ${d.queryError})`);
      });
    });

  program
    .command('list')
    .description('jobs, newest first, running or finished: state (as it ended), agent, attempt, duration, eval loss')
    .option('--state <state>', `only jobs in this state: ${JOB_STATES.join(', ')}`)
    .option('--model <name>', 'only jobs on this base model')
    .option('--since <when>', 'only jobs submitted since: an ISO time (2026-12-01T09:00Z) or an age (30m, 12h, 7d)')
    .option('--limit <n>', 'at most n jobs (newest first)', '50')
    .option('--page <n>', 'the n-th page of --limit jobs (1: the newest)', '1')
    .option('--json', 'machine-readable output, the same fields')
    .option(
      '--query <visibility query>',
      'filter by search attributes, e.g. "TunefleetState=\'queued\'" ' +
        '(also TunefleetModel, TunefleetMethod, TunefleetJobId)',
    )
    .addHelpText('after', '\nExample:\n  tunefleet list --state failed_gate --since 7d')
    .action(
      async (
        opts: {
          json?: boolean;
          query?: string;
          state?: string;
          model?: string;
          since?: string;
          limit: string;
          page: string;
        },
        cmd: Command,
      ) => {
        const state = opts.state === undefined ? undefined : jobState(opts.state);
        const since = opts.since === undefined ? undefined : sinceFlag(opts.since, Date.now());
        const limit = intFlag(opts.limit, '--limit', 1);
        const page = intFlag(opts.page, '--page', 1);
        await withClient(cmd, async (client) => {
          const jobs = await client.list({ state, model: opts.model, since, limit, page, query: opts.query });
          if (opts.json) return void console.log(JSON.stringify(jobs, null, 1));
          console.log(
            table(
              ['job', 'state', 'queue', 'agent', 'attempt', 'submitted', 'took', 'eval loss base -> tuned'],
              jobs.map((j) => [
                j.jobId,
                j.state ?? j.status.toLowerCase(),
                j.position ? `#${j.position}` : '-',
                j.agent ?? '-',
                j.attempt ?? '-',
                j.started.toISOString().replace(/\.\d+Z$/, 'Z'),
                duration(j.seconds * 1000),
                j.evalLoss ? `${j.evalLoss.base.toFixed(4)} -> ${j.evalLoss.tuned.toFixed(4)}` : '-',
              ]),
            ),
          );
        });
      },
    );

  program
    .command('cancel')
    .addHelpText('after', '\nExample:\n  tunefleet cancel mime-extensions-mf3k2a')
    .description(
      'stop a job: its trainer checkpoints and stops (killed after a grace period); its reservations are released',
    )
    .argument('<job>')
    .action(async (job: string, _opts: unknown, cmd: Command) => {
      await withClient(cmd, async (client) => {
        await client.cancel(job);
        console.log(`cancel requested for ${job}`);
      });
    });

  program
    .command('explain')
    .addHelpText('after', '\nExample:\n  tunefleet explain mime-extensions-mf3k2a')
    .description('why a job was placed where it was (or is still waiting): every agent, every filter reason and score')
    .argument('<job>')
    .option('--json', 'machine-readable output')
    .action(async (job: string, opts: { json?: boolean }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const d = await client.decisions(job);
        console.log(opts.json ? JSON.stringify(d, null, 1) : printable(formatDecisions(job, d)));
      });
    });

  program
    .command('logs')
    .addHelpText('after', '\nExample:\n  tunefleet logs mime-extensions-mf3k2a -f')
    .description("a job's trainer log lines (from its event stream, every attempt)")
    .argument('<job>')
    .option('-f, --follow', 'keep following until the job ends')
    .action(async (job: string, opts: { follow?: boolean }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const print = (e: JobEvent): void => {
          if (e.type === 'log' || e.type === 'error')
            console.log(
              printable(`[${e.agent_id} a${e.attempt}] ` + (e.type === 'error' ? `error ${e.code}: ` : '') + e.message),
            );
        };
        if (opts.follow) await client.events.follow(job, print).catch((e: unknown) => console.error(failureMessage(e)));
        else await client.events.read(job, print);
      });
    });

  program
    .command('watch')
    .addHelpText('after', '\nExample:\n  tunefleet watch mime-extensions-mf3k2a')
    .description(
      'follow a job until it ends: a live progress bar on a terminal ' +
        '(events from the start, so a late watcher catches up), one line per event otherwise',
    )
    .argument('<job>')
    .action(async (job: string, _opts: unknown, cmd: Command) => {
      await withClient(cmd, async (client) => {
        await printFinal(client, await followWithProgress(client, job));
      });
    });
}
