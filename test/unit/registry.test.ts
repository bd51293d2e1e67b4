// The model card made from a registry record (pure): front matter, sections, numbers, escaping.
import { expect } from 'chai';
import { modelCard, parseSpec, type ModelRecord } from '../../shared';

function record(over: Partial<ModelRecord> = {}): ModelRecord {
  const spec = parseSpec(
    'name: mime\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset: {path: d.jsonl}\n' +
      'lora: {r: 16, alpha: 32}\ntraining: {max_steps: 100, batch_size: 16, learning_rate: 0.0002}\n',
  );
  const m = { eval_loss: 2.5, perplexity: 12.18, exact_match: 0.25, bleu: null, rouge_l: null, samples: 40 };
  return {
    v: 1,
    id: 'mime-abc123',
    created: '2026-12-03T10:00:00.000Z',
    state: 'succeeded',
    base: { name: 'SmolLM2-135M-Instruct', sha256: 'a'.repeat(64) },
    method: 'lora',
    spec,
    data: {
      dataset: { sha256: 'b'.repeat(64), bytes: 1234 },
      evalDataset: null,
      format: 'prompt_completion',
      trainRecords: 360,
      evalRecords: 40,
      trainSha256: 'c'.repeat(64),
      evalSha256: 'd'.repeat(64),
    },
    training: {
      steps: 100,
      trainLoss: 0.91,
      seconds: 321,
      agentId: 'gpu-1',
      attempt: 2,
      trainableParams: 1_843_200,
      totalParams: 136_358_208,
    },
    versions: { python: '3.11.2', torch: '2.15.0', transformers: '5.23.0', peft: '0.21.2' },
    metrics: { base: m, tuned: { ...m, eval_loss: 0.8, perplexity: 2.23, exact_match: 0.9, tool: { 'a|b': 3 } } },
    gates: [{ gate: 'eval_loss <= base', passed: true, value: 0.8, threshold: 2.5, base: 2.5, message: 'ok' }],
    parent: null,
    adapter: { bucket: 'tunefleet-adapters', prefix: 'mime-abc123/adapter/', files: [] },
    ...over,
  };
}

describe('registry - the model card', () => {
  it('registry - front matter for the Hub, then data, training settings, evaluation, lineage and versions', () => {
    const card = modelCard(record());
    expect(card).to.match(/^---\nbase_model: "SmolLM2-135M-Instruct"\nlibrary_name: peft\ntags:\n {2}- tunefleet\n/);
    expect(card).to.include(`dataset: sha256 \`${'b'.repeat(64)}\` (1234 bytes), format prompt_completion`);
    expect(card).to.include('360 training records, 40 held out');
    expect(card).to.include('method lora, r 16, alpha 32, dropout 0.05');
    expect(card).to.include('100 steps, batch 16, learning rate 0.0002 (cosine)');
    expect(card).to.include('1,843,200 trainable of 136,358,208 parameters');
    expect(card).to.include('| eval loss (lower is better) | 2.500 | 0.8000 |');
    expect(card).to.include('| exact match | 0.2500 | 0.9000 |');
    expect(card).to.not.include('BLEU'); // not measured: no row
    expect(card).to.include('| tool: a\\|b | - | 3.000 |'); // a pipe in a name cannot break the table
    expect(card).to.include(`weights sha256 \`${'a'.repeat(64)}\``);
    expect(card).to.include('parent adapter: none');
    expect(card).to.include('- torch 2.15.0');
  });

  it('registry - a failed gate is said at the top and in the gates; full fine-tuning is no PEFT adapter', () => {
    const failed = modelCard(
      record({
        state: 'failed_gate',
        gates: [{ gate: 'x', passed: false, value: 1, threshold: 0, base: null, message: 'exact_match 1 >= 2' }],
      }),
    );
    expect(failed).to.include('a quality gate of its spec did not pass');
    expect(failed).to.include('- **failed**: exact_match 1 >= 2');
    const full = modelCard(record({ method: 'full' }));
    expect(full).to.not.include('library_name: peft');
    expect(full).to.include('The directory holds the whole model');
  });
});
