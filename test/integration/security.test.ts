// Security on the stack as `tunefleet up` and the test harness start it: nats-server with
// TLS (client certificates verified), one nkey per identity, least privilege per role.
// Every role is tried against every asset and operation, and the server's answer is
// checked against the table below (the README's "Who may do what on NATS" says the same);
// a refused write leaves nothing behind. The commit service refuses an agent that does not
// hold the job's lease.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import {
  ADAPTERS_BUCKET,
  ADVERTS_BUCKET,
  AGENT_STATES_BUCKET,
  CHECKPOINTS_BUCKET,
  COMMITS_BUCKET,
  DATASETS_BUCKET,
  DECISIONS_BUCKET,
  EVENTS_STREAM,
  LEASES_BUCKET,
  QUEUE_BUCKET,
  checkpointPrefix,
} from '../../shared';
import { natsConnectOptions } from '../../shared/natsconn';
import { openKv } from '../../shared/objects';
import { addAgent, initSecrets } from '../../infra/secrets';
import { reloadNats } from '../../infra/services';
import { commitClient } from '../../agent/commits';
import { serveCommits } from '../../scheduler/commits';
import { connectNats } from '../../scheduler/nats';
import { startTestStack, type TestStack } from '../harness/stack';
import { rejection } from '../harness/expect';

const IDENTITIES = ['admin', 'control', 'cli', 'operator', 'agent-a'] as const;
type Identity = (typeof IDENTITIES)[number];

/** y: the server allows it; n: it refuses it; -: not tried (admin's destructive rights are tried on its own stream). */
const TABLE = `
operation                        admin control cli operator agent-a
read an advert                   y     y       y   y        y
write agent-a's advert           y     n       n   n        y
write agent-b's advert           y     n       n   n        n
write agent-b's state (cordon)   y     n       n   y        n
read the leases                  y     y       n   n        n
write a lease                    y     y       n   n        n
write a queue entry              y     y       n   n        n
read the decisions               y     y       y   n        n
write a decision                 y     y       n   n        n
read the commits                 y     y       n   n        n
write a commit                   y     y       n   n        n
put a dataset object             y     y       y   n        n
get a dataset object             y     y       y   n        y
put a checkpoint object          y     n       n   n        y
get a checkpoint object          y     y       n   n        y
put an adapter object            y     y       y   n        y
get an adapter object            y     y       y   n        y
publish a job event              y     n       n   n        y
read the job events              y     y       y   n        n
ask for a commit as agent-b      y     n       n   n        n
create a stream                  -     n       n   n        n
delete the commits bucket        -     n       n   n        n
purge the events stream          -     n       n   n        n
`;

