// Starting the real components: nats-server (JetStream, file store) and the Temporal
// dev server (SQLite file). Used by `tunefleet up` and by the test harness, which starts
// them on free ports in a temporary directory.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SEARCH_ATTRIBUTES } from '../workflows/searchAttributes';
import { connect } from 'nats';
import { natsServers } from '../shared/config';
import { natsConnectOptions } from '../shared/natsconn';
import { addNode, refreshNatsUsers, secretsDir, writeNatsConfig } from './secrets';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A free port below 32768, outside the kernel's ephemeral range (so no outgoing connection takes it meanwhile) and
 * small enough for Temporal, which stores its membership ports as a signed 16-bit number.
 */
export async function freeLowPort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (!(await portInUse(port))) return port;
  }
  throw new Error('no free port between 20000 and 32000');
}

export function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(true));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(false)));
  });
}

export function binPath(home: string, name: 'nats-server' | 'temporal'): string {
  const p = join(home, 'bin', name);
  if (!existsSync(p)) throw new Error(`${p} is missing: run 'npm run bootstrap' (infra/bootstrap.sh tools)`);
  return p;
}

export interface Service {
  name: string;
  address: string;
  pid: number;
  child: ChildProcess;
  logFile: string;
}

export function launch(cmd: string, args: string[], logFile: string, detached: boolean): ChildProcess {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], detached });
    if (detached) child.unref();
    return child;
  } finally {
    closeSync(fd);
  }
}

export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  child?: ChildProcess,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`${what} exited with code ${child.exitCode} while starting`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} was not healthy after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A service that did not become healthy is stopped, not left running behind the error. */
function stopAndThrow(child: ChildProcess): (e: unknown) => Promise<never> {
  return async (e) => {
    if (child.pid !== undefined) await stopProcess(child.pid, 5_000);
    throw e;
  };
}

/** Up, with JetStream answering admin (whose credentials are in `home`'s secrets). */
export async function natsHealthy(url: string, home: string): Promise<boolean> {
  const nc = await connect({
    ...natsConnectOptions({ natsUrl: url, natsCreds: null, tlsDir: secretsDir(home) }, 'admin'),
    timeout: 1000,
    reconnect: false,
  });
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.getAccountInfo();
    return true;
  } finally {
    await nc.close();
  }
}

export async function temporalHealthy(address: string): Promise<boolean> {
  const conn = await Connection.connect({ address, connectTimeout: 1000 });
  try {
    await conn.workflowService.describeNamespace({ namespace: 'default' });
    return true;
  } finally {
    await conn.close();
  }
}

export interface StartOptions {
  home: string;
  dataDir: string;
  logDir: string;
  port?: number;
  detached?: boolean;
}

/**
 * The JetStream store's cap: 100 GiB, or half the free disk where the store lives when that is less — chosen once per
 * store and kept in it (tunefleet-store-cap): the streams' limits are shares of it, and nats-server refuses to update
 * any stream while the limits already given exceed a cap that shrank with the free disk.
 */
export function storeLimit(dir: string): number {
  const file = join(dir, 'tunefleet-store-cap');
  const kept = existsSync(file) ? Number(readFileSync(file, 'utf8').trim()) : NaN;
  if (Number.isSafeInteger(kept) && kept > 0) return kept;
  const fs = statfsSync(dir);
  const cap = Math.min(100 * 2 ** 30, Math.floor((fs.bavail * fs.bsize) / 2));
  writeFileSync(file, `${cap}\n`);
  return cap;
}

/**
 * nats-server with JetStream, from the configuration written from $TUNEFLEET_HOME/secrets (infra/secrets.ts): TLS
 * with client certificates verified, nkey users with their roles' permissions. `host`: the address it listens on
 * (loopback unless `tunefleet up --listen`).
 */
