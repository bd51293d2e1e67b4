// Scoring an evaluation's generations on the agent: the judge (sentence embeddings through
// onnxruntime-node, loaded at the first evaluation and kept) and the spec's tool scorer,
// each over the base and the fine-tuned outputs; the generations go to the store for review.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  ADAPTERS_BUCKET,
  TunefleetError,
  evalOutputsObjectName,
  type EvalOutcome,
  type EvaluateRequest,
  type TrainerEvent,
} from '../../shared';
import { Judge, dot } from '../judge';
import { persistently, upload, type AgentNats } from '../nats';
import { runTool } from '../tool';

export type EvaluationEvent = Extract<TrainerEvent, { type: 'evaluation' }>;

interface Generation {
  prompt: string;
  reference: string;
  base: string;
  tuned: string;
}

const JUDGE_MODEL = 'all-MiniLM-L6-v2 (ONNX, onnxruntime-node, CPU)';

export class Scorer {
  private judge: Promise<Judge> | null = null;

  constructor(
    private readonly nats: AgentNats,
    private readonly judgeDir: string,
    private readonly log: (m: string) => void,
    /** what the tool scorer must not see: the agent's home, work, model and judge directories, the user's home */
    private readonly hidden: string[] = [],
  ) {}

  async score(req: EvaluateRequest, r: EvaluationEvent): Promise<EvalOutcome> {
    // every generation is in the outputs file; the event carries a few examples only
    const rows: Generation[] = r.outputs_path
      ? (await readFile(r.outputs_path, 'utf8'))
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Generation)
      : r.examples;
    return this.scoreRows(req, r, rows);
  }

  private async scoreRows(req: EvaluateRequest, r: EvaluationEvent, rows: Generation[]): Promise<EvalOutcome> {
    const out: EvalOutcome = {
      base: { ...r.base },
      tuned: { ...r.tuned },
      examples: r.examples,
      judge: null,
      tool: null,
      outputs: null,
    };
    const ev = req.spec.evaluation;
    if (ev.judge !== false) await this.judgeRows(req.jobId, rows, out);
    if (ev.tool) {
      const as = (which: 'base' | 'tuned'): { prompt: string; reference: string; output: string }[] =>
        rows.map((x) => ({ prompt: x.prompt, reference: x.reference, output: x[which] }));
      const base = await runTool(ev.tool.command, ev.tool.timeout_s, as('base'), this.hidden);
      const tuned = await runTool(ev.tool.command, ev.tool.timeout_s, as('tuned'), this.hidden);
      out.tool = { command: ev.tool.command, base, tuned };
      out.base.tool = base.scores;
      out.tuned.tool = tuned.scores;
      if (base.error) this.log(`${req.jobId}: tool scorer on the base outputs: ${base.error}`);
      if (tuned.error) this.log(`${req.jobId}: tool scorer on the fine-tuned outputs: ${tuned.error}`);
    }
    if (r.outputs_path && rows.length) {
      const object = evalOutputsObjectName(req.jobId);
      const path = r.outputs_path;
      await persistently(
        `upload ${object}`,
        async () => upload(await this.nats.store(ADAPTERS_BUCKET), object, path),
        this.log,
      );
      out.outputs = {
        object,
        records: rows.length,
        sha256: createHash('sha256')
          .update(await readFile(path))
          .digest('hex'),
      };
    }
    return out;
  }

  /** Mean cosine similarity of each answer to its reference, base and tuned; an error is reported, not thrown. */
  private async judgeRows(jobId: string, rows: Generation[], out: EvalOutcome): Promise<void> {
    const t0 = Date.now();
    const info = { model: JUDGE_MODEL, answers: 2 * rows.length };
    if (rows.length === 0) {
      out.judge = {
        ...info,
        seconds: 0,
        error: 'no generations to judge (evaluation.exact_match is off, or no eval record has a prompt)',
      };
      return;
    }
    try {
      this.judge ??= Judge.load(this.judgeDir).catch((e: unknown) => {
        this.judge = null;
        throw e;
      });
      const j = await this.judge;
      const refs = await j.embed(rows.map((x) => x.reference));
      const mean = async (answers: string[]): Promise<number> =>
        (await j.embed(answers)).reduce((s, e, i) => s + dot(e, refs[i] as Float32Array), 0) / answers.length;
      out.base.judge = await mean(rows.map((x) => x.base));
      out.tuned.judge = await mean(rows.map((x) => x.tuned));
      out.judge = { ...info, seconds: (Date.now() - t0) / 1000, error: null };
    } catch (e) {
      out.base.judge = out.tuned.judge = null;
      const error = e instanceof TunefleetError ? e.message : String(e);
      out.judge = { ...info, seconds: (Date.now() - t0) / 1000, error };
      this.log(`${jobId}: judge: ${error}`);
    }
  }
}
