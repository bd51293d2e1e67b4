// A real stack for integration tests: nats-server and the Temporal dev server on free
// ports in a temporary TUNEFLEET_HOME, the binaries and the trainer's Python that
// infra/bootstrap.sh installed, and a tiny random-weight model made from a config.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ConnectionOptions } from 'nats';
import { resolveConfig, type Config } from '../../shared';
import { natsConnectOptions } from '../../shared/natsconn';
import {
  startNats,
  startNatsCluster,
  startTemporal,
  stopProcess,
  storeLimit,
  type NatsCluster,
  type Service,
} from '../../infra/services';
import { initSecrets } from '../../infra/secrets';
import { createAssets } from '../../infra/stack';
import {
  removePostgresData,
  startPostgres,
  startTemporalServer,
  type Postgres,
  type TemporalServer,
} from '../../infra/ha';

export const ROOT = resolve(__dirname, '..', '..', '..');
export const TINY_MODEL = 'tiny-llama';

export interface TestStack {
  home: string;
  cfg: Config;
  /** the NATS server (on a cluster: its first node) */
  nats: Service;
  /** a NATS cluster's nodes when the stack was started with natsNodes > 1 */
  cluster: NatsCluster | null;
  temporal: Service;
  /** on the real engines (`temporalServer`): Temporal's server with mutual TLS, and its PostgreSQL */
  temporalServer: TemporalServer | null;
  postgres: Postgres | null;
  stop(): Promise<void>;
}

/** The pids of the stack's NATS servers (every node of a cluster). */
export function natsPids(s: TestStack): number[] {
  return s.cluster ? s.cluster.nodes.map((n) => n.pid) : [s.nats.pid];
}

export function installedHome(): string {
  return process.env.TUNEFLEET_HOME ?? join(homedir(), '.tunefleet');
}

/**
 * `natsNodes` > 1: a JetStream cluster of that many nodes (TLS routes), every stream and bucket replicated on all.
 * `temporalServer`: Temporal's real server on a private PostgreSQL, mutual TLS (every process presents its own
 * identity's certificate), instead of the dev server.
 */
export async function startTestStack(o: { natsNodes?: number; temporalServer?: boolean } = {}): Promise<TestStack> {
  const real = installedHome();
  const bins = [
    'nats-server',
    'temporal',
    'python',
    ...(o.temporalServer ? ['pg', 'temporal-server', 'temporal-sql-tool'] : []),
  ];
  for (const b of bins) {
    if (!existsSync(join(real, 'bin', b)))
      throw new Error(`${join(real, 'bin', b)} missing: run infra/bootstrap.sh first`);
  }
  const home = mkdtempSync(join(tmpdir(), 'tunefleet-test-'));
  mkdirSync(join(home, 'bin'));
  for (const b of bins) symlinkSync(join(real, 'bin', b), join(home, 'bin', b));
  // the evaluation judge (ONNX) that bootstrap exported
  if (existsSync(join(real, 'judge'))) symlinkSync(join(real, 'judge'), join(home, 'judge'));
  // llama.cpp's GGUF converter and runtime (export --format gguf)
  if (existsSync(join(real, 'gguf-tools'))) symlinkSync(join(real, 'gguf-tools'), join(home, 'gguf-tools'));
  const modelDir = join(home, 'models', TINY_MODEL);
  execFileSync(join(home, 'bin', 'python'), ['-m', 'tunefleet_trainer', 'make-tiny-model', '--out', modelDir], {
    cwd: join(ROOT, 'agent', 'trainer'),
    env: { ...process.env, PYTHONPATH: join(ROOT, 'agent', 'trainer') },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logDir = join(home, 'logs');
  // security is on, as in production: TLS with client certificates, one nkey per identity, least privilege
  await initSecrets(home);
  const size = o.natsNodes ?? 1;
  const cluster = size > 1 ? await startNatsCluster({ home, dataDir: join(home, 'data'), logDir, size }) : null;
  const nats = cluster ? (cluster.nodes[0] as Service) : await startNats({ home, dataDir: join(home, 'data'), logDir });
  // the pids now (a chaos test may have restarted a server under a new pid)
  const stopNats = async (s?: TestStack): Promise<void> => {
    for (const pid of s ? natsPids(s) : cluster ? cluster.nodes.map((n) => n.pid) : [nats.pid])
      await stopProcess(pid, 10_000);
  };
  let postgres: Postgres | null = null;
  let temporalServer: TemporalServer | null = null;
  const temporal = await (async (): Promise<Service> => {
    if (!o.temporalServer) return await startTemporal({ home, dataDir: join(home, 'data'), logDir });
    postgres = await startPostgres({ home, dataDir: join(home, 'data'), logDir });
    temporalServer = await startTemporalServer({ home, logDir, pg: postgres });
    return temporalServer;
  })().catch(async (e: unknown) => {
    if (postgres) await stopProcess(postgres.pid, 10_000, 'SIGINT');
    await stopNats();
    throw e;
  });
  const natsUrl = cluster ? cluster.seeds : nats.address;
  const cfg = resolveConfig(
    o.temporalServer ? { TUNEFLEET_TEMPORAL_TLS: 'fleet', TUNEFLEET_TEMPORAL_TLS_SERVER_NAME: 'localhost' } : {},
    { natsUrl, temporalAddress: temporal.address, home },
    homedir(),
    () => null,
  );
  const store = storeLimit(join(home, 'data', cluster ? 'nats-n1' : 'nats'));
  const stopPostgres = async (s?: TestStack): Promise<void> => {
    const pg = s ? s.postgres : postgres;
    if (pg) await stopProcess(pg.pid, 10_000, 'SIGINT');
  };
  await createAssets(natsUrl, home, store, size).catch(async (e: unknown) => {
    await stopProcess(temporal.pid, 10_000);
    await stopPostgres();
    await stopNats();
    throw e;
  });
  const stack: TestStack = {
    home,
    cfg,
    nats,
    cluster,
    temporal,
    temporalServer,
    postgres,
    // the services as they are now: a chaos test may have restarted them under new pids
    async stop() {
      await stopProcess(stack.temporal.pid, 10_000);
      await stopPostgres(stack);
      await stopNats(stack);
      if (!process.env.TUNEFLEET_KEEP_TEST_HOME) {
        if (o.temporalServer) removePostgresData(join(home, 'data'));
        rmSync(home, { recursive: true, force: true });
      }
    },
  };
  return stack;
}

/** NATS connection options as admin of a stack's home (benchmarks and tests that inspect every bucket). */
export function adminOptions(home: string, natsUrl: string): ConnectionOptions {
  return natsConnectOptions({ natsUrl, natsCreds: null, tlsDir: join(home, 'secrets') }, 'admin');
}

/** A stack's config as admin: the test's own client, which reads every bucket. */
export function adminCfg(s: TestStack): Config {
  return { ...s.cfg, natsCreds: join(s.home, 'secrets', 'admin.nk') };
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Run bin/tunefleet against a test stack, asynchronously: a control worker answering the
 * CLI's queries may run in the test's own process, so its event loop must keep turning.
 */
export function runCli(s: TestStack, ...args: string[]): Promise<CliResult> {
  return runCliInput(s, null, ...args);
}

/** runCli with `input` written to its stdin (then closed); null: no input. */
export function runCliInput(s: TestStack, input: string | null, ...args: string[]): Promise<CliResult> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'tunefleet'), ...args], { env: cliEnv(s) });
    child.stdin.end(input ?? undefined);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('close', (status) => res({ status, stdout, stderr }));
  });
}

