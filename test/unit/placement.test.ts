import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  parseSpec,
  parseAdvert,
  TunefleetError,
  estimateMemory,
  shapeFromConfig,
  type Advert,
  type JobEvent,
  type ModelShape,
} from '../../shared';
import { place, type Job } from '../../scheduler/placement';
import { FleetView } from '../../scheduler/fleet';
import { ahead, heldOn, leaseLive, queueOrder, type QueueEntry } from '../../scheduler/leases';
import { shrink } from '../../workflows/failures';
import { Progress } from '../../scheduler/progress';
import { FAILURE_POLICY } from '../../workflows/failures';
import { thrown } from '../harness/expect';

const GiB = 2 ** 30;
// SmolLM2-135M's config.json fields
const SMOL = shapeFromConfig({
  hidden_size: 576,
  intermediate_size: 1536,
  num_hidden_layers: 30,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  vocab_size: 49152,
  tie_word_embeddings: true,
}) as ModelShape;
function advert(id: string, over: Partial<Advert> = {}): Advert {
  return {
    v: 1,
    agent_id: id,
    hostname: id,
    os: 'Debian',
    state: 'ready',
    labels: {},
    accelerator: 'cpu',
    gpus: [],
    cpu: { model: 'x', cores: 2 },
    memory: { total: 24 * GiB, available: 20 * GiB },
    sessions: [],
    models: ['SmolLM2-135M-Instruct'],
    model_shapes: { 'SmolLM2-135M-Instruct': SMOL },
    trainer: { methods: ['lora', 'dora', 'ia3', 'full'], bitsandbytes: false, bf16: false },
    time: 1,
    ...over,
  };
}
const spec = parseSpec('name: j\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\n');
const job = (over: Partial<Job> = {}): Job => ({ jobId: 'job-1', spec, exclude: [], ...over });
const fleet = (adverts: Advert[], reserved: Record<string, number> = {}, checkpointAgent: string | null = null) => ({
  adverts,
  checkpointAgent,
  reserved: (id: string) => ({ bytes: reserved[id] ?? 0, sessions: reserved[id] ? 1 : 0 }),
});

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

describe('memory estimate', () => {
  const cal = JSON.parse(
    readFileSync(join(__dirname, '..', '..', '..', 'test', 'bench', 'gpu', 'h200-memory-calibration.json'), 'utf8'),
  ) as {
    rows: {
      model: Record<string, unknown>;
      method: string;
      micro_batch_size: number;
      seq_len: number;
      gradient_checkpointing: boolean;
      optimizer: string;
      trainable_params: number;
      total_params: number;
    }[];
  };

  it('memory - parameter counts from config.json equal what PEFT counted on the GPU', () => {
    for (const r of cal.rows) {
      const shape = shapeFromConfig(r.model) as ModelShape;
      expect(shape.params, `${JSON.stringify(r.model)}`).to.equal(
        r.total_params - (r.method === 'full' ? 0 : r.trainable_params),
      );
    }
  });

  it('memory - the breakdown adds up and follows the method, batch and checkpointing', () => {
    const base = {
      shape: SMOL,
      device: 'cuda' as const,
      precision: 'auto' as const,
      microBatch: 8,
      seqLen: 1024,
      gradientCheckpointing: false,
      optimizer: 'adamw' as const,
      loraRank: 16,
    };
    const lora = estimateMemory({ ...base, method: 'lora' });
    const parts = Object.values(lora.breakdown).reduce((a, b) => a + b, 0);
    expect(Math.abs(parts - lora.total)).to.be.lessThan(16);
    expect(estimateMemory({ ...base, method: 'qlora' }).breakdown.weights).to.be.lessThan(lora.breakdown.weights);
    const gc = estimateMemory({ ...base, method: 'lora', gradientCheckpointing: true });
    expect(gc.breakdown.activations).to.be.lessThan(lora.breakdown.activations / 5);
    expect(gc.breakdown.logits).to.equal(lora.breakdown.logits); // checkpointing does not shrink the loss's logits
    expect(estimateMemory({ ...base, method: 'lora', microBatch: 4 }).breakdown.activations).to.be.closeTo(
      lora.breakdown.activations / 2,
      2,
    );
    expect(estimateMemory({ ...base, method: 'full' }).breakdown.optimizer).to.be.greaterThan(
      10 * lora.breakdown.optimizer,
    );
    expect(estimateMemory({ ...base, method: 'lora', device: 'cpu' }).breakdown.weights).to.equal(
      2 * lora.breakdown.weights,
    );
  });
});

