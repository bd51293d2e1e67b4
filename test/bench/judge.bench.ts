// Judge throughput on the CPU: sentences per second at batch 32 for the ONNX judge in Node
// (onnxruntime-node + @huggingface/tokenizers, what agents run), against the PyTorch model
// it was exported from (transformers, same sentences, same batch, same threads) measured in
// the same run. Tokenisation is inside both timings.
//
//   npm run bench:judge
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Judge, JUDGE_BATCH } from '../../agent/judge';
import { ROOT, installedHome } from '../harness/stack';
import { recordResult } from './results';

const N = 1024;
const THREADS = cpus().length;

/** Answers of the kind an evaluation judges: short labels to a few sentences. */
function sentences(): string[] {
  const words =
    'model adapter training loss step batch token dataset checkpoint agent GPU memory eval answer reference the a of to and is in for with'.split(
      ' ',
    );
  let x = 12345;
  const rand = (): number => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  return Array.from({ length: N }, (_, i) => {
    const len = [3, 8, 16, 32, 64][i % 5] as number;
    return Array.from({ length: len }, () => words[Math.floor(rand() * words.length)]).join(' ') + '.';
  });
}

async function main(): Promise<void> {
  const texts = sentences();
  const judge = await Judge.load(join(installedHome(), 'judge', 'all-MiniLM-L6-v2'), THREADS);
  await judge.embed(texts.slice(0, JUDGE_BATCH)); // warm-up
  const runs: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    await judge.embed(texts, JUDGE_BATCH);
    runs.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  await judge.close();
  const onnx = N / Math.min(...runs);
  const py = `
import json, sys, time, torch
sys.path.insert(0, ${JSON.stringify(join(ROOT, 'agent', 'trainer'))})
from transformers import AutoTokenizer
from tunefleet_trainer.judge import _load, _pooled, MAX_TOKENS
torch.set_num_threads(${THREADS})
src, texts = sys.argv[1], json.loads(sys.stdin.read())
tok = AutoTokenizer.from_pretrained(src)
model = _pooled(_load(src))
def run():
    with torch.no_grad():
        for i in range(0, len(texts), ${JUDGE_BATCH}):
            enc = tok(texts[i:i + ${JUDGE_BATCH}], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
run()  # warm-up
best = None
for _ in range(3):
    t0 = time.perf_counter(); run(); d = time.perf_counter() - t0
    best = d if best is None else min(best, d)
print(json.dumps({"seconds": best, "torch": torch.__version__}))
`;
  const out = execFileSync(
    join(installedHome(), 'bin', 'python'),
    ['-c', py, join(installedHome(), 'judge', 'all-MiniLM-L6-v2-hf')],
    { input: JSON.stringify(texts), encoding: 'utf8', stdio: ['pipe', 'pipe', 'ignore'], maxBuffer: 1 << 24 },
  );
  const ref = JSON.parse(out.trim().split('\n').pop() as string) as { seconds: number; torch: string };
  const torchRate = N / ref.seconds;
  const table = [
    `## Judge throughput on CPU (${new Date().toISOString().slice(0, 10)}, \`npm run bench:judge\`)`,
    '',
    `all-MiniLM-L6-v2, ${N} answers of 3 to 64 words, batch ${JUDGE_BATCH}, ${THREADS} threads on ${cpus()[0]?.model.trim() ?? 'cpu'}; tokenisation included; best of 3 runs.`,
    '',
    '| judge | sentences/s | vs PyTorch |',
    '|---|---|---|',
    `| PyTorch ${ref.torch} + transformers tokenizer (baseline) | ${torchRate.toFixed(0)} | 1.00x |`,
    `| ONNX in Node: onnxruntime-node + @huggingface/tokenizers (what agents run) | ${onnx.toFixed(0)} | ${(onnx / torchRate).toFixed(2)}x |`,
  ].join('\n');
  console.log(table);
  recordResult(table);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
