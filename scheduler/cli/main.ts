// The tunefleet CLI (control side). `tunefleet agent ...` and `tunefleet up|down` are
// dispatched by bin/tunefleet to agent/cli.ts and infra/stack.ts.
import { Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADVERT_PROTOCOL_VERSION, TRAINER_PROTOCOL_VERSION, TunefleetError } from '../../shared';
import { withConnectionOptions } from '../../shared/cliflags';
import { completionCommand } from './commands/completion';
import { failureMessage } from './client';
import { dataCommands } from './commands/data';
import { fleetCommands } from './commands/fleet';
import { jobCommands } from './commands/jobs';
import { chatCommands } from './commands/chat';
import { generateCommands } from './commands/generate';
import { sweepCommands } from './commands/sweep';
import { modelCommands } from './commands/models';
import { resultCommands } from './commands/results';
import { secretsCommands } from './commands/secrets';

export function buildProgram(): Command {
  const program = new Command('tunefleet')
    .description('Run LLM fine-tuning and evaluation jobs across a fleet of GPU machines.')
    .version(versionLine(), '-V, --version', 'the version, and the protocol versions of adverts and trainer events')
    .addOption(new Option('--home <dir>', 'state, binaries and models (default ~/.tunefleet)').env('TUNEFLEET_HOME'))
    .showHelpAfterError();
  withConnectionOptions(program).addHelpText(
    'after',
    `
Local stack:
  tunefleet up [--listen <ip>] start nats-server (TLS, nkeys), Temporal dev server, a control worker, a local agent
  tunefleet up --ha            the production engines on this machine instead: 3 NATS nodes (R3), PostgreSQL,
                               Temporal's server with mutual TLS, 2 control workers, the agent (built once)
  tunefleet down               stop them
Agents:
  tunefleet agent start        run an agent daemon on this machine (see 'tunefleet agent start --help')
Security:
  tunefleet secrets init       credentials for every role, the CA, nats-server's certificate ($TUNEFLEET_HOME/secrets)
  tunefleet secrets add-agent  credentials for one agent;  'rotate' replaces keys;  'list' shows identities
  tunefleet nats config|assets nats-server's configuration; the streams and buckets (admin credentials)
  A NATS cluster:              'secrets add-node N', 'nats config --node N --route ...' per node,
                               'nats assets --replicas 3'; then --nats-url tls://n1:4222,tls://n2:4222,...
  Temporal over TLS: the --temporal-tls-* flags; an API key from TUNEFLEET_TEMPORAL_API_KEY_FILE;
                               TUNEFLEET_TEMPORAL_TLS=fleet: mutual TLS with the fleet's CA and own certificates.
Configuration: flags > TUNEFLEET_* environment > $TUNEFLEET_HOME/stack.json (written by 'up') > defaults.`,
  );
  jobCommands(program);
  resultCommands(program);
  modelCommands(program);
  generateCommands(program);
  chatCommands(program);
  sweepCommands(program);
  fleetCommands(program);
  dataCommands(program);
  secretsCommands(program);
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
