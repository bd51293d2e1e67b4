import { expect } from 'chai';
import { parseSpec, parseAdvert, TunefleetError, type Advert } from '../../shared';
import type { PlaceRequest } from '../../shared/activities';
import { place } from '../../scheduler/placement';
import { FleetView } from '../../scheduler/fleet';

const GiB = 2 ** 30;
function advert(id: string, over: Partial<Advert> = {}): Advert {
  return {
    v: 1, agent_id: id, hostname: id, os: 'Debian', state: 'ready', labels: {}, accelerator: 'cpu', gpus: [],
    cpu: { model: 'x', cores: 2 }, memory: { total: 24 * GiB, available: 20 * GiB }, sessions: [],
    models: ['SmolLM2-135M-Instruct'], trainer: { methods: ['lora', 'dora', 'ia3', 'full'], bitsandbytes: false, bf16: false },
    time: 1, ...over,
  };
}
const spec = parseSpec('name: j\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\n');
const req = (over: Partial<PlaceRequest> = {}): PlaceRequest => ({ jobId: 'job-1', spec, attempt: 1, exclude: [], purpose: 'train', ...over });

describe('placement - filters and scores', () => {
  it('placement - a ready agent with the model is chosen', () => {
    const d = place([advert('a')], req(), () => 0);
    expect(d.chosen).to.equal('a');
  });

  it('placement - cordoned, excluded and model-less agents are not chosen, each with its reason', () => {
    const d = place([advert('a', { state: 'cordoned' }), advert('b', { models: [] }), advert('c', { models: [] })], req({ exclude: ['b'] }), () => 0);
    expect(d.chosen).to.equal(null);
    const by = Object.fromEntries(d.agents.map((x) => [x.agentId, x]));
    expect(by.a?.code).to.equal('not_now');
    expect(by.a?.reasons.join()).to.match(/cordoned/);
    expect(by.b?.code).to.equal('never');
    expect(by.b?.reasons).to.deep.equal(['agent failed this job before', 'base model SmolLM2-135M-Instruct is not on this agent']);
    expect(by.c?.reasons.join()).to.match(/SmolLM2/);
    expect(d.summary).to.match(/no agent fits/);
  });

  it('placement - an agent that failed the job is avoided, but tried again when no other fits', () => {
    expect(place([advert('a'), advert('b')], req({ exclude: ['a'] }), () => 0).chosen).to.equal('b');
    const d = place([advert('a'), advert('b', { state: 'cordoned' })], req({ exclude: ['a'] }), () => 0);
    expect(d.chosen).to.equal('a');
    expect(d.summary).to.match(/tried again/);
  });

  it('placement - qlora needs a CUDA agent with bitsandbytes', () => {
    const q = parseSpec('name: j\nmodel: SmolLM2-135M-Instruct\nmethod: qlora\ndataset: {path: d.jsonl}\n');
    const d = place([advert('a', { trainer: { methods: ['lora', 'qlora'], bitsandbytes: false, bf16: false } })], req({ spec: q }), () => 0);
    expect(d.chosen).to.equal(null);
    expect(d.agents[0]?.reasons.join()).to.match(/qlora needs a CUDA GPU/);
  });

  it('placement - the less busy agent wins; ties break the same way every time', () => {
    expect(place([advert('a'), advert('b')], req(), (id) => (id === 'a' ? 2 : 0)).chosen).to.equal('b');
    const first = place([advert('a'), advert('b')], req(), () => 0).chosen;
    for (let i = 0; i < 5; i++) expect(place([advert('b'), advert('a')], req(), () => 0).chosen).to.equal(first);
  });

  it('placement - no adverts at all says so', () => {
    expect(place([], req(), () => 0).summary).to.equal('no agent is advertising');
  });
});

describe('fleet - adverts in, snapshot out', () => {
  const enc = (x: unknown): Uint8Array => new TextEncoder().encode(typeof x === 'string' ? x : JSON.stringify(x));
  it('fleet - malformed and impossible adverts are skipped and logged', () => {
    const logs: string[] = [];
    const view = new FleetView(null as never, 10_000, (m) => logs.push(m), () => 1000);
    view.apply('a', 'PUT', enc(advert('a')), 1);
    view.apply('b', 'PUT', enc('{not json'), 2);
    view.apply('c', 'PUT', enc(advert('c', { memory: { total: 10, available: 20 } })), 3);
    view.apply('d', 'PUT', enc({ ...advert('d'), memory: { total: -5, available: 0 } }), 4);
    view.apply('e', 'PUT', enc(advert('someone-else')), 5);
    expect(view.snapshot().map((x) => x.advert.agent_id)).to.deep.equal(['a']);
    expect(logs).to.have.length(4);
    expect(logs.join('\n')).to.match(/advert b/).and.match(/advert c/).and.match(/advert d/).and.match(/someone-else/);
  });

  it('fleet - an agent silent past the TTL leaves the view; a delete removes at once', () => {
    let now = 0;
    const view = new FleetView(null as never, 10_000, () => {}, () => now);
    view.apply('a', 'PUT', enc(advert('a')), 1);
    view.apply('b', 'PUT', enc(advert('b')), 2);
    now = 5_000;
    view.apply('b', 'PUT', enc(advert('b')), 3);
    view.apply('x', 'PUT', enc(advert('x')), 4);
    view.apply('x', 'DEL', new Uint8Array(), 5);
    now = 11_000;
    expect(view.snapshot().map((x) => x.advert.agent_id)).to.deep.equal(['b']);
  });

  it('fleet - parseAdvert refuses absurd memory', () => {
    for (const memory of [{ total: 2 ** 60, available: 1 }, { total: 100, available: -1 }]) {
      try {
        parseAdvert('a', JSON.stringify(advert('a', { memory })));
        expect.fail('accepted an impossible advert');
      } catch (e) {
        expect((e as TunefleetError).describe()).to.match(/^advert a: memory\.(total|available): /);
      }
    }
  });
});
