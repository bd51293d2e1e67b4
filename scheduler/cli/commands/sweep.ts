// `tunefleet sweep submit|status|result|cancel`: hyperparameter sweeps, each trial a job of its own.
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { ErrorCode, TunefleetError, rungs, type SweepStatus } from '../../../shared';
import { loadSweepFile, type JobClient } from '../client';
import { table } from '../format';
import { PALETTE, chartSvg } from '../plot';
import { redraws, withClient } from './common';

type Shown = SweepStatus & { temporal: string; failure: string | null };

const num = (v: number | null | undefined): string =>
  v === null || v === undefined ? '-' : Math.abs(v) >= 1e-3 || v === 0 ? v.toPrecision(5) : v.toExponential(3);

/** What a running trial's job is doing (queued, training 30/90, ...), by job id. */
async function liveStates(client: JobClient, st: SweepStatus): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  await Promise.all(
    st.trials
      .filter((t) => t.state === 'running')
      .map(async (t) => {
        const d = await client.describe(t.jobId).catch(() => null);
        const s = d?.status;
        if (!s) return;
        const at = s.progress ? ` ${s.progress.step}/${s.progress.stepsTotal}` : '';
        out.set(t.jobId, s.state === 'queued' && s.queuePosition ? `queued #${s.queuePosition}` : `${s.state}${at}`);
      }),
  );
  return out;
}

/** The sweep as a table: one row per trial started (its values, state, rung, steps, metric), then the best. */
export function formatSweep(st: Shown, live = new Map<string, string>()): string {
  const fields = Object.keys(st.trials[0]?.params ?? {});
  const rows = st.trials.map((t) => [
    t.jobId,
    ...fields.map((f) => String(t.params[f])),
    live.get(t.jobId) ?? t.state,
    `${t.results.length}/${st.rungs.length}`,
    t.steps,
    num(t.results.at(-1)),
  ]);
  const head = [
    `sweep ${st.sweepId} (${st.name}): ${st.state}; ${st.searcher}, ${st.metric} (${st.mode}), ` +
      `${st.trials.length} of ${st.proposed} trials started, rungs at ${st.rungs.join(', ')} steps`,
  ];
  const tail = [
    st.best
      ? `best so far: ${st.best.jobId} ${JSON.stringify(st.best.params)} ${st.metric} ${num(st.best.metric)} ` +
        `(rung ${st.best.rung + 1} of ${st.rungs.length})`
      : 'best so far: none (no trial has reached a rung)',
    `steps trained: ${st.stepsTrained}`,
    ...(st.failure ? [`failed: ${st.failure}`] : []),
  ];
  return [
    ...head,
    table(['TRIAL', ...fields.map((f) => f.toUpperCase()), 'STATE', 'RUNG', 'STEPS', st.metric.toUpperCase()], rows),
    ...tail,
  ].join('\n');
}

/** The metric of each trial at each rung it reached, by step, with the rungs marked. */
export function sweepSvg(st: SweepStatus): string {
  const series = st.trials
    .map((t, i) => ({
      label: `t${t.index} ${Object.values(t.params).join(' ')}`.slice(0, 24),
      points: t.results.flatMap((r, k): [number, number][] =>
        r === null ? [] : [[t.rungs[k]?.step ?? st.rungs[k] ?? 0, r]],
      ),
      color: PALETTE[i % PALETTE.length] as string,
      line: true,
    }))
    .filter((x) => x.points.length);
  if (!series.length) throw new TunefleetError(ErrorCode.JobRunning, `sweep ${st.sweepId}: no trial has a result yet`);
  return chartSvg({
    title: `sweep ${st.sweepId}: ${st.metric} by step`,
    yLabel: st.metric,
    series,
    marks: st.rungs.length > 1 ? st.rungs : [],
    height: Math.max(420, 60 + series.length * 18 + 100),
  });
}