/** Environment for running bin/tunefleet against a test stack. */
export function cliEnv(s: TestStack): NodeJS.ProcessEnv {
  return {
    ...process.env,
    TUNEFLEET_HOME: s.home,
    TUNEFLEET_NATS_URL: s.cfg.natsUrl,
    TUNEFLEET_TEMPORAL_ADDRESS: s.cfg.temporalAddress,
    ...(s.cfg.temporalTls?.fleet
      ? { TUNEFLEET_TEMPORAL_TLS: 'fleet', TUNEFLEET_TEMPORAL_TLS_SERVER_NAME: s.cfg.temporalTls.serverName ?? '' }
      : {}),
  };
}

/**
 * With TUNEFLEET_RECORD_HISTORIES=1, write a finished job's workflow history (its last run,
 * or the run `runId`) to
 * test/fixtures/histories/<name>.pb (the History protobuf; the SDK's JSON helpers trip over two
 * copies of protobufjs here): the replay test (test/unit/replay.test.ts) replays every file
 * there against the current workflow code to guard its determinism.
 */
export async function recordHistory(client: Client, jobId: string, name: string, runId?: string): Promise<void> {
  if (!process.env.TUNEFLEET_RECORD_HISTORIES) return;
  const history = await client.workflow.getHandle(jobId, runId).fetchHistory();
  const dir = join(ROOT, 'test', 'fixtures', 'histories');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.pb`), temporal.api.history.v1.History.encode(history).finish());
}

/**
 * Run every cleanup step in order even when one fails or throws (a stopped client must not
 * leave a server running); then throw what failed. Steps may be undefined (not started).
 */
export async function stopAll(...steps: (() => unknown)[]): Promise<void> {
  const errors: string[] = [];
  for (const [i, step] of steps.entries()) {
    // a step that takes long is said, with its place and source (a cleanup that hangs says which)
    const slow = setTimeout(
      () => console.error(`[harness] cleanup step ${i + 1} of ${steps.length} still running after 20 s: ${step}`),
      20_000,
    );
    try {
      await step();
    } catch (e) {
      errors.push(String(e));
    } finally {
      clearTimeout(slow);
    }
  }
  if (errors.length) throw new Error(`cleanup: ${errors.join('; ')}`);
}
