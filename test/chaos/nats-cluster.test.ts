// Chaos on a NATS JetStream cluster: the whole fleet (control worker, two agent processes, the client) on three
// nats-server nodes of one cluster (TLS on client and route connections, every stream and bucket with 3 replicas),
// and nodes killed with SIGKILL while a job trains. Rows of the chaos table (README "Guarantees").
import { expect } from 'chai';
import { ADVERTS_BUCKET, CHECKPOINTS_BUCKET, EVENTS_STREAM, jobEventSubject, type CommitRecord } from '../../shared';
import { commitOf, readyAgents, tinyJob, until } from '../harness/fleet';
import { useRunningFleet } from '../harness/running-fleet';
import { KV_MAX_BYTES } from '../../shared/objects';
import { loadSpecFile } from '../../scheduler/cli/client';
import { stopProcess } from '../../infra/services';

interface Row {
  scenario: string;
  outcome: string;
  stepsLost: number | string;
  recoverS: string;
}

describe('chaos - a NATS cluster losing nodes', function () {
  this.timeout(600_000);
  const fleet = useRunningFleet({
    agents: ['agent-a', 'agent-b'],
    agentArgs: ['--heartbeat', '500'],
    natsNodes: 3,
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

  it('chaos 15 - every stream and bucket has 3 replicas, current on all three nodes', async () => {
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
      (e: unknown) => String((e as Error).message ?? e),
    );
    expect(refused, 'a write without quorum').to.not.equal(null);
    for (const i of down) await cluster.restart(i);
    const events: Record<string, unknown>[] = [];
    const result = await fleet.client.events.follow(id, (e) => events.push(e));
    expect(result.state).to.equal('succeeded');
    const last = stepsOf(events, result.training.attempt);
    expect(last[last.length - 1]).to.equal(steps);
    rows.push({
      scenario: '16 two of three nodes down',
      outcome: `write refused (${(refused as string).slice(0, 60)}); finished on attempt ${result.training.attempt}`,
      stepsLost: result.training.attempt > 1 ? 'from the last commit' : 0,
      recoverS: `${((Date.now() - t0) / 1000).toFixed(1)} s to the job's end`,
    });
  });
});
