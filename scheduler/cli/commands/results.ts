// A finished job's outputs: result (table, chart, plot), human review export/import, download.
import { Command } from 'commander';
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { ErrorCode, TunefleetError } from '../../../shared';
import { downloadAdapter, downloadLogs, EXPORT_FORMATS, exportMerged, GGUF_DTYPES, MERGED_DTYPES } from '../client';
import { formatResult } from '../format';
import { intFlag, reviewFormat, withClient } from './common';

export function resultCommands(program: Command): void {
  program
    .command('result')
    .addHelpText('after', '\nExample:\n  tunefleet result mime-extensions-mf3k2a --plot loss.svg')
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
      await withClient(cmd, async (client) => {
        const r = await client.reviews.result(job);
        const curve = await client.events.lossCurve(job);
        if (opts.plot) {
          const { lossSvg } = await import('../plot');
          await writeFile(opts.plot, lossSvg(curve, `${r.jobId}: ${r.method} on ${r.model}`));
        }
        console.log(opts.json ? JSON.stringify({ ...r, loss_curve: curve }, null, 1) : formatResult(r, curve));
        if (opts.plot) console.error(`wrote ${opts.plot}`);
      });
    });

  const review = program.command('review').description("human review of a finished job's answers");
  review
    .command('export')
    .addHelpText('after', '\nExample:\n  tunefleet review export mime-extensions-mf3k2a -n 50 -o review.csv')
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
      await withClient(cmd, async (client) => {
        const r = await client.reviews.export(job, { sample, seed, format });
        await writeFile(out, r.text);
        console.log(
          `wrote ${r.rows} of ${r.of} answers to ${out}: fill in base_grade and tuned_grade (1-5), ` +
            `then 'tunefleet review import ${job} ${out}'`,
        );
      });
    });
  review
    .command('import')
    .addHelpText('after', '\nExample:\n  tunefleet review import mime-extensions-mf3k2a review.csv')
    .description(
      "attach the grades of a filled-in review file to the job's result " +
        '(checked row by row first; nothing is stored if a row is wrong)',
    )
    .argument('<job>')
    .argument('<file>', '.csv or .jsonl from review export')
    .action(async (job: string, file: string, _opts: unknown, cmd: Command) => {
      const format = reviewFormat(file);
      await withClient(cmd, async (client) => {
        const s = await client.reviews.import(job, file, format);
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
    .addHelpText(
      'after',
      '\nExample:\n  tunefleet download mime-extensions-mf3k2a --out ./adapter\n' +
        '  tunefleet download mime-extensions-mf3k2a --logs --out ./runs/mime && tensorboard --logdir ./runs',
    )
    .description(
      "write a finished job's adapter (PEFT format), or with --logs its TensorBoard event files, to a directory",
    )
    .argument('<job>', "a job, or a finished sweep (its best trial's adapter)")
    .option('--logs', 'the TensorBoard event files (train loss, learning rate, gradient norm, tokens/s, eval loss)')
    .option('-o, --out <dir>', 'output directory (default ./<job>-adapter, with --logs ./<job>-logs)')
    .action(async (job: string, opts: { out?: string; logs?: boolean }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        if (opts.logs) {
          const r = await downloadLogs(client, job, resolve(opts.out ?? `${job}-logs`));
          console.log(`wrote ${r.files} TensorBoard event files (${r.bytes} bytes) to ${r.dir}`);
          console.log(`view them with: tensorboard --logdir ${r.dir}`);
          return;
        }
        // a sweep's result is its best trial's adapter
        const { jobId, sweep } = await client.sweeps.resolveJob(job);
        if (sweep) console.error(`sweep ${sweep}: its best trial is ${jobId}`);
        const r = await downloadAdapter(client, jobId, resolve(opts.out ?? `${job}-adapter`));
        console.log(`wrote ${r.files} adapter files to ${r.dir}`);
      });
    });

  program
    .command('export')
    .addHelpText(
      'after',
      '\nExample:\n  tunefleet export mime-extensions-mf3k2a --merged --out ./mime-merged --dtype float32\n' +
        '  python -c "import transformers; transformers.AutoModelForCausalLM.from_pretrained(\'./mime-merged\')"\n' +
        '  tunefleet export mime-extensions-mf3k2a --merged --format gguf --dtype q8_0 --out ./mime-gguf',
    )
    .description(
      "a finished job's model for use without tunefleet: --merged writes the base model with the adapter folded in " +
        '(safetensors, config, tokenizer: plain transformers loads it; --format gguf: one GGUF file made by ' +
        "llama.cpp's converter, read back and checked against llama.cpp). Runs here with the trainer's Python and a " +
        "local copy of the base model, checked against the weights' sha256 in the job's record",
    )
    .argument('<job>')
    .requiredOption('--merged', 'the base model with the adapter merged in (LoRA, DoRA, QLoRA, IA3)')
    .option('-o, --out <dir>', 'output directory (default ./<job>-merged); must not exist')
    .option('--models-dir <dir>', "where the base model is, laid out as an agent's (default $TUNEFLEET_HOME/models)")
    .option(
      '--dtype <dtype>',
      `${MERGED_DTYPES.join(', ')} (gguf: also q8_0): auto keeps the base's stored dtype; float32 keeps the merged ` +
        'weights exact',
      'auto',
    )
    .option('--format <format>', `${EXPORT_FORMATS.join(' or ')} (one file for llama.cpp and Ollama)`, 'safetensors')
    .action(
      async (job: string, opts: { out?: string; modelsDir?: string; dtype: string; format: string }, cmd: Command) => {
        if (!(EXPORT_FORMATS as readonly string[]).includes(opts.format))
          throw new TunefleetError(ErrorCode.FlagInvalid, `'${opts.format}' is not ${EXPORT_FORMATS.join(' or ')}`, {
            field: '--format',
          });
        const dtypes: readonly string[] = opts.format === 'gguf' ? GGUF_DTYPES : MERGED_DTYPES;
        if (!dtypes.includes(opts.dtype))
          throw new TunefleetError(
            ErrorCode.FlagInvalid,
            `--dtype ${opts.dtype}: one of ${dtypes.join(', ')} with --format ${opts.format}`,
            { field: '--dtype' },
          );
        await withClient(cmd, async (client) => {
          const r = await exportMerged(
            client,
            job,
            resolve(opts.out ?? `${job}-${opts.format === 'gguf' ? 'gguf' : 'merged'}`),
            {
              modelsDir: resolve(opts.modelsDir ?? client.cfg.modelsDir),
              dtype: opts.dtype as (typeof GGUF_DTYPES)[number],
              format: opts.format as (typeof EXPORT_FORMATS)[number],
              ggufTools: join(client.cfg.home, 'gguf-tools'),
            },
          );
          if (opts.format === 'gguf' && r.report) console.log(r.report);
          else
            console.log(`wrote the merged model (${r.files} files, ${(r.bytes / 2 ** 20).toFixed(1)} MiB) to ${r.dir}`);
        });
      },
    );
}
