// Placement: the filter and score plugins deciding where a job goes and why.
import { expect } from 'chai';
import { parseSpec, parseAdvert, TunefleetError } from '../../shared';
import { place } from '../../scheduler/placement';

import { GiB, advert, fleet, job } from '../harness/placement-fixtures';

describe('placement - filters and scores', () => {
  it('placement - a ready agent with the model is chosen, with the estimate it reserves', () => {
    const d = place(fleet([advert('a')]), job());
    expect(d.chosen).to.equal('a');
    expect(d.estimate?.total).to.be.greaterThan(0.5 * GiB);
  });

  it('placement - cordoned, excluded and model-less agents are not chosen, each with its reason', () => {
    const d = place(
      fleet([advert('a', { state: 'cordoned' }), advert('b', { models: [] }), advert('c', { models: [] })]),
      job({ exclude: ['b'] }),
    );
    expect(d.chosen).to.equal(null);
    expect(d.impossible).to.equal(false); // a is only cordoned
    const by = Object.fromEntries(d.agents.map((x) => [x.agentId, x]));
    expect(by.a?.code).to.equal('not_now');
    expect(by.a?.reasons.join()).to.match(/cordoned/);
    expect(by.b?.code).to.equal('never');
    expect(by.b?.reasons).to.deep.equal([
      'agent failed this job before',
      'base model SmolLM2-135M-Instruct is not on this agent',
    ]);
    expect(d.summary).to.match(/no agent fits now/);
  });

  it('placement - an agent that failed the job is avoided, but tried again when no other fits', () => {
    expect(place(fleet([advert('a'), advert('b')]), job({ exclude: ['a'] })).chosen).to.equal('b');
    const d = place(fleet([advert('a'), advert('b', { state: 'cordoned' })]), job({ exclude: ['a'] }));
    expect(d.chosen).to.equal('a');
    expect(d.summary).to.match(/tried again/);
  });

  it('placement - a job every agent failed once, while all are full, waits: it is not impossible', () => {
    const need = place(fleet([advert('a')]), job()).estimate?.total ?? 0;
    const busy = place(
      fleet([advert('a', { capacity: need * 2 }), advert('b', { capacity: need * 2 })], {
        a: need * 1.5,
        b: need * 1.5,
      }),
      job({ exclude: ['a', 'b'] }),
    );
    expect(busy.chosen).to.equal(null);
    expect(busy.impossible).to.equal(false);
    // and one that no agent could hold even idle is still impossible
    const never = place(fleet([advert('a', { capacity: need / 2 })]), job({ exclude: ['a'] }));
    expect(never.impossible).to.equal(true);
  });

  it('placement - an agent at its session limit is full for now, whatever memory it has free; an old advert without the limit is placed by memory', () => {
    const full = place(fleet([advert('a', { max_sessions: 1 })], { a: 1 }), job());
    expect(full.chosen).to.equal(null);
    expect(full.impossible).to.equal(false);
    expect(full.agents[0]?.code).to.equal('not_now');
    expect(full.agents[0]?.reasons).to.deep.equal(['runs 1 of 1 sessions']);
    expect(place(fleet([advert('a', { max_sessions: 2 })], { a: 1 }), job()).chosen).to.equal('a');
    expect(
      place(fleet([advert('a', { max_sessions: 1 }), advert('b', { max_sessions: 1 })], { a: 1 }), job()).chosen,
    ).to.equal('b');
    expect(place(fleet([advert('a')], { a: 1 }), job()).chosen).to.equal('a');
    // the advert says so, and a nonsense limit is refused like any bad advert
    expect(parseAdvert('a', JSON.stringify(advert('a', { max_sessions: 3 }))).max_sessions).to.equal(3);
    const bad = (() => {
      try {
        parseAdvert('a', JSON.stringify(advert('a', { max_sessions: 0 })));
        return null;
      } catch (e) {
        return e;
      }
    })();
    expect(bad).to.be.instanceOf(TunefleetError);
    expect((bad as TunefleetError).describe())
      .to.match(/advert a/)
      .and.match(/max_sessions/);
  });

  it('placement - qlora needs a CUDA agent with bitsandbytes; a job no agent can ever run is impossible, with the numbers', () => {
    const q = parseSpec('name: j\nmodel: SmolLM2-135M-Instruct\nmethod: qlora\ndataset: {path: d.jsonl}\n');
    const d = place(
      fleet([advert('a', { trainer: { methods: ['lora', 'qlora'], bitsandbytes: false, bf16: false } })]),
      job({ spec: q }),
    );
    expect(d.chosen).to.equal(null);
    expect(d.impossible).to.equal(true);
    expect(d.agents[0]?.reasons.join()).to.match(/qlora needs a CUDA GPU/);
    const big = place(
      fleet([advert('a', { capacity: 1 * GiB }), advert('b', { capacity: 2 * GiB })]),
      job({
        spec: parseSpec(
          'name: j\nmodel: SmolLM2-135M-Instruct\nmethod: full\ndataset: {path: d.jsonl}\ntraining: {max_seq_len: 2048, micro_batch_size: 8}\n',
        ),
      }),
    );
    expect(big.impossible).to.equal(true);
    expect(big.summary).to.match(/needs [\d.]+ GiB, the largest agent \(b\) offers 2\.0 GiB/);
  });

  it('placement - agents with the same reasons are named together: 100 hosts without the model make one short line', () => {
    const d = place(fleet(Array.from({ length: 100 }, (_, i) => advert(`h${i}`, { models: [] }))), job());
    expect(d.impossible).to.equal(true);
    expect(d.summary).to.match(/^no agent can ever run this job.* — h0, h1, h2 and 97 more: base model \S+ is not on/);
    expect(d.summary.length).to.be.lessThan(200);
    expect(d.agents).to.have.length(100); // explain still has every agent's own reasons
    const two = place(fleet([advert('a', { state: 'cordoned' }), advert('b', { models: [] })]), job());
    expect(two.summary).to.match(/a: .*cordoned.* \| b: base model/);
  });

  it('placement - memory: reserved bytes make an agent wait (not_now), and the best fit wins', () => {
    const need = place(fleet([advert('a')]), job()).estimate?.total ?? 0;
    const d = place(
      fleet([advert('a', { capacity: need * 3 }), advert('b', { capacity: need * 3 })], { a: need * 2.5 }),
      job(),
    );
    expect(d.chosen).to.equal('b');
    expect(d.agents.find((x) => x.agentId === 'a')?.code).to.equal('not_now');
    expect(d.agents.find((x) => x.agentId === 'a')?.reasons.join()).to.match(/free/);
    // both fit: the tighter one (less left over) scores higher
    const fit = place(fleet([advert('a', { capacity: need * 10 }), advert('b', { capacity: need * 1.2 })]), job());
    expect(fit.chosen).to.equal('b');
  });

  it('placement - label selectors', () => {
    const sel = parseSpec(
      'name: j\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\nselector: {zone: eu}\n',
    );
    const d = place(
      fleet([advert('a', { labels: { zone: 'us' } }), advert('b', { labels: { zone: 'eu' } })]),
      job({ spec: sel }),
    );
    expect(d.chosen).to.equal('b');
    expect(d.agents.find((x) => x.agentId === 'a')?.reasons.join()).to.match(
      /labels do not match zone=eu \(agent has zone=us\)/,
    );
  });

  it('placement - the agent holding the newest checkpoint is preferred; ties break the same way every time', () => {
    expect(place(fleet([advert('a'), advert('b')], {}, 'a'), job()).chosen).to.equal('a');
    expect(place(fleet([advert('a'), advert('b')], {}, 'b'), job()).chosen).to.equal('b');
    const first = place(fleet([advert('a'), advert('b')]), job()).chosen;
    for (let i = 0; i < 5; i++) expect(place(fleet([advert('b'), advert('a')]), job()).chosen).to.equal(first);
  });

  it('placement - no adverts at all says so', () => {
    expect(place(fleet([]), job()).summary).to.equal('no agent is advertising');
  });
});
