// Credentials for every tunefleet identity, and nats-server's configuration made from them.
// Everything lives in $TUNEFLEET_HOME/secrets (directory 0700, every file 0600):
//   ca.pem, ca.key                  the fleet's certificate authority (ECDSA P-256, 10 years)
//   nats-server.crt, .key           the server's certificate: localhost, this host, 127.0.0.1, ::1, --host names
//   nats-<node>.crt, .key           a NATS cluster node's (server and client usage: routes)
//   temporal-server.crt, .key       the Temporal server's (`tunefleet up --ha`; server and client usage)
//   postgres.password               the HA stack's PostgreSQL superuser password
//   temporal-server.yaml            the HA stack's Temporal server configuration (holds that password)
//   <identity>.nk                   the identity's NATS nkey seed (NATS's own user keys)
//   <identity>.crt, .key            its client certificate (mutual TLS), CN = the identity
//   nats.conf                       nats-server's configuration: TLS with client certificates verified,
//                                   one user per nkey with its role's permissions (shared/permissions.ts)
// Identities: admin, control, cli, operator, and agent-<id> per agent. Only public keys and
// certificates go into nats.conf; seeds and private keys never leave their files.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { X509Certificate, createPrivateKey, webcrypto } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createUser, fromSeed } from 'nkeys.js';
import { ErrorCode, TunefleetError } from '../shared';
import { ROLES, isIdentity, permissionsFor } from '../shared/permissions';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
x509.cryptoProvider.set(webcrypto as never);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;

export const secretsDir = (home: string): string => join(home, 'secrets');

/** Write a secret file: 0600, via a temporary name. */
function writeSecret(path: string, data: string): void {
  rmSync(`${path}.tmp`, { force: true });
  writeFileSync(`${path}.tmp`, data, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({
    type: 'pkcs8',
    format: 'pem',
  }) as string;
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
  return await webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign']);
}

const newKeys = async (): Promise<CryptoKeyPair> => await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);

const serial = (): string => Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex');

interface Ca {
  cert: x509.X509Certificate;
  key: CryptoKey;
}

async function loadOrCreateCa(dir: string): Promise<{ ca: Ca; created: boolean }> {
  const certPath = join(dir, 'ca.pem');
  const keyPath = join(dir, 'ca.key');
  if (existsSync(certPath) && existsSync(keyPath))
    return {
      ca: {
        cert: new x509.X509Certificate(readFileSync(certPath, 'utf8')),
        key: await importKey(readFileSync(keyPath, 'utf8')),
      },
      created: false,
    };
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=tunefleet CA ${hostname()}`,
    notBefore: new Date(Date.now() - DAY_MS),
    notAfter: new Date(Date.now() + 3650 * DAY_MS),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  writeSecret(keyPath, await keyPem(keys.privateKey));
  writeSecret(certPath, cert.toString('pem') + '\n');
  return { ca: { cert, key: keys.privateKey }, created: true };
}

/**
 * A certificate signed by the CA: a server one (with its names), a cluster node's (server and client: a node dials
 * the other nodes' routes with it), or a client one (CN = identity).
 */
async function issue(
  ca: Ca,
  dir: string,
  file: string,
  cn: string,
  server: { dns: string[]; ips: string[]; node?: boolean } | null,
) {
  const keys = await newKeys();
  const names: x509.JsonGeneralName[] = server
    ? [
        ...server.dns.map((v) => ({ type: 'dns' as const, value: v })),
        ...server.ips.map((v) => ({ type: 'ip' as const, value: v })),
      ]
    : [];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${cn}`,
    issuer: ca.cert.subject,
    notBefore: new Date(Date.now() - DAY_MS),
    notAfter: new Date(Date.now() + 825 * DAY_MS),
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(
        server?.node
          ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]
          : [server ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth],
      ),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  writeSecret(join(dir, `${file}.key`), await keyPem(keys.privateKey));
  writeSecret(join(dir, `${file}.crt`), cert.toString('pem') + '\n');
}

/** A new nkey and client certificate for an identity (replacing any it had). */
async function makeIdentity(ca: Ca, dir: string, name: string): Promise<void> {
  const kp = createUser();
  writeSecret(join(dir, `${name}.nk`), `${new TextDecoder().decode(kp.getSeed())}\n`);
  await issue(ca, dir, name, name, null);
}

export interface SecretsReport {
  dir: string;
  created: string[];
}

/**
 * Create what is missing: the CA, the server certificate (for localhost, this host, the loopback addresses and
 * `hosts`), and credentials for every role. Existing files are kept (a re-run adds only what is missing).
 */
