// tunefleet agent start: the agent daemon, configured by flags or TUNEFLEET_* variables.
import { Command, Option } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { homedir, hostname, networkInterfaces } from 'node:os';
import { join } from 'node:path';
import {
  ADVERT_INTERVAL_MS,
  ADVERT_TTL_MS,
  ErrorCode,
  ID_PATTERN,
  TunefleetError,
  resolveConfig,
  type Flags,
  type StackFile,
} from '../shared';
import { connectionFlags, withConnectionOptions } from '../shared/cliflags';
import { startAgent } from './daemon';
import { parseMetricsAddress } from '../shared/metrics';
import { parseGpuSelection } from './devices';
import { DEFAULT_TRAINER_NICE, parseNice } from './priority';

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
    if (!m)
      throw new TunefleetError(ErrorCode.FlagInvalid, `label '${item}' is not key=value (letters, digits, . _ - /)`, {
        field: '--label',
      });
    out[m[1] as string] = m[2] as string;
  }
  return out;
}

/** "60GiB", "512MiB", "2.5GB", "1048576" -> bytes. */
export function parseBytes(text: string, field: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?$/i.exec(text.trim());
  const units: Record<string, number> = {
    b: 1,
    kib: 2 ** 10,
    mib: 2 ** 20,
    gib: 2 ** 30,
    tib: 2 ** 40,
    kb: 1e3,
    mb: 1e6,
    gb: 1e9,
    tb: 1e12,
  };
  const n = m ? Math.floor(Number(m[1]) * (units[(m[2] ?? 'b').toLowerCase()] ?? 1)) : NaN;
  if (!Number.isFinite(n) || n <= 0 || n > 64 * 2 ** 40)
    throw new TunefleetError(ErrorCode.FlagInvalid, `'${text}' is not a size like 60GiB, 512MiB or a number of bytes`, {
      field,
    });
  return n;
}

/** Where an agent serves /metrics by default: loopback only (a Prometheus on the host, or a tunnel, scrapes it). */
export const DEFAULT_AGENT_METRICS = '127.0.0.1:9464';

/** Ports a gang's rank 0 may listen on by default (torchrun's customary 29500 and the 99 after it). */
export const DEFAULT_RENDEZVOUS_PORTS = '29500-29599';

/** `29500-29599` (or one port) -> [first, last]; refused with the flag named when it is not a range of ports. */
export function parseRendezvousPorts(text: string): [number, number] {
  const m = /^(\d{4,5})(?:-(\d{4,5}))?$/.exec(text.trim());
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2] ?? m?.[1]);
  if (!m || lo < 1024 || hi > 65535 || lo > hi)
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      `'${text}' must be a port range FIRST-LAST (or one port) within 1024-65535, first not above last`,
      { field: '--rendezvous-ports' },
    );
  return [lo, hi];
}

/**
 * The address gang peers reach this agent at by default: its first non-loopback IPv4 address (the LAN a fleet shares),
 * or 127.0.0.1 on a host with none. Hosts with several networks name the one their GPUs talk over.
 */
export function defaultRendezvousAddress(): string {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return '127.0.0.1';
}

function defaultAgentId(): string {
  return (
    hostname()
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, '-')
      .replace(/^-+/, '')
      .slice(0, 63) || 'agent'
  );
}

