// One real job end to end: real nats-server, real Temporal dev server, the real control
// worker and agent, the real Python trainer on a tiny model.
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import {
  ADAPTERS_BUCKET,
  CHECKPOINTS_BUCKET,
  COMMITS_BUCKET,
  DATASETS_BUCKET,
  DECISIONS_BUCKET,
  LEASES_BUCKET,
  QUEUE_BUCKET,
  TunefleetErrors,
  datasetObjectName,
  type FineTuneInput,
  type ChatMessage,
  type GenerateOutcome,
  type JobResult,
  type ModelRecord,
} from '../../shared';
import { connectAgentNats } from '../../agent/nats';
import { addAgent } from '../../infra/secrets';
import { reloadNats } from '../../infra/services';
import { fetchSplits } from '../../agent/session/transfer';
import { prepareDataset } from '../../scheduler/prepare';
import { readLeases } from '../../scheduler/leases';
import { loadSpecFile } from '../../scheduler/cli/client';
import { getFile, objectSha256, putFile, sha256Hex } from '../../scheduler/nats';
import { ROOT, TINY_MODEL, cliEnv, installedHome, recordHistory, runCli, runCliInput } from '../harness/stack';
import { once, useRunningFleet } from '../harness/running-fleet';
import { rejection } from '../harness/expect';
import { credentialLeaks, tinyJob, until } from '../harness/fleet';

const EXTS = ['json', 'pdf', 'plain', 'png', 'mpeg', 'html', 'xml', 'zip'];

/** The tool scorer of the e2e job: the share of non-empty answers and how many it saw. */
const TOOL = [
  'python3',
  '-c',
  'import sys, json\nrows = [json.loads(l) for l in sys.stdin]\nprint(json.dumps({"nonempty": sum(1 for r in rows if r["output"].strip()) / len(rows), "answers": len(rows)}))',
];

/** The trainer's answer normalisation (evaluate.py normalise): Python's whitespace, collapsed, lower case. */
const PY_SPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
const normalise = (t: string): string => t.split(PY_SPACE).filter(Boolean).join(' ').toLowerCase();