export async function initSecrets(home: string, hosts: string[] = []): Promise<SecretsReport> {
  const dir = secretsDir(home);
  ensureDir(dir);
  const created: string[] = [];
  const { ca, created: newCa } = await loadOrCreateCa(dir);
  if (newCa) created.push('ca.pem');
  if (newCa || !existsSync(join(dir, 'nats-server.crt')) || hosts.length) {
    const dns = [...new Set(['localhost', hostname(), ...hosts.filter((h) => !isIp(h))])];
    const ips = [...new Set(['127.0.0.1', '::1', ...hosts.filter(isIp)])];
    await issue(ca, dir, 'nats-server', 'tunefleet nats-server', { dns, ips });
    created.push('nats-server.crt');
  }
  for (const role of ROLES) {
    if (!newCa && existsSync(join(dir, `${role}.nk`)) && existsSync(join(dir, `${role}.crt`))) continue;
    await makeIdentity(ca, dir, role);
    created.push(`${role}.nk`);
  }
  return { dir, created };
}

const isIp = (h: string): boolean => /^[\d.]+$/.test(h) || h.includes(':');

/**
 * A NATS cluster node's certificate, nats-<node>.crt/.key: for its clients and for the routes between nodes (server
 * and client usage), for localhost, the loopback addresses and `hosts`. Replaced when asked for again.
 */
export async function addNode(home: string, node: string, hosts: string[] = []): Promise<void> {
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(node))
    throw new Error(`node name '${node}': lowercase letters, digits and '-', at most 63`);
  await issuePeer(home, `nats-${node}`, `tunefleet nats ${node}`, hosts);
}

/**
 * The Temporal server's certificate, temporal-server.crt/.key: its frontend's (clients verify it) and the one its
 * services present to each other (server and client usage), for localhost, the loopback addresses and `hosts`.
 */
export async function addTemporalServer(home: string, hosts: string[] = []): Promise<void> {
  await issuePeer(home, 'temporal-server', 'tunefleet temporal-server', hosts);
}

async function issuePeer(home: string, file: string, cn: string, hosts: string[]): Promise<void> {
  const dir = secretsDir(home);
  const { ca } = await loadOrCreateCa(dir);
  const dns = [...new Set(['localhost', ...hosts.filter((h) => !isIp(h))])];
  const ips = [...new Set(['127.0.0.1', '::1', ...hosts.filter(isIp)])];
  await issue(ca, dir, file, cn, { dns, ips, node: true });
}

/** Credentials for one agent (agent-<id>.nk, .crt, .key); kept if they exist. */
export async function addAgent(home: string, agentId: string): Promise<boolean> {
  const dir = secretsDir(home);
  const name = `agent-${agentId}`;
  if (!isIdentity(name))
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      `agent id '${agentId}' must be lowercase letters, digits and dashes`,
      {
        field: 'agent',
      },
    );
  if (existsSync(join(dir, `${name}.nk`)) && existsSync(join(dir, `${name}.crt`))) return false;
  const { ca } = await loadOrCreateCa(dir);
  await makeIdentity(ca, dir, name);
  return true;
}

/** New nkeys and client certificates for the named identities (all of them when none is named). */
export async function rotate(home: string, names: string[] = []): Promise<string[]> {
  const dir = secretsDir(home);
  const all = identities(home).map((i) => i.name);
  const which = names.length ? names : all;
  for (const n of which)
    if (!all.includes(n))
      throw new TunefleetError(ErrorCode.FlagInvalid, `no credentials named '${n}' in ${dir} (${all.join(', ')})`, {
        field: 'identity',
      });
  const { ca } = await loadOrCreateCa(dir);
  for (const n of which) await makeIdentity(ca, dir, n);
  return which;
}

export interface Identity {
  name: string;
  publicKey: string;
  /** the client certificate's last day */
  expires: string;
}

/** Every identity with credentials in the secrets directory, with its public nkey. */
export function identities(home: string): Identity[] {
  const dir = secretsDir(home);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.nk'))
    .map((f) => f.slice(0, -3))
    .filter(isIdentity)
    .sort()
    .map((name) => {
      const seed = readFileSync(join(dir, `${name}.nk`), 'utf8').trim();
      const crt = join(dir, `${name}.crt`);
      return {
        name,
        publicKey: fromSeed(new TextEncoder().encode(seed)).getPublicKey(),
        expires: existsSync(crt) ? new X509Certificate(readFileSync(crt)).validTo : 'no certificate',
      };
    });
}

export interface NatsConfigOptions {
  host: string;
  port: number;
  storeDir: string;
  /** JetStream's file store cap in bytes (every stream's size limit fits under it) */
  maxStore: number;
  /** a node of a cluster (its certificate from addNode); absent: one server */
  cluster?: NatsClusterOptions;
}