function expected(): Map<string, Record<Identity, string>> {
  const rows = TABLE.trim().split('\n').slice(1);
  const m = new Map<string, Record<Identity, string>>();
  for (const r of rows) {
    const cells = /^(.*?)\s+([yn-](?:\s+[yn-])*)\s*$/.exec(r);
    const marks = (cells?.[2] ?? '').split(/\s+/);
    const name = cells?.[1] ?? r;
    expect(marks, `the table's row '${r}'`).to.have.length(IDENTITIES.length);
    m.set(name, Object.fromEntries(IDENTITIES.map((id, i) => [id, marks[i] as string])) as Record<Identity, string>);
  }
  return m;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Each operation, run as one identity; `tag` makes what it writes its own (checked afterwards). */
function operations(nc: NatsConnection, tag: string): Record<string, () => Promise<unknown>> {
  const js = nc.jetstream();
  const kv = (b: string) => openKv(js, b);
  const by = JSON.stringify({ by: tag });
  return {
    'read an advert': async () => (await kv(ADVERTS_BUCKET)).get('a'),
    "write agent-a's advert": async () => (await kv(ADVERTS_BUCKET)).put('a', by),
    "write agent-b's advert": async () => (await kv(ADVERTS_BUCKET)).put('b', by),
    "write agent-b's state (cordon)": async () => (await kv(AGENT_STATES_BUCKET)).put('b', by),
    'read the leases': async () => (await kv(LEASES_BUCKET)).get('seed'),
    'write a lease': async () => (await kv(LEASES_BUCKET)).put('b', by),
    'write a queue entry': async () => (await kv(QUEUE_BUCKET)).put('sec-job', by),
    'read the decisions': async () => (await kv(DECISIONS_BUCKET)).get('seed'),
    'write a decision': async () => (await kv(DECISIONS_BUCKET)).put('sec-job', by),
    'read the commits': async () => (await kv(COMMITS_BUCKET)).get('seed'),
    'write a commit': async () => (await kv(COMMITS_BUCKET)).put('sec-job', JSON.stringify({ epoch: 1e9, by: tag })),
    'put a dataset object': async () => (await js.views.os(DATASETS_BUCKET)).putBlob({ name: `sec-${tag}` }, enc(tag)),
    'get a dataset object': async () => (await js.views.os(DATASETS_BUCKET)).getBlob('seed'),
    'put a checkpoint object': async () =>
      (await js.views.os(CHECKPOINTS_BUCKET)).putBlob({ name: `sec-${tag}` }, enc(tag)),
    'get a checkpoint object': async () => (await js.views.os(CHECKPOINTS_BUCKET)).getBlob('seed'),
    'put an adapter object': async () => (await js.views.os(ADAPTERS_BUCKET)).putBlob({ name: `sec-${tag}` }, enc(tag)),
    'get an adapter object': async () => (await js.views.os(ADAPTERS_BUCKET)).getBlob('seed'),
    'publish a job event': async () => js.publish(`tunefleet.job.sec-${tag}.log`, enc(by)),
    'read the job events': async () =>
      (await nc.jetstreamManager()).streams.getMessage(EVENTS_STREAM, { last_by_subj: 'tunefleet.job.seed.log' }),
    'ask for a commit as agent-b': async () => commitClient(nc, 'b').claim('sec-job', 1).catch(refusedBySvc),
    'create a stream': async () =>
      (await nc.jetstreamManager()).streams.add({ name: `SEC_${tag.replace(/-/g, '_')}`, subjects: [`sec.${tag}`] }),
    'delete the commits bucket': async () => (await nc.jetstreamManager()).streams.delete(`KV_${COMMITS_BUCKET}`),
    'purge the events stream': async () => (await nc.jetstreamManager()).streams.purge(EVENTS_STREAM),
  };
}

/** The commit service answered (it refused: no lease): the request itself was allowed. */
function refusedBySvc(e: Error): string {
  if (/holds no lease/.test(e.message)) return 'answered';
  throw e;
}

/** y when it succeeded, n when the server refused it for permissions; anything else is shown as it is. */
async function attempt(fn: () => Promise<unknown>): Promise<string> {
  try {
    await Promise.race([fn(), new Promise((_, rej) => setTimeout(() => rej(new Error('no answer in 10 s')), 10_000))]);
    return 'y';
  } catch (e) {
    const m = String((e as Error).message ?? e);
    return /permissions violation/i.test(m) ? 'n' : `error: ${m}`;
  }
}

describe('security - TLS, nkeys and least privilege on NATS', function () {
  this.timeout(300_000);
  let stack: TestStack;
  const opts = (identity: string) => natsConnectOptions(stack.cfg, identity);
  const as = (identity: string) => connect({ ...opts(identity), reconnect: false, timeout: 5000 });

  before(async () => {
    stack = await startTestStack();
    // agents a and b: identities agent-a and agent-b
    for (const a of ['a', 'b']) {
      await addAgent(stack.home, a);
      await reloadNats(stack.home, stack.nats.pid, stack.nats.address, `agent-${a}`);
    }
  });
  after(() => stack?.stop());

  it('security - an anonymous, a plaintext, a certificate-less, a foreign-CA and an unknown-key connection are all refused', async () => {
    const mine = opts('cli');
    const tls = mine.tls as { caFile: string; certFile: string; keyFile: string };
    // anonymous: TLS with a valid client certificate, but no nkey
    const anon = await rejection(connect({ servers: stack.nats.address, tls, reconnect: false }), 'anonymous');
    expect(anon.message).to.match(/authorization violation/i);
    // no client certificate: the TLS handshake fails
    const noCert = await rejection(
      connect({ ...mine, tls: { caFile: tls.caFile }, reconnect: false, timeout: 5000 }),
      'no client certificate',
    );
    expect(noCert.message).to.not.match(/^$/);
    // a certificate and key from another CA, and an nkey the server does not know
    const foreign = mkdtempSync(join(tmpdir(), 'tunefleet-foreign-'));
    try {
      await initSecrets(foreign);
      const other = natsConnectOptions({ ...stack.cfg, tlsDir: join(foreign, 'secrets') }, 'cli');
      const otherTls = other.tls as typeof tls;
      await rejection(
        connect({ ...mine, tls: { ...tls, certFile: otherTls.certFile, keyFile: otherTls.keyFile }, reconnect: false }),
        'a client certificate from a foreign CA',
      );
      const unknown = await rejection(
        connect({ ...other, tls, reconnect: false, timeout: 5000 }),
        'an nkey the server does not know',
      );
      expect(unknown.message).to.match(/authorization violation/i);
    } finally {
      rmSync(foreign, { recursive: true, force: true });
    }
    // plaintext: the server says TLS is required and answers a plaintext CONNECT with an error
    const port = Number(new URL(stack.nats.address.replace('tls:', 'http:')).port);
    const answer = await new Promise<string>((res, rej) => {
      const sock = netConnect(port, '127.0.0.1');
      let got = '';
      sock.on('data', (b) => {
        got += b.toString();
        if (got.startsWith('INFO') && !got.includes('CONNECT_SENT')) {
          got += 'CONNECT_SENT';
          sock.write('CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n');
        }
      });
      sock.on('close', () => res(got));
      sock.on('error', rej);
      setTimeout(() => sock.destroy(), 5000);
    });
    expect(answer).to.match(/"tls_required":true/);
    expect(answer).to.not.match(/PONG/);
  });

  it('security - every role against every asset: the server allows what the table says and refuses the rest; a refused write leaves nothing', async () => {
    const want = expected();
    // what the reads read: one of each, written as admin
    const admin = await as('admin');
    const ajs = admin.jetstream();
    for (const b of [ADVERTS_BUCKET, LEASES_BUCKET, DECISIONS_BUCKET, COMMITS_BUCKET])
      await (await openKv(ajs, b)).put(b === ADVERTS_BUCKET ? 'a' : 'seed', '{}');
    for (const b of [DATASETS_BUCKET, CHECKPOINTS_BUCKET, ADAPTERS_BUCKET])
      await (await ajs.views.os(b)).putBlob({ name: 'seed' }, enc('seed'));
    await ajs.publish('tunefleet.job.seed.log', enc('{}'));
    // the commit service, as control workers run it
    const control = await as('control');
    const svc = serveCommits(
      control,
      await openKv(control.jetstream(), COMMITS_BUCKET),
      await openKv(control.jetstream(), LEASES_BUCKET),
      () => {},
    );
    const eventsBefore = (await (await admin.jetstreamManager()).streams.info(EVENTS_STREAM)).state.messages;
    const got = new Map<string, Record<string, string>>();
    try {
      for (const id of IDENTITIES) {
        const nc = await as(id);
        try {
          const ops = operations(nc, id);
          expect(Object.keys(ops).sort()).to.deep.equal([...want.keys()].sort());
          for (const [name, fn] of Object.entries(ops)) {
            if (want.get(name)?.[id] === '-') continue;
            const row = got.get(name) ?? {};
            row[id] = await attempt(fn);
            got.set(name, row);
          }
        } finally {
          await nc.close().catch(() => {});
        }
      }
      // admin's own: a stream it creates, purges and deletes
      const jsm = await admin.jetstreamManager();
      await jsm.streams.add({ name: 'SEC_ADMIN', subjects: ['sec.admin'] });
      await jsm.streams.purge('SEC_ADMIN');
      await jsm.streams.delete('SEC_ADMIN');
    } finally {
      svc.unsubscribe();
      await control.close();
    }
    const table = [...want.keys()].map((op) => {
      const row = got.get(op) ?? {};
      return `${op.padEnd(32)} ${IDENTITIES.map((id) => (want.get(op)?.[id] === '-' ? '-' : (row[id] ?? '?'))).join(' ')}`;
    });
    const wantTable = [...want.keys()].map(
      (op) => `${op.padEnd(32)} ${IDENTITIES.map((id) => want.get(op)?.[id]).join(' ')}`,
    );
    expect(table.join('\n')).to.equal(wantTable.join('\n'));

    // nothing a refused identity tried is there: each write carried its writer's name, and identities wrote in the
    // table's order, so the value left is the last allowed writer's (and where the bucket keeps history, only
    // allowed writers are in it)
    const writers = async (bucket: string, key: string): Promise<string[]> => {
      const out: string[] = [];
      for await (const e of await (await openKv(ajs, bucket)).history({ key }))
        if (e.operation === 'PUT') out.push((JSON.parse(e.string()) as { by?: string }).by ?? 'seed');
      return out;
    };
    const allowed = (op: string): string[] => IDENTITIES.filter((id) => want.get(op)?.[id] === 'y').map(String);
    for (const [bucket, key, op] of [
      [ADVERTS_BUCKET, 'b', "write agent-b's advert"],
      [AGENT_STATES_BUCKET, 'b', "write agent-b's state (cordon)"],
      [LEASES_BUCKET, 'b', 'write a lease'],
      [COMMITS_BUCKET, 'sec-job', 'write a commit'],
    ] as const) {
      const w = await writers(bucket, key);
      expect(w.at(-1), `${bucket}/${key}`).to.equal(allowed(op).at(-1));
      for (const x of w) expect(allowed(op), `${bucket}/${key} written by ${x}`).to.include(x);
    }
    for (const [bucket, op] of [
      [DATASETS_BUCKET, 'put a dataset object'],
      [CHECKPOINTS_BUCKET, 'put a checkpoint object'],
      [ADAPTERS_BUCKET, 'put an adapter object'],
    ] as const) {
      const os = await ajs.views.os(bucket);
      const present: string[] = [];
      for (const id of IDENTITIES) if (await os.info(`sec-${id}`)) present.push(id);
      expect(present, bucket).to.deep.equal(allowed(op));
    }
    const jsm = await admin.jetstreamManager();
    await jsm.streams.info(`KV_${COMMITS_BUCKET}`); // still there
    const eventsAfter = (await jsm.streams.info(EVENTS_STREAM)).state.messages;
    expect(eventsAfter, 'the events stream was not purged').to.equal(
      eventsBefore + allowed('publish a job event').length,
    );
    expect((await jsm.streams.names().next()).filter((n) => n.startsWith('SEC_'))).to.deep.equal([]);
    await admin.close();
  });

  it("security - the commit service: an agent claims and commits only for an attempt it holds the lease of, under that job and attempt's prefix", async () => {
    const admin = await as('admin');
    const control = await as('control');
    const commits = await openKv(control.jetstream(), COMMITS_BUCKET);
    const svc = serveCommits(control, commits, await openKv(control.jetstream(), LEASES_BUCKET), () => {});
    const agentA = await as('agent-a');
    try {
      const leases = await openKv(admin.jetstream(), LEASES_BUCKET);
      await leases.put(
        'a',
        JSON.stringify({
          leases: [{ jobId: 'held-job', attempt: 2, bytes: 1, purpose: 'train', time: Date.now(), devices: ['cpu'] }],
        }),
      );
      const c = commitClient(agentA, 'a');
      const manifest = 'a'.repeat(64);
      expect((await c.claim('held-job', 2)).epoch).to.equal(2);
      const at = (job: string, attempt: number) => checkpointPrefix(job, attempt, 10);
      expect(
        await c.commit('held-job', { epoch: 2, step: 10, prefix: at('held-job', 2), manifest_sha256: manifest }),
      ).to.equal('committed');
      // another job, another attempt, another job's prefix: all refused, and the record is unchanged
      const other = await rejection(c.claim('other-job', 1), 'a claim for a job it holds no lease of');
      expect(other.message).to.match(/holds no lease for other-job attempt 1/);
      expect(
        await c.commit('held-job', { epoch: 3, step: 20, prefix: at('held-job', 3), manifest_sha256: manifest }),
      ).to.equal('fenced');
      expect(
        await c.commit('held-job', { epoch: 2, step: 20, prefix: at('other-job', 2), manifest_sha256: manifest }),
      ).to.equal('fenced');
      const rec = JSON.parse((await commits.get('held-job'))?.string() ?? '{}') as { step: number; agent_id: string };
      expect(rec).to.include({ step: 10, agent_id: 'a' });
      expect(await commits.get('other-job')).to.equal(null);
    } finally {
      svc.unsubscribe();
      await agentA.close();
      await control.close();
      await admin.close();
    }
  });

  it('security - a client closing while its server is gone ends its connection (no reconnecting forever, nothing left running)', async () => {
    // the server goes away behind a relay: the client loses it the way it would on a network cut
    const upstream = new URL(stack.nats.address.replace(/^tls:/, 'http:'));
    const sockets = new Set<Socket>();
    const relay = createServer((c) => {
      const s = netConnect(Number(upstream.port), upstream.hostname);
      for (const x of [c, s]) {
        sockets.add(x);
        x.on('error', () => {});
      }
      c.pipe(s).pipe(c);
    });
    await new Promise<void>((res) => relay.listen(0, '127.0.0.1', res));
    const port = (relay.address() as AddressInfo).port;
    const n = await connectNats({ ...stack.cfg, natsUrl: `tls://127.0.0.1:${port}` }, 'cli');
    try {
      // a watch holds a subscription open, as the console's fleet view does
      await (await n.adverts()).watch();
      const disconnected = (async () => {
        for await (const s of n.nc.status()) if (s.type === 'disconnect') return;
      })();
      relay.close();
      for (const x of sockets) x.destroy();
      await disconnected;
      const started = Date.now();
      await n.close();
      expect(n.nc.isClosed(), 'the connection is closed, not reconnecting').to.equal(true);
      expect(Date.now() - started).to.be.below(15_000);
    } finally {
      relay.close();
      for (const x of sockets) x.destroy();
      await n.nc.close();
    }
  });
});
