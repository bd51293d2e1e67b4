// The ONNX judge (onnxruntime-node + @huggingface/tokenizers in Node) against the PyTorch
// model it was exported from (transformers + its own tokenizer in Python): the same
// sentence embeddings, sentence by sentence.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Judge, dot } from '../../agent/judge';
import { ROOT, installedHome } from '../harness/stack';
import { rejection } from '../harness/expect';

export const JUDGE_SENTENCES = [
  'The adapter was trained for 1,200 steps on a single GPU.',
  'image/png',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document has extension docx',
  'Café, naïve, façade — déjà vu: unicode with accents and an em dash.',
  '日本語のテキストも埋め込めるはずです。',
  'emoji 🚀🔥 and symbols ∑ ∫ √ ≤ ≥',
  '',
  '   leading and trailing spaces   ',
  'UPPER CASE and MiXeD cAsE words',
  'A'.repeat(40) + ' ' + 'word '.repeat(400), // longer than the 256-token window: truncated the same way
  'def f(x):\n    return {"a": [1, 2, 3]}\n',
  'The quick brown fox jumps over the lazy dog.',
];

describe('judge - the ONNX export agrees with PyTorch', function () {
  this.timeout(300_000);
  const dir = join(installedHome(), 'judge');

  it("judge - each sentence embedding has cosine >= 0.9999 with the PyTorch model's", async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'tunefleet-judge-'));
    writeFileSync(join(tmp, 'in.json'), JSON.stringify(JUDGE_SENTENCES));
    execFileSync(
      join(installedHome(), 'bin', 'python'),
      [
        '-m',
        'tunefleet_trainer',
        'judge-embed',
        '--src',
        join(dir, 'all-MiniLM-L6-v2-hf'),
        '--sentences',
        join(tmp, 'in.json'),
        '--out',
        join(tmp, 'out.json'),
      ],
      {
        cwd: join(ROOT, 'agent', 'trainer'),
        env: { ...process.env, PYTHONPATH: join(ROOT, 'agent', 'trainer') },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const reference = (JSON.parse(readFileSync(join(tmp, 'out.json'), 'utf8')) as number[][]).map((v) =>
      Float32Array.from(v),
    );
    const judge = await Judge.load(join(dir, 'all-MiniLM-L6-v2'));
    try {
      const mine = await judge.embed(JUDGE_SENTENCES, 5); // batches that mix lengths: padding must not matter
      const cos = mine.map((v, i) => dot(v, reference[i] as Float32Array));
      console.log(`      cosine ONNX vs PyTorch: min ${Math.min(...cos).toFixed(7)} over ${cos.length} sentences`);
      cos.forEach((c, i) =>
        expect(c, `sentence ${i}: ${JSON.stringify(JUDGE_SENTENCES[i]?.slice(0, 40))}`).to.be.at.least(0.9999),
      );
      expect(mine[0]?.length).to.equal(384);
      // a score: the same meaning scores higher than an unrelated answer
      const [same, other] = await judge.score(
        ['It trained for 1200 steps on one GPU.', 'Bananas are yellow.'],
        [JUDGE_SENTENCES[0] as string, JUDGE_SENTENCES[0] as string],
      );
      expect(same).to.be.greaterThan(0.7);
      expect(other).to.be.lessThan(0.3);
    } finally {
      await judge.close();
    }
  });

  it('judge - a missing export is a clear error naming the file and the fix', async () => {
    const e = await rejection(Judge.load(join(tmpdir(), 'no-judge-here')), 'loading a judge from nowhere');
    expect(e.message).to.match(/model\.onnx is missing \(run 'infra\/bootstrap\.sh judge'\)/);
  });
});
