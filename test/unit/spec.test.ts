import { expect } from 'chai';
import { ErrorCode, TunefleetError, TunefleetErrors, checkJobSpec, parseSpec } from '../../shared';

const good = `name: demo
model: SmolLM2-135M-Instruct
method: lora
dataset:
  path: data.jsonl
training:
  max_steps: 10
  learning_rate: 0.0005
`;

function problems(text: string): TunefleetError[] {
  try {
    parseSpec(text, 'job.yaml');
  } catch (e) {
    expect(e).to.be.instanceOf(TunefleetError);
    return e instanceof TunefleetErrors ? e.problems : [e as TunefleetError];
  }
  throw new Error('expected the spec to be refused');
}

describe('spec - parsing and validation', () => {
  it('spec - a valid spec gets its defaults', () => {
    const s = parseSpec(good, 'job.yaml');
    expect(s.method).to.equal('lora');
    expect(s.training.max_steps).to.equal(10);
    expect(s.training.learning_rate).to.equal(0.0005);
    expect(s.training.batch_size).to.equal(32);
    expect(s.lora.r).to.equal(8);
    expect(s.dataset.eval_fraction).to.equal(0.1);
    expect(s.evaluation.exact_match).to.equal(true);
    expect(s.training).to.include({
      packing: 'auto',
      gradient_checkpointing: 'auto',
      compile: 'auto',
      attention: 'auto',
      chunked_loss: true,
    });
  });

  it('spec - the trainer choices take true, false or auto, and name the field when not', () => {
    const s = parseSpec(good + '  packing: false\n  compile: true\n', 'job.yaml');
    expect(s.training).to.include({ packing: false, compile: true });
    const ps = problems(good + '  packing: yes please\n  attention: flash\n');
    expect(ps.map((p) => p.where.field)).to.have.members(['training.packing', 'training.attention']);
    expect(ps.find((p) => p.where.field === 'training.packing')?.where.line).to.equal(9);
  });

  it('spec - JSON is accepted too', () => {
    const s = parseSpec(
      JSON.stringify({ name: 'j', model: 'm', method: 'dora', dataset: { path: 'd.jsonl' } }),
      'job.json',
    );
    expect(s.method).to.equal('dora');
  });

  it('spec - an unknown method names the field and its line', () => {
    const [p] = problems(good.replace('method: lora', 'method: lorax'));
    expect(p?.where.field).to.equal('method');
    expect(p?.where.line).to.equal(3);
    expect(p?.message).to.match(/lora/);
    expect(p?.code).to.equal(ErrorCode.SpecInvalid);
  });

  it('spec - init_adapter names a job id, and a full fine-tune cannot continue an adapter', () => {
    expect(parseSpec(`${good}init_adapter: demo-abc123\n`).init_adapter).to.equal('demo-abc123');
    const [bad] = problems(`${good}init_adapter: ../adapter\n`);
    expect(bad?.where.field).to.equal('init_adapter');
    expect(bad?.message).to.match(/a job id/);
    const [full] = problems(`${good.replace('method: lora', 'method: full')}init_adapter: demo-abc123\n`);
    expect(full?.where.field).to.equal('init_adapter');
    expect(full?.message).to.match(/method full/);
  });

  it('spec - a negative learning rate names training.learning_rate', () => {
    const [p] = problems(good.replace('0.0005', '-0.1'));
    expect(p?.where.field).to.equal('training.learning_rate');
    expect(p?.where.line).to.equal(8);
  });

  it('spec - a value built outside a file (a sweep trial) is checked the same way, its summary saying which', () => {
    const trial = {
      name: 'demo',
      model: 'SmolLM2-135M-Instruct',
      method: 'lora',
      dataset: { path: 'data.jsonl' },
      training: { max_steps: 10, learning_rate: -0.1 },
    };
    try {
      checkJobSpec(trial, 'sweep.yaml', undefined, "trial 3's job spec (training.learning_rate=-0.1)");
      expect.fail('expected the trial to be refused');
    } catch (e) {
      expect(e).to.be.instanceOf(TunefleetErrors);
      const err = e as TunefleetErrors;
      expect(err.message).to.include("sweep.yaml: trial 3's job spec (training.learning_rate=-0.1) has 1 problem");
      expect(err.problems[0]?.where).to.deep.equal({ file: 'sweep.yaml', field: 'training.learning_rate' });
    }
    expect(checkJobSpec({ ...trial, training: { max_steps: 10 } }, 'sweep.yaml').training.max_steps).to.equal(10);
  });

  it('spec - an unknown key is refused on the key, with the allowed keys', () => {
    const [p] = problems(good.replace('  max_steps: 10', '  max_step: 10'));
    expect(p?.where.field).to.equal('training.max_step');
    expect(p?.where.line).to.equal(7);
    expect(p?.message)
      .to.match(/unknown key/)
      .and.match(/max_steps/);
  });

  it('spec - a wrong type names the field', () => {
    const [p] = problems(good.replace('max_steps: 10', 'max_steps: ten'));
    expect(p?.where.field).to.equal('training.max_steps');
    expect(p?.message).to.match(/number/);
  });

  it('spec - every problem is reported, not just the first', () => {
    const ps = problems(good.replace('method: lora', 'method: nope').replace('0.0005', '-1'));
    expect(ps.map((p) => p.where.field)).to.have.members(['method', 'training.learning_rate']);
  });

  it('spec - a missing required field names it', () => {
    const ps = problems(good.replace('model: SmolLM2-135M-Instruct\n', ''));
    expect(ps.map((p) => p.where.field)).to.include('model');
  });

  it('spec - a model given as a path is refused', () => {
    const [p] = problems(good.replace('SmolLM2-135M-Instruct', '../../etc'));
    expect(p?.where.field).to.equal('model');
  });

  it('spec - broken YAML gives the line', () => {
    const [p] = problems('name: x\nmodel: [unclosed\n');
    expect(p?.where.line).to.be.a('number');
  });

  it('spec - a scalar document is refused', () => {
    const [p] = problems('42');
    expect(p?.message).to.match(/mapping/);
  });

  it('spec - duplicate keys are refused', () => {
    const ps = problems(good + 'method: dora\n');
    expect(ps[0]?.message).to.match(/unique|duplicate/i);
  });
});
