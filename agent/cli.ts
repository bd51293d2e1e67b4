// tunefleet agent start: the agent daemon, configured by flags or TUNEFLEET_* variables.
import { Command, Option } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { ADVERT_INTERVAL_MS, ADVERT_TTL_MS, ErrorCode, ID_PATTERN, TunefleetError, resolveConfig, type StackFile } from '../shared';
import { startAgent } from './daemon';

function readStack(home: string): StackFile | null {
  const p = join(home, 'stack.json');
  try {
    return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as StackFile) : null;
  } catch {
    return null;
  }
}

export function parseLabels(items: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const m = /^([A-Za-z0-9._/-]+)=([A-Za-z0-9._-]*)$/.exec(item);
    if (!m) throw new TunefleetError(ErrorCode.FlagInvalid, `label '${item}' is not key=value (letters, digits, . _ - /)`, { field: '--label' });
    out[m[1] as string] = m[2] as string;
  }
  return out;
}

function defaultAgentId(): string {
  return hostname().toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+/, '').slice(0, 63) || 'agent';
}

export function buildAgentProgram(): Command {
  const program = new Command('tunefleet agent').description('the agent daemon of a GPU (or CPU) machine');
  program
    .command('start')
    .description('advertise this machine and run training sessions until SIGTERM')
    .addOption(new Option('--id <agentId>', 'agent id (default: the hostname)').env('TUNEFLEET_AGENT_ID'))
    .addOption(new Option('--label <key=value...>', 'labels for placement selectors').env('TUNEFLEET_AGENT_LABELS').argParser((v: string, prev: string[] = []) => [...prev, ...v.split(',').filter(Boolean)]))
    .addOption(new Option('--nats-url <url>', 'NATS server').env('TUNEFLEET_NATS_URL'))
    .addOption(new Option('--temporal-address <host:port>', 'Temporal frontend').env('TUNEFLEET_TEMPORAL_ADDRESS'))
    .addOption(new Option('--namespace <ns>', 'Temporal namespace').env('TUNEFLEET_NAMESPACE'))
    .addOption(new Option('--home <dir>', 'agent state and models (default ~/.tunefleet)').env('TUNEFLEET_HOME'))
    .addOption(new Option('--advert-interval <ms>', `how often to advertise (adverts expire ${ADVERT_TTL_MS / 1000} s after the last one)`).default(String(ADVERT_INTERVAL_MS)))
    .action(async (o: { id?: string; label?: string[]; natsUrl?: string; temporalAddress?: string; namespace?: string; home?: string; advertInterval: string }) => {
      const cfg = resolveConfig(process.env, { natsUrl: o.natsUrl, temporalAddress: o.temporalAddress, namespace: o.namespace, home: o.home }, homedir(), readStack);
      const agentId = o.id ?? defaultAgentId();
      if (!ID_PATTERN.test(agentId)) throw new TunefleetError(ErrorCode.FlagInvalid, `agent id '${agentId}' must be lowercase letters, digits and dashes (at most 63)`, { field: '--id' });
      const interval = Number(o.advertInterval);
      if (!Number.isInteger(interval) || interval < 100 || interval > ADVERT_TTL_MS / 2) {
        throw new TunefleetError(ErrorCode.FlagInvalid, `'${o.advertInterval}' must be a whole number of ms from 100 to ${ADVERT_TTL_MS / 2}`, { field: '--advert-interval' });
      }
      const agent = await startAgent(cfg, { agentId, labels: parseLabels(o.label ?? []), advertIntervalMs: interval });
      const stop = (): void => void agent.stop();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      await agent.done;
    });
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildAgentProgram().parseAsync(argv);
  } catch (e) {
    console.error(`error: ${e instanceof TunefleetError ? e.describe() : String(e)}`);
    process.exitCode = e instanceof TunefleetError && e.code === ErrorCode.FlagInvalid ? 2 : 1;
  }
}
