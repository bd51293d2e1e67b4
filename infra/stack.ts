// The embedded local stack: `tunefleet up` starts nats-server (JetStream file store),
// the Temporal dev server (SQLite file), one control worker and one local agent, all
// under $TUNEFLEET_HOME, waits until each is healthy and prints what runs where.
// `tunefleet down` stops them. State survives a down/up: jobs live in temporal.db and
// objects in nats/.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync, renameSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { homedir, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { connect } from 'nats';
import { Connection } from '@temporalio/client';
import {
  ADVERTS_BUCKET,
  CONTROL_TASK_QUEUE,
  DEFAULT_NATS_PORT,
  DEFAULT_TEMPORAL_PORT,
  agentTaskQueue,
  type StackFile,
} from '../shared';
import {
  freePort,
  portInUse,
  reloadNats,
  startNats,
  startTemporal,
  stopProcess,
  storeLimit,
  waitFor,
} from './services';
import { addAgent, initSecrets, secretsDir } from './secrets';
import { connectNats, ensureAssets } from '../scheduler/nats';
import { natsConnectOptions } from '../shared/natsconn';

const isLoopback = (a: string): boolean => a === '127.0.0.1' || a === '::1' || a.startsWith('127.');

const ROOT = resolve(__dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'tunefleet');

interface Pids {
  [name: string]: number;
}

function home(): string {
  return process.env.TUNEFLEET_HOME ?? join(homedir(), '.tunefleet');
}

function pidFile(h: string): string {
  return join(h, 'run', 'pids.json');
}

function readPids(h: string): Pids {
  try {
    return JSON.parse(readFileSync(pidFile(h), 'utf8')) as Pids;
  } catch {
    return {};
  }
}

/** Written 0600: the stack's files name its ports and processes, and only its owner reads them. */
function writeJson(path: string, data: unknown): void {
  rmSync(`${path}.tmp`, { force: true });
  writeFileSync(`${path}.tmp`, JSON.stringify(data, null, 1), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function pickPort(preferred: number): Promise<number> {
  return (await portInUse(preferred)) ? freePort() : preferred;
}

async function pollerCount(address: string, taskQueue: string, kind: 'workflow' | 'activity'): Promise<number> {
  const conn = await Connection.connect({ address, connectTimeout: 1000 });
  try {
    const r = await conn.workflowService.describeTaskQueue({
      namespace: 'default',
      taskQueue: { name: taskQueue },
      taskQueueType: kind === 'workflow' ? 1 : 2,
    });
    return r.pollers?.length ?? 0;
  } finally {
    await conn.close();
  }
}

async function advertPresent(natsUrl: string, h: string, agentId: string): Promise<boolean> {
  const nc = await connect({
    ...natsConnectOptions({ natsUrl, natsCreds: null, tlsDir: secretsDir(h) }, 'admin'),
    timeout: 1000,
    reconnect: false,
  });
  try {
    const kv = await nc.jetstream().views.kv(ADVERTS_BUCKET);
    const e = await kv.get(agentId);
    return !!e && e.operation === 'PUT';
  } finally {
    await nc.close();
  }
}

function spawnTunefleet(args: string[], logFile: string, env: Record<string, string>): number {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ['ignore', fd, fd],
      detached: true,
      env: { ...process.env, ...env },
    });
    child.unref();
    return child.pid ?? -1;
  } finally {
    closeSync(fd);
  }
}

/** Create the streams and buckets with their size limits, as admin. */
export async function createAssets(natsUrl: string, h: string, totalBytes: number, replicas = 1): Promise<void> {
  const n = await connectNats({ natsUrl, natsCreds: null, tlsDir: secretsDir(h) }, 'admin');
  try {
    await ensureAssets(n, totalBytes, replicas);
  } finally {
    await n.close();
  }
}

/**
 * `listen`: the address nats-server listens on (default 127.0.0.1). Any other address is allowed only because NATS
 * always runs with TLS and nkey authentication here; the Temporal dev server has no TLS and stays on loopback.
 */