function writeJob(dir: string, extra = '', evaluation = ''): string {
  const records = Array.from({ length: 60 }, (_, i) => ({
    prompt: `MIME type application/${EXTS[i % 8]} number ${i} has extension`,
    completion: ` ${EXTS[i % 8]}`,
  }));
  writeFileSync(join(dir, 'data.jsonl'), records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const spec = `name: e2e
model: ${TINY_MODEL}
method: lora
dataset:
  path: data.jsonl
  eval_fraction: 0.2
  seed: 3
  dedup: {near: false}   # templated records: only the number differs
training:
  max_steps: 6
  batch_size: 8
  micro_batch_size: 4
  learning_rate: 0.01
  checkpoint_every: 3
evaluation:
  max_new_tokens: 4
${evaluation}${extra}`;
  writeFileSync(join(dir, 'job.yaml'), spec);
  return join(dir, 'job.yaml');
}

describe('e2e - one LoRA job through the real stack', function () {
  this.timeout(600_000);
  const fleet = useRunningFleet({ inProcessAgent: 'test-agent' });

  /** The job most cases read: run by the first case that asks for it, so that any case can run alone. */
  const succeeded = once(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-e2e-'));
    const gates = '  gates: ["eval_loss <= base", "judge >= -1", "tool.answers >= 12"]\n';
    const loaded = await loadSpecFile(
      writeJob(dir, '', `  tool: {command: ${JSON.stringify(TOOL)}, timeout_s: 30}\n${gates}`),
    );
    const jobId = await fleet.client.submit(loaded, 'e2e-job-1');
    const events: Record<string, unknown>[] = [];
    const result = await fleet.client.events.follow(jobId, (e) => events.push(e));
    return { jobId, result, events };
  });

  /** A job whose second gate fails, submitted through the piped CLI with --follow. */
  const gateFailed = once(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-e2e-'));
    const id = 'e2e-gate-fail';
    const spec = writeJob(dir, '', '  gates: ["eval_loss <= base", "exact_match >= base + 2"]\n');
    return { id, followed: await runCli(fleet.stack, 'submit', spec, '--id', id, '--follow') };
  });

  it('e2e - submit, train, evaluate and register', async () => {
    const { jobId, result } = await succeeded();
    expect(result.state).to.equal('succeeded');
    expect(result.data).to.include({
      records_total: 60,
      eval_records: 12,
      train_records: 48,
      format: 'prompt_completion',
    });
    expect(result.training.steps).to.equal(6);
    expect(result.training.agentId).to.equal('test-agent');
    const { base, tuned } = result.evaluation;
    expect(tuned.eval_loss).to.be.lessThan(base.eval_loss);
    expect(tuned.samples).to.equal(12);
    expect(tuned.exact_match).to.be.within(0, 1);
    expect(result.adapter.files.map((f) => f.name)).to.include.members([
      'adapter_config.json',
      'adapter_model.safetensors',
    ]);
    await recordHistory(fleet.client.client, jobId, 'succeeded');
  });

  it('e2e - the evaluation has all four sides: metrics, the judge, the tool scorer and the gates that passed', async () => {
    const { jobId, result } = await succeeded();
    const { base, tuned, judge, tool, outputs } = result.evaluation;
    for (const m of [base, tuned]) {
      expect(m.bleu).to.be.within(0, 100);
      expect(m.rouge_l).to.be.within(0, 1);
      expect(m.judge).to.be.within(-1, 1);
      expect(m.tool).to.deep.include({ answers: 12 });
      expect(m.tool?.nonempty).to.be.within(0, 1);
    }
    expect(judge).to.include({ error: null, answers: 24 });
    expect(tool?.base.error).to.equal(null);
    expect(tool?.tuned.error).to.equal(null);
    expect(outputs).to.deep.include({ object: `${jobId}/eval-outputs.jsonl`, records: 12 });
    expect(outputs?.sha256).to.match(/^[0-9a-f]{64}$/);
    expect(result.gates?.map((g) => g.passed)).to.deep.equal([true, true, true]);
    // exact match is computed over the generations stored for review: recomputed here from them
    const rows = await fleet.client.reviews.outputs(jobId);
    expect(rows).to.have.length(12);
    const exactMatch = (side: 'base' | 'tuned'): number =>
      rows.filter((r) => normalise(r[side]) === normalise(r.reference)).length / rows.length;
    expect(base.exact_match, 'base').to.be.closeTo(exactMatch('base'), 1e-9);
    expect(tuned.exact_match, 'tuned').to.be.closeTo(exactMatch('tuned'), 1e-9);
  });

  it('e2e - a gate that fails ends the job failed_gate with the numbers (submit --follow exits 3, piped output is plain); the adapter is stored all the same', async () => {
    const { id, followed } = await gateFailed();
    expect(followed.status, followed.stderr).to.equal(3);
    // stdout is a pipe here: one plain line per event, no escape sequences, no step shown twice on a line
    expect(followed.stdout.includes('\u001b'), 'escape sequences in piped output').to.equal(false);
    const lines = followed.stdout.split('\n');
    expect(lines.filter((l) => /^step +\d+\/6 /.test(l))).to.have.lengthOf.at.least(6);
    for (const l of lines) expect((l.match(/step +\d+\//g) ?? []).length, l).to.be.at.most(1);
    const r = await fleet.client.result(id);
    expect(r.state).to.equal('failed_gate');
    expect(r.gates?.map((g) => g.passed)).to.deep.equal([true, false]);
    const failed = r.gates?.[1];
    expect(failed?.threshold).to.be.closeTo((r.evaluation.base.exact_match as number) + 2, 1e-9);
    expect(failed?.message).to.match(/^exact_match \d\.\d{4} >= base \d\.\d{4} \+ 2\.000 = \d\.\d{3,4}: FAIL$/);
    const store = await (await fleet.client.nats()).objects(ADAPTERS_BUCKET);
    for (const f of r.adapter.files)
      expect(await store.info(`${r.adapter.prefix}${f.name}`), f.name).to.not.equal(null);
    const status = await runCli(fleet.stack, 'status', id);
    expect(status.stdout).to.match(/failed_gate/);
    const res = await runCli(fleet.stack, 'result', id);
    expect(res.status, res.stderr).to.equal(0);
    expect(res.stdout)
      .to.match(/gates: 1 of 2 passed/)
      .and.match(/FAIL {2}exact_match >= base \+ 2/)
      .and.match(/stored although a gate failed/);
  });

  it('e2e - review export, grading and import attach human grades to the result; a bad file stores nothing', async () => {
    const { jobId } = await succeeded();
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-review-'));
    const file = join(dir, 'review.csv');
    const ex = await runCli(fleet.stack, 'review', 'export', jobId, '-n', '5', '--seed', '1', '-o', file);
    expect(ex.status, ex.stderr).to.equal(0);
    expect(ex.stdout).to.match(/wrote 5 of 12 answers/);
    const rows = parse(readFileSync(file, 'utf8'), { columns: true }) as Record<string, string>[];
    expect(Object.keys(rows[0] ?? {})).to.deep.equal([
      'id',
      'prompt',
      'reference',
      'base_output',
      'tuned_output',
      'base_grade',
      'tuned_grade',
      'comment',
    ]);
    // a person grades four of the five
    rows.slice(0, 4).forEach((r, i) => Object.assign(r, { base_grade: '2', tuned_grade: i === 0 ? '1' : '5' }));
    writeFileSync(
      join(dir, 'bad.csv'),
      stringify(
        rows.map((r, i) => (i === 2 ? { ...r, tuned_grade: 'great' } : r)),
        { header: true },
      ),
    );
    const bad = await runCli(fleet.stack, 'review', 'import', jobId, join(dir, 'bad.csv'));
    expect(bad.status).to.equal(2);
    expect(bad.stderr)
      .to.match(/bad\.csv:\d+: tuned_grade "great" is not a whole number from 1 to 5/)
      .and.match(/nothing was imported/);
    expect((await fleet.client.reviews.result(jobId)).review ?? null, 'nothing stored by the refused import').to.equal(
      null,
    );
    writeFileSync(file, stringify(rows, { header: true }));
    const im = await runCli(fleet.stack, 'review', 'import', jobId, file);
    expect(im.status, im.stderr).to.equal(0);
    expect(im.stdout).to.match(/imported 4 graded answers: base 2\.00, fine-tuned 4\.00/);
    const res = await runCli(fleet.stack, 'result', jobId, '--json', '--plot', join(dir, 'loss.svg'));
    expect(res.status, res.stderr).to.equal(0);
    const json = JSON.parse(res.stdout) as JobResult & { loss_curve: { train: [number, number][] } };
    expect(json.review).to.include({
      graded: 4,
      base_mean: 2,
      tuned_mean: 4,
      tuned_better: 0.75,
      tuned_worse: 0.25,
      file: 'review.csv',
    });
    expect(json.loss_curve.train.map(([s]) => s)).to.deep.equal([1, 2, 3, 4, 5, 6]);
    expect(readFileSync(join(dir, 'loss.svg'), 'utf8'))
      .to.match(/^<svg/)
      .and.include('<polyline');
    // the generations carry their digest: replaced in the store, export refuses them and the review is left out
    const outputs = json.evaluation.outputs as { object: string; sha256?: string };
    expect(outputs.sha256).to.match(/^[0-9a-f]{64}$/);
    const store = await (await fleet.client.nats()).objects(ADAPTERS_BUCKET);
    const genuine = (await store.getBlob(outputs.object)) as Uint8Array;
    await store.putBlob({ name: outputs.object }, new TextEncoder().encode('{"prompt":"planted"}\n'));
    try {
      const refused = await runCli(fleet.stack, 'review', 'export', jobId, '-o', join(dir, 'again.csv'));
      expect(refused.status).to.not.equal(0);
      expect(refused.stderr).to.match(/were replaced in the store: sha256 .*, the evaluation recorded/);
    } finally {
      await store.putBlob({ name: outputs.object }, genuine);
    }
  });

  it('e2e - the job stream carries every step, both checkpoints and the evaluation', async () => {
    const { jobId, events } = await succeeded();
    const steps = events.filter((e) => e.type === 'step').map((e) => e.step);
    expect(steps).to.deep.equal([1, 2, 3, 4, 5, 6]);
    expect(events.filter((e) => e.type === 'checkpoint').map((e) => e.step)).to.deep.equal([3, 6]);
    expect(events.some((e) => e.type === 'evaluation')).to.equal(true);
    expect(events.every((e) => e.job_id === jobId)).to.equal(true);
    expect(events.filter((e) => e.type === 'step' || e.type === 'checkpoint').every((e) => e.attempt === 1)).to.equal(
      true,
    );
  });

  it('e2e - checkpoints are in the object store with their manifest', async () => {
    const { jobId } = await succeeded();
    const n = await fleet.client.nats();
    const store = await n.objects(CHECKPOINTS_BUCKET);
    const manifest = await store.getBlob(`${jobId}/a1/step-00000003/manifest.json`);
    expect(manifest).to.not.equal(null);
    const m = JSON.parse(new TextDecoder().decode(manifest as Uint8Array)) as {
      step: number;
      files: { name: string }[];
    };
    expect(m.step).to.equal(3);
    for (const f of m.files) expect(await store.info(`${jobId}/a1/step-00000003/${f.name}`), f.name).to.not.equal(null);
  });

  it('e2e - the real temporal CLI lists the workflow', async () => {
    const { jobId } = await succeeded();
    const out = execFileSync(
      join(fleet.stack.home, 'bin', 'temporal'),
      ['workflow', 'list', '--address', fleet.stack.cfg.temporalAddress],
      { encoding: 'utf8' },
    );
    expect(out).to.include(jobId);
    expect(out).to.match(/Completed/);
  });

  it('e2e - the downloaded adapter loads in stock PEFT and gives the reported eval loss', async () => {
    const { jobId, result } = await succeeded();
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-dl-'));
    const r = spawnSync(
      process.execPath,
      [join(ROOT, 'bin', 'tunefleet'), 'download', jobId, '--out', join(dir, 'adapter')],
      { env: cliEnv(fleet.stack), encoding: 'utf8' },
    );
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/wrote \d+ adapter files/);
    const n = await fleet.client.nats();
    await getFile(await n.objects(DATASETS_BUCKET), result.data.eval_object, join(dir, 'eval.jsonl'));
    // plain transformers + PEFT, no tunefleet code: token-weighted loss over completion tokens
    const script = `
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
base, adapter, data = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(base)
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
total, count = 0.0, 0
for line in open(data):
    r = json.loads(line)
    p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
    c = tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p + c])
    labels = torch.tensor([[-100] * len(p) + c])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
    total += float(loss); count += int((labels[:, 1:] != -100).sum())
print(json.dumps({"eval_loss": total / count}))
`;
    const out = execFileSync(
      join(fleet.stack.home, 'bin', 'python'),
      ['-c', script, join(fleet.stack.home, 'models', TINY_MODEL), join(dir, 'adapter'), join(dir, 'eval.jsonl')],
      { encoding: 'utf8', env: { ...process.env, HF_HUB_OFFLINE: '1' }, stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const measured = (JSON.parse(out.trim().split('\n').pop() as string) as { eval_loss: number }).eval_loss;
    expect(measured).to.be.closeTo(result.evaluation.tuned.eval_loss, 1e-4);
    const saved = JSON.parse(readFileSync(join(dir, 'adapter', 'tunefleet-result.json'), 'utf8')) as JobResult;
    expect(saved.jobId).to.equal(jobId);
  });

  it('e2e - export --merged writes the base with the adapter folded in: plain transformers loads it, with the eval loss and the greedy answers of the evaluation', async () => {
    const { jobId, result } = await succeeded();
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-merged-'));
    const out = join(dir, 'merged');
    const r = await runCli(fleet.stack, 'export', jobId, '--merged', '--out', out, '--dtype', 'float32');
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/wrote the merged model \(\d+ files, [\d.]+ MiB\) to /);
    expect(readdirSync(out)).to.include.members(['config.json', 'model.safetensors', 'tokenizer.json']);
    expect(readdirSync(out).some((n) => n.startsWith('adapter_'))).to.equal(false);
    const n = await fleet.client.nats();
    await getFile(await n.objects(DATASETS_BUCKET), result.data.eval_object, join(dir, 'eval.jsonl'));
    // the merged directory in plain transformers (no PEFT); the answers generated as the evaluation step does
    const script = `
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from tunefleet_trainer.evaluate import generate
path, data = sys.argv[1:3]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path).eval()
records = [json.loads(line) for line in open(data)]
total, count = 0.0, 0
for r in records:
    p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
    c = tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids, labels = torch.tensor([p + c]), torch.tensor([[-100] * len(p) + c])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
    total += float(loss); count += int((labels[:, 1:] != -100).sum())
outs = generate(model, tok, [r["prompt"] for r in records], 4, 4, torch.device("cpu"))
answers = [o.lstrip().split("\\n", 1)[0] if "\\n" not in r["completion"].strip() else o for r, o in zip(records, outs)]
print(json.dumps({"eval_loss": total / count, "prompts": [r["prompt"] for r in records], "answers": answers}))
`;
    const got = JSON.parse(
      execFileSync(join(fleet.stack.home, 'bin', 'python'), ['-c', script, out, join(dir, 'eval.jsonl')], {
        encoding: 'utf8',
        env: { ...process.env, HF_HUB_OFFLINE: '1', PYTHONPATH: join(ROOT, 'agent', 'trainer') },
        stdio: ['ignore', 'pipe', 'ignore'],
      })
        .trim()
        .split('\n')
        .pop() as string,
    ) as { eval_loss: number; prompts: string[]; answers: string[] };
    expect(got.eval_loss).to.be.closeTo(result.evaluation.tuned.eval_loss, 1e-4);
    const evaluated = new Map(result.evaluation.examples.map((e) => [e.prompt, e.tuned]));
    const compared = got.prompts.filter((p) => evaluated.has(p));
    expect(compared).to.have.length(result.evaluation.examples.length);
    for (const [i, p] of got.prompts.entries())
      if (evaluated.has(p)) expect(got.answers[i], p).to.equal(evaluated.get(p));
    // the base must be the weights the job trained on, and a second export does not overwrite the first
    const again = await runCli(fleet.stack, 'export', jobId, '--merged', '--out', out);
    expect(again.status).to.not.equal(0);
    expect(again.stderr).to.include('already exists');
    const elsewhere = await runCli(
      fleet.stack,
      'export',
      jobId,
      '--merged',
      '--out',
      join(dir, 'x'),
      '--models-dir',
      dir,
    );
    expect(elsewhere.status).to.not.equal(0);
    expect(elsewhere.stderr).to.include(`the base model ${TINY_MODEL} is not in ${dir}`);
    // GGUF: llama.cpp's converter hashes how a tokenizer splits a fixed text, and knows the tiny model's not
    // (SmolLM2's export, read back by llama.cpp and transformers, is agent/trainer/tests/test_gguf.py)
    const gguf = await runCli(fleet.stack, 'export', jobId, '--merged', '--format', 'gguf', '--out', join(dir, 'g'));
    expect(gguf.status).to.not.equal(0);
    expect(gguf.stderr).to.include("llama.cpp's converter refused the merged model");
    expect(gguf.stderr).to.include('pre-tokenizer was not recognized');
    expect(existsSync(join(dir, 'g')), 'nothing left behind').to.equal(false);
    const q8 = await runCli(fleet.stack, 'export', jobId, '--merged', '--dtype', 'q8_0', '--out', join(dir, 'q'));
    expect(q8.status).to.not.equal(0);
    expect(q8.stderr).to.include('--dtype q8_0: one of auto, float32, bfloat16, float16 with --format safetensors');
  });

  it('e2e - generate: a held-out prompt gets, streamed, the greedy answer the evaluation generated, the base model beside it; an unknown job, a prompt over the context length and a base model no agent holds are refused', async () => {
    const { jobId, result } = await succeeded();
    const example = result.evaluation.examples[0];
    expect(example, 'an evaluated example').to.not.equal(undefined);
    const { prompt, base, tuned } = example as { prompt: string; base: string; tuned: string };
    const r = await runCli(fleet.stack, 'generate', jobId, '--prompt', prompt, '--base', '--max-new-tokens', '4');
    expect(r.status, r.stderr).to.equal(0);
    const line = (side: string): string =>
      (r.stdout.split('\n').find((l) => l.startsWith(`[1 ${side}] `)) ?? '').slice(`[1 ${side}] `.length);
    // the evaluation keeps an answer's first line when the reference has one
    expect(line('base').trimStart().split('\n')[0]).to.equal(base);
    expect(line('tuned').trimStart()).to.equal(tuned);
    const json = await runCli(fleet.stack, 'generate', jobId, '--prompt', prompt, '--max-new-tokens', '4', '--json');
    expect(json.status, json.stderr).to.equal(0);
    const out = JSON.parse(json.stdout) as GenerateOutcome;
    expect(out.agentId).to.equal('test-agent');
    expect(out.answers[0]?.tuned.trimStart()).to.equal(tuned);
    expect(out.answers[0]?.base).to.equal(null);

    const unknown = await runCli(fleet.stack, 'generate', 'no-such-job', '--prompt', 'hi');
    expect(unknown.status).to.not.equal(0);
    expect(unknown.stderr).to.include("no model 'no-such-job' (no such job)");
    const long = await runCli(
      fleet.stack,
      'generate',
      jobId,
      '--prompt',
      'word '.repeat(3000),
      '--max-new-tokens',
      '8',
    );
    expect(long.status).to.not.equal(0);
    expect(long.stderr).to.match(
      /prompt 1: \d+ tokens \+ max_new_tokens 8 = \d+, more than the model's context length/,
    );
    // a record whose base model no agent holds (planted beside the real one): placement says so, nothing runs
    const store = await (await fleet.client.nats()).objects(ADAPTERS_BUCKET);
    const record = JSON.parse(
      new TextDecoder().decode((await store.getBlob(`${jobId}/model.json`)) ?? undefined),
    ) as ModelRecord;
    const elsewhere = { ...record, id: 'e2e-no-base', base: { ...record.base, name: 'NoSuchModel-1B' } };
    elsewhere.spec = { ...record.spec, model: 'NoSuchModel-1B' };
    await store.putBlob({ name: 'e2e-no-base/model.json' }, new TextEncoder().encode(JSON.stringify(elsewhere)));
    try {
      const missing = await runCli(fleet.stack, 'generate', 'e2e-no-base', '--prompt', 'hi');
      expect(missing.status).to.not.equal(0);
      expect(missing.stderr).to.include('base model NoSuchModel-1B is not on this agent');
    } finally {
      await store.delete('e2e-no-base/model.json');
    }
  });

  it("e2e - chat: turns on stdin, each answered over the conversation so far in the chat template (sampled, seeded: equal to generate's answer to the rendered conversation); the place is given back at the end; an unknown job is refused", async () => {
    const { jobId } = await succeeded();
    const asked = ['MIME type text/html?', 'And image/png?'];
    const flags = ['--max-new-tokens', '4', '--temperature', '1', '--seed', '5'];
    const r = await runCliInput(
      fleet.stack,
      `${asked[0]}\n\n${asked[1]}\n`,
      'chat',
      jobId,
      '--system',
      'Extensions.',
      ...flags,
      '--json',
    );
    expect(r.status, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout) as { chat: string; agentId: string; messages: ChatMessage[]; ended: string };
    expect(out.ended).to.equal('asked');
    await recordHistory(fleet.client.client, out.chat, 'chat');
    expect(out.agentId).to.equal('test-agent');
    expect(out.messages.map((m) => m.role)).to.deep.equal(['system', 'user', 'assistant', 'user', 'assistant']);
    expect(out.messages.filter((m) => m.role === 'user').map((m) => m.content)).to.deep.equal(asked);
    // the tiny model's chat template (ChatML), rendered by hand: generate answers the same text with the same seed
    const chatml = (ms: ChatMessage[]): string =>
      ms.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('') + '<|im_start|>assistant\n';
    for (const [turn, upto] of [
      [0, 2],
      [1, 4],
    ] as const) {
      const g = await runCli(
        fleet.stack,
        'generate',
        jobId,
        '--prompt',
        chatml(out.messages.slice(0, upto)),
        '--max-new-tokens',
        '4',
        '--temperature',
        '1',
        '--seed',
        String(5 + turn),
        '--json',
      );
      expect(g.status, g.stderr).to.equal(0);
      expect((JSON.parse(g.stdout) as GenerateOutcome).answers[0]?.tuned, `turn ${turn + 1}`).to.equal(
        out.messages[upto]?.content,
      );
    }
    expect(out.messages.map((m) => m.content).join(''), 'something was sampled').to.not.equal(
      ['Extensions.', ...asked].join(''),
    );
    // the turns' tokens were streamed on the chat's own subjects
    const tokens: string[] = [];
    await fleet.client.events.read(out.chat, (e) => void (e.type === 'token' && tokens.push(e.text)));
    expect(tokens.join('')).to.equal(out.messages[2]?.content + (out.messages[4]?.content ?? ''));
    // the chat's place on the agent is given back and its trainer has ended
    const leases = await (await (await fleet.client.nats()).kv(LEASES_BUCKET)).get('test-agent');
    expect(new TextDecoder().decode(leases?.value)).to.not.include(out.chat);
    expect(spawnSync('pgrep', ['-f', `jobs/${out.chat}/`]).stdout.toString(), 'its trainer').to.equal('');

    const unknown = await runCliInput(fleet.stack, 'hi\n', 'chat', 'no-such-job');
    expect(unknown.status).to.not.equal(0);
    expect(unknown.stderr).to.include("no model 'no-such-job' (no such job)");
  });

  it("e2e - download --logs fetches the TensorBoard event files, and TensorBoard's own reader finds every step", async () => {
    const { jobId, result, events } = await succeeded();
    const dir = join(mkdtempSync(join(tmpdir(), 'tunefleet-tb-')), 'logs');
    const r = await runCli(fleet.stack, 'download', jobId, '--logs', '--out', dir);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(
      /wrote 1 TensorBoard event files \(\d+ bytes\) to .*\nview them with: tensorboard --logdir /,
    );
    expect(result.logs?.files.map((f) => f.name)).to.have.length(1);
    // the event accumulator of the tensorboard package (the tools virtualenv), not tunefleet's code
    const out = execFileSync(
      join(installedHome(), 'bin', 'tools-python'),
      [join(ROOT, 'test', 'harness', 'tensorboard_read.py'), dir],
      { encoding: 'utf8' },
    );
    const scalars = JSON.parse(out) as Record<string, [number, number][]>;
    const tag = (name: string): [number, number][] => scalars[name] ?? expect.fail(`no ${name} in ${out}`);
    const steps = events.filter((e) => e.type === 'step') as { step: number; loss: number; lr: number }[];
    expect(steps.map((e) => e.step)).to.deep.equal([1, 2, 3, 4, 5, 6]);
    expect(tag('train/loss').map(([s]) => s)).to.deep.equal([1, 2, 3, 4, 5, 6]);
    steps.forEach((e, i) => {
      expect(tag('train/loss')[i]?.[1]).to.be.closeTo(e.loss, 1e-5 * e.loss);
      expect(tag('train/learning_rate')[i]?.[1]).to.be.closeTo(e.lr, 1e-6);
    });
    for (const name of ['train/grad_norm', 'train/tokens_per_s', 'train/epoch'])
      expect(
        tag(name).map(([s]) => s),
        name,
      ).to.deep.equal([1, 2, 3, 4, 5, 6]);
    // the exported adapter's eval loss at the last step, as the trainer reported it
    expect(tag('adapter/loss').map(([s]) => s)).to.deep.equal([6]);
    const again = await runCli(fleet.stack, 'download', jobId, '--logs', '--out', dir);
    expect(again.status).to.not.equal(0);
    expect(again.stderr).to.match(/already exists; choose another --out/);
  });

  it('e2e - the registry: models lists the adapter, models show gives its lineage, the adapter carries its model card', async () => {
    const { jobId, result } = await succeeded();
    const list = await runCli(fleet.stack, 'models');
    expect(list.status, list.stderr).to.equal(0);
    expect(list.stdout).to.match(/^MODEL\s+BASE\s+METHOD\s+DATASET\s+STEPS\s+EVAL LOSS BASE -> TUNED\s+GATES/);
    expect(list.stdout).to.match(new RegExp(`\\n${jobId}\\s+${TINY_MODEL}\\s+lora\\s+[0-9a-f]{12}\\s+6\\s+`));
    const shown = await runCli(fleet.stack, 'models', 'show', jobId, '--json');
    expect(shown.status, shown.stderr).to.equal(0);
    const r = JSON.parse(shown.stdout) as ModelRecord;
    // the base model's weights as the agent held them, hashed here independently
    const modelDir = join(fleet.stack.home, 'models', TINY_MODEL);
    const weights = readdirSync(modelDir)
      .filter((n) => /\.(safetensors|bin|gguf)$/.test(n))
      .sort();
    const digest = createHash('sha256')
      .update(
        weights
          .map(
            (n) =>
              `${n} ${createHash('sha256')
                .update(readFileSync(join(modelDir, n)))
                .digest('hex')}\n`,
          )
          .join(''),
      )
      .digest('hex');
    expect(r.base).to.deep.equal({ name: TINY_MODEL, sha256: digest });
    expect(r.data.trainSha256).to.equal(result.data.train_sha256);
    expect(r.data.dataset.sha256).to.match(/^[0-9a-f]{64}$/);
    expect(r.spec.training.max_steps).to.equal(6);
    expect(r.metrics.tuned.eval_loss).to.equal(result.evaluation.tuned.eval_loss);
    expect(r.gates.map((g) => g.passed)).to.deep.equal([true, true, true]);
    expect(Object.keys(r.versions ?? {})).to.have.members(['python', 'torch', 'transformers', 'peft']);
    expect(r.parent).to.equal(null);
    const human = await runCli(fleet.stack, 'models', 'show', jobId);
    expect(human.stdout).to.match(new RegExp(`dataset\\s+sha256 ${r.data.dataset.sha256}`));
    // the downloaded adapter's README.md is the model card: the dataset digest and the spec's settings
    const dir = join(mkdtempSync(join(tmpdir(), 'tunefleet-card-')), 'adapter');
    expect((await runCli(fleet.stack, 'download', jobId, '--out', dir)).status).to.equal(0);
    const card = readFileSync(join(dir, 'README.md'), 'utf8');
    expect(card).to.match(new RegExp(`^---\\nbase_model: "${TINY_MODEL}"\\nlibrary_name: peft\\n`));
    expect(card).to.include(r.data.dataset.sha256);
    expect(card).to.include(`6 steps, batch 8, learning rate 0.01`);
    expect(card).to.match(/\| eval loss \(lower is better\) \| [\d.]+ \| [\d.]+ \|/);
    const missing = await runCli(fleet.stack, 'models', 'show', 'no-such-job');
    expect(missing.status).to.not.equal(0);
    expect(missing.stderr).to.match(/no model 'no-such-job' \(no such job\)/);
  });

  it("e2e - init_adapter: a job continued from the finished job's adapter starts at its eval loss and its record names the parent; a parent that is missing or of another kind is refused at submit; an agent whose base weights are not the parent's refuses to train", async () => {
    const { jobId, result } = await succeeded();
    const spec = writeJob(mkdtempSync(join(tmpdir(), 'tunefleet-child-')), `init_adapter: ${jobId}\n`);
    const childId = await fleet.client.submit(await loadSpecFile(spec), 'e2e-child');
    const events: Record<string, unknown>[] = [];
    const child = await fleet.client.events.follow(childId, (e) => events.push(e));
    expect(child.state).to.equal('succeeded');
    const first = events.find((e) => e.type === 'eval') as { step: number; eval_loss: number } | undefined;
    expect(first?.step, 'an evaluation before the first step').to.equal(0);
    expect(first?.eval_loss).to.be.closeTo(result.evaluation.tuned.eval_loss, 1e-4);
    expect(child.training.steps).to.equal(6);
    const shown = await runCli(fleet.stack, 'models', 'show', childId, '--json');
    expect(shown.status, shown.stderr).to.equal(0);
    expect((JSON.parse(shown.stdout) as ModelRecord).parent).to.equal(jobId);
    expect((await runCli(fleet.stack, 'models', 'show', childId)).stdout).to.match(new RegExp(`parent\\s+${jobId}\\n`));
    // refused at submit, naming the field: a job that does not exist, and an adapter the method cannot continue
    const missing = writeJob(mkdtempSync(join(tmpdir(), 'tunefleet-child-')), 'init_adapter: no-such-job\n');
    const refused = await runCli(fleet.stack, 'submit', missing);
    expect(refused.status).to.not.equal(0);
    expect(refused.stderr).to.match(/init_adapter.*no model 'no-such-job' \(no such job\)/);
    writeFileSync(spec, readFileSync(spec, 'utf8').replace('method: lora', 'method: ia3'));
    const other = await runCli(fleet.stack, 'submit', spec);
    expect(other.status).to.not.equal(0);
    expect(other.stderr).to.match(/init_adapter.*a lora adapter; this job's method ia3 cannot continue it/);
    // an adapter whose record names other base weights (same model name): the agent refuses to train on its own
    const store = await (await fleet.client.nats()).objects(ADAPTERS_BUCKET);
    const record = JSON.parse(
      new TextDecoder().decode((await store.getBlob(`${jobId}/model.json`)) ?? undefined),
    ) as ModelRecord;
    const planted = { ...record, id: 'e2e-other-weights', base: { ...record.base, sha256: 'f'.repeat(64) } };
    await store.putBlob({ name: 'e2e-other-weights/model.json' }, new TextEncoder().encode(JSON.stringify(planted)));
    const refusedId = await fleet.client.submit(
      await loadSpecFile(
        writeJob(mkdtempSync(join(tmpdir(), 'tunefleet-child-')), 'init_adapter: e2e-other-weights\n'),
      ),
      'e2e-other-weights-child',
    );
    try {
      // the train activity's failure, as the workflow's history holds it
      const failures = async (): Promise<string[]> =>
        ((await fleet.client.client.workflow.getHandle(refusedId).fetchHistory()).events ?? [])
          .map((e) => e.activityTaskFailedEventAttributes?.failure?.message ?? '')
          .filter(Boolean);
      await until('the agent refuses the base weights', async () => (await failures()).length > 0, 180_000);
      const message = (await failures())[0] ?? '';
      expect(message).to.include(
        `the base model ${TINY_MODEL} on agent test-agent is not the one e2e-other-weights's adapter was trained on`,
      );
      expect(message).to.include(`the record's ${'f'.repeat(64)}`);
    } finally {
      // its next attempt may hold the agent: the tests after this one start once it has ended
      await fleet.client.cancel(refusedId).catch(() => {});
      await store.delete('e2e-other-weights/model.json');
      await until(
        'the refused child ends',
        async () => (await fleet.client.describe(refusedId)).temporal !== 'RUNNING',
        120_000,
        async () => JSON.stringify((await fleet.client.describe(refusedId)).status),
      );
    }
  });

  it('e2e - status, list and result work from the CLI', async () => {
    const { jobId } = await succeeded();
    await gateFailed();
    const run = (...args: string[]): ReturnType<typeof runCli> => runCli(fleet.stack, ...args);
    const status = await run('status', jobId);
    expect(status.status, status.stderr).to.equal(0);
    expect(status.stdout, status.stdout).to.not.match(/no live state/);
    expect(status.stdout)
      .to.match(/COMPLETED/)
      .and.match(/succeeded/)
      .and.match(/step 6\/6/);
    // a third end: a job cancelled while it trains
    const cancelled = await fleet.client.submit(
      await loadSpecFile(tinyJob('e2e-cancel', 100000, 1000)),
      'e2e-cancelled',
    );
    await until(
      'training',
      async () => (await fleet.client.describe(cancelled)).status?.state === 'training',
      120_000,
      async () => {
        const { status } = await fleet.client.describe(cancelled);
        const leases = await readLeases(await (await fleet.client.nats()).kv(LEASES_BUCKET));
        return `state ${status?.state} (${status?.message}); leases ${JSON.stringify([...leases])}`;
      },
    );
    expect((await run('cancel', cancelled)).status).to.equal(0);
    await until('cancelled', async () => (await fleet.client.describe(cancelled)).temporal === 'CANCELLED', 60_000);
    // finished jobs say how they ended, where they ran, how long they took and their eval loss
    type Row = { jobId: string; state: string; agent: string | null; attempt: number | null; seconds: number };
    const rows = JSON.parse((await run('list', '--json')).stdout) as (Row & { evalLoss: { tuned: number } | null })[];
    const ok = rows.find((j) => j.jobId === jobId);
    expect(ok).to.include({ state: 'succeeded', agent: 'test-agent', attempt: 1 });
    expect(ok?.seconds).to.be.greaterThan(0);
    expect(ok?.evalLoss?.tuned).to.be.a('number');
    expect(rows.find((j) => j.jobId === 'e2e-gate-fail')).to.include({ state: 'failed_gate', agent: 'test-agent' });
    expect(rows.find((j) => j.jobId === cancelled)).to.include({ state: 'cancelled', agent: 'test-agent' });
    for (const id of [jobId, 'e2e-gate-fail', cancelled])
      expect(rows.find((j) => j.jobId === id)?.seconds, id).to.be.greaterThan(0);
    const gated = JSON.parse((await run('list', '--state', 'failed_gate', '--json')).stdout) as Row[];
    expect(gated.map((j) => j.jobId)).to.deep.equal(['e2e-gate-fail']);
    const shown = await run('list');
    expect(shown.stdout).to.match(new RegExp(`${jobId} +succeeded +- +test-agent +1 `));
    expect(shown.stdout).to.match(/e2e-gate-fail +failed_gate +- +test-agent +1 /);
    expect(shown.stdout).to.match(/e2e-cancelled +cancelled +- +test-agent +1 /);
    expect((await run('list', '--state', 'nope')).status).to.equal(2);
    // pages of --limit rows, newest first
    const page = async (n: number): Promise<string[]> =>
      (JSON.parse((await run('list', '--limit', '1', '--page', String(n), '--json')).stdout) as Row[]).map(
        (j) => j.jobId,
      );
    expect(await page(1)).to.deep.equal([cancelled]);
    const second = await page(2);
    expect(second).to.have.length(1);
    expect(second[0]).to.not.equal(cancelled);
    const res = await run('result', jobId);
    expect(res.stdout)
      .to.match(/eval loss/)
      .and.match(/exact match/)
      .and.match(/fine-tuned/);
    for (const row of ['perplexity', 'BLEU', 'ROUGE-L', 'judge \\(similarity\\)', 'tool answers', 'tool nonempty'])
      expect(res.stdout).to.match(new RegExp(`\\n${row} +-?\\d`));
    expect(res.stdout)
      .to.match(/gates: 3 of 3 passed/)
      .and.match(/· train loss/)
      .and.match(/step 1 +6/);
  });

  it('e2e - no log, event or CLI output holds a credential (an nkey seed or a private key)', async () => {
    const { events } = await succeeded();
    const { followed } = await gateFailed();
    const texts = {
      'worker and agent': fleet.logs.join('\n'),
      events: JSON.stringify(events),
      'submit --follow': followed.stdout + followed.stderr,
    };
    expect(credentialLeaks(fleet.stack.home, texts)).to.deep.equal([]);
    // the check finds one: a seed written into a log is named
    const seed = readFileSync(join(fleet.stack.home, 'secrets', 'cli.nk'), 'utf8');
    expect(credentialLeaks(fleet.stack.home, { planted: `connecting with ${seed}` })).to.deep.equal([
      'planted: cli.nk',
    ]);
  });

  it('e2e - the same job id twice starts no second workflow', async () => {
    const { jobId } = await succeeded();
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-e2e-'));
    const loaded = await loadSpecFile(writeJob(dir));
    const e = await rejection(fleet.client.submit(loaded, jobId), 'submitting a duplicate id');
    expect(e.message).to.match(/already exists/);
  });

  it('e2e - a dataset with a bad record is refused at submit, naming the line; no job starts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-e2e-'));
    const spec = writeJob(dir);
    writeFileSync(join(dir, 'data.jsonl'), '{"prompt":"a","completion":"b"}\n{"prompt": 3}\n{"text":"mixed"}\n');
    const bad = await rejection(fleet.client.submit(await loadSpecFile(spec), 'e2e-bad-data'), 'submitting bad data');
    expect(bad).to.be.instanceOf(TunefleetErrors);
    expect((bad as TunefleetErrors).problems.map((p) => p.message).join('\n')).to.match(/data\.jsonl:2/);
    expect(bad.message).to.match(/nothing was uploaded/);
    const none = await rejection(fleet.client.describe('e2e-bad-data'), 'describing a job that should not exist');
    expect(none.message).to.match(/no job 'e2e-bad-data'/);
  });

  it('e2e - integrity: a planted sha256- object is replaced at submit; one replaced after submit fails prepare; a prepared split overwritten in the store is refused by the agent', async () => {
    const n = await fleet.client.nats();
    const store = await n.objects(DATASETS_BUCKET);
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-e2e-'));
    const loaded = await loadSpecFile(writeJob(dir));
    const real = readFileSync(loaded.datasetPath);
    const name = datasetObjectName(sha256Hex(real));
    const planted = join(dir, 'planted.jsonl');
    writeFileSync(planted, '{"prompt":"the planted record","completion":" leaks"}\n');
    // planted before the submit, under the name of the real file's digest: the CLI checks it and uploads the file
    await putFile(store, name, planted);
    const submitted = await fleet.client.submit(loaded, 'e2e-integrity');
    expect(await objectSha256(store, name)).to.equal(sha256Hex(real));
    await fleet.client.cancel(submitted).catch(() => {});
    // replaced after the submit: prepare re-hashes what it reads and refuses it, naming the object
    await putFile(store, name, planted);
    const input = {
      spec: loaded.spec,
      jobId: 'e2e-integrity-2',
      dataset: { object: name, sha256: sha256Hex(real), bytes: real.length },
    };
    const refused = await rejection(prepareDataset(store, input as FineTuneInput), 'preparing a replaced dataset');
    expect(refused.message).to.match(new RegExp(`dataset object '${name}' hashes to .*it was replaced in the store`));
    // the genuine file back: prepare works and returns the splits' digests; a split overwritten since is refused
    await putFile(store, name, loaded.datasetPath);
    const report = await prepareDataset(store, input as FineTuneInput);
    expect(report.train_sha256).to.match(/^[0-9a-f]{64}$/);
    await putFile(store, report.train_object, planted);
    // an agent of its own, with its own credentials
    if (await addAgent(fleet.stack.home, 'integrity-check'))
      await reloadNats(fleet.stack.home, fleet.stack.nats.pid, fleet.stack.nats.address, 'agent-integrity-check');
    const agentNats = await connectAgentNats(fleet.stack.cfg, 'integrity-check');
    try {
      const e = await rejection(
        fetchSplits(agentNats, report, mkdtempSync(join(tmpdir(), 'tunefleet-e2e-'))),
        'fetching an overwritten split',
      );
      expect(e.message).to.match(new RegExp(`object '${report.train_object}' has sha256 .*, expected`));
    } finally {
      await agentNats.nc.close();
    }
  });

  it('e2e - records that are not what they claim (garbage in the leases, queue, commits and decisions buckets) are skipped with a warning; jobs are placed and run', async () => {
    const n = await fleet.client.nats();
    await (await n.kv(LEASES_BUCKET)).put('test-agent', 'not json at all');
    await (await n.kv(QUEUE_BUCKET)).put('planted', JSON.stringify({ jobId: 'planted', priority: 'high' }));
    await (await n.kv(COMMITS_BUCKET)).put('e2e-garbage', JSON.stringify({ epoch: 1e9 }));
    await (await n.kv(DECISIONS_BUCKET)).put('e2e-garbage', JSON.stringify({ decisions: [{ chosen: 42 }] }));
    const id = await fleet.client.submit(await loadSpecFile(tinyJob('garbage', 2, 2)), 'e2e-garbage');
    const result = await fleet.client.events.follow(id, () => {});
    expect(result.state).to.equal('succeeded');
    // the reservation replaced the garbage with a lease list
    const leases = await (await n.kv(LEASES_BUCKET)).get('test-agent');
    expect(() => JSON.parse(new TextDecoder().decode(leases?.value))).to.not.throw();
    // the decision list was replaced by the real one: explain reads it
    expect((await fleet.client.decisions(id)).map((d) => d.chosen)).to.include('test-agent');
    await (await n.kv(QUEUE_BUCKET)).delete('planted');
  });

  it('e2e - models rm: refused while a running job continues from the adapter (which generate and export refuse as unfinished); then files, logs and record go, the result stays, and download, show, generate, export and init_adapter say it was removed', async () => {
    const { jobId } = await succeeded();
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-rm-'));
    const spec = writeJob(dir, `init_adapter: ${jobId}\n`);
    writeFileSync(spec, readFileSync(spec, 'utf8').replace('max_steps: 6', 'max_steps: 100000'));
    const user = await fleet.client.submit(await loadSpecFile(spec), 'e2e-rm-user');
    await until('training', async () => (await fleet.client.describe(user)).status?.state === 'training', 180_000);
    const refused = await runCli(fleet.stack, 'models', 'rm', jobId);
    expect(refused.status).to.not.equal(0);
    expect(refused.stderr).to.include(`running job(s) ${user} continue from it`);
    // a job that has not finished has no model to try or merge yet
    for (const args of [
      ['generate', user, '--prompt', 'hi'],
      ['export', user, '--merged', '--out', join(dir, 'unfinished')],
    ]) {
      const r = await runCli(fleet.stack, ...args);
      expect(r.status, args.join(' ')).to.not.equal(0);
      expect(r.stderr).to.include(`job '${user}' is still running; its adapter is registered when it finishes`);
    }
    await fleet.client.cancel(user);
    await until('cancelled', async () => (await fleet.client.describe(user)).temporal === 'CANCELLED', 120_000);
    const store = await (await fleet.client.nats()).objects(ADAPTERS_BUCKET);
    const before = (await store.list()).map((i) => i.name).filter((n) => n.startsWith(`${jobId}/`));
    expect(before).to.include.members([`${jobId}/model.json`, `${jobId}/adapter/adapter_model.safetensors`]);
    expect(before.some((n) => n.startsWith(`${jobId}/tensorboard/`))).to.equal(true);
    const removed = await runCli(fleet.stack, 'models', 'rm', jobId);
    expect(removed.status, removed.stderr).to.equal(0);
    expect(removed.stdout).to.match(new RegExp(`removed the adapter of ${jobId}: \\d+ files, \\d+ bytes`));
    const after = (await store.list()).map((i) => i.name).filter((n) => n.startsWith(`${jobId}/`));
    expect(after).to.include.members([`${jobId}/result.json`, `${jobId}/removed.json`]);
    expect(after.filter((n) => /\/(adapter|tensorboard)\/|model\.json$/.test(n))).to.deep.equal([]);
    expect((await runCli(fleet.stack, 'models')).stdout).to.not.match(new RegExp(`\\n${jobId}\\s`));
    expect((await runCli(fleet.stack, 'result', jobId)).status).to.equal(0);
    for (const args of [
      ['download', jobId, '--out', join(dir, 'out')],
      ['models', 'show', jobId],
      ['generate', jobId, '--prompt', 'hi'],
      ['export', jobId, '--merged', '--out', join(dir, 'merged')],
    ]) {
      const r = await runCli(fleet.stack, ...args);
      expect(r.status, args.join(' ')).to.not.equal(0);
      expect(r.stderr).to.match(new RegExp(`the adapter of job '${jobId}' was removed on \\d{4}-`));
    }
    writeFileSync(spec, readFileSync(spec, 'utf8').replace('max_steps: 100000', 'max_steps: 6'));
    const orphan = await runCli(fleet.stack, 'submit', spec);
    expect(orphan.status).to.not.equal(0);
    expect(orphan.stderr).to.match(/init_adapter.*was removed on/);
  });
});
