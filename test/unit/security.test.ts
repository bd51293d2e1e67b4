// Credentials and connection settings: the secrets directory's files and modes, the
// permissions each identity gets, and the Temporal and NATS connection options (a missing
// file named with the command that makes it; an API key only over TLS).
import { expect } from 'chai';
import { X509Certificate } from 'node:crypto';
import { createServer } from 'node:net';
import { TLSSocket } from 'node:tls';
import { connect } from 'nats';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig, TunefleetError } from '../../shared';
import { natsConnectOptions } from '../../shared/natsconn';
import { isIdentity, permissionsFor } from '../../shared/permissions';
import { temporalConnectOptions } from '../../shared/temporalconn';
import { addAgent, addNode, identities, initSecrets, natsConfig, rotate, writeNatsConfig } from '../../infra/secrets';
import { natsServers } from '../../shared/config';
import { installedHome } from '../harness/stack';
import { spawn, spawnSync } from 'node:child_process';
import { freePort } from '../../infra/services';
import { thrown } from '../harness/expect';

describe('security - credentials and connection settings', function () {
  this.timeout(60_000);
  let home: string;
  before(async () => {
    home = mkdtempSync(join(tmpdir(), 'tunefleet-secrets-'));
    await initSecrets(home, ['nats.internal', '10.1.2.3']);
    await addAgent(home, 'gpu-7');
  });
  after(() => rmSync(home, { recursive: true, force: true }));

  it('security - secrets: directory 0700, every file 0600; a CA, a server certificate naming its hosts, an nkey and a client certificate per identity', () => {
    const dir = join(home, 'secrets');
    expect(statSync(dir).mode & 0o777).to.equal(0o700);
    for (const f of readdirSync(dir)) expect(statSync(join(dir, f)).mode & 0o777, f).to.equal(0o600);
    expect(identities(home).map((i) => i.name)).to.deep.equal(['admin', 'agent-gpu-7', 'cli', 'control', 'operator']);
    for (const i of identities(home)) expect(i.publicKey).to.match(/^U[A-Z2-7]{55}$/);
    const ca = new X509Certificate(readFileSync(join(dir, 'ca.pem')));
    const server = new X509Certificate(readFileSync(join(dir, 'nats-server.crt')));
    expect(ca.ca).to.equal(true);
    expect(server.verify(ca.publicKey)).to.equal(true);
    expect(server.subjectAltName).to.include('DNS:nats.internal').and.include('IP Address:10.1.2.3');
    expect(server.subjectAltName).to.include('IP Address:127.0.0.1');
    const client = new X509Certificate(readFileSync(join(dir, 'agent-gpu-7.crt')));
    expect(client.verify(ca.publicKey)).to.equal(true);
    expect(client.subject).to.include('CN=agent-gpu-7');
  });

  it('security - rotate gives an identity a new key; init again keeps every existing one; nats.conf holds public keys only', async () => {
    const before = identities(home);
    await initSecrets(home);
    expect(identities(home)).to.deep.equal(before);
    await rotate(home, ['cli']);
    const after = identities(home);
    expect(after.find((i) => i.name === 'cli')?.publicKey).to.not.equal(
      before.find((i) => i.name === 'cli')?.publicKey,
    );
    expect(after.find((i) => i.name === 'admin')?.publicKey).to.equal(
      before.find((i) => i.name === 'admin')?.publicKey,
    );
    const e = await rotate(home, ['nobody']).then(
      () => null,
      (x: unknown) => x as Error,
    );
    expect(e?.message).to.match(/no credentials named 'nobody'/);
    const conf = natsConfig(home, { host: '127.0.0.1', port: 4222, storeDir: '/x', maxStore: 2 ** 30 });
    const parsed = JSON.parse(conf) as { tls: { verify: boolean }; authorization: { users: { nkey: string }[] } };
    expect(parsed.tls.verify).to.equal(true);
    expect(parsed.authorization.users).to.have.length(5);
    for (const f of readdirSync(join(home, 'secrets')).filter((x) => x.endsWith('.nk')))
      expect(conf).to.not.include(readFileSync(join(home, 'secrets', f), 'utf8').trim());
    expect(conf).to.not.include('PRIVATE KEY');
  });

  it('security - a cluster node: a certificate for serving and dialing routes, a configuration nats-server accepts; NATS URLs as a seed list', async () => {
    await addNode(home, 'n2', ['nats-2.internal']);
    const dir = join(home, 'secrets');
    const cert = new X509Certificate(readFileSync(join(dir, 'nats-n2.crt')));
    expect(cert.subjectAltName).to.include('DNS:nats-2.internal');
    // both usages: a node is a server to its clients and to the routes that dial it, and a client when it dials
    const ekus = cert.toLegacyObject().ext_key_usage as string[] | undefined;
    expect(ekus).to.include.members(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    const routes = ['nats-route://nats-1.internal:6222', 'nats-route://nats-2.internal:6222'];
    const cluster = { name: 'fleet', node: 'n2', routeHost: '0.0.0.0', routePort: 6222, routes };
    const path = writeNatsConfig(home, {
      host: '0.0.0.0',
      port: 4222,
      storeDir: join(home, 'js-n2'),
      maxStore: 2 ** 30,
      cluster: { ...cluster, monitorPort: 8222, syncAlways: true },
    });
    expect(path).to.equal(join(dir, 'nats-n2.conf'));
    const conf = JSON.parse(readFileSync(path, 'utf8')) as Record<string, Record<string, unknown>>;
    expect(conf.server_name).to.equal('n2');
    expect(conf.http).to.equal('127.0.0.1:8222');
    expect(conf.jetstream?.sync_interval).to.equal('always');
    expect(conf.cluster).to.deep.include({ name: 'fleet', routes });
    expect((conf.cluster?.tls as { verify: boolean; cert_file: string }).verify).to.equal(true);
    expect((conf.cluster?.tls as { cert_file: string }).cert_file).to.equal(join(dir, 'nats-n2.crt'));
    // nats-server itself reads it (-t: check the configuration and exit)
    const check = spawnSync(join(installedHome(), 'bin', 'nats-server'), ['-t', '-c', path], { encoding: 'utf8' });
    expect(check.status, `${check.stdout}${check.stderr}`).to.equal(0);
    expect(() =>
      natsConfig(home, {
        host: 'h',
        port: 1,
        storeDir: '/x',
        maxStore: 1,
        cluster: { ...cluster, node: 'n9', monitorPort: 0, syncAlways: false },
      }),
    ).to.throw(/add-node n9/);
    const seeds = resolveConfig(
      { TUNEFLEET_NATS_URL: 'tls://a:4222, tls://b:4222,tls://c:4222' },
      { home },
      home,
      () => null,
    );
    expect(natsServers(seeds.natsUrl)).to.deep.equal(['tls://a:4222', 'tls://b:4222', 'tls://c:4222']);
    expect(natsConnectOptions(seeds, 'admin').servers).to.deep.equal(natsServers(seeds.natsUrl));
    const bad = thrown(
      () => resolveConfig({ TUNEFLEET_NATS_URL: 'tls://a:4222,b:4222' }, {}, home, () => null),
      'seeds',
    );
    expect((bad as TunefleetError).message).to.match(/'b:4222' is not a NATS URL/);
    expect((bad as TunefleetError).where.field).to.equal('nats-url');
  });

  it("security - a cluster's route port takes only a node's certificate: an agent's is refused (and was taken without the name check); routes by IP are refused", async function () {
    this.timeout(60_000);
    const dir = join(home, 'secrets');
    await addNode(home, 'r1');
    await addNode(home, 'r2');
    const p = {
      c1: await freePort(),
      c2: await freePort(),
      r1: await freePort(),
      r2: await freePort(),
      m1: await freePort(),
    };
    const routes = [`nats-route://localhost:${p.r1}`, `nats-route://localhost:${p.r2}`];
    const conf = (node: 'r1' | 'r2', port: number, routePort: number, monitorPort: number): string =>
      writeNatsConfig(home, {
        host: '127.0.0.1',
        port,
        storeDir: join(home, `js-${node}`),
        maxStore: 2 ** 30,
        cluster: { name: 'routes', node, routeHost: '127.0.0.1', routePort, routes, monitorPort, syncAlways: false },
      });
    const r1 = conf('r1', p.c1, p.r1, p.m1);
    const genuine = conf('r2', p.c2, p.r2, 0);
    // the intruder: node r2's configuration with an agent's certificate on its routes
    const json = JSON.parse(readFileSync(genuine, 'utf8')) as { cluster: { tls: Record<string, unknown> } };
    json.cluster.tls.cert_file = join(dir, 'agent-gpu-7.crt');
    json.cluster.tls.key_file = join(dir, 'agent-gpu-7.key');
    const intruder = join(dir, 'intruder.conf');
    writeFileSync(intruder, JSON.stringify(json), { mode: 0o600 });
    // the same r1 without the name check: what the route port accepted before
    const r1Json = JSON.parse(readFileSync(r1, 'utf8')) as { cluster: { tls: Record<string, unknown> } };
    expect(r1Json.cluster.tls.verify_cert_and_check_known_urls).to.equal(true);
    r1Json.cluster.tls.verify_cert_and_check_known_urls = false;
    const r1Open = join(dir, 'r1-open.conf');
    writeFileSync(r1Open, JSON.stringify(r1Json), { mode: 0o600 });
    const bin = join(installedHome(), 'bin', 'nats-server');
    const routesOf = async (): Promise<number> => {
      const r = await fetch(`http://127.0.0.1:${p.m1}/routez`);
      return ((await r.json()) as { num_routes: number }).num_routes;
    };
    /** r1 and a second server up for `ms`: r1's route count at the end (or as soon as a route forms) */
    const pair = async (first: string, second: string, ms: number): Promise<number> => {
      const a = spawn(bin, ['-c', first], { stdio: 'ignore' });
      const b = spawn(bin, ['-c', second], { stdio: 'ignore' });
      try {
        const deadline = Date.now() + ms;
        let n = 0;
        while (Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 500));
          n = await routesOf().catch(() => 0);
          if (n > 0) break;
        }
        return n;
      } finally {
        for (const c of [a, b]) {
          c.kill('SIGKILL');
          await new Promise((r) => c.once('exit', r));
        }
      }
    };
    expect(
      await pair(r1Open, intruder, 15_000),
      "without the name check an agent's certificate joins",
    ).to.be.greaterThan(0);
    expect(await pair(r1, intruder, 6_000), "an agent's certificate on a route").to.equal(0);
    expect(await pair(r1, genuine, 15_000), "a node's certificate on a route").to.be.greaterThan(0);
    const byIp = thrown(
      () =>
        natsConfig(home, {
          host: '127.0.0.1',
          port: 1,
          storeDir: '/x',
          maxStore: 1,
          cluster: {
            name: 'x',
            node: 'r1',
            routeHost: '127.0.0.1',
            routePort: 2,
            routes: ['nats-route://10.0.0.7:6222'],
            monitorPort: 0,
            syncAlways: false,
          },
        }),
      'a route by IP',
    );
    expect(byIp.message).to.match(/route 'nats-route:\/\/10.0.0.7:6222': name the node by the DNS name/);
  });

  it('security - permissions: only admin manages streams; an agent writes only its own advert and state keys and asks for commits on its own subject; each identity reads only its own inbox', () => {
    const pub = (name: string): string[] => permissionsFor(name).publish.allow;
    for (const name of ['control', 'cli', 'operator', 'agent-gpu-7'])
      for (const verb of ['STREAM.CREATE', 'STREAM.UPDATE', 'STREAM.DELETE', 'CONSUMER.DURABLE'])
        expect(
          pub(name).some((s) => s.includes(verb)),
          `${name} ${verb}`,
        ).to.equal(false);
    expect(pub('agent-gpu-7')).to.include('$KV.tunefleet-adverts.gpu-7');
    expect(pub('agent-gpu-7').filter((s) => s.startsWith('$KV.'))).to.deep.equal([
      '$KV.tunefleet-adverts.gpu-7',
      '$KV.tunefleet-agent-states.gpu-7',
    ]);
    expect(pub('agent-gpu-7')).to.include('tunefleet.commit.gpu-7');
    expect(pub('agent-gpu-7').some((s) => s.startsWith('$KV.tunefleet-commits'))).to.equal(false);
    expect(permissionsFor('agent-gpu-7').subscribe.allow).to.deep.equal(['_INBOX_agent-gpu-7.>']);
    expect(permissionsFor('control').allow_responses).to.equal(true);
    expect(permissionsFor('control').subscribe.allow).to.include('tunefleet.commit.*');
    expect(isIdentity('agent-Bad_Id')).to.equal(false);
    expect(() => permissionsFor('root')).to.throw(/not a tunefleet identity/);
  });

  it('security - NATS options: nkey, client certificate and CA from the TLS directory or --nats-creds; a missing file is named with the command that makes it', () => {
    const cfg = { natsUrl: 'tls://127.0.0.1:4222', natsCreds: null, tlsDir: join(home, 'secrets') };
    const o = natsConnectOptions(cfg, 'agent-gpu-7');
    expect(o.tls).to.deep.equal({
      caFile: join(home, 'secrets', 'ca.pem'),
      certFile: join(home, 'secrets', 'agent-gpu-7.crt'),
      keyFile: join(home, 'secrets', 'agent-gpu-7.key'),
    });
    expect(o.inboxPrefix).to.equal('_INBOX_agent-gpu-7');
    expect(typeof o.authenticator).to.equal('function');
    // --nats-creds names another identity's seed: its certificate and inbox follow it
    const other = natsConnectOptions({ ...cfg, natsCreds: join(home, 'secrets', 'admin.nk') }, 'cli');
    expect(other.inboxPrefix).to.equal('_INBOX_admin');
    const e = thrown(() => natsConnectOptions(cfg, 'agent-gpu-8'), 'an agent without credentials');
    expect(e.message).to.match(/agent-gpu-8\.nk.*tunefleet secrets add-agent gpu-8/);
    const e2 = thrown(() => natsConnectOptions({ ...cfg, tlsDir: '/nonexistent' }, 'cli'), 'no TLS directory');
    expect(e2.message).to.match(/tunefleet secrets init/);
  });

  it("security - a certificate of the fleet's CA without the server usage (an agent's) is not taken for nats-server", async () => {
    const dir = join(home, 'secrets');
    const cfg = { natsUrl: '', natsCreds: null, tlsDir: dir };
    // a listener that speaks NATS's first line, then TLS with the named certificate
    const attempt = async (certName: string, timeout: number): Promise<Error> => {
      const server = createServer((sock) => {
        sock.write(
          'INFO {"server_id":"fake","version":"2.10.0","proto":1,"tls_required":true,"max_payload":1048576}\r\n',
        );
        const t = new TLSSocket(sock, {
          isServer: true,
          cert: readFileSync(join(dir, `${certName}.crt`)),
          key: readFileSync(join(dir, `${certName}.key`)),
        });
        t.on('error', () => {});
        sock.on('error', () => {});
      });
      await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
      const port = (server.address() as { port: number }).port;
      try {
        return await connect({
          ...natsConnectOptions({ ...cfg, natsUrl: `tls://127.0.0.1:${port}` }, 'cli'),
          reconnect: false,
          timeout,
        }).then(
          async (nc) => {
            await nc.close();
            return new Error('connected');
          },
          (e: Error) => e,
        );
      } finally {
        server.close();
      }
    };
    // every certificate comes from the one CA: TLS itself refuses a client one (no serverAuth usage) as the server's
    expect((await attempt('agent-gpu-7', 30_000)).message).to.match(/unsuitable certificate purpose/);
    // the real server certificate passes (the fake then says nothing more: a timeout, not a refusal)
    expect((await attempt('nats-server', 3000)).message).to.not.match(/unsuitable certificate purpose/);
  });

  it('security - Temporal options: plaintext by default; TLS files and an API key from files; a certificate needs its key; an API key needs TLS', () => {
    const base = resolveConfig({}, {}, '/home/x', () => null);
    expect(base.temporalTls).to.equal(null);
    expect(temporalConnectOptions(base, 'cli')).to.deep.equal({ address: '127.0.0.1:7233' });
    const dir = join(home, 'secrets');
    const keyFile = join(home, 'api-key');
    writeFileSync(keyFile, 'sekrit-key\n', { mode: 0o600 });
    const cfg = resolveConfig(
      {
        TUNEFLEET_TEMPORAL_TLS_CA: join(dir, 'ca.pem'),
        TUNEFLEET_TEMPORAL_TLS_CERT: join(dir, 'cli.crt'),
        TUNEFLEET_TEMPORAL_TLS_KEY: join(dir, 'cli.key'),
        TUNEFLEET_TEMPORAL_TLS_SERVER_NAME: 'temporal.internal',
        TUNEFLEET_TEMPORAL_API_KEY_FILE: keyFile,
      },
      { temporalAddress: 'temporal.internal:7233' },
      '/home/x',
      () => null,
    );
    const o = temporalConnectOptions(cfg, 'cli');
    expect(o.apiKey).to.equal('sekrit-key');
    expect(o.tls?.serverNameOverride).to.equal('temporal.internal');
    expect(o.tls?.serverRootCACertificate?.toString()).to.include('BEGIN CERTIFICATE');
    expect(o.tls?.clientCertPair?.key.toString()).to.include('PRIVATE KEY');
    const half = thrown(
      () => resolveConfig({ TUNEFLEET_TEMPORAL_TLS_CERT: join(dir, 'cli.crt') }, {}, '/home/x', () => null),
      'a certificate without its key',
    );
    expect(half).to.be.instanceOf(TunefleetError);
    expect(half.message).to.match(/needs its key/);
    const plain = thrown(
      () => resolveConfig({ TUNEFLEET_TEMPORAL_API_KEY_FILE: keyFile }, {}, '/home/x', () => null),
      'an API key without TLS',
    );
    expect(plain.message).to.match(/only sent over TLS/);
    expect(plain.message).to.not.include('sekrit');
    const tlsOnly = resolveConfig({ TUNEFLEET_TEMPORAL_TLS: '1' }, {}, '/home/x', () => null);
    expect(temporalConnectOptions(tlsOnly, 'cli')).to.deep.equal({ address: '127.0.0.1:7233', tls: {} });
  });

  it("security - Temporal fleet mTLS: each process presents its own identity's certificate, from the environment or the stack file; a bad mode is named", () => {
    const dir = join(home, 'secrets');
    const fleet = resolveConfig({ TUNEFLEET_TEMPORAL_TLS: 'fleet' }, { home }, '/home/x', () => null);
    expect(fleet.temporalTls?.fleet).to.equal(true);
    const o = temporalConnectOptions(fleet, 'agent-gpu-7');
    expect(o.tls?.clientCertPair?.crt.equals(readFileSync(join(dir, 'agent-gpu-7.crt')))).to.equal(true);
    expect(o.tls?.serverRootCACertificate?.equals(readFileSync(join(dir, 'ca.pem')))).to.equal(true);
    const control = temporalConnectOptions(fleet, 'control');
    expect(control.tls?.clientCertPair?.crt.equals(readFileSync(join(dir, 'control.crt')))).to.equal(true);
    // `tunefleet up --ha` writes temporalTls: 'fleet' into its stack file; the environment still decides
    const stack = { natsUrl: 'tls://127.0.0.1:4222', temporalAddress: '127.0.0.1:7233', temporalTls: 'fleet' as const };
    expect(resolveConfig({}, { home }, '/home/x', () => stack).temporalTls?.fleet).to.equal(true);
    expect(resolveConfig({ TUNEFLEET_TEMPORAL_TLS: '0' }, { home }, '/home/x', () => stack).temporalTls).to.equal(null);
    // the flag says the same, and wins over the environment
    expect(resolveConfig({}, { home, temporalTls: 'fleet' }, '/home/x', () => null).temporalTls?.fleet).to.equal(true);
    const flagOff = resolveConfig(
      { TUNEFLEET_TEMPORAL_TLS: 'fleet' },
      { home, temporalTls: 'off' },
      '/home/x',
      () => null,
    );
    expect(flagOff.temporalTls).to.equal(null);
    const bad = thrown(() => resolveConfig({ TUNEFLEET_TEMPORAL_TLS: 'yes' }, {}, '/home/x', () => null), 'a bad mode');
    expect(bad.message).to.match(/TLS to Temporal 'yes'/);
    expect((bad as TunefleetError).where.field).to.equal('TUNEFLEET_TEMPORAL_TLS');
    const badFlag = thrown(() => resolveConfig({}, { temporalTls: 'mtls' }, '/home/x', () => null), 'a bad flag');
    expect((badFlag as TunefleetError).where.field).to.equal('temporal-tls');
  });
});
