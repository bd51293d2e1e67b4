// Gangs: the spec's resources.nodes, the placement of M agents as one decision (pure), the
// agent's rendezvous flags and the check of a gang request an agent receives.
import { expect } from 'chai';
import { parseSpec, type Advert, type TrainRequest } from '../../shared';
import { place } from '../../scheduler/placement';
import { NO_RENDEZVOUS, SEGMENT_LABEL } from '../../scheduler/placement/gang';
import { rendezvousFor } from '../../scheduler/activities';
import { parseRendezvousPorts } from '../../agent/cli';
import { checkGang } from '../../agent/session/inputs';
import { classify, gangCause } from '../../workflows/failures';
import {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  RetryState,
  TimeoutFailure,
  TimeoutType,
} from '@temporalio/common';
import { advert, fleet } from '../harness/placement-fixtures';

const gangSpec = (extra = ''): ReturnType<typeof parseSpec> =>
  parseSpec(
    'name: g\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\n' +
      `training: {batch_size: 4}\nresources: {nodes: 2}\n${extra}`,
  );
const rv = { address: '127.0.0.1', ports: [29500, 29509] as [number, number] };
const member = (id: string, over: Partial<Advert> = {}): Advert =>
  advert(id, { rendezvous: rv, max_sessions: 1, labels: { host: id }, ...over });
const gangJob = (spec = gangSpec()) => ({ jobId: 'gang-1', spec, exclude: [] as string[] });

