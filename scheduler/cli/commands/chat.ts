// `tunefleet chat`: talk to a finished job's fine-tuned model, turn by turn, answers streamed.
import { Command } from 'commander';
import { createInterface } from 'node:readline';
import { ErrorCode, TunefleetError, type JobEvent } from '../../../shared';
import { ChatSession } from '../client';
import { intFlag, withClient } from './common';
import { answerFlags } from './generate';

/** What ends a chat typed at a terminal (end of input, Ctrl-D, does too). */
const QUIT = new Set(['/exit', '/quit']);

export function chatCommands(program: Command): void {
  program
    .command('chat')
    .addHelpText(
      'after',
      '\nExample:\n  tunefleet chat mime-extensions-mf3k2a --system "Answer with the file extension only."\n' +
        '  printf "MIME type text/html?\\nand image/png?\\n" | tunefleet chat mime-extensions-mf3k2a --json',
    )
    .description(
      "talk to a finished job's fine-tuned model turn by turn: each line you type is a turn, rendered with the " +
        "base model's chat template together with the conversation so far; answers stream as they are generated. " +
        'The model is loaded once on an agent that holds the base model (placed by memory, interactive priority) ' +
        'and kept there until the chat ends: /exit, end of input, or --idle seconds without a turn',
    )
    .argument('<job>', 'the job whose registered adapter answers')
    .option('--system <text>', 'a system message that opens the conversation')
    .option('--max-new-tokens <n>', 'tokens to generate per answer (1-4096)', '256')
    .option('--temperature <t>', '0: greedy; above 0: sampled (0-5)', '0')
    .option('--seed <n>', 'the sampling seed (with --temperature; turn N uses seed + N)', '0')
    .option('--wait <seconds>', 'how long to wait for room on an agent', '600')
    .option('--idle <seconds>', 'end the chat after this long without a turn (frees its place)', '900')
    .option('--json', 'print the whole conversation as JSON when it ends (answers are not streamed)')
    .action(
      async (
        job: string,
        opts: {
          system?: string;
          maxNewTokens: string;
          temperature: string;
          seed: string;
          wait: string;
          idle: string;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const { maxNewTokens, temperature, seed, waitSeconds } = answerFlags(opts);
        if (opts.system !== undefined && !opts.system.trim())
          throw new TunefleetError(ErrorCode.FlagInvalid, '--system is empty', { field: '--system' });
        const idleSeconds = intFlag(opts.idle, '--idle', 10);
        const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
        await withClient(cmd, async (client) => {
          let attemptOfTurn: number | null = null;
          const print = (e: JobEvent): void => {
            if (opts.json || e.type !== 'token') return;
            // a lost agent: the turn is asked again on another one, from its start
            if (attemptOfTurn !== null && e.attempt !== attemptOfTurn)
              process.stdout.write('\n[the agent was lost; answering again on another agent]\n');
            attemptOfTurn = e.attempt;
            process.stdout.write(e.text);
          };
          const chat = await ChatSession.open(
            client,
            job,
            { system: opts.system ?? null, maxNewTokens, temperature, seed, waitSeconds, idleSeconds },
            print,
          );
          if (tty) console.log(`chat ${chat.id} with ${job}: a line per turn; /exit or Ctrl-D ends it`);
          const rl = createInterface({
            input: process.stdin,
            ...(tty ? { output: process.stdout, prompt: 'you> ' } : {}),
          });
          const interrupted = (): void => rl.close();
          process.once('SIGINT', interrupted);
          try {
            if (tty) rl.prompt();
            for await (const line of rl) {
              const text = line.trim();
              if (QUIT.has(text)) break;
              if (text) {
                if (tty && !opts.json) process.stdout.write(`${job}> `);
                attemptOfTurn = null;
                await chat.ask(text);
                if (!opts.json) process.stdout.write('\n');
              }
              if (tty) rl.prompt();
            }
          } catch (e) {
            await chat.end().catch(() => {});
            throw e;
          } finally {
            process.removeListener('SIGINT', interrupted);
            rl.close();
          }
          const outcome = await chat.end();
          if (opts.json) console.log(JSON.stringify({ chat: chat.id, ...outcome }, null, 1));
        });
      },
    );
}
