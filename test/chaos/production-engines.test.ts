// Chaos on the production engines: the whole fleet (two control workers, two agent processes, the client) on three
// nats-server nodes of one JetStream cluster (TLS on client and route connections, every stream and bucket with 3
// replicas) and on Temporal's real server with mutual TLS on a private PostgreSQL (infra/ha.ts, what
// `tunefleet up --ha` runs); nodes, the Temporal server and PostgreSQL killed with SIGKILL while a job trains. Rows of
// the chaos table (README "Guarantees"). Needs `infra/bootstrap.sh ha` (npm run chaos runs it).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADVERTS_BUCKET, CHECKPOINTS_BUCKET, EVENTS_STREAM, jobEventSubject, type CommitRecord } from '../../shared';
import { commitOf, readyAgents, tinyJob, until } from '../harness/fleet';
import { useRunningFleet } from '../harness/running-fleet';
import { KV_MAX_BYTES } from '../../shared/objects';
import { natsFailure } from '../../shared/natsconn';
import { loadSpecFile } from '../../scheduler/cli/client';
import { processAlive, stopProcess } from '../../infra/services';
import { temporalCliTls } from '../../infra/ha';

interface Row {
  scenario: string;
  outcome: string;
  stepsLost: number | string;
  recoverS: string;
}

