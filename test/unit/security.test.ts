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
import { addAgent, identities, initSecrets, natsConfig, rotate } from '../../infra/secrets';
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
    expect(temporalConnectOptions(base)).to.deep.equal({ address: '127.0.0.1:7233' });
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
    const o = temporalConnectOptions(cfg);
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
    expect(temporalConnectOptions(tlsOnly)).to.deep.equal({ address: '127.0.0.1:7233', tls: {} });
  });
});
