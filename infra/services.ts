// Starting the real components: nats-server (JetStream, file store) and the Temporal
// dev server (SQLite file). Used by `tunefleet up` and by the test harness, which starts
// them on free ports in a temporary directory.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, openSync, closeSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { SEARCH_ATTRIBUTES } from '../workflows/searchAttributes';
import { connect } from 'nats';
import { natsConnectOptions } from '../shared/natsconn';
import { refreshNatsUsers, secretsDir, writeNatsConfig } from './secrets';
import { Connection } from '@temporalio/client';

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

function launch(name: string, cmd: string, args: string[], logFile: string, detached: boolean): ChildProcess {
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

/** The JetStream store's cap: 100 GiB, or half the free disk where the store lives when that is less. */
export function storeLimit(dir: string): number {
  const fs = statfsSync(dir);
  return Math.min(100 * 2 ** 30, Math.floor((fs.bavail * fs.bsize) / 2));
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
  const child = launch('nats-server', binPath(o.home, 'nats-server'), ['-c', conf], logFile, o.detached ?? false);
  const dial = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `tls://${dial}:${port}`;
  await waitFor(`nats-server on ${url}`, () => natsHealthy(url, o.home), 20_000, child).catch(stopAndThrow(child));
  return { name: 'nats-server', address: url, pid: child.pid ?? -1, child, logFile };
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
  const child = launch('temporal', binPath(o.home, 'temporal'), args, logFile, o.detached ?? false);
  const address = `127.0.0.1:${port}`;
  await waitFor(`temporal dev server on ${address}`, () => temporalHealthy(address), 60_000, child).catch(
    stopAndThrow(child),
  );
  // --search-attribute only registers on a new database file: one made before an attribute
  // existed gets it here (creating an existing one is a no-op)
  await new Promise<void>((res, rej) =>
    execFile(
      binPath(o.home, 'temporal'),
      [
        'operator',
        'search-attribute',
        'create',
        '--address',
        address,
        '--namespace',
        'default',
        '--type',
        'Keyword',
        ...SEARCH_ATTRIBUTES.flatMap((k) => ['--name', k.name]),
      ],
      { timeout: 30_000 },
      (err, _out, stderr) => (err ? rej(new Error(`registering search attributes: ${stderr || err.message}`)) : res()),
    ),
  ).catch(stopAndThrow(child));
  return { name: 'temporal', address, pid: child.pid ?? -1, child, logFile };
}

/**
 * nats-server takes the identities now in the secrets directory (an agent added, keys rotated): nats.conf's users
 * are rewritten and the server reloads it (SIGHUP); resolves once `identity` can connect.
 */
export async function reloadNats(home: string, pid: number, url: string, identity: string): Promise<void> {
  refreshNatsUsers(home);
  process.kill(pid, 'SIGHUP');
  await waitFor(
    `nats-server to accept ${identity}`,
    async () => {
      const nc = await connect({
        ...natsConnectOptions({ natsUrl: url, natsCreds: null, tlsDir: secretsDir(home) }, identity),
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

/** SIGTERM, then SIGKILL after the grace period; resolves when the process is gone. */
export async function stopProcess(pid: number, graceMs = 10_000): Promise<void> {
  const alive = (): boolean => processAlive(pid);
  if (!alive()) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (alive()) process.kill(pid, 'SIGKILL');
  while (alive()) await new Promise((r) => setTimeout(r, 50));
}