export interface NatsClusterOptions {
  /** the cluster's name, the same on every node */
  name: string;
  /** this node's server_name (unique in the cluster; its certificate is nats-<node>.crt) */
  node: string;
  /** where this node listens for routes */
  routeHost: string;
  routePort: number;
  /** every node's route URL (nats-route://host:port; its own is ignored by the server) */
  routes: string[];
  /** HTTP monitoring port, on 127.0.0.1 only (0: none) */
  monitorPort: number;
  /**
   * fsync every write (JetStream's sync_interval: always): for nodes that share a failure domain (one host, one
   * rack's power), where losing them together would otherwise lose the last writes of all replicas
   */
  syncAlways: boolean;
}

/**
 * nats-server's configuration (JSON, which its parser reads): TLS required with client certificates verified against
 * the CA; one user per identity's public nkey, with that role's permissions; no anonymous access.
 */
export function natsConfig(home: string, o: NatsConfigOptions): string {
  const dir = secretsDir(home);
  const users = identities(home).map((i) => ({ nkey: i.publicKey, permissions: permissionsFor(i.name) }));
  if (!users.some((u) => u.nkey === identities(home).find((i) => i.name === 'admin')?.publicKey))
    throw new Error(`no admin credentials in ${dir}: run 'tunefleet secrets init'`);
  const c = o.cluster;
  const cert = c ? `nats-${c.node}` : 'nats-server';
  if (c && !existsSync(join(dir, `${cert}.crt`)))
    throw new Error(`no certificate for node ${c.node} in ${dir}: run 'tunefleet secrets add-node ${c.node}'`);
  const tls = {
    cert_file: join(dir, `${cert}.crt`),
    key_file: join(dir, `${cert}.key`),
    ca_file: join(dir, 'ca.pem'),
    verify: true,
    timeout: 5,
  };
  // a route is accepted only from a certificate whose DNS name is one of the routes' hosts (a node's): any other
  // certificate of the fleet's CA with client usage (an agent's, the cli's) cannot join the cluster
  for (const r of c?.routes ?? []) {
    const host = /^nats-route:\/\/(?:[^@/]*@)?(\[[^\]]+\]|[^:/]+)/.exec(r)?.[1] ?? '';
    if (!host || isIp(host.replace(/^\[|\]$/g, '')))
      throw new TunefleetError(
        ErrorCode.FlagInvalid,
        `route '${r}': name the node by the DNS name in its certificate (secrets add-node --host), not an IP ` +
          "address: a route is accepted only from a certificate whose DNS name is a route's host",
        { field: 'route' },
      );
  }
  return JSON.stringify(
    {
      host: o.host,
      port: o.port,
      ...(c ? { server_name: c.node } : {}),
      jetstream: {
        store_dir: o.storeDir,
        max_file_store: o.maxStore,
        max_memory_store: 64 * 2 ** 20,
        ...(c?.syncAlways ? { sync_interval: 'always' } : {}),
      },
      tls,
      authorization: { users, timeout: 5 },
      max_payload: 8 * 2 ** 20,
      // routes: TLS both ways with the nodes' certificates, verified against the CA and the routes' names
      ...(c
        ? {
            cluster: {
              name: c.name,
              host: c.routeHost,
              port: c.routePort,
              routes: c.routes,
              tls: { ...tls, verify_cert_and_check_known_urls: true },
            },
            ...(c.monitorPort ? { http: `127.0.0.1:${c.monitorPort}` } : {}),
          }
        : {}),
    },
    null,
    1,
  );
}

export function writeNatsConfig(home: string, o: NatsConfigOptions): string {
  const path = join(secretsDir(home), o.cluster ? `nats-${o.cluster.node}.conf` : 'nats.conf');
  writeSecret(path, natsConfig(home, o));
  return path;
}

/** Rewrite nats.conf's users from the identities now in the secrets directory (the rest is kept). */
export function refreshNatsUsers(home: string): string[] {
  const dir = secretsDir(home);
  // nats.conf (one server) and nats-<node>.conf (the nodes of a cluster on this host)
  const paths = readdirSync(dir)
    .filter((f) => /^nats(-[a-z0-9-]+)?\.conf$/.test(f))
    .map((f) => join(dir, f));
  for (const path of paths) {
    const conf = JSON.parse(readFileSync(path, 'utf8')) as { authorization: { users: unknown[] } };
    conf.authorization.users = identities(home).map((i) => ({
      nkey: i.publicKey,
      permissions: permissionsFor(i.name),
    }));
    writeSecret(path, JSON.stringify(conf, null, 1));
  }
  return paths;
}
