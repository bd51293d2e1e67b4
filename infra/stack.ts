// The embedded local stack: `tunefleet up` starts nats-server (JetStream file store),
// the Temporal dev server (SQLite file), one control worker and one local agent, all
// under $TUNEFLEET_HOME, waits until each is healthy and prints what runs where.
// `tunefleet up --ha` starts the production engines instead (infra/ha.ts): three
// nats-server nodes of one JetStream cluster (every stream and bucket on all three),
// a private PostgreSQL, Temporal's real server on it with mutual TLS, two control
// workers and the agent. `tunefleet down` stops either. State survives a down/up: jobs
// live in temporal.db (or PostgreSQL) and objects in nats/ (nats-n1..3/).
import { spawn, spawnSync } from 'node:child_process';
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
  startNatsCluster,
  startTemporal,
  stopProcess,
  storeLimit,
  waitFor,
} from './services';
import { fleetTemporalOptions, haInstalled, startPostgres, startTemporalServer } from './ha';
import type { TemporalConnectOptions } from '../shared/temporalconn';
import { addAgent, initSecrets, secretsDir } from './secrets';
import { uiToken } from '../scheduler/ui/start';

/** The console's port when free (`tunefleet ui`'s default). */
const DEFAULT_UI_PORT = 8300;
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

