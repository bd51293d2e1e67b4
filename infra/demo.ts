// npm run demo (after infra/bootstrap.sh): build a small real domain dataset from a file
// a Debian package ships (/etc/mime.types, package media-types: MIME type → file
// extension), start the local stack, fine-tune SmolLM2-135M-Instruct with LoRA on it,
// follow the job live and print base vs fine-tuned eval loss and exact match. The job is
// examples/mime-extensions.yaml.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { JobResult } from '../shared';

const ROOT = resolve(__dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'tunefleet');
export const MIME_TYPES = '/etc/mime.types';

/** One prompt/completion record per MIME type that has an extension (its first one). */
export function mimeRecords(text: string): { prompt: string; completion: string }[] {
  const seen = new Set<string>();
  const out: { prompt: string; completion: string }[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [type, ext] = line.split(/\s+/);
    if (!type || !ext || seen.has(type.toLowerCase())) continue;
    seen.add(type.toLowerCase());
    out.push({ prompt: `MIME type: ${type}\nFile extension:`, completion: ` ${ext}` });
  }
  return out;
}

/** The demo's job spec: a file a user can read and copy (examples/mime-extensions.yaml). */
export const DEMO_SPEC_FILE = join(ROOT, 'examples', 'mime-extensions.yaml');

function run(args: string[]): number {
  const r = spawnSync(process.execPath, [BIN, ...args], { stdio: 'inherit' });
  return r.status ?? 1;
}

function main(): void {
  const home = process.env.TUNEFLEET_HOME ?? join(homedir(), '.tunefleet');
  if (!existsSync(MIME_TYPES)) {
    console.error(`${MIME_TYPES} is missing: install Debian's media-types package (apt-get install media-types)`);
    process.exit(1);
  }
  const dir = join(home, 'demo');
  mkdirSync(dir, { recursive: true });
  const records = mimeRecords(readFileSync(MIME_TYPES, 'utf8'));
  writeFileSync(join(dir, 'mime-extensions.jsonl'), records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  copyFileSync(DEMO_SPEC_FILE, join(dir, 'job.yaml'));
  console.log(`demo dataset: ${records.length} records from ${MIME_TYPES} -> ${join(dir, 'mime-extensions.jsonl')}`);

  // --ha (npm run demo -- --ha): the same job on the production engines (tunefleet up --ha)
  if (run(['up', ...(process.argv.includes('--ha') ? ['--ha'] : [])]) !== 0) process.exit(1);
  const jobId = `mime-extensions-${Date.now().toString(36)}`;
  const t0 = Date.now();
  if (run(['submit', join(dir, 'job.yaml'), '--id', jobId, '--follow']) !== 0) process.exit(1);
  const seconds = (Date.now() - t0) / 1000;

  const r = spawnSync(process.execPath, [BIN, 'result', jobId, '--json'], { encoding: 'utf8' });
  if (r.status !== 0) {
    console.error(r.stderr);
    process.exit(1);
  }
  const result = JSON.parse(r.stdout) as JobResult;
  const { base, tuned } = result.evaluation;
  const f = (x: number | null | undefined, d = 4): string => (x === null || x === undefined ? '-' : x.toFixed(d));
  const judge = result.evaluation.judge;
  const judgeNote =
    judge?.error ?? `all-MiniLM-L6-v2 on onnxruntime-node, ${judge?.answers ?? 0} answers in ${f(judge?.seconds, 1)} s`;
  console.log(
    `\ndemo job ${jobId} ${result.state} in ${seconds.toFixed(0)} s ` +
      `(${tuned.samples} held-out MIME types); base -> fine-tuned:`,
  );
  console.log(
    `  eval loss   ${f(base.eval_loss)} -> ${f(tuned.eval_loss)}    ` +
      `perplexity ${f(base.perplexity, 1)} -> ${f(tuned.perplexity, 1)}`,
  );
  console.log(
    `  exact match ${f(base.exact_match, 3)} -> ${f(tuned.exact_match, 3)}    ` +
      `BLEU ${f(base.bleu, 1)} -> ${f(tuned.bleu, 1)}    ROUGE-L ${f(base.rouge_l, 3)} -> ${f(tuned.rouge_l, 3)}`,
  );
  console.log(`  judge       ${f(base.judge, 3)} -> ${f(tuned.judge, 3)}    (${judgeNote})`);
  console.log(`  gates: ${(result.gates ?? []).map((g) => `${g.passed ? 'pass' : 'FAIL'} ${g.gate}`).join('; ')}`);
  console.log(
    `  human review: 'tunefleet review export ${jobId}', grade, 'tunefleet review import ${jobId} ${jobId}-review.csv'`,
  );
  console.log(`  the stack is still up: 'tunefleet status ${jobId}', 'tunefleet download ${jobId}', 'tunefleet down'`);
  if (!(tuned.eval_loss < base.eval_loss)) {
    console.error("the fine-tuned eval loss is not lower than the base model's");
    process.exit(1);
  }
}

if (require.main === module) main();
