// Bounded memory: prepare (judge + write both splits, near duplicates on) a 2 GiB JSONL
// file of ~2 KiB text records in a fresh process, and report its peak RSS (goal < 500 MB).
//   npm run bench:prepare-2gb   (appends to test/bench/RESULTS.md; needs ~5 GiB of free disk)
import { createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { recordResult } from './results';
import { once } from 'node:events';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { datasetSchema } from '../../shared';
import { analyse, fileSource } from '../../scheduler/prepare';

const TARGET = Number(process.env.BENCH_BYTES ?? 2 * 2 ** 30);

async function generate(path: string): Promise<number> {
  const out = createWriteStream(path);
  let x = 11;
  const rnd = (): number => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0);
  const vocab = Array.from({ length: 20000 }, () =>
    Array.from({ length: 7 }, () => String.fromCharCode(97 + (rnd() % 26))).join(''),
  );
  let bytes = 0;
  let n = 0;
  while (bytes < TARGET) {
    const line =
      JSON.stringify({ text: Array.from({ length: 250 }, () => vocab[rnd() % vocab.length]).join(' ') }) + '\n';
    bytes += Buffer.byteLength(line);
    n += 1;
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return n;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tunefleet-2gb-'));
  try {
    const file = join(dir, 'big.jsonl');
    const t0 = Date.now();
    const n = await generate(file);
    const gen = (Date.now() - t0) / 1000;
    const rssBefore = process.resourceUsage().maxRSS / 1024;
    const t1 = Date.now();
    const { report, write } = await analyse({
      spec: { dataset: datasetSchema.parse({ path: file }) },
      main: { source: fileSource(file), label: 'big.jsonl' },
    });
    const written = await write(join(dir, 'train.jsonl'), join(dir, 'eval.jsonl'));
    const secs = (Date.now() - t1) / 1000;
    const peak = process.resourceUsage().maxRSS / 1024;
    const size = statSync(file).size / 2 ** 30;
    const table = [
      `### Prepare a ${size.toFixed(2)} GiB file, ${new Date().toISOString().slice(0, 10)} — ${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, node ${process.version}`,
      '',
      `${n.toLocaleString('en-US')} text records of ~2 KiB, near duplicates on; judge + write both splits in one process (generated in ${gen.toFixed(0)} s by the same process before).`,
      '',
      '| records | train / eval | dropped | seconds | records/s | peak RSS MiB | goal |',
      '|---|---|---|---|---|---|---|',
      `| ${report.records_total} | ${written.train} / ${written.eval} | ${JSON.stringify(report.dropped)} | ${secs.toFixed(0)} | ${(report.records_total / secs).toFixed(0)} | ${peak.toFixed(0)} (${rssBefore.toFixed(0)} after generating) | < 500 MB: ${peak * 2 ** 20 < 500e6 ? 'met' : 'not met'} |`,
    ].join('\n');
    console.log(table);
    recordResult(table);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) void main();