export async function startNats(o: StartOptions & { host?: string }): Promise<Service> {
  const port = o.port ?? (await freePort());
  const storeDir = join(o.dataDir, 'nats');
  mkdirSync(storeDir, { recursive: true });
  mkdirSync(o.logDir, { recursive: true });
  const host = o.host ?? '127.0.0.1';
  const conf = writeNatsConfig(o.home, { host, port, storeDir, maxStore: storeLimit(storeDir) });
  const logFile = join(o.logDir, 'nats-server.log');
  const child = launch(binPath(o.home, 'nats-server'), ['-c', conf], logFile, o.detached ?? false);
  const dial = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `tls://${dial}:${port}`;
  await waitFor(`nats-server on ${url}`, () => natsHealthy(url, o.home), 20_000, child).catch(stopAndThrow(child));
  return { name: 'nats-server', address: url, pid: child.pid ?? -1, child, logFile };
}

export interface NatsCluster {
  /** the nodes, in order n1, n2, ... (a test may restart one under a new pid) */
  nodes: Service[];
  /** the seed list: every node's client URL, separated by commas */
  seeds: string;
  /** start node i again (same ports, store and configuration) after it was stopped or killed */
  restart(i: number): Promise<Service>;
}

/**
 * `size` nats-server nodes of one JetStream cluster on this host (n1, n2, ...): each with its own server name, store
 * directory, client and route ports, its own certificate (server and client usage: routes are TLS both ways), the
 * fleet's users, sync_interval always (the nodes share this host's failure domain; `syncAlways: false` leaves
 * nats-server's default, for the benchmark's comparison) and monitoring on 127.0.0.1.
 * Resolves when every node answers JetStream requests (a meta leader is elected).
 */
export async function startNatsCluster(
  o: StartOptions & { size?: number; syncAlways?: boolean },
): Promise<NatsCluster> {
  const size = o.size ?? 3;
  const nodes = Array.from({ length: size }, (_, i) => `n${i + 1}`);
  const ports = [];
  for (let i = 0; i < size; i++)
    ports.push({ client: await freePort(), route: await freePort(), http: await freePort() });
  mkdirSync(o.logDir, { recursive: true });
  // by name: a route is accepted only from a certificate whose DNS name is a route's host (every node's has localhost)
  const routes = ports.map((p) => `nats-route://localhost:${p.route}`);
  const confs: string[] = [];
  for (const [i, node] of nodes.entries()) {
    await addNode(o.home, node);
    const storeDir = join(o.dataDir, `nats-${node}`);
    mkdirSync(storeDir, { recursive: true });
    const p = ports[i] as { client: number; route: number; http: number };
    confs.push(
      writeNatsConfig(o.home, {
        host: '127.0.0.1',
        port: p.client,
        storeDir,
        maxStore: storeLimit(storeDir),
        cluster: {
          name: 'tunefleet',
          node,
          routeHost: '127.0.0.1',
          routePort: p.route,
          routes,
          monitorPort: p.http,
          syncAlways: o.syncAlways ?? true,
        },
      }),
    );
  }
  const urls = ports.map((p) => `tls://127.0.0.1:${p.client}`);
  const launchNode = (i: number): Service => {
    const logFile = join(o.logDir, `nats-${nodes[i]}.log`);
    const child = launch(binPath(o.home, 'nats-server'), ['-c', confs[i] as string], logFile, o.detached ?? false);
    return { name: `nats-${nodes[i]}`, address: urls[i] as string, pid: child.pid ?? -1, child, logFile };
  };
  const started = nodes.map((_, i) => launchNode(i));
  try {
    for (const s of started)
      await waitFor(`nats-server ${s.name} on ${s.address}`, () => natsHealthy(s.address, o.home), 60_000, s.child);
  } catch (e) {
    for (const s of started) s.child?.kill('SIGKILL');
    throw e;
  }
  const cluster: NatsCluster = {
    nodes: started,
    seeds: urls.join(','),
    async restart(i) {
      const s = launchNode(i);
      cluster.nodes[i] = s;
      await waitFor(`nats-server ${s.name} on ${s.address}`, () => natsHealthy(s.address, o.home), 60_000, s.child);
      return s;
    },
  };
  return cluster;
}

