// The tunefleet CLI (control side). `tunefleet agent ...` and `tunefleet up|down` are
// dispatched by bin/tunefleet to agent/cli.ts and infra/stack.ts.
import { Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADVERT_PROTOCOL_VERSION, TRAINER_PROTOCOL_VERSION, TunefleetError } from '../../shared';
import { completionCommand } from './commands/completion';
import { failureMessage } from './client';
import { dataCommands } from './commands/data';
import { fleetCommands } from './commands/fleet';
import { jobCommands } from './commands/jobs';
import { resultCommands } from './commands/results';

export function buildProgram(): Command {
  const program = new Command('tunefleet')
    .description('Run LLM fine-tuning and evaluation jobs across a fleet of GPU machines.')
    .version(versionLine(), '-V, --version', 'the version, and the protocol versions of adverts and trainer events')
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
  jobCommands(program);
  resultCommands(program);
  fleetCommands(program);
  dataCommands(program);
  completionCommand(program);
  return program;
}

/** "tunefleet 0.1.0 (adverts v1, trainer events v1)" */
export function versionLine(): string {
  const path = join(__dirname, '..', '..', '..', 'package.json'); // from dist/scheduler/cli/
  const pkg = JSON.parse(readFileSync(path, 'utf8')) as { version: string };
  return `tunefleet ${pkg.version} (adverts v${ADVERT_PROTOCOL_VERSION}, trainer events v${TRAINER_PROTOCOL_VERSION})`;
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