describe('gangs', () => {
  it('spec - nodes defaults to 1; a batch that does not divide over nodes x gpus is refused with the numbers', () => {
    expect(parseSpec('name: j\nmodel: m\nmethod: lora\ndataset: {path: d.jsonl}\n').resources.nodes).to.equal(1);
    expect(gangSpec().resources).to.include({ nodes: 2, gpus: 1 });
    expect(() =>
      parseSpec(
        'name: g\nmodel: m\nmethod: lora\ndataset: {path: d.jsonl}\ntraining: {batch_size: 6}\n' +
          'resources: {nodes: 2, gpus: 2}\n',
      ),
    ).to.throw(/training\.batch_size.*batch_size 6 does not divide over 2 nodes x 2 gpus/);
    expect(() =>
      parseSpec(
        'name: g\nmodel: m\nmethod: lora\ndataset: {path: d.jsonl}\ntraining: {batch_size: 8}\n' +
          'resources: {nodes: 2, gpus: 2, min_gpus: 1}\n',
      ),
    ).to.throw(/resources\.min_gpus.*elastic.*for one host/);
    expect(() =>
      parseSpec('name: g\nmodel: m\nmethod: lora\ndataset: {path: d.jsonl}\nresources: {nodes: 65}\n'),
    ).to.throw(/resources\.nodes/);
  });

  it('placement - two of three agents are chosen at once, ranked best first, with their devices and bytes', () => {
    const adverts = [member('a'), member('b'), member('c')];
    // b holds the job's checkpoint: it scores higher and becomes rank 0
    const d = place(fleet(adverts, {}, 'b'), gangJob());
    expect(d.impossible).to.equal(false);
    expect(d.members?.map((m) => [m.rank, m.agentId])).to.deep.equal([
      [0, 'b'],
      [1, d.members?.[1]?.agentId],
    ]);
    expect(d.members?.[1]?.agentId).to.be.oneOf(['a', 'c']);
    expect(d.chosen).to.equal('b');
    for (const m of d.members ?? []) {
      expect(m.devices).to.deep.equal(['cpu']);
      expect(m.bytes).to.be.greaterThan(0);
    }
    expect(d.summary).to.match(/^gang of 2 placed: rank 0 b, rank 1 [ac] \(3 of 3 agents fit; reserves /);
  });

  it('placement - a gang that does not fit in full now holds nothing and says what is missing', () => {
    // a and b are busy (their one session slot is taken): only c fits now
    const d = place(fleet([member('a'), member('b'), member('c')], { a: 1, b: 1 }), gangJob());
    expect(d.chosen).to.equal(null);
    expect(d.members).to.equal(undefined);
    expect(d.impossible).to.equal(false);
    expect(d.summary).to.match(/^needs 2 agents with 1 free device each \([\d.]+ [GM]iB\); 1 fits now \(c\) — a: /);
  });

  it('placement - a gang no two agents could ever hold is impossible, with the numbers', () => {
    const spec = gangSpec('selector: {zone: eu}\n');
    const adverts = [member('a', { labels: { zone: 'eu' } }), member('b'), member('c')];
    const d = place(fleet(adverts), gangJob(spec));
    expect(d.impossible).to.equal(true);
    expect(d.summary).to.match(
      /^no 2 agents can ever run this gang: needs 2 agents with 1 free device each .*; 1 of 3 could \(a\) — b: labels do not match zone=eu/,
    );
  });

  it('placement - an agent that advertises no rendezvous address takes no part in a gang', () => {
    const d = place(fleet([member('a'), advert('old'), member('c')]), gangJob());
    expect(d.members?.map((m) => m.agentId).sort()).to.deep.equal(['a', 'c']);
    const alone = place(fleet([member('a'), advert('old')]), gangJob());
    expect(alone.impossible).to.equal(true);
    expect(alone.agents.find((a) => a.agentId === 'old')?.reasons).to.include(NO_RENDEZVOUS);
  });

  it('placement - a gang stays on one network segment when a segment has enough agents that fit', () => {
    const seg = (id: string, s: string): Advert => member(id, { labels: { host: id, [SEGMENT_LABEL]: s } });
    // x has one agent, y two: the gang takes y's two whatever the tie-breaks say
    const adverts = [seg('a', 'x'), seg('b', 'y'), seg('c', 'y')];
    for (const jobId of ['g-1', 'g-2', 'g-3', 'g-4']) {
      const d = place(fleet(adverts), { ...gangJob(), jobId });
      expect(d.members?.map((m) => m.agentId).sort(), jobId).to.deep.equal(['b', 'c']);
      expect(d.summary).to.include('all on segment y');
    }
  });

  it('placement - an agent that failed the gang before is avoided while others fit', () => {
    const d = place(fleet([member('a'), member('b'), member('c')]), { ...gangJob(), exclude: ['b'] });
    expect(d.members?.map((m) => m.agentId).sort()).to.deep.equal(['a', 'c']);
  });

  it('placement - a gang waits for agents that did not fail it rather than take the one that did, while they could fit', () => {
    // right after attempt 1 (rank 0 on a) failed, b still shows its ending session; c is free
    const d = place(fleet([member('a'), member('b'), member('c')], { b: 1 }), { ...gangJob(), exclude: ['a'] });
    expect(d.chosen).to.equal(null);
    expect(d.impossible).to.equal(false);
    expect(d.summary).to.match(/^needs 2 agents .*; 1 fits now \(c\)/);
    // when only the failed agent could ever complete the gang, it is tried again
    const small = place(fleet([member('a'), member('c')]), { ...gangJob(), exclude: ['a'] });
    expect(small.members?.map((m) => m.agentId).sort()).to.deep.equal(['a', 'c']);
  });

  it('rendezvous - the port comes from rank 0 range, fixed by job and attempt, the next attempt the next port', () => {
    const a = member('a');
    const p1 = rendezvousFor(a, 'job-x', 1);
    const p2 = rendezvousFor(a, 'job-x', 2);
    expect(p1.address).to.equal('127.0.0.1');
    expect(p1.port).to.be.within(29500, 29509);
    expect(rendezvousFor(a, 'job-x', 1)).to.deep.equal(p1);
    expect(p2.port).to.equal(p1.port === 29509 ? 29500 : p1.port + 1);
  });

  it('agent flags - --rendezvous-ports takes FIRST-LAST or one port and names what is wrong', () => {
    expect(parseRendezvousPorts('29500-29599')).to.deep.equal([29500, 29599]);
    expect(parseRendezvousPorts('30000')).to.deep.equal([30000, 30000]);
    for (const bad of ['29599-29500', '80-90', 'x', '29500-70000', '29500-'])
      expect(() => parseRendezvousPorts(bad), bad).to.throw(/must be a port range FIRST-LAST/);
  });

  it('agent - a gang request with a rank outside the gang or ranks missing is refused, naming what', () => {
    const req = (gang: TrainRequest['gang']): TrainRequest =>
      ({ jobId: 'j', spec: gangSpec(), attempt: 1, reservedBytes: 1, data: {}, resumeFrom: null, gang }) as never;
    const members = [
      { agentId: 'a', rank: 0 },
      { agentId: 'b', rank: 1 },
    ];
    const rendezvous = { address: '127.0.0.1', port: 29500 };
    expect(checkGang(req({ nodes: 2, rank: 1, members, rendezvous })).gang?.rank).to.equal(1);
    expect(() => checkGang(req({ nodes: 2, rank: 2, members, rendezvous }))).to.throw(/rank 2 outside the gang of 2/);
    expect(() => checkGang(req({ nodes: 2, rank: 0, members: members.slice(0, 1), rendezvous }))).to.throw(
      /members with ranks 0 for a gang of 2/,
    );
    expect(() => checkGang(req({ nodes: 2, rank: 0, members, rendezvous: { address: 'a b', port: 29500 } }))).to.throw(
      /rendezvous address/,
    );
  });
});

describe('gangs - why a gang attempt ended (workflows/failures.ts gangCause)', () => {
  const failed = (cause: Error): ActivityFailure =>
    new ActivityFailure('activity failed', 'train', '1', RetryState.MAXIMUM_ATTEMPTS_REACHED, 'agent', cause);
  const lost = (step: number): ActivityFailure =>
    failed(
      new TimeoutFailure(
        'heartbeat',
        { step, stepsTotal: 10, loss: 1, checkpoint: { prefix: `p${step}/`, step } },
        TimeoutType.HEARTBEAT,
      ),
    );
  const stopped = (): ActivityFailure => failed(new CancelledFailure('gang member stopped'));
  const crashed = (type = 'TRAINER_FAILED'): ActivityFailure =>
    failed(ApplicationFailure.retryable('gloo: connection closed by peer', type, { checkpoint: null }));

  it('a lost member is the cause and the only agent avoided, even when a peer failed first for it', () => {
    const why = gangCause([
      { agentId: 'rank0', error: crashed() },
      { agentId: 'rank1', error: lost(30) },
    ]);
    expect(why.avoid).to.deep.equal(['rank1']);
    expect(classify(why.failure).cls).to.equal('lost_agent');
    expect(why.checkpoint?.step).to.equal(30);
  });

  it('with none lost, the first own failure is the cause; members the workflow stopped are not blamed', () => {
    const why = gangCause([
      { agentId: 'rank1', error: crashed('RENDEZVOUS_PORT_TAKEN') },
      { agentId: 'rank0', error: stopped() },
    ]);
    expect(why.avoid).to.deep.equal(['rank1']);
    expect(classify(why.failure).why).to.match(/^RENDEZVOUS_PORT_TAKEN/);
  });

  it('a drained member is the cause over the ranks it stopped', () => {
    const why = gangCause([
      { agentId: 'rank0', error: crashed() },
      { agentId: 'rank1', error: crashed('AGENT_DRAINING') },
    ]);
    expect(classify(why.failure).cls).to.equal('agent_draining');
    expect(why.avoid).to.deep.equal(['rank1']);
  });
});
