// The production engines, run on one machine (`tunefleet up --ha`, the chaos tests on the real engines): a private
// PostgreSQL cluster and Temporal's real server on it, with mutual TLS on its frontend and between its services,
// next to a NATS JetStream cluster (infra/services.ts startNatsCluster). The binaries come from
// `infra/bootstrap.sh ha`: PostgreSQL from Debian's package, the Temporal server and its schema tool built from the
// Go module proxy and cached outside the clone. The same configuration, split over hosts, is in infra/deploy/.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chownSync,
  realpathSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { credentialFiles } from '../shared/natsconn';
import { temporalConnectOptions } from '../shared/temporalconn';
import { addTemporalServer, secretsDir } from './secrets';
import { ensureSearchAttributes, freeLowPort, freePort, launch, stopProcess, waitFor, type Service } from './services';

/**
 * History shards of the stack's Temporal server. Fixed when the schema is set up and never changeable afterwards;
 * each shard is a unit of history ownership and caching. A one-machine stack needs few (8); a fleet's deployment
 * sizes it for the busiest day it will ever see (infra/deploy/temporal/config.yaml: 512).
 */
export const HISTORY_SHARDS = 8;

function bin(home: string, name: string): string {
  const p = join(home, 'bin', name);
  if (!existsSync(p)) throw new Error(`${p} is missing: run 'infra/bootstrap.sh ha' (tunefleet up --ha runs it)`);
  return p;
}

/** Does this machine have what the HA stack runs on (PostgreSQL and the built Temporal server)? */
export function haInstalled(home: string): boolean {
  return ['pg', 'temporal-server', 'temporal-sql-tool'].every((b) => existsSync(join(home, 'bin', b)));
}