export function sweepCommands(program: Command): void {
  const sweep = program
    .command('sweep')
    .description(
      'hyperparameter sweeps over a job spec: grid, seeded random or ASHA (trials pause at rungs, checkpointed, and ' +
        'resume when promoted); each trial is a job of its own (<sweep>-t<n>)',
    )
    .addHelpText(
      'after',
      '\nExample:\n  tunefleet sweep submit examples/sweep.yaml --watch\n  tunefleet sweep status lr-rank-mf3k2a\n' +
        '  tunefleet sweep result lr-rank-mf3k2a --plot sweep.svg\n  tunefleet download lr-rank-mf3k2a',
    );

  sweep
    .command('submit')
    .addHelpText('after', '\nExample:\n  tunefleet sweep submit examples/sweep/sweep.yaml --watch')
    .description('check a sweep file and the job spec it names, upload the data once, start the sweep')
    .argument('<sweep.yaml>')
    .option('--id <id>', 'the sweep id (default: its name with a time stamp); trials are <id>-t<n>')
    .option('--watch', 'show the table as it changes until the sweep ends (exit 1 if it fails)')
    .option('--json', 'print {"sweepId": ...}')
    .option('--dry-run', 'check the sweep, its job spec and data, and list the trials; start nothing (no stack needed)')
    .action(
      async (file: string, opts: { id?: string; watch?: boolean; json?: boolean; dryRun?: boolean }, cmd: Command) => {
        if (opts.dryRun) {
          const { sweep: s, job: loaded, trials } = await loadSweepFile(file);
          const { checkJobData } = await import('../../prepare');
          const checked = await checkJobData(loaded.spec, loaded.datasetPath, loaded.evalPath ?? null, {});
          for (const w of checked.warnings) console.error(`warning: ${w}`);
          if (opts.json) console.log(JSON.stringify({ sweep: s, trials: trials.map((t) => t.params) }, null, 1));
          else {
            const fields = Object.keys(s.space);
            console.log(
              `sweep ${s.name} over ${loaded.file}: ${s.searcher.type}, ${s.metric} (${s.mode}), ` +
                `${trials.length} trials, at most ${s.budget.max_concurrent} at once, rungs at ` +
                `${rungs(s).join(', ')} steps`,
            );
            console.log(
              table(
                ['TRIAL', ...fields.map((f) => f.toUpperCase())],
                trials.map((t) => [t.index, ...fields.map((f) => String(t.params[f]))]),
              ),
            );
          }
          return;
        }
        await withClient(cmd, async (client) => {
          const id = await client.sweeps.submit(file, opts.id, (m) => console.error(m));
          if (opts.json) console.log(JSON.stringify({ sweepId: id }));
          else console.log(`submitted sweep ${id}`);
          if (opts.watch) await watch(client, id);
        });
      },
    );

  sweep
    .command('status')
    .addHelpText('after', '\nExample:\n  tunefleet sweep status lr-rank-mf3k2a --json')
    .description(
      'the trials so far: values, state (a running trial: queued, training step/steps), rung, metric; the best',
    )
    .argument('<sweep>')
    .option('--json', 'the sweep as JSON')
    .action(async (id: string, opts: { json?: boolean }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const st = await client.sweeps.status(id);
        if (opts.json) console.log(JSON.stringify(st, null, 1));
        else console.log(formatSweep(st, await liveStates(client, st)));
      });
    });

  sweep
    .command('result')
    .addHelpText('after', '\nExample:\n  tunefleet sweep result lr-rank-mf3k2a --plot sweep.svg')
    .description("a finished sweep: every trial's numbers, the best trial (its adapter is the sweep's result)")
    .argument('<sweep>')
    .option('--json', 'the result as JSON')
    .option('--plot <file.svg>', 'write the metric by step of every trial, with the rungs, as an SVG')
    .action(async (id: string, opts: { json?: boolean; plot?: string }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const st = await client.sweeps.status(id);
        if (st.temporal === 'RUNNING')
          throw new TunefleetError(
            ErrorCode.JobRunning,
            `sweep '${id}' is still running ('tunefleet sweep status ${id}')`,
          );
        if (opts.plot) {
          writeFileSync(opts.plot, sweepSvg(st));
          console.error(`wrote ${opts.plot}`);
        }
        if (opts.json) console.log(JSON.stringify(st, null, 1));
        else {
          console.log(formatSweep(st));
          if (st.best && st.temporal === 'COMPLETED')
            console.log(`its adapter: tunefleet download ${id}  (the adapter of ${st.best.jobId})`);
        }
        if (st.temporal !== 'COMPLETED') process.exitCode = 1;
      });
    });

  sweep
    .command('cancel')
    .addHelpText('after', '\nExample:\n  tunefleet sweep cancel lr-rank-mf3k2a')
    .description('cancel a sweep and its trials that have not ended (finished trials keep their adapters)')
    .argument('<sweep>')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withClient(cmd, async (client) => {
        await client.sweeps.cancel(id);
        console.log(`cancel requested for sweep ${id}`);
      });
    });
}

/** Print the table whenever the sweep changes, until it ends; exit 1 unless it succeeded. */
async function watch(client: JobClient, id: string): Promise<void> {
  let last = '';
  for (;;) {
    const st = await client.sweeps.status(id);
    const text = formatSweep(st, await liveStates(client, st));
    if (text !== last) {
      if (redraws() && last) process.stdout.write(`\x1b[${last.split('\n').length}A\x1b[J`);
      console.log(text);
      last = text;
    }
    if (st.temporal !== 'RUNNING') {
      if (st.temporal !== 'COMPLETED') process.exitCode = 1;
      return;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}