export function buildAgentProgram(): Command {
  const program = new Command('tunefleet agent').description('the agent daemon of a GPU (or CPU) machine');
  withConnectionOptions(program.command('start'))
    .addHelpText('after', '\nExample:\n  tunefleet agent start --id gpu-7 --label zone=eu --max-sessions 2')
    .description('advertise this machine and run training sessions until SIGTERM')
    .addOption(new Option('--id <agentId>', 'agent id (default: the hostname)').env('TUNEFLEET_AGENT_ID'))
    .addOption(
      new Option('--label <key=value...>', 'labels for placement selectors')
        .env('TUNEFLEET_AGENT_LABELS')
        .argParser((v: string, prev: string[] = []) => [...prev, ...v.split(',').filter(Boolean)]),
    )
    .addOption(new Option('--home <dir>', 'agent state and models (default ~/.tunefleet)').env('TUNEFLEET_HOME'))
    .addOption(
      new Option(
        '--advert-interval <ms>',
        `how often to advertise (adverts expire ${ADVERT_TTL_MS / 1000} s after the last one)`,
      ).default(String(ADVERT_INTERVAL_MS)),
    )
    .addOption(
      new Option(
        '--capacity <bytes>',
        'memory offered to jobs on each device, e.g. 60GiB ' +
          "(default: the device's memory; on CPU the RAM available at start)",
      ).env('TUNEFLEET_AGENT_CAPACITY'),
    )
    .addOption(
      new Option(
        '--gpus <list>',
        'the GPUs this agent offers, by index or UUID (GPU-…, MIG-…), e.g. 0,1,5 (default: all)',
      ).env('TUNEFLEET_AGENT_GPUS'),
    )
    .addOption(
      new Option(
        '--max-sessions <n>',
        'training/evaluation sessions at once, when memory allows ' +
          '(default: 4 with CUDA; on CPU one per 2 cores, 1 to 4)',
      ).env('TUNEFLEET_AGENT_MAX_SESSIONS'),
    )
    .addOption(
      new Option('--heartbeat <ms>', 'how often a running session heartbeats to Temporal')
        .env('TUNEFLEET_AGENT_HEARTBEAT_MS')
        .default('5000'),
    )
    .addOption(
      new Option(
        '--trainer-nice <n>',
        'trainers run n nice levels below the agent (0-19; 0: same CPU priority), ' +
          'so heartbeats and adverts keep their time',
      )
        .env('TUNEFLEET_TRAINER_NICE')
        .default(String(DEFAULT_TRAINER_NICE)),
    )
    .addOption(
      new Option(
        '--trainer-threads <n>',
        'CPU threads per trainer (default: the cores split over --max-sessions, at least 1)',
      ).env('TUNEFLEET_TRAINER_THREADS'),
    )
    .addOption(
      new Option(
        '--rendezvous-address <host>',
        "where gang peers reach this agent (torchrun's rendezvous, the process group) " +
          '(default: its first non-loopback IPv4 address)',
      ).env('TUNEFLEET_AGENT_RENDEZVOUS_ADDRESS'),
    )
    .addOption(
      new Option(
        '--metrics-address <host:port>',
        'where to serve Prometheus /metrics (port 0: any free one; off: none)',
      )
        .env('TUNEFLEET_AGENT_METRICS_ADDRESS')
        .default(DEFAULT_AGENT_METRICS),
    )
    .addOption(
      new Option('--rendezvous-ports <first-last>', 'ports a gang rank 0 on this agent may listen on')
        .env('TUNEFLEET_AGENT_RENDEZVOUS_PORTS')
        .default(DEFAULT_RENDEZVOUS_PORTS),
    )
    .action(
      async (
        o: Flags & {
          id?: string;
          label?: string[];
          home?: string;
          advertInterval: string;
          capacity?: string;
          gpus?: string;
          maxSessions?: string;
          heartbeat: string;
          trainerNice: string;
          trainerThreads?: string;
          rendezvousAddress?: string;
          rendezvousPorts: string;
          metricsAddress: string;
        },
      ) => {
        const cfg = resolveConfig(process.env, connectionFlags(o), homedir(), readStack);
        const agentId = o.id ?? defaultAgentId();
        if (!ID_PATTERN.test(agentId))
          throw new TunefleetError(
            ErrorCode.FlagInvalid,
            `agent id '${agentId}' must be lowercase letters, digits and dashes (at most 63)`,
            { field: '--id' },
          );
        const interval = Number(o.advertInterval);
        if (!Number.isInteger(interval) || interval < 100 || interval > ADVERT_TTL_MS / 2) {
          throw new TunefleetError(
            ErrorCode.FlagInvalid,
            `'${o.advertInterval}' must be a whole number of ms from 100 to ${ADVERT_TTL_MS / 2}`,
            { field: '--advert-interval' },
          );
        }
        const maxSessions = o.maxSessions === undefined ? undefined : Number(o.maxSessions);
        if (maxSessions !== undefined && (!Number.isInteger(maxSessions) || maxSessions < 1 || maxSessions > 64))
          throw new TunefleetError(ErrorCode.FlagInvalid, `'${o.maxSessions}' must be a whole number from 1 to 64`, {
            field: '--max-sessions',
          });
        const heartbeatMs = Number(o.heartbeat);
        if (!Number.isInteger(heartbeatMs) || heartbeatMs < 100 || heartbeatMs > 10_000)
          throw new TunefleetError(
            ErrorCode.FlagInvalid,
            `'${o.heartbeat}' must be a whole number of ms from 100 to 10000`,
            { field: '--heartbeat' },
          );
        const trainerNice = parseNice(o.trainerNice);
        if (trainerNice === null)
          throw new TunefleetError(ErrorCode.FlagInvalid, `'${o.trainerNice}' must be a whole number from 0 to 19`, {
            field: '--trainer-nice',
          });
        const trainerThreads = o.trainerThreads === undefined ? undefined : Number(o.trainerThreads);
        if (
          trainerThreads !== undefined &&
          !(Number.isInteger(trainerThreads) && trainerThreads >= 1 && trainerThreads <= 1024)
        ) {
          throw new TunefleetError(
            ErrorCode.FlagInvalid,
            `'${o.trainerThreads}' must be a whole number from 1 to 1024`,
            { field: '--trainer-threads' },
          );
        }
        const capacity = o.capacity === undefined ? undefined : parseBytes(o.capacity, '--capacity');
        const gpus = o.gpus === undefined ? undefined : parseGpuSelection(o.gpus);
        const ports = parseRendezvousPorts(o.rendezvousPorts);
        const metricsAddress = parseMetricsAddress(o.metricsAddress, '--metrics-address');
        const address = o.rendezvousAddress ?? defaultRendezvousAddress();
        if (!/^[A-Za-z0-9.:_-]{1,253}$/.test(address))
          throw new TunefleetError(ErrorCode.FlagInvalid, `'${address}' is not a host name or address`, {
            field: '--rendezvous-address',
          });
        const agent = await startAgent(cfg, {
          agentId,
          labels: parseLabels(o.label ?? []),
          advertIntervalMs: interval,
          capacity,
          maxSessions,
          heartbeatMs,
          trainerNice,
          trainerThreads,
          ...(gpus ? { gpus } : {}),
          rendezvous: { address, ports },
          ...(metricsAddress ? { metricsAddress } : {}),
        });
        const stop = (): void => void agent.stop();
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
        await agent.done;
      },
    );
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