describe('queue and leases', () => {
  const q = (jobId: string, priority: number, submitted: string): QueueEntry => ({
    jobId,
    priority,
    submitted,
    bytes: GiB,
    refreshed: 0,
  });
  it('queue - higher priority first, then earlier submission', () => {
    const list = [
      q('c', 50, '2026-01-01T00:00:03Z'),
      q('a', 50, '2026-01-01T00:00:01Z'),
      q('z', 90, '2026-01-01T00:00:09Z'),
    ].sort(queueOrder);
    expect(list.map((x) => x.jobId)).to.deep.equal(['z', 'a', 'c']);
    expect(
      ahead(list, { jobId: 'c', priority: 50, submitted: '2026-01-01T00:00:03Z' }).map((x) => x.jobId),
    ).to.deep.equal(['z', 'a']);
    expect(ahead(list, { jobId: 'z', priority: 90, submitted: '2026-01-01T00:00:09Z' })).to.deep.equal([]);
  });

  it('leases - a lease counts while young or while the agent reports the session; a leaked one stops counting', () => {
    const l = { jobId: 'j', attempt: 2, bytes: GiB, purpose: 'train' as const, time: 0 };
    expect(leaseLive(l, undefined, 1000)).to.equal(true);
    expect(leaseLive(l, advert('a'), 10 * 60_000)).to.equal(false);
    expect(
      leaseLive(l, advert('a', { sessions: [{ job_id: 'j', attempt: 2, reserved_bytes: GiB }] }), 10 * 60_000),
    ).to.equal(true);
  });

  it('leases - a session the agent still runs after its lease was released holds its memory and slot until the advert drops it', () => {
    const lease = { jobId: 'new', attempt: 1, bytes: GiB, purpose: 'train' as const, time: 0 };
    // the workflow gave attempt 1 of "old" up (heartbeat timeout) and released its lease; the agent has not stopped it yet
    const a = advert('a', {
      sessions: [
        { job_id: 'old', attempt: 1, reserved_bytes: 2 * GiB },
        { job_id: 'new', attempt: 1, reserved_bytes: GiB },
      ],
    });
    expect(heldOn([lease], a, 1000)).to.deep.equal({ bytes: 3 * GiB, sessions: 2 });
    // an earlier try of the placement being made is not a competitor, as a lease or as a session
    expect(heldOn([lease], a, 1000, { jobId: 'new', attempt: 1 })).to.deep.equal({ bytes: 2 * GiB, sessions: 1 });
    expect(heldOn([lease], advert('a'), 1000)).to.deep.equal({ bytes: GiB, sessions: 1 });
  });
});

describe('recovery policy', () => {
  it('recovery - OOM halves the micro-batch with gradient checkpointing, same effective batch; then gives up', () => {
    const s = parseSpec(
      'name: j\nmodel: m\nmethod: lora\ndataset: {path: d.jsonl}\ntraining: {batch_size: 32, micro_batch_size: 8}\n',
    );
    const a = shrink(s, null);
    expect(a?.training).to.include({ micro_batch_size: 4, gradient_checkpointing: true, batch_size: 32 });
    const b = shrink(s, { type: 'oom', step: 3, micro_batch_size: 2, sequence_length: 512 } as never);
    expect(b?.training.micro_batch_size).to.equal(1);
    expect(shrink(b as typeof s, null)).to.equal(null);
  });

  it('recovery - the failure table: lost agents and crashes move the job, OOM shrinks it, bad input fails it', () => {
    expect(FAILURE_POLICY.lost_agent).to.deep.equal({ retry: true, avoidAgent: true, shrink: false });
    expect(FAILURE_POLICY.oom).to.deep.equal({ retry: true, avoidAgent: false, shrink: true });
    expect(FAILURE_POLICY.bad_input.retry).to.equal(false);
  });
});

describe('fleet - adverts in, snapshot out', () => {
  const enc = (x: unknown): Uint8Array => new TextEncoder().encode(typeof x === 'string' ? x : JSON.stringify(x));
  it('fleet - malformed and impossible adverts are skipped and logged', () => {
    const logs: string[] = [];
    const view = new FleetView(
      null as never,
      10_000,
      (m) => logs.push(m),
      () => 1000,
    );
    view.apply('a', 'PUT', enc(advert('a')), 1);
    view.apply('b', 'PUT', enc('{not json'), 2);
    view.apply('c', 'PUT', enc(advert('c', { memory: { total: 10, available: 20 } })), 3);
    view.apply('d', 'PUT', enc({ ...advert('d'), memory: { total: -5, available: 0 } }), 4);
    view.apply('e', 'PUT', enc(advert('someone-else')), 5);
    expect(view.snapshot().map((x) => x.advert.agent_id)).to.deep.equal(['a']);
    expect(logs).to.have.length(4);
    expect(logs.join('\n'))
      .to.match(/advert b/)
      .and.match(/advert c/)
      .and.match(/advert d/)
      .and.match(/someone-else/);
  });

  it('fleet - an agent silent past the TTL leaves the view; a delete removes at once', () => {
    let now = 0;
    const view = new FleetView(
      null as never,
      10_000,
      () => {},
      () => now,
    );
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
    for (const memory of [
      { total: 2 ** 60, available: 1 },
      { total: 100, available: -1 },
    ]) {
      const e = thrown(() => parseAdvert('a', JSON.stringify(advert('a', { memory }))), 'an impossible advert');
      expect(e).to.be.instanceOf(TunefleetError);
      expect((e as TunefleetError).describe()).to.match(/^advert a: memory\.(total|available): /);
    }
  });
});

describe('progress bar', () => {
  it('progress - step/total, loss, tokens/s, ETA from the step times, agent and attempt; resumed attempts count from their start', () => {
    const from = { v: 1 as const, job_id: 'j', agent_id: 'agent-a', attempt: 2 };
    const step = (n: number, loss: number, tokensPerS: number, time: number): JobEvent => ({
      ...from,
      type: 'step',
      time,
      step: n,
      steps_total: 100,
      epoch: 0,
      loss,
      lr: 0.001,
      grad_norm: null,
      tokens_per_s: tokensPerS,
    });
    const p = new Progress();
    p.update({
      ...from,
      type: 'started',
      time: 990,
      method: 'lora',
      device: 'cpu',
      dtype: 'fp32',
      trainable_params: 10,
      total_params: 100,
      train_records: 40,
      eval_records: 4,
      steps_total: 100,
      micro_batch_size: 4,
      grad_accum: 1,
      truncated_records: 0,
      resumed_from_step: 40,
    });
    p.update(step(41, 2.5, 1234.4, 1000));
    p.update(step(51, 2.25, 1500, 1010));
    // 10 steps in 10 s, 49 to go
    expect(p.line(10)).to.equal('[#####-----] step 51/100  loss 2.2500  1,500 tok/s  ETA 49s  agent-a  attempt 2');
    expect(p.update({ ...from, type: 'log', time: 1011, level: 'info', message: 'x' })).to.equal(false);
  });
});
