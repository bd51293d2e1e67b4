// The model-based judge: all-MiniLM-L6-v2 (exported to ONNX at bootstrap, see
// agent/trainer/tunefleet_trainer/judge.py) run by onnxruntime-node on the CPU, so every
// agent can judge, GPU or not. It embeds each generated answer and its reference and
// scores their cosine similarity (the embeddings come out L2-normalised: a dot product).
// Tokenisation is @huggingface/tokenizers reading the model's own tokenizer.json.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { ErrorCode, TunefleetError } from '../shared';

export const JUDGE_BATCH = 32;

export class Judge {
  private constructor(
    private readonly session: InferenceSession,
    private readonly tokenizer: Tokenizer,
    readonly maxTokens: number,
    readonly dir: string,
  ) {}

  /** Load the exported judge from its directory (model.onnx, tokenizer.json, judge.json). */
  static async load(dir: string, threads = 0): Promise<Judge> {
    for (const f of ['model.onnx', 'tokenizer.json', 'tokenizer_config.json', 'judge.json']) {
      if (!existsSync(join(dir, f)))
        throw new TunefleetError(
          ErrorCode.ModelMissing,
          `the judge model is not installed: ${join(dir, f)} is missing (run 'infra/bootstrap.sh judge')`,
        );
    }
    const read = (f: string): Record<string, unknown> =>
      JSON.parse(readFileSync(join(dir, f), 'utf8')) as Record<string, unknown>;
    const tokenizer = new Tokenizer(read('tokenizer.json'), read('tokenizer_config.json'));
    const session = await InferenceSession.create(join(dir, 'model.onnx'), {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      ...(threads > 0 ? { intraOpNumThreads: threads } : {}),
    });
    return new Judge(session, tokenizer, Number(read('judge.json').max_tokens ?? 256), dir);
  }

  /** Token ids of one text: [CLS] … [SEP], cut to maxTokens the way the Python tokenizer truncates. */
  encode(text: string): number[] {
    const ids = this.tokenizer.encode(text).ids;
    if (ids.length <= this.maxTokens) return ids;
    return [...ids.slice(0, this.maxTokens - 1), ids[ids.length - 1] as number];
  }

  /** L2-normalised sentence embeddings, `batch` texts per run. */
  async embed(texts: string[], batch = JUDGE_BATCH): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (let i = 0; i < texts.length; i += batch) {
      const enc = texts.slice(i, i + batch).map((t) => this.encode(t));
      const width = Math.max(...enc.map((e) => e.length));
      const ids = new BigInt64Array(enc.length * width);
      const mask = new BigInt64Array(enc.length * width);
      enc.forEach((e, r) =>
        e.forEach((id, c) => {
          ids[r * width + c] = BigInt(id);
          mask[r * width + c] = 1n;
        }),
      );
      const dims = [enc.length, width];
      const res = await this.session.run({
        input_ids: new Tensor('int64', ids, dims),
        attention_mask: new Tensor('int64', mask, dims),
        token_type_ids: new Tensor('int64', new BigInt64Array(enc.length * width), dims),
      });
      const emb = res.sentence_embedding as Tensor;
      const d = emb.dims[1] as number;
      const data = emb.data as Float32Array;
      for (let r = 0; r < enc.length; r++) out.push(data.slice(r * d, (r + 1) * d));
    }
    return out;
  }

  /** Cosine similarity of each answer to its reference, in [-1, 1]. */
  async score(answers: string[], references: string[]): Promise<number[]> {
    const [a, b] = [await this.embed(answers), await this.embed(references)];
    return a.map((x, i) => dot(x, b[i] as Float32Array));
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

export function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}