/** `temporal <args>` (the temporal CLI) -> its exit status and output. */
function temporalCli(home: string, args: string[]): Promise<{ status: number; out: string }> {
  return new Promise((res) =>
    execFile(join(home, 'bin', 'temporal'), args, { timeout: 60_000 }, (err, stdout, stderr) =>
      res({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
    ),
  );
}

/** Every process of a PostgreSQL cluster: the postmaster and its children (backends, WAL writer, ...). */
function postgresProcesses(postmaster: number): number[] {
  const children = readFileSync(`/proc/${postmaster}/task/${postmaster}/children`, 'utf8')
    .trim()
    .split(/\s+/)
    .filter((p) => p !== '')
    .map(Number);
  return [postmaster, ...children];
}

describe('chaos - the production engines: a NATS cluster, the Temporal server and PostgreSQL failing', function () {
  this.timeout(600_000);
  const fleet = useRunningFleet({
    agents: ['agent-a', 'agent-b'],
    agentArgs: ['--heartbeat', '500'],
    natsNodes: 3,
    temporalServer: true,
    controlWorkers: 2,
    client: { heartbeatTimeoutS: 20, scheduleToStartS: 20 },
  });
  const rows: Row[] = [];
  const stepsOf = (events: Record<string, unknown>[], attempt: number): number[] =>
    events.filter((e) => e.type === 'step' && Number(e.attempt) === attempt).map((e) => Number(e.step));

  after(() => {
    if (rows.length)
      console.log(
        '\n' + rows.map((r) => `${r.scenario} | ${r.outcome} | steps lost ${r.stepsLost} | ${r.recoverS}`).join('\n'),
      );
  });

  it('production engines - every stream and bucket has 3 replicas, current on all three nodes', async () => {
    const jsm = await (await fleet.client.nats()).nc.jetstreamManager();
    const names: string[] = [];
    for await (const s of jsm.streams.list()) {
      names.push(s.config.name);
      expect(s.config.num_replicas, s.config.name).to.equal(3);
    }
    expect(names).to.include.members([EVENTS_STREAM, `OBJ_${CHECKPOINTS_BUCKET}`, `KV_${ADVERTS_BUCKET}`]);
    const info = await jsm.streams.info(EVENTS_STREAM);
    expect(info.cluster?.replicas?.length).to.equal(2);
    expect((await jsm.streams.info(`KV_${ADVERTS_BUCKET}`)).config.max_bytes).to.equal(KV_MAX_BYTES);
  });

  it('chaos 15 - kill -9 of the NATS node leading the events stream mid-job: the job finishes on its first attempt, every step event stored once, every acknowledged commit kept, adverts go on', async () => {
    const steps = 1500;
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('nats-node-kill', steps, 100)), 'chaos-node-kill');
    await until('a commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= 100, 180_000);
    const n = await fleet.client.nats();
    const jsm = await n.nc.jetstreamManager();
    const leader = (await jsm.streams.info(EVENTS_STREAM)).cluster?.leader as string;
    const cluster = fleet.stack.cluster;
    if (!cluster) throw new Error('the fleet runs on one nats-server, not a cluster');
    const victim = cluster.nodes.findIndex((s) => s.name === `nats-${leader}`);
    expect(victim, `leader ${leader} among ${cluster.nodes.map((s) => s.name).join(', ')}`).to.be.at.least(0);
    const acked = (await commitOf(fleet.client, id)) as CommitRecord;
    const manifest = await (await n.objects(CHECKPOINTS_BUCKET)).getBlob(`${acked.prefix as string}manifest.json`);
    expect(manifest).to.not.equal(null);
    const t0 = Date.now();
    process.kill((cluster.nodes[victim] as { pid: number }).pid, 'SIGKILL');
    // the two nodes left elect a new leader and take writes again
    const newLeader = await until(
      'a new events leader',
      async () =>
        jsm.streams.info(EVENTS_STREAM).then(
          (i) => (i.cluster?.leader ?? leader) !== leader,
          () => false,
        ),
      60_000,
    );
    const recover = (Date.now() - t0) / 1000;
    // adverts go on: both agents are seen as ready through the two nodes left
    await until('both agents advertise', async () => (await readyAgents(fleet.client)).length === 2, 30_000);
    const events: Record<string, unknown>[] = [];
    const result = await fleet.client.events.follow(id, (e) => events.push(e));
    expect(result.state).to.equal('succeeded');
    expect(result.training.attempt, 'no attempt was lost to the node').to.equal(1);
    expect(stepsOf(events, 1)).to.deep.equal(Array.from({ length: steps }, (_, i) => i + 1));
    // the commit acknowledged before the kill is still there, byte for byte, and the record only moved on
    const after = await (await n.objects(CHECKPOINTS_BUCKET)).getBlob(`${acked.prefix as string}manifest.json`);
    expect(Buffer.from(after as Uint8Array).equals(Buffer.from(manifest as Uint8Array))).to.equal(true);
    expect(((await commitOf(fleet.client, id)) as CommitRecord).step).to.be.at.least(acked.step);
    rows.push({
      scenario: '15 kill -9 of the events leader node',
      outcome: `finished on attempt 1, ${steps} step events once each; commit at ${acked.step} kept`,
      stepsLost: 0,
      recoverS: `new leader in ${recover.toFixed(1)} s (waited ${(newLeader / 1000).toFixed(1)} s)`,
    });
    await cluster.restart(victim);
  });

  it('chaos 16 - two of three NATS nodes down: a write is refused with a clear error, not lost; with quorum back the job goes on and finishes', async () => {
    const cluster = fleet.stack.cluster;
    if (!cluster) throw new Error('the fleet runs on one nats-server, not a cluster');
    await until('both agents advertise', async () => (await readyAgents(fleet.client)).length === 2, 30_000);
    const steps = 1200;
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('nats-quorum', steps, 100)), 'chaos-quorum');
    await until('a commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= 100, 180_000);
    const n = await fleet.client.nats();
    // the client stays on the node left up: stop the two others
    const kept = cluster.nodes.findIndex((s) => s.address === n.nc.getServer().replace(/^(?!tls:)/, 'tls://'));
    const keep = kept >= 0 ? kept : 0;
    const down = [0, 1, 2].filter((i) => i !== keep);
    for (const i of down) await stopProcess((cluster.nodes[i] as { pid: number }).pid, 10_000);
    const t0 = Date.now();
    // an event for no job: the stream cannot store it without a majority of its replicas, and says so
    const refused = await n.js.publish(jobEventSubject('chaos-quorum-probe', 'log'), '{}', { timeout: 5000 }).then(
      () => null,
      (e: unknown) => natsFailure(e),
    );
    expect(refused, 'a write without quorum').to.not.equal(null);
    expect(refused).to.match(/no quorum/);
    for (const i of down) await cluster.restart(i);
    const events: Record<string, unknown>[] = [];
    const result = await fleet.client.events.follow(id, (e) => events.push(e));
    expect(result.state).to.equal('succeeded');
    const last = stepsOf(events, result.training.attempt);
    expect(last[last.length - 1]).to.equal(steps);
    rows.push({
      scenario: '16 two of three nodes down',
      outcome: `write refused (${(refused as string).slice(0, 90)}…); finished on attempt ${result.training.attempt}`,
      stepsLost: result.training.attempt > 1 ? 'from the last commit' : 0,
      recoverS: `${((Date.now() - t0) / 1000).toFixed(1)} s to the job's end`,
    });
  });

  it('production engines - `temporal workflow list` over mutual TLS shows a job; a client without a certificate is refused', async () => {
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('mtls-list', 20, 10)), 'chaos-mtls-list');
    const { home, cfg } = fleet.stack;
    const base = ['workflow', 'list', '--address', cfg.temporalAddress, '--tls-server-name', 'localhost'];
    const listed = await temporalCli(home, [...base, ...temporalCliTls(home, 'cli')]);
    expect(listed.status, listed.out).to.equal(0);
    expect(listed.out).to.include(id);
    const ca = ['--tls-ca-path', join(home, 'secrets', 'ca.pem')];
    const noCert = await temporalCli(home, [...base, ...ca]);
    expect(noCert.status).to.not.equal(0);
    expect(noCert.out).to.match(/certificate|mTLS|handshake/i);
    const plain = await temporalCli(home, ['workflow', 'list', '--address', cfg.temporalAddress]);
    expect(plain.status).to.not.equal(0);
    expect((await fleet.client.events.follow(id, () => undefined)).state).to.equal('succeeded');
  });

  /** kill -9 a server mid-job, start it again, and follow the job to its end: the chaos row. */
  async function killMidJob(
    name: string,
    kill: () => Promise<void> | void,
    restart: () => Promise<void>,
  ): Promise<{ id: string; attempts: number; events: Record<string, unknown>[]; downS: number; lost: number }> {
    await until('both agents advertise', async () => (await readyAgents(fleet.client)).length === 2, 60_000);
    const steps = 1200;
    const id = await fleet.client.submit(await loadSpecFile(tinyJob(name, steps, 100)), `chaos-${name}`);
    await until('a commit', async () => ((await commitOf(fleet.client, id))?.step ?? 0) >= 100, 180_000);
    const acked = (await commitOf(fleet.client, id)) as CommitRecord;
    const t0 = Date.now();
    await kill();
    await restart();
    const downS = (Date.now() - t0) / 1000;
    const events: Record<string, unknown>[] = [];
    const result = await fleet.client.events.follow(id, (e) => events.push(e));
    expect(result.state).to.equal('succeeded');
    // every attempt's step events are stored once each and in order (a re-delivered one would repeat)
    for (let a = 1; a <= result.training.attempt; a++) {
      const s = stepsOf(events, a);
      expect(new Set(s).size, `attempt ${a}: each step once`).to.equal(s.length);
      expect(
        [...s].sort((x, y) => x - y),
        `attempt ${a}: in order`,
      ).to.deep.equal(s);
    }
    const last = stepsOf(events, result.training.attempt);
    expect(last[last.length - 1]).to.equal(steps);
    // the commit acknowledged before the kill survives: the final one is at or past it
    expect(((await commitOf(fleet.client, id)) as CommitRecord).step).to.be.at.least(acked.step);
    // steps trained twice: what a later attempt redid below the furthest step an earlier one reached
    let lost = 0;
    for (let a = 2; a <= result.training.attempt; a++) {
      const before = Math.max(0, ...Array.from({ length: a - 1 }, (_, i) => Math.max(0, ...stepsOf(events, i + 1))));
      const first = stepsOf(events, a)[0] ?? before + 1;
      lost += Math.max(0, before - first + 1);
    }
    return { id, attempts: result.training.attempt, events, downS, lost };
  }

  it('chaos 17 - kill -9 of the Temporal server mid-job, restarted: the job finishes, no step stored twice, every acknowledged commit kept', async () => {
    const s = fleet.stack;
    const server = s.temporalServer;
    if (!server) throw new Error('the fleet runs on the dev server, not the Temporal server');
    let recover = 0;
    const r = await killMidJob(
      'temporal-kill',
      () => {
        process.kill(s.temporal.pid, 'SIGKILL');
      },
      async () => {
        while (processAlive(s.temporal.pid)) await new Promise((res) => setTimeout(res, 50));
        const t = Date.now();
        const again = await server.restart();
        s.temporal = again;
        s.temporalServer = again;
        recover = (Date.now() - t) / 1000;
      },
    );
    rows.push({
      scenario: '17 kill -9 of the Temporal server, restarted',
      outcome: `down ${r.downS.toFixed(1)} s; finished on attempt ${r.attempts}, every step event once per attempt`,
      stepsLost: r.lost,
      recoverS: `server serving again ${recover.toFixed(1)} s after its start`,
    });
  });

  it('chaos 18 - kill -9 of PostgreSQL (every process) mid-job, restarted: crash recovery, the job finishes, nothing lost', async () => {
    const s = fleet.stack;
    const pg = s.postgres;
    if (!pg) throw new Error('the fleet runs on the dev server, not on PostgreSQL');
    const server = s.temporalServer;
    if (!server) throw new Error('the fleet runs on the dev server, not the Temporal server');
    let recover = 0;
    let temporalNote = 'the Temporal server stayed up';
    const r = await killMidJob(
      'postgres-kill',
      () => {
        for (const pid of postgresProcesses(pg.pid)) process.kill(pid, 'SIGKILL');
      },
      async () => {
        while (processAlive(pg.pid)) await new Promise((res) => setTimeout(res, 50));
        const t = Date.now();
        s.postgres = await pg.restart();
        recover = (Date.now() - t) / 1000;
        // a Temporal server that gave up on its database is started again, as its systemd unit would
        await new Promise((res) => setTimeout(res, 5000));
        if (!processAlive(s.temporal.pid)) {
          temporalNote = 'the Temporal server exited and was restarted';
          const again = await server.restart();
          s.temporal = again;
          s.temporalServer = again;
        }
      },
    );
    rows.push({
      scenario: '18 kill -9 of PostgreSQL, restarted',
      outcome: `down ${r.downS.toFixed(1)} s; ${temporalNote}; finished on attempt ${r.attempts}, every step event once per attempt`,
      stepsLost: r.lost,
      recoverS: `accepting connections ${recover.toFixed(1)} s after its start (WAL replayed)`,
    });
  });
});
