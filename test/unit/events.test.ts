import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseTrainerLine, trainerEventsJsonSchema } from '../../shared';

const ROOT = join(__dirname, '..', '..', '..');

describe('events - trainer protocol', () => {
  const step = {
    v: 1,
    type: 'step',
    time: 1,
    step: 3,
    steps_total: 10,
    epoch: 0.3,
    loss: 2.5,
    lr: 1e-4,
    grad_norm: 0.7,
    tokens_per_s: 100,
  };

  it('events - a valid step event parses', () => {
    const r = parseTrainerLine(JSON.stringify(step), 1);
    expect(r.kind === 'event' && r.event.type).to.equal('step');
    expect(r.kind === 'event' && r.event.type === 'step' ? r.event.loss : null).to.equal(2.5);
  });

  it('events - every type of the schema is read as an event (a paused trial is not skipped as unknown)', () => {
    const paused = { v: 1, time: 1, type: 'paused', step: 3, steps_total: 27, eval_loss: 5.5 };
    const r = parseTrainerLine(JSON.stringify(paused), 1);
    expect(r.kind, JSON.stringify(r)).to.equal('event');
    const schema = trainerEventsJsonSchema() as { oneOf?: { properties: { type: { const: string } } }[] };
    const types = (schema.oneOf ?? []).map((o) => o.properties.type.const);
    expect(types).to.include('paused');
    for (const type of types) {
      const line = parseTrainerLine(JSON.stringify({ v: 1, time: 1, type }), 1);
      // a line of a known type that lacks its fields is invalid for its fields, never as an unknown type
      if (line.kind === 'invalid') expect(line.error.message, type).to.not.match(/unknown event type/);
    }
  });

  it('events - unknown keys from a newer trainer are ignored', () => {
    const r = parseTrainerLine(JSON.stringify({ ...step, new_field: 'x' }), 1);
    expect(r.kind).to.equal('event');
  });

  it('events - plain text from a library is text, not an error', () => {
    expect(parseTrainerLine('Loading checkpoint shards: 100%', 4).kind).to.equal('text');
    expect(parseTrainerLine('{not json', 4).kind).to.equal('text');
  });

  it('events - a forged event with a bad field is invalid, with line and field', () => {
    const r = parseTrainerLine(JSON.stringify({ ...step, loss: 'NaN' }), 7);
    expect(r.kind).to.equal('invalid');
    if (r.kind === 'invalid') {
      expect(r.error.where.line).to.equal(7);
      expect(r.error.where.field).to.equal('loss');
    }
  });

  it('events - an unknown event type is invalid and named', () => {
    const r = parseTrainerLine(JSON.stringify({ v: 1, type: 'teleport', time: 1 }), 2);
    expect(r.kind).to.equal('invalid');
    if (r.kind === 'invalid') expect(r.error.message).to.match(/teleport/);
  });

  it('events - a wrong protocol version is invalid', () => {
    expect(parseTrainerLine(JSON.stringify({ ...step, v: 99 }), 1).kind).to.equal('invalid');
  });

  it('events - the JSON Schema the trainer tests use is the one generated from these types', () => {
    const committed = JSON.parse(
      readFileSync(join(ROOT, 'agent/trainer/tunefleet_trainer/events.schema.json'), 'utf8'),
    ) as unknown;
    expect(committed).to.deep.equal(JSON.parse(JSON.stringify(trainerEventsJsonSchema())));
  });
});