async function pollerCount(
  options: TemporalConnectOptions,
  taskQueue: string,
  kind: 'workflow' | 'activity',
): Promise<number> {
  const conn = await Connection.connect({ ...options, connectTimeout: 1000 });
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
export async function up(listen = '127.0.0.1', o: { ha?: boolean } = {}): Promise<void> {
  const h = home();
  if (isIP(listen) === 0) throw new Error(`--listen '${listen}' is not an IP address`);
  if (o.ha && !isLoopback(listen))
    throw new Error(
      '--ha runs every engine on this machine, on 127.0.0.1; a fleet deploys them on hosts ' +
        "(infra/deploy/, README 'Production')",
    );
  const pids = readPids(h);
  const running = Object.entries(pids).filter(([, pid]) => alive(pid));
  const haRunning = 'postgres' in pids;
  // every process of the stack asked for is up (a start that failed half-way leaves only some)
  const expected = o.ha
    ? [...Array.from({ length: HA_NATS_NODES }, (_, i) => `nats-n${i + 1}`), 'postgres', 'temporal-server']
    : ['nats-server', 'temporal'];
  const complete = [...expected, 'worker', ...(o.ha ? ['worker-2'] : []), 'agent', 'ui'].every(
    (n) => pids[n] !== undefined && alive(pids[n] as number),
  );
  if (complete) {
    console.log(
      `the stack is already up (${running.map(([n, p]) => `${n} ${p}`).join(', ')}); 'tunefleet down' stops it`,
    );
    return;
  }
  if (running.length > 0) {
    console.log(
      haRunning === !!o.ha
        ? 'a partial stack is running; stopping it first'
        : 'another kind of stack is running; stopping it first',
    );
    await down();
  }
  if (o.ha) return upHa(h);
  const wildcard = listen === '0.0.0.0' || listen === '::';
  const { logDir, dataDir, t0, agentId } = await prepareHome(
    h,
    ['nats-server', 'temporal', 'python'],
    isLoopback(listen) || wildcard ? [] : [listen],
  );
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
  // the console, on loopback; its login token is made here so that the address can be printed with it
  const uiPort = await pickPort(DEFAULT_UI_PORT);
  const uiAddress = `http://127.0.0.1:${uiPort}/fleet?token=${uiToken(h, 'operator')}`;
  pidsNow.ui = spawnTunefleet(['ui', '--address', `127.0.0.1:${uiPort}`], join(logDir, 'ui.log'), env);
  writeJson(pidFile(h), pidsNow);
  await waitUntilServing({ address: temporal.address }, nats.address, h, agentId, 1);
  const rows = [
    ['nats-server', nats.address, `pid ${nats.pid}`, join(dataDir, 'nats')],
    ['secrets', 'TLS + nkeys', '', secretsDir(h)],
    ['temporal', temporal.address, `pid ${temporal.pid}`, join(dataDir, 'temporal.db')],
    ['worker', CONTROL_TASK_QUEUE, `pid ${pidsNow.worker}`, join(logDir, 'worker.log')],
    ['agent', agentTaskQueue(agentId), `pid ${pidsNow.agent}`, join(logDir, 'agent.log')],
    ['ui', `127.0.0.1:${uiPort}`, `pid ${pidsNow.ui}`, join(logDir, 'ui.log')],
  ];
  console.log(`tunefleet stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s (home ${h})`);
  for (const r of rows)
    console.log(`  ${(r[0] ?? '').padEnd(12)} ${(r[1] ?? '').padEnd(28)} ${(r[2] ?? '').padEnd(11)} ${r[3] ?? ''}`);
  console.log(`console: ${uiAddress}`);
}

/** What both stacks need first: their tools, directories, the credentials (server names `hosts`), the agent's. */
async function prepareHome(
  h: string,
  tools: string[],
  hosts: string[],
): Promise<{ logDir: string; dataDir: string; t0: number; agentId: string }> {
  for (const tool of tools) {
    if (!existsSync(join(h, 'bin', tool)))
      throw new Error(`${join(h, 'bin', tool)} is missing: run 'npm run bootstrap' first`);
  }
  mkdirSync(join(h, 'run'), { recursive: true });
  const t0 = Date.now();
  const agentId = localAgentId();
  const secrets = await initSecrets(h, hosts);
  if (secrets.created.length) console.log(`credentials made in ${secrets.dir}: ${secrets.created.join(', ')}`);
  await addAgent(h, agentId);
  return { logDir: join(h, 'logs'), dataDir: join(h, 'data'), t0, agentId };
}

const localAgentId = (): string =>
  `local-${hostname()
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')}`.slice(0, 63);

/** Until `workers` control workers poll, and the agent polls its queue and has advertised. */
async function waitUntilServing(
  temporalOptions: TemporalConnectOptions,
  natsUrl: string,
  h: string,
  agentId: string,
  workers: number,
): Promise<void> {
  await waitFor(
    `${workers} control worker(s)`,
    async () => (await pollerCount(temporalOptions, CONTROL_TASK_QUEUE, 'workflow')) >= workers,
    90_000,
  );
  await waitFor(
    `agent ${agentId}`,
    async () =>
      (await pollerCount(temporalOptions, agentTaskQueue(agentId), 'activity')) > 0 &&
      (await advertPresent(natsUrl, h, agentId)),
    120_000,
  );
}

/** The NATS cluster's size and the replicas of every stream and bucket on it. */
const HA_NATS_NODES = 3;

/**
 * `tunefleet up --ha`: the production engines on this machine. What is missing is built first (infra/bootstrap.sh ha:
 * PostgreSQL's package, the Temporal server from the Go module proxy, cached outside the clone); a second `up --ha`
 * reuses it.
 */
async function upHa(h: string): Promise<void> {
  if (!haInstalled(h)) {
    console.log('the HA engines are not built here yet: infra/bootstrap.sh ha (the first time takes minutes)');
    const r = spawnSync('bash', [join(ROOT, 'infra', 'bootstrap.sh'), 'ha'], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('infra/bootstrap.sh ha failed');
  }
  const { logDir, dataDir, t0, agentId } = await prepareHome(h, ['nats-server', 'python'], []);
  const pidsNow: Pids = {};
  const cluster = await startNatsCluster({ home: h, dataDir, logDir, size: HA_NATS_NODES, detached: true });
  for (const n of cluster.nodes) pidsNow[n.name] = n.pid;
  writeJson(pidFile(h), pidsNow);
  const pg = await startPostgres({ home: h, dataDir, logDir, detached: true });
  pidsNow.postgres = pg.pid;
  writeJson(pidFile(h), pidsNow);
  const temporal = await startTemporalServer({
    home: h,
    logDir,
    pg,
    port: await pickPort(DEFAULT_TEMPORAL_PORT),
    detached: true,
  });
  pidsNow['temporal-server'] = temporal.pid;
  writeJson(pidFile(h), pidsNow);
  await createAssets(cluster.seeds, h, storeLimit(join(dataDir, 'nats-n1')), HA_NATS_NODES);
  const stack: StackFile = {
    natsUrl: cluster.seeds,
    temporalAddress: temporal.address,
    temporalTls: 'fleet',
    temporalTlsServerName: 'localhost',
  };
  writeJson(join(h, 'stack.json'), stack);
  const env = {
    TUNEFLEET_HOME: h,
    TUNEFLEET_NATS_URL: stack.natsUrl,
    TUNEFLEET_TEMPORAL_ADDRESS: stack.temporalAddress,
    TUNEFLEET_TEMPORAL_TLS: 'fleet',
    TUNEFLEET_TEMPORAL_TLS_SERVER_NAME: 'localhost',
  };
  pidsNow.worker = spawnTunefleet(['worker'], join(logDir, 'worker.log'), env);
  // the second worker's metrics beside the first's
  pidsNow['worker-2'] = spawnTunefleet(
    ['worker', '--metrics-address', '127.0.0.1:9466'],
    join(logDir, 'worker-2.log'),
    env,
  );
  pidsNow.agent = spawnTunefleet(['agent', 'start', '--id', agentId], join(logDir, 'agent.log'), env);
  // the console, on loopback, as on the local stack
  const uiPort = await pickPort(DEFAULT_UI_PORT);
  const uiAddress = `http://127.0.0.1:${uiPort}/fleet?token=${uiToken(h, 'operator')}`;
  pidsNow.ui = spawnTunefleet(['ui', '--address', `127.0.0.1:${uiPort}`], join(logDir, 'ui.log'), env);
  writeJson(pidFile(h), pidsNow);
  await waitUntilServing(fleetTemporalOptions(h, temporal.address, 'admin'), cluster.seeds, h, agentId, 2);
  const rows = [
    ...cluster.nodes.map((n, i) => [n.name, n.address, `pid ${n.pid}`, join(dataDir, `nats-n${i + 1}`)]),
    ['secrets', 'TLS + nkeys, mTLS', '', secretsDir(h)],
    ['postgres', pg.address, `pid ${pg.pid}`, join(dataDir, 'postgres')],
    ['temporal', `${temporal.address} (mTLS)`, `pid ${temporal.pid}`, temporal.configFile],
    ['worker', CONTROL_TASK_QUEUE, `pid ${pidsNow.worker}`, join(logDir, 'worker.log')],
    ['worker-2', CONTROL_TASK_QUEUE, `pid ${pidsNow['worker-2']}`, join(logDir, 'worker-2.log')],
    ['agent', agentTaskQueue(agentId), `pid ${pidsNow.agent}`, join(logDir, 'agent.log')],
    ['ui', `127.0.0.1:${uiPort}`, `pid ${pidsNow.ui}`, join(logDir, 'ui.log')],
  ];
  console.log(`tunefleet HA stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s (home ${h})`);
  for (const r of rows)
    console.log(`  ${(r[0] ?? '').padEnd(16)} ${(r[1] ?? '').padEnd(34)} ${(r[2] ?? '').padEnd(11)} ${r[3] ?? ''}`);
  console.log(`console: ${uiAddress}`);
}

/**
 * When the local stack runs, its nats-server takes the identities now in the secrets directory (an agent added, keys
 * rotated). -> whether there was one to reload.
 */
export async function reloadLocalNats(h: string, identity: string): Promise<boolean> {
  // one nats-server, or the HA stack's nodes nats-n1..3
  const pids = Object.entries(readPids(h))
    .filter(([name, pid]) => name.startsWith('nats-') && alive(pid))
    .map(([, pid]) => pid);
  const stack = readStack(h);
  if (pids.length === 0 || !stack) return false;
  await reloadNats(h, pids, stack.natsUrl, identity);
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
  // the agent first (it checkpoints running sessions), then the workers, then the servers
  const order = ['ui', 'agent', 'worker', 'worker-2', 'temporal', 'temporal-server', 'postgres'];
  const rest = Object.keys(pids).filter((n) => !order.includes(n));
  for (const name of [...order, ...rest]) {
    const pid = pids[name];
    if (pid && alive(pid)) {
      await stopProcess(pid, name === 'agent' ? 150_000 : 15_000, name === 'postgres' ? 'SIGINT' : 'SIGTERM');
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
      const known = ['--listen', '--ha'];
      const bad = argv.slice(3).filter((a, j) => a.startsWith('-') && !known.includes(a) && argv[j + 2] !== '--listen');
      if (bad.length) throw new Error(`unknown option '${bad[0]}' for up (expected --listen <ip>, --ha)`);
      await up(i > 0 ? argv[i + 1] : undefined, { ha: argv.includes('--ha') });
    } else if (cmd === 'down') await down();
    else throw new Error(`unknown stack command '${cmd}'`);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    process.exitCode = 1;
  }
}