export async function startTemporal(o: StartOptions): Promise<Service> {
  const port = o.port ?? (await freePort());
  mkdirSync(o.dataDir, { recursive: true });
  mkdirSync(o.logDir, { recursive: true });
  const logFile = join(o.logDir, 'temporal.log');
  const args = [
    'server',
    'start-dev',
    '--headless',
    '--ip',
    '127.0.0.1',
    '--port',
    String(port),
    '--db-filename',
    join(o.dataDir, 'temporal.db'),
    '--log-level',
    'warn',
    // the fineTune workflow's search attributes (workflows/searchAttributes.ts)
    ...SEARCH_ATTRIBUTES.flatMap((k) => ['--search-attribute', `${k.name}=Keyword`]),
  ];
  const child = launch(binPath(o.home, 'temporal'), args, logFile, o.detached ?? false);
  const address = `127.0.0.1:${port}`;
  await waitFor(`temporal dev server on ${address}`, () => temporalHealthy(address), 60_000, child).catch(
    stopAndThrow(child),
  );
  // --search-attribute only registers on a new database file: one made before an attribute existed gets it here
  const conn = await Connection.connect({ address });
  try {
    await ensureSearchAttributes(conn).catch(stopAndThrow(child));
  } finally {
    await conn.close();
  }
  return { name: 'temporal', address, pid: child.pid ?? -1, child, logFile };
}

/**
 * nats-server takes the identities now in the secrets directory (an agent added, keys rotated): nats.conf's users
 * are rewritten and the server reloads it (SIGHUP); resolves once `identity` can connect.
 */
export async function reloadNats(home: string, pids: number | number[], url: string, identity: string): Promise<void> {
  refreshNatsUsers(home);
  for (const pid of [pids].flat()) if (processAlive(pid)) process.kill(pid, 'SIGHUP');
  // every server of the seed list that is up takes the new identity
  for (const server of natsServers(url))
    await waitFor(
      `nats-server ${server} to accept ${identity}`,
      async () => {
        const nc = await connect({
          ...natsConnectOptions({ natsUrl: server, natsCreds: null, tlsDir: secretsDir(home) }, identity),
          timeout: 1000,
          reconnect: false,
        });
        await nc.close();
        return true;
      },
      10_000,
    );
}

/** Is there a process with this pid (a zombie not yet reaped counts as alive)? */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * SIGTERM (or `signal`: PostgreSQL's fast shutdown is SIGINT), then SIGKILL after the grace period; resolves when the
 * process is gone.
 */
export async function stopProcess(pid: number, graceMs = 10_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const alive = (): boolean => processAlive(pid);
  if (!alive()) return;
  process.kill(pid, signal);
  const deadline = Date.now() + graceMs;
  while (alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (alive()) process.kill(pid, 'SIGKILL');
  while (alive()) await new Promise((r) => setTimeout(r, 50));
}

const KEYWORD = temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;

/**
 * tunefleet's search attributes on the `default` namespace: those missing are added (only those: a request naming one
 * that exists is refused whole, which once left a database made before TunefleetAgent existed without it, and every
 * job's workflow task failing on it), then waited for until every one is listed.
 */
export async function ensureSearchAttributes(conn: Connection): Promise<void> {
  await waitFor(
    'the default namespace and its search attributes',
    async () => {
      const have = await conn.operatorService.listSearchAttributes({ namespace: 'default' });
      const missing = SEARCH_ATTRIBUTES.filter((k) => !(k.name in (have.customAttributes ?? {})));
      if (missing.length === 0) return true;
      await conn.operatorService.addSearchAttributes({
        namespace: 'default',
        searchAttributes: Object.fromEntries(missing.map((k) => [k.name, KEYWORD])),
      });
      return false;
    },
    60_000,
  );
}
