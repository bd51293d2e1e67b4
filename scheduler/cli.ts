// The tunefleet CLI (control side). `tunefleet agent ...` and `tunefleet up|down` are
// dispatched by bin/tunefleet to agent/cli.ts and infra/stack.ts.
import { Command, Option } from 'commander';
import { hostname, userInfo } from 'node:os';
import { resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { ErrorCode, TunefleetError, datasetSchema, type Config, type Flags, type JobEvent } from '../shared';
import { Stack, loadSpecFile, failureMessage } from './client';
import { loadConfig } from './config';
import { formatDataReport, formatDecisions, formatResult, table } from './format';
import { Progress, formatEvent } from './progress';
import { fleetJson, fleetTable, openFleet, setAgentState } from './fleetcmd';
import { startControlWorker } from './worker';

function globalFlags(cmd: Command): Flags {
  const o = cmd.optsWithGlobals<{ natsUrl?: string; temporalAddress?: string; namespace?: string; home?: string }>();
  return { natsUrl: o.natsUrl, temporalAddress: o.temporalAddress, namespace: o.namespace, home: o.home };
}

async function withStack<T>(cmd: Command, fn: (s: Stack, cfg: Config) => Promise<T>): Promise<T> {
  const cfg = loadConfig(globalFlags(cmd));
  const stack = await Stack.connect(cfg);
  try {
    return await fn(stack, cfg);
  } finally {
    await stack.close();
  }
}

/**
 * Follow a job: on a terminal one progress line redrawn in place (and notable events above it); else one line per
 * event.
 */
/** A finished job's result with its loss chart; a failed gate exits 3 (the adapter is stored). */
async function printFinal(stack: Stack, r: Awaited<ReturnType<Stack['follow']>>): Promise<void> {
  console.log(`\n${formatResult(r, await stack.lossCurve(r.jobId))}`);
  if (r.state === 'failed_gate') process.exitCode = 3;
}

async function followWithProgress(stack: Stack, jobId: string): Promise<Awaited<ReturnType<Stack['follow']>>> {
  const tty = process.stdout.isTTY === true;
  const bar = new Progress();
  let drawn = false;
  try {
    return await stack.follow(jobId, (e) => {
      const changed = bar.update(e);
      const line = formatEvent(e);
      if (!tty) {
        if (line) console.log(e.type === 'step' ? `${line}  | ${bar.line(16)}` : line);
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

export function buildProgram(): Command {
  const program = new Command('tunefleet')
    .description('Run LLM fine-tuning and evaluation jobs across a fleet of GPU machines.')
    .addOption(new Option('--nats-url <url>', 'NATS server').env('TUNEFLEET_NATS_URL'))
    .addOption(new Option('--temporal-address <host:port>', 'Temporal frontend').env('TUNEFLEET_TEMPORAL_ADDRESS'))
    .addOption(new Option('--namespace <ns>', 'Temporal namespace').env('TUNEFLEET_NAMESPACE'))
    .addOption(new Option('--home <dir>', 'state, binaries and models (default ~/.tunefleet)').env('TUNEFLEET_HOME'))
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Local stack:
  tunefleet up                 start nats-server, Temporal dev server, a control worker and a local agent
  tunefleet down               stop them
Agents:
  tunefleet agent start        run an agent daemon on this machine (see 'tunefleet agent start --help')
Configuration: flags > TUNEFLEET_* environment > $TUNEFLEET_HOME/stack.json (written by 'up') > defaults.`,
    );

  program
    .command('submit')
    .description('validate a job spec, upload its dataset and start the job')
    .argument('<spec>', 'job spec, YAML or JSON (see docs/spec.md)')
    .option('--id <jobId>', 'job id (default: <name>-<timestamp>-<random>)')
    .option('-f, --follow', 'show live progress and print the result when the job ends')
    .option('-w, --watch', 'the same as --follow')
    .option('--dry-run', 'only validate the spec and its files')
    .action(
      async (
        specFile: string,
        opts: { id?: string; follow?: boolean; watch?: boolean; dryRun?: boolean },
        cmd: Command,
      ) => {
        opts.follow ||= opts.watch;
        const loaded = await loadSpecFile(specFile);
        if (opts.dryRun) {
          const { checkDatasetFile } = await import('./prepare');
          const { records } = await checkDatasetFile(
            loaded.datasetPath,
            loaded.spec.dataset.path,
            loaded.spec.dataset.policy,
          );
          console.log(
            `${specFile}: valid (${loaded.spec.method} on ${loaded.spec.model}, ` +
              `dataset ${loaded.datasetPath}: ${records} records)`,
          );
          return;
        }
        await withStack(cmd, async (stack) => {
          const id = await stack.submit(loaded, opts.id);
          console.log(`submitted job ${id}`);
          if (!opts.follow) return;
          await printFinal(stack, await followWithProgress(stack, id));
        });
      },
    );

  program
    .command('status')
    .description("a job's state (with its queue position), attempt/epoch, agent and latest step")
    .argument('<job>')
    .option('--json', 'machine-readable output')
    .action(async (job: string, opts: { json?: boolean }, cmd: Command) => {
      await withStack(cmd, async (stack) => {
        const d = await stack.describe(job);
        if (opts.json) return void console.log(JSON.stringify(d, null, 1));
        const s = d.status;
        const last = d.lastStep;
        const step = last ? `step ${last.step}/${last.steps_total}, loss ${last.loss.toFixed(4)}` : '-';
        const state = s ? `${s.state}${s.queuePosition ? ` (#${s.queuePosition})` : ''}` : '-';
        console.log(
          table(
            ['job', 'workflow', 'state', 'attempt/epoch', 'agent', 'progress'],
            [[job, d.temporal, state, s ? `${s.attempt}/${s.epoch}` : '-', s?.agentId ?? '-', step]],
          ),
        );
        if (s?.message) console.log(s.message);
        if (d.failure) console.log(`failed: ${d.failure}`);
        if (d.queryError) console.log(`(no live state: ${d.queryError})`);
      });
    });

  program
    .command('list')
    .description('all jobs, newest first, with state, queue position and agent')
    .option('--json', 'machine-readable output')
    .option(
      '--query <visibility query>',
      'filter by search attributes, e.g. "TunefleetState=\'queued\'" ' +
        '(also TunefleetModel, TunefleetMethod, TunefleetJobId)',
    )
    .action(async (opts: { json?: boolean; query?: string }, cmd: Command) => {
      await withStack(cmd, async (stack) => {
        const jobs = await stack.list(opts.query);
        if (opts.json) return void console.log(JSON.stringify(jobs, null, 1));
        console.log(
          table(
            ['job', 'workflow', 'state', 'queue', 'agent', 'started', 'closed'],
            jobs.map((j) => [
              j.jobId,
              j.status,
              j.state ?? '-',
              j.position ? `#${j.position}` : '-',
              j.agent ?? '-',
              j.started.toISOString(),
              j.closed?.toISOString() ?? '-',
            ]),
          ),
        );
      });
    });

  program
    .command('cancel')
    .description(
      'stop a job: its trainer checkpoints and stops (killed after a grace period); its reservations are released',
    )
    .argument('<job>')
    .action(async (job: string, _opts: unknown, cmd: Command) => {
      await withStack(cmd, async (stack) => {
        await stack.cancel(job);
        console.log(`cancel requested for ${job}`);
      });
    });

  program
    .command('explain')
    .description('why a job was placed where it was (or is still waiting): every agent, every filter reason and score')
    .argument('<job>')
    .option('--json', 'machine-readable output')
    .action(async (job: string, opts: { json?: boolean }, cmd: Command) => {
      await withStack(cmd, async (stack) => {
        const d = await stack.decisions(job);
        console.log(opts.json ? JSON.stringify(d, null, 1) : formatDecisions(job, d));
      });
    });

  program
    .command('logs')
    .description("a job's trainer log lines (from its event stream, every attempt)")
    .argument('<job>')
    .option('-f, --follow', 'keep following until the job ends')
    .action(async (job: string, opts: { follow?: boolean }, cmd: Command) => {
      await withStack(cmd, async (stack) => {
        const print = (e: JobEvent): void => {
          if (e.type === 'log' || e.type === 'error')
            console.log(`[${e.agent_id} a${e.attempt}] ` + (e.type === 'error' ? `error ${e.code}: ` : '') + e.message);
        };
        if (opts.follow) await stack.follow(job, print).catch((e: unknown) => console.error(failureMessage(e)));
        else await stack.events(job, print);
      });
    });

  program
    .command('result')
    .description(
      "a finished job's evaluation: metric, base, fine-tuned, delta " +
        '(loss, perplexity, exact match, BLEU, ROUGE-L, judge, tool scores, human grades), ' +
        'gates, the data report and a chart of the loss',
    )
    .argument('<job>')
    .option('--json', 'machine-readable output (the stored result with the loss curve)')
    .option('--plot <file.svg>', 'also write the train/eval loss curves as an SVG file')
    .action(async (job: string, opts: { json?: boolean; plot?: string }, cmd: Command) => {
      if (opts.plot && !/\.svg$/i.test(opts.plot))
        throw new TunefleetError(
          ErrorCode.FlagInvalid,
          `'${opts.plot}': --plot writes SVG; give a file name ending in .svg`,
          { field: '--plot' },
        );
      await withStack(cmd, async (stack) => {
        const r = await stack.resultWithReview(job);
        const curve = await stack.lossCurve(job);
        if (opts.plot) {
          const { lossSvg } = await import('./plot');
          await writeFile(opts.plot, lossSvg(curve, `${r.jobId}: ${r.method} on ${r.model}`));
        }
        console.log(opts.json ? JSON.stringify({ ...r, loss_curve: curve }, null, 1) : formatResult(r, curve));
        if (opts.plot) console.error(`wrote ${opts.plot}`);
      });
    });

  const review = program.command('review').description("human review of a finished job's answers");
  review
    .command('export')
    .description(
      'write a sample of (prompt, reference, base output, fine-tuned output) ' +
        'with empty grade columns for people to fill in (1-5)',
    )
    .argument('<job>')
    .option('-o, --out <file>', 'output file (.csv or .jsonl; default <job>-review.csv)')
    .option('-n, --sample <n>', 'how many answers (default 50; all when fewer)', '50')
    .option('--seed <n>', "the sample's seed", '0')
    .action(async (job: string, opts: { out?: string; sample: string; seed: string }, cmd: Command) => {
      const out = opts.out ?? `${job}-review.csv`;
      const format = reviewFormat(out);
      const sample = intFlag(opts.sample, '--sample', 1);
      const seed = intFlag(opts.seed, '--seed', 0);
      if (existsSync(out))
        throw new TunefleetError(
          ErrorCode.FlagInvalid,
          `${out} already exists (it may hold grades); choose another --out`,
          { field: '--out' },
        );
      await withStack(cmd, async (stack) => {
        const r = await stack.reviewExport(job, { sample, seed, format });
        await writeFile(out, r.text);
        console.log(
          `wrote ${r.rows} of ${r.of} answers to ${out}: fill in base_grade and tuned_grade (1-5), ` +
            `then 'tunefleet review import ${job} ${out}'`,
        );
      });
    });
  review
    .command('import')
    .description(
      "attach the grades of a filled-in review file to the job's result " +
        '(checked row by row first; nothing is stored if a row is wrong)',
    )
    .argument('<job>')
    .argument('<file>', '.csv or .jsonl from review export')
    .action(async (job: string, file: string, _opts: unknown, cmd: Command) => {
      const format = reviewFormat(file);
      await withStack(cmd, async (stack) => {
        const s = await stack.reviewImport(job, file, format);
        console.log(
          `imported ${s.graded} graded answers: base ${s.base_mean?.toFixed(2)}, ` +
            `fine-tuned ${s.tuned_mean?.toFixed(2)} (1-5); ` +
            `fine-tuned better in ${(100 * s.tuned_better).toFixed(0)} %, ` +
            `worse in ${(100 * s.tuned_worse).toFixed(0)} %`,
        );
      });
    });

  program
    .command('download')
    .description("write a finished job's adapter (PEFT format) to a directory")
    .argument('<job>')
    .option('-o, --out <dir>', 'output directory (default ./<job>-adapter)')
    .action(async (job: string, opts: { out?: string }, cmd: Command) => {
      await withStack(cmd, async (stack) => {
        const out = resolve(opts.out ?? `${job}-adapter`);
        const r = await stack.download(job, out);
        console.log(`wrote ${r.files} adapter files to ${r.dir}`);
      });
    });

  program
    .command('watch')
    .description(
      'follow a job until it ends: a live progress bar on a terminal ' +
        '(events from the start, so a late watcher catches up), one line per event otherwise',
    )
    .argument('<job>')
    .action(async (job: string, _opts: unknown, cmd: Command) => {
      await withStack(cmd, async (stack) => {
        await printFinal(stack, await followWithProgress(stack, job));
      });
    });

  program
    .command('fleet')
    .description('every live agent: state, GPUs, memory, utilisation, temperature, CUDA, jobs')
    .option('--json', 'machine-readable output (the adverts, with allocatable bytes)')
    .option('--watch', 'redraw in place as adverts change (Ctrl-C to stop)')
    .action(async (opts: { json?: boolean; watch?: boolean }, cmd: Command) => {
      await withStack(cmd, async (stack) => {
        const view = await openFleet(await stack.nats());
        try {
          if (!opts.watch) {
            const entries = view.snapshot();
            console.log(opts.json ? JSON.stringify(fleetJson(entries), null, 1) : fleetTable(entries));
            return;
          }
          const draw = (): void => {
            const entries = view.snapshot();
            const body = opts.json ? JSON.stringify(fleetJson(entries)) : fleetTable(entries);
            process.stdout.write(`\x1b[H\x1b[2J${new Date().toISOString()}  ${entries.length} agents\n\n${body}\n`);
          };
          draw();
          let pending = false;
          view.onChange(() => {
            if (pending) return;
            pending = true;
            setTimeout(() => {
              pending = false;
              draw();
            }, 100);
          });
          const tick = setInterval(draw, 1000); // agents that fall silent expire without an event
          await new Promise<void>((res) =>
            process.once('SIGINT', () => {
              clearInterval(tick);
              res();
            }),
          );
        } finally {
          await view.stop();
        }
      });
    });

  for (const [name, state, what] of [
    ['cordon', 'cordoned', 'take no new jobs; running ones continue'],
    ['uncordon', 'ready', 'take new jobs again (also ends a drain)'],
    ['drain', 'draining', 'take no new jobs; running jobs checkpoint now and move to other agents; then drained'],
  ] as const) {
    program
      .command(name)
      .description(what)
      .argument('<agent>')
      .action(async (agentId: string, _opts: unknown, cmd: Command) => {
        await withStack(cmd, async (stack) => {
          const r = await setAgentState(await stack.nats(), agentId, state, `${userInfo().username}@${hostname()}`);
          console.log(
            r.confirmed
              ? `${agentId}: ${r.confirmed}`
              : `${agentId}: ${state} recorded; the agent has not confirmed it (is it running?). ` +
                  'Placement honours it already.',
          );
        });
      });
  }

  const data = program.command('data').description('datasets, without a cluster');
  data
    .command('check')
    .description('run the prepare pipeline (checks, cleaning, dedup, split) on a local JSONL file and print the report')
    .argument('<file>', 'JSONL dataset')
    .option('--spec <job.yaml>', "use this spec's dataset options (policy, clean, dedup, split)")
    .option('--lenient', 'drop malformed records instead of failing')
    .option('--json', 'machine-readable report')
    .action(async (file: string, opts: { spec?: string; lenient?: boolean; json?: boolean }) => {
      const { analyse, fileSource } = await import('./prepare');
      const dataset = opts.spec ? (await loadSpecFile(opts.spec)).spec.dataset : datasetSchema.parse({ path: file });
      if (opts.lenient) dataset.policy = 'lenient';
      if (!existsSync(file))
        throw new TunefleetError(ErrorCode.DatasetMissing, `no such file: ${file}`, { field: 'file' });
      const { report } = await analyse({ spec: { dataset }, main: { source: fileSource(file), label: file } });
      console.log(opts.json ? JSON.stringify(report, null, 1) : formatDataReport(report));
    });

  program
    .command('worker')
    .description('run a control worker (workflows, placement, data preparation) until SIGTERM')
    .action(async (_opts: unknown, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      const w = await startControlWorker(cfg);
      console.log(`[worker] polling tunefleet-control on ${cfg.temporalAddress}; NATS ${cfg.natsUrl}`);
      const stop = (): void => void w.stop();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      await w.run;
    });

  return program;
}

function reviewFormat(file: string): 'csv' | 'jsonl' {
  if (/\.csv$/i.test(file)) return 'csv';
  if (/\.jsonl$/i.test(file)) return 'jsonl';
  throw new TunefleetError(ErrorCode.FlagInvalid, `'${file}': a review file is .csv or .jsonl`, { field: 'file' });
}

function intFlag(v: string, flag: string, min: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < min)
    throw new TunefleetError(ErrorCode.FlagInvalid, `${flag} '${v}' must be a whole number ≥ ${min}`, { field: flag });
  return n;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if (e instanceof TunefleetError) {
      console.error(`error: ${e.describe()}`);
      process.exitCode = e.retryable || e.code === 'STACK_UNAVAILABLE' ? 1 : 2;
    } else {
      console.error(`error: ${failureMessage(e)}`);
      process.exitCode = 1;
    }
  }
}

if (require.main === module) void main(process.argv);