export async function up(listen = '127.0.0.1'): Promise<void> {
  const h = home();
  if (isIP(listen) === 0) throw new Error(`--listen '${listen}' is not an IP address`);
  const pids = readPids(h);
  const running = Object.entries(pids).filter(([, pid]) => alive(pid));
  if (running.length === 4) {
    console.log(
      `the stack is already up (${running.map(([n, p]) => `${n} ${p}`).join(', ')}); 'tunefleet down' stops it`,
    );
    return;
  }
  if (running.length > 0) {
    console.log('a partial stack is running; stopping it first');
    await down();
  }
  for (const tool of ['nats-server', 'temporal', 'python']) {
    if (!existsSync(join(h, 'bin', tool)))
      throw new Error(`${join(h, 'bin', tool)} is missing: run 'npm run bootstrap' first`);
  }
  const logDir = join(h, 'logs');
  const dataDir = join(h, 'data');
  mkdirSync(join(h, 'run'), { recursive: true });
  const t0 = Date.now();
  const agentId = `local-${hostname()
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')}`.slice(0, 63);
  const wildcard = listen === '0.0.0.0' || listen === '::';
  const secrets = await initSecrets(h, isLoopback(listen) || wildcard ? [] : [listen]);
  if (secrets.created.length) console.log(`credentials made in ${secrets.dir}: ${secrets.created.join(', ')}`);
  await addAgent(h, agentId);
  const nats = await startNats({
    home: h,
    dataDir,
    logDir,
    port: await pickPort(DEFAULT_NATS_PORT),
    detached: true,
    host: listen,
  });
  const pidsNow: Pids = { 'nats-server': nats.pid };
  writeJson(pidFile(h), pidsNow);
  const temporal = await startTemporal({
    home: h,
    dataDir,
    logDir,
    port: await pickPort(DEFAULT_TEMPORAL_PORT),
    detached: true,
  });
  pidsNow.temporal = temporal.pid;
  writeJson(pidFile(h), pidsNow);
  await createAssets(nats.address, h, storeLimit(join(dataDir, 'nats')));
  const stack: StackFile = { natsUrl: nats.address, temporalAddress: temporal.address };
  writeJson(join(h, 'stack.json'), stack);
  const env = {
    TUNEFLEET_HOME: h,
    TUNEFLEET_NATS_URL: stack.natsUrl,
    TUNEFLEET_TEMPORAL_ADDRESS: stack.temporalAddress,
  };
  pidsNow.worker = spawnTunefleet(['worker'], join(logDir, 'worker.log'), env);
  pidsNow.agent = spawnTunefleet(['agent', 'start', '--id', agentId], join(logDir, 'agent.log'), env);
  writeJson(pidFile(h), pidsNow);
  await waitFor(
    'control worker',
    async () => (await pollerCount(temporal.address, CONTROL_TASK_QUEUE, 'workflow')) > 0,
    90_000,
  );
  await waitFor(
    `agent ${agentId}`,
    async () =>
      (await pollerCount(temporal.address, agentTaskQueue(agentId), 'activity')) > 0 &&
      (await advertPresent(nats.address, h, agentId)),
    120_000,
  );
  const rows = [
    ['nats-server', nats.address, `pid ${nats.pid}`, join(dataDir, 'nats')],
    ['secrets', 'TLS + nkeys', '', secretsDir(h)],
    ['temporal', temporal.address, `pid ${temporal.pid}`, join(dataDir, 'temporal.db')],
    ['worker', CONTROL_TASK_QUEUE, `pid ${pidsNow.worker}`, join(logDir, 'worker.log')],
    ['agent', agentTaskQueue(agentId), `pid ${pidsNow.agent}`, join(logDir, 'agent.log')],
  ];
  console.log(`tunefleet stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s (home ${h})`);
  for (const r of rows)
    console.log(`  ${(r[0] ?? '').padEnd(12)} ${(r[1] ?? '').padEnd(28)} ${(r[2] ?? '').padEnd(11)} ${r[3] ?? ''}`);
}

/**
 * When the local stack runs, its nats-server takes the identities now in the secrets directory (an agent added, keys
 * rotated). -> whether there was one to reload.
 */
export async function reloadLocalNats(h: string, identity: string): Promise<boolean> {
  const pid = readPids(h)['nats-server'];
  const stack = readStack(h);
  if (!pid || !alive(pid) || !stack) return false;
  await reloadNats(h, pid, stack.natsUrl, identity);
  return true;
}

function readStack(h: string): StackFile | null {
  try {
    return JSON.parse(readFileSync(join(h, 'stack.json'), 'utf8')) as StackFile;
  } catch {
    return null;
  }
}

export async function down(): Promise<void> {
  const h = home();
  const pids = readPids(h);
  // the agent first (it checkpoints running sessions), then the worker, then the servers
  for (const name of ['agent', 'worker', 'temporal', 'nats-server']) {
    const pid = pids[name];
    if (pid && alive(pid)) {
      await stopProcess(pid, name === 'agent' ? 150_000 : 15_000);
      console.log(`stopped ${name} (pid ${pid})`);
    }
  }
  rmSync(pidFile(h), { force: true });
  rmSync(join(h, 'stack.json'), { force: true });
}

export async function main(argv: string[]): Promise<void> {
  const cmd = argv[2];
  try {
    if (cmd === 'up') {
      const i = argv.indexOf('--listen');
      await up(i > 0 ? argv[i + 1] : undefined);
    } else if (cmd === 'down') await down();
    else throw new Error(`unknown stack command '${cmd}'`);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    process.exitCode = 1;
  }
}
