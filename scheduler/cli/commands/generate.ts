// `tunefleet generate`: a registered adapter answers prompts, streamed as they are generated.
import { Command } from 'commander';
import { ErrorCode, TunefleetError, type JobEvent } from '../../../shared';
import { generateAnswers, readPrompts } from '../client';
import { intFlag, withClient } from './common';

/** The flags generate and chat share: how to answer, and how long to wait for room. */
export function answerFlags(opts: { maxNewTokens: string; temperature: string; seed: string; wait: string }): {
  maxNewTokens: number;
  temperature: number;
  seed: number;
  waitSeconds: number;
} {
  const maxNewTokens = intFlag(opts.maxNewTokens, '--max-new-tokens', 1);
  if (maxNewTokens > 4096)
    throw new TunefleetError(ErrorCode.FlagInvalid, '--max-new-tokens is at most 4096', { field: '--max-new-tokens' });
  const temperature = Number(opts.temperature);
  if (!/^\d+(\.\d+)?$/.test(opts.temperature.trim()) || temperature > 5)
    throw new TunefleetError(ErrorCode.FlagInvalid, `'${opts.temperature}' must be from 0 to 5`, {
      field: '--temperature',
    });
  return {
    maxNewTokens,
    temperature,
    seed: intFlag(opts.seed, '--seed', 0),
    waitSeconds: intFlag(opts.wait, '--wait', 1),
  };
}

export function generateCommands(program: Command): void {
  program
    .command('generate')
    .addHelpText(
      'after',
      '\nExample:\n  tunefleet generate mime-extensions-mf3k2a --base \\\n' +
        '    --prompt "MIME type application/pdf has extension"\n' +
        '  tunefleet generate mime-extensions-mf3k2a --file prompts.jsonl --json',
    )
    .description(
      "ask a finished job's fine-tuned model (with --base its base model beside it): placed by memory on an " +
        'agent that holds the base model, at interactive priority; answers stream as they are generated ' +
        '(greedy by default: what the evaluation step generated)',
    )
    .argument('<job>', 'the job whose registered adapter answers')
    .option('-p, --prompt <text>', 'one prompt')
    .option('-f, --file <prompts.jsonl>', 'prompts, one per line: {"prompt": "..."} or a JSON string')
    .option('--base', "the base model's answer too, for comparison")
    .option('--max-new-tokens <n>', 'tokens to generate per answer (1-4096)', '64')
    .option('--temperature <t>', '0: greedy; above 0: sampled (0-5)', '0')
    .option('--seed <n>', 'the sampling seed (with --temperature)', '0')
    .option('--wait <seconds>', 'how long to wait for room on an agent', '600')
    .option('--json', 'print the answers as JSON when done (nothing streamed)')
    .action(
      async (
        job: string,
        opts: {
          prompt?: string;
          file?: string;
          base?: boolean;
          maxNewTokens: string;
          temperature: string;
          seed: string;
          wait: string;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        if ((opts.prompt === undefined) === (opts.file === undefined))
          throw new TunefleetError(ErrorCode.FlagInvalid, 'give one of --prompt TEXT or --file prompts.jsonl', {
            field: '--prompt',
          });
        if (opts.prompt !== undefined && !opts.prompt.trim())
          throw new TunefleetError(ErrorCode.FlagInvalid, '--prompt is empty', { field: '--prompt' });
        const prompts = opts.prompt !== undefined ? [opts.prompt] : readPrompts(opts.file as string);
        const { maxNewTokens, temperature, seed, waitSeconds } = answerFlags(opts);
        await withClient(cmd, async (client) => {
          const many = prompts.length > 1 || opts.base;
          let open: string | null = null;
          const print = (e: JobEvent): void => {
            if (opts.json || e.type !== 'token') return;
            const key = `${e.prompt}/${e.side}`;
            if (key !== open) {
              if (open !== null) process.stdout.write('\n');
              if (many) process.stdout.write(`[${e.prompt + 1} ${e.side}] `);
              open = key;
            }
            process.stdout.write(e.text);
          };
          const out = await generateAnswers(
            client,
            job,
            { prompts, base: !!opts.base, maxNewTokens, temperature, seed, waitSeconds },
            print,
          );
          if (opts.json) console.log(JSON.stringify(out, null, 1));
          else if (open !== null) process.stdout.write('\n');
          else for (const [i, a] of out.answers.entries()) console.log(`${many ? `[${i + 1} tuned] ` : ''}${a.tuned}`);
        });
      },
    );
}