function run(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<string> {
  return new Promise((res, rej) =>
    execFile(cmd, args, { timeout: timeoutMs, env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      err ? rej(new Error(`${cmd} ${args[0] ?? ''}: ${(stderr || stdout || err.message).trim()}`)) : res(stdout),
    ),
  );
}

/** PostgreSQL refuses to run as root: as root, its processes run as the `postgres` user of Debian's package. */
function pgUser(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error("running as root, and there is no 'postgres' user to run PostgreSQL as");
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function asPg(cmd: string, args: string[]): [string, string[]] {
  return pgUser()
    ? ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', cmd, ...args]]
    : [cmd, args];
}

/**
 * Where the cluster's files live: `dataDir`/postgres. As root, PostgreSQL's own user cannot reach a home under /root,
 * so the files live in /var/lib/tunefleet/postgres-<hash of the path> and `dataDir`/postgres links there.
 */
function pgDataDir(dataDir: string): string {
  const link = join(dataDir, 'postgres');
  const user = pgUser();
  if (!user) return link;
  const real = join('/var/lib/tunefleet', `postgres-${createHash('sha256').update(link).digest('hex').slice(0, 12)}`);
  mkdirSync('/var/lib/tunefleet', { recursive: true, mode: 0o755 });
  mkdirSync(real, { recursive: true, mode: 0o700 });
  chownSync(real, user.uid, user.gid);
  mkdirSync(dataDir, { recursive: true });
  if (!existsSync(link) || !lstatSync(link).isSymbolicLink()) {
    rmSync(link, { recursive: true, force: true });
    symlinkSync(real, link);
  }
  return real;
}

/** Remove a cluster's files, the real ones too when `dataDir`/postgres links elsewhere (a test's throwaway home). */
export function removePostgresData(dataDir: string): void {
  const link = join(dataDir, 'postgres');
  if (existsSync(link) && lstatSync(link).isSymbolicLink())
    rmSync(realpathSync(link), { recursive: true, force: true });
  rmSync(link, { recursive: true, force: true });
}

export interface Postgres extends Service {
  port: number;
  dataDir: string;
  user: string;
  /** the superuser's password file (secrets/postgres.password, 0600) */
  passwordFile: string;
  /** start it again (same port and files) after it was stopped or killed */
  restart(): Promise<Postgres>;
}

const PG_USER = 'tunefleet';

/**
 * A private PostgreSQL cluster (not the system's): initialised on first use with SCRAM passwords (the password in
 * secrets/postgres.password), listening on 127.0.0.1 only, no Unix socket, `fsync` and full page writes on.
 */
export async function startPostgres(o: {
  home: string;
  dataDir: string;
  logDir: string;
  port?: number;
  detached?: boolean;
}): Promise<Postgres> {
  // the package's own directory: PostgreSQL's user may not be able to reach the link under a root-owned home
  const pg = realpathSync(bin(o.home, 'pg'));
  const dir = pgDataDir(o.dataDir);
  const passwordFile = join(secretsDir(o.home), 'postgres.password');
  mkdirSync(o.logDir, { recursive: true });
  if (!existsSync(join(dir, 'PG_VERSION'))) {
    if (!existsSync(passwordFile))
      writeFileSync(passwordFile, randomBytes(24).toString('base64url') + '\n', { mode: 0o600 });
    // initdb reads the password from a file its user can read, removed right after
    const pw = join(dir, '..', `.pw-${process.pid}`);
    writeFileSync(pw, readFileSync(passwordFile), { mode: 0o600 });
    const user = pgUser();
    if (user) chownSync(pw, user.uid, user.gid);
    try {
      const [cmd, args] = asPg(join(pg, 'initdb'), [
        '-D',
        dir,
        '-U',
        PG_USER,
        '--auth=scram-sha-256',
        `--pwfile=${pw}`,
        '-E',
        'UTF8',
        '--locale=C',
      ]);
      await run(cmd, args);
    } finally {
      rmSync(pw, { force: true });
    }
  }
  const port = o.port ?? (await freePort());
  const logFile = join(o.logDir, 'postgres.log');
  const start = (): Postgres => {
    const [cmd, args] = asPg(join(pg, 'postgres'), [
      '-D',
      dir,
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      `port=${port}`,
      '-c',
      'unix_socket_directories=',
      '-c',
      'max_connections=200',
    ]);
    const child = launch(cmd, args, logFile, o.detached ?? false);
    const s: Postgres = {
      name: 'postgres',
      address: `127.0.0.1:${port}`,
      pid: child.pid ?? -1,
      child,
      logFile,
      port,
      dataDir: dir,
      user: PG_USER,
      passwordFile,
      restart: async () => {
        const again = start();
        await ready(again);
        return again;
      },
    };
    return s;
  };
  const ready = (s: Postgres): Promise<void> =>
    waitFor(
      `postgres on ${s.address}`,
      async () => {
        await run(join(pg, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port)], {}, 5_000);
        return true;
      },
      60_000,
      s.child,
    );
  const s = start();
  await ready(s).catch(async (e: unknown) => {
    await stopProcess(s.pid, 5_000);
    throw e;
  });
  return s;
}

/**
 * Temporal's two databases on `pg` (the workflows' `temporal`, and `temporal_visibility` for listing and searching),
 * made and brought to the schema version this server build embeds, with Temporal's own schema tool. Idempotent: a
 * database that exists is only updated.
 */
export async function setupTemporalSchema(home: string, pg: Postgres): Promise<void> {
  const tool = bin(home, 'temporal-sql-tool');
  const env = { SQL_PASSWORD: readFileSync(pg.passwordFile, 'utf8').trim() };
  const base = ['--plugin', 'postgres12', '--ep', '127.0.0.1', '-p', String(pg.port), '-u', pg.user];
  for (const [db, schema] of [
    ['temporal', 'postgresql/v12/temporal'],
    ['temporal_visibility', 'postgresql/v12/visibility'],
  ] as const) {
    const made = await run(tool, [...base, '--db', db, 'create-database'], env).then(
      () => true,
      (e: Error) => {
        if (/already exists/.test(e.message)) return false;
        throw e;
      },
    );
    if (made) await run(tool, [...base, '--db', db, 'setup-schema', '-v', '0.0'], env);
    await run(tool, [...base, '--db', db, 'update-schema', '--schema-name', schema], env);
  }
}

export interface TemporalServerOptions {
  home: string;
  logDir: string;
  pg: Postgres;
  /** the frontend's port (others are free ports) */
  port?: number;
  detached?: boolean;
}

export interface TemporalServer extends Service {
  configFile: string;
  /** start it again (same ports and configuration) after it was stopped or killed */
  restart(): Promise<TemporalServer>;
}

/**
 * The Temporal server's configuration (secrets/temporal-server.yaml, 0600: it holds the database password): the four
 * services in one process on 127.0.0.1, PostgreSQL for history and visibility, mutual TLS everywhere — clients of the
 * frontend need a certificate from the fleet's CA, and the services present temporal-server.crt to each other.
 */
export function temporalServerConfig(
  home: string,
  o: {
    pgPort: number;
    password: string;
    ports: Record<'frontend' | 'history' | 'matching' | 'worker', number>;
    membership: Record<'frontend' | 'history' | 'matching' | 'worker', number>;
    dynamicConfig: string;
  },
): string {
  const dir = secretsDir(home);
  const cert = join(dir, 'temporal-server.crt');
  const key = join(dir, 'temporal-server.key');
  const ca = join(dir, 'ca.pem');
  const store = (db: string, conns: number): string[] => [
    `    ${db === 'temporal' ? 'default' : 'visibility'}:`,
    '      sql:',
    '        pluginName: postgres12',
    `        databaseName: ${db}`,
    `        connectAddr: "127.0.0.1:${o.pgPort}"`,
    '        connectProtocol: tcp',
    `        user: ${PG_USER}`,
    `        password: ${JSON.stringify(o.password)}`,
    `        maxConns: ${conns}`,
    `        maxIdleConns: ${conns}`,
    '        maxConnLifetime: 1h',
  ];
  const serverTls = [
    `        certFile: ${cert}`,
    `        keyFile: ${key}`,
    '        requireClientAuth: true',
    `        clientCaFiles: [${ca}]`,
  ];
  const clientTls = ['        serverName: localhost', `        rootCaFiles: [${ca}]`];
  const service = (name: keyof typeof o.ports): string[] => [
    `  ${name}:`,
    '    rpc:',
    `      grpcPort: ${o.ports[name]}`,
    `      membershipPort: ${o.membership[name]}`,
    '      bindOnIP: 127.0.0.1',
  ];
  return [
    '# written by tunefleet (infra/ha.ts); a fleet deploys infra/deploy/temporal/config.yaml instead',
    'log:',
    '  stdout: true',
    '  level: warn',
    'persistence:',
    '  defaultStore: default',
    '  visibilityStore: visibility',
    `  numHistoryShards: ${HISTORY_SHARDS}`,
    '  datastores:',
    ...store('temporal', 20),
    ...store('temporal_visibility', 10),
    'global:',
    '  membership:',
    '    maxJoinDuration: 30s',
    '    broadcastAddress: 127.0.0.1',
    '  tls:',
    '    internode:',
    '      server:',
    ...serverTls,
    '      client:',
    ...clientTls,
    '    frontend:',
    '      server:',
    ...serverTls,
    '      client:',
    ...clientTls,
    '    systemWorker:',
    `      certFile: ${cert}`,
    `      keyFile: ${key}`,
    '      client:',
    ...clientTls,
    'services:',
    ...service('frontend'),
    ...service('history'),
    ...service('matching'),
    ...service('worker'),
    'clusterMetadata:',
    '  enableGlobalNamespace: false',
    '  failoverVersionIncrement: 10',
    '  masterClusterName: active',
    '  currentClusterName: active',
    '  clusterInformation:',
    '    active:',
    '      enabled: true',
    '      initialFailoverVersion: 1',
    '      rpcName: frontend',
    `      rpcAddress: "127.0.0.1:${o.ports.frontend}"`,
    'dcRedirectionPolicy:',
    '  policy: noop',
    'dynamicConfigClient:',
    `  filepath: ${o.dynamicConfig}`,
    '  pollInterval: 10s',
    '',
  ].join('\n');
}

/** Dynamic settings: search attributes are read fresh (a job's attributes are queryable at once). */
const DYNAMIC_CONFIG = ['system.forceSearchAttributesCacheRefreshOnRead:', '  - value: true', ''].join('\n');

/**
 * Temporal's server on `pg`, as one process running its frontend, history, matching and worker services; resolves
 * when the frontend answers over mutual TLS and the `default` namespace with tunefleet's search attributes exists.
 */
export async function startTemporalServer(o: TemporalServerOptions): Promise<TemporalServer> {
  const server = bin(o.home, 'temporal-server');
  mkdirSync(o.logDir, { recursive: true });
  // the services' certificate: server and client usage (they call each other), for localhost and 127.0.0.1
  if (!existsSync(join(secretsDir(o.home), 'temporal-server.crt'))) await addTemporalServer(o.home);
  await setupTemporalSchema(o.home, o.pg);
  const names = ['frontend', 'history', 'matching', 'worker'] as const;
  const ports = {} as Record<(typeof names)[number], number>;
  const membership = {} as Record<(typeof names)[number], number>;
  for (const n of names) {
    ports[n] = n === 'frontend' && o.port ? o.port : await freeLowPort();
    membership[n] = await freeLowPort();
  }
  const dynamicConfig = join(secretsDir(o.home), 'temporal-dynamic.yaml');
  writeFileSync(dynamicConfig, DYNAMIC_CONFIG, { mode: 0o600 });
  const configFile = join(secretsDir(o.home), 'temporal-server.yaml');
  const yaml = temporalServerConfig(o.home, {
    pgPort: o.pg.port,
    password: readFileSync(o.pg.passwordFile, 'utf8').trim(),
    ports,
    membership,
    dynamicConfig,
  });
  rmSync(`${configFile}.tmp`, { force: true });
  writeFileSync(`${configFile}.tmp`, yaml, { mode: 0o600 });
  renameSync(`${configFile}.tmp`, configFile);
  const address = `127.0.0.1:${ports.frontend}`;
  const logFile = join(o.logDir, 'temporal-server.log');
  const start = (): TemporalServer => {
    const child = launch(
      server,
      ['--config-file', configFile, '--allow-no-auth', 'start'],
      logFile,
      o.detached ?? false,
    );
    const s: TemporalServer = {
      name: 'temporal-server',
      address,
      pid: child.pid ?? -1,
      child,
      logFile,
      configFile,
      restart: async () => {
        const again = start();
        await ready(again);
        return again;
      },
    };
    return s;
  };
  const ready = (s: TemporalServer): Promise<void> =>
    waitFor(`temporal-server on ${address}`, () => temporalServerHealthy(o.home, address), 120_000, s.child);
  const s = start();
  try {
    await ready(s);
    await ensureNamespace(o.home, address);
  } catch (e) {
    await stopProcess(s.pid, 10_000);
    throw e;
  }
  return s;
}

/** Temporal options for `identity` against the stack's server: mutual TLS with the fleet's certificates. */
export function fleetTemporalOptions(home: string, address: string, identity: string) {
  return temporalConnectOptions(
    {
      temporalAddress: address,
      temporalTls: { ca: null, cert: null, key: null, serverName: 'localhost', fleet: true },
      temporalApiKeyFile: null,
      natsCreds: null,
      tlsDir: secretsDir(home),
    },
    identity,
  );
}

/** The frontend answers an admin over mutual TLS (its cluster membership is up). */
export async function temporalServerHealthy(home: string, address: string): Promise<boolean> {
  const conn = await Connection.connect({ ...fleetTemporalOptions(home, address, 'admin'), connectTimeout: 2000 });
  try {
    await conn.workflowService.getSystemInfo({});
    await conn.operatorService.listClusters({});
    return true;
  } finally {
    await conn.close();
  }
}

/**
 * The `default` namespace (3 days of closed workflows kept) and tunefleet's search attributes on it. The real server
 * makes neither by itself; a new namespace takes its namespace cache's refresh (about 10 s) to be usable everywhere.
 */
async function ensureNamespace(home: string, address: string): Promise<void> {
  const conn = await Connection.connect(fleetTemporalOptions(home, address, 'admin'));
  try {
    const exists = await conn.workflowService.describeNamespace({ namespace: 'default' }).then(
      () => true,
      () => false,
    );
    if (!exists)
      await conn.workflowService.registerNamespace({
        namespace: 'default',
        workflowExecutionRetentionPeriod: msToTs('3 days'),
      });
    await ensureSearchAttributes(conn);
  } finally {
    await conn.close();
  }
}

/** Files a client needs to reach the stack's Temporal server as `identity` (the temporal CLI's --tls-* flags). */
export function temporalCliTls(home: string, identity: string): string[] {
  const f = credentialFiles({ natsCreds: null, tlsDir: secretsDir(home) }, identity);
  return ['--tls-ca-path', f.ca, '--tls-cert-path', f.cert, '--tls-key-path', f.key];
}
