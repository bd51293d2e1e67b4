import { expect } from 'chai';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanText, datasetSchema, minhash, shingles, similarity, TunefleetErrors, type JobSpec } from '../../shared';
import { analyse, fileSource } from '../../scheduler/prepare';
import { rejection } from '../harness/expect';

/** Deterministic random words: distinct records share almost no 5-grams. */
function words(seed: number, n: number): string {
  let x = seed * 2654435761 + 1;
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    let w = '';
    for (let j = 0; j < 6; j++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      w += String.fromCharCode(97 + ((x >>> 16) % 26));
    }
    out.push(w);
  }
  return out.join(' ');
}

const dataset = (over: Record<string, unknown> = {}): { spec: Pick<JobSpec, 'dataset'> } => ({
  spec: { dataset: datasetSchema.parse({ path: 'x.jsonl', ...over }) },
});

describe('prepare - counts per rule', () => {
  it('prepare - known numbers of each fault give exactly those counts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'prep-'));
    const lines: Buffer[] = [];
    const base = Array.from({ length: 200 }, (_, i) => words(i + 1, 60));
    for (const t of base) lines.push(Buffer.from(JSON.stringify({ text: t })));
    for (let i = 0; i < 7; i++) lines.push(Buffer.from(JSON.stringify({ text: base[i * 3] }))); // exact duplicates
    // exact after cleaning: extra spaces and a zero-width space
    lines.push(Buffer.from(JSON.stringify({ text: `  ${(base[50] as string).replace(' ', '   ')}\u200b ` })));
    for (let i = 0; i < 5; i++) {
      const w = (base[100 + i] as string).split(' ');
      w[10] = 'zzzzzz';
      lines.push(Buffer.from(JSON.stringify({ text: w.join(' ') }))); // near duplicates: one word of 60 changed
    }
    for (let i = 0; i < 3; i++)
      lines.push(Buffer.concat([Buffer.from('{"text":"bad '), Buffer.from([0xff, 0xfe, 0x80 + i]), Buffer.from('"}')]));
    for (let i = 0; i < 4; i++) lines.push(Buffer.from(`{"text": "unterminated ${i}`));
    for (let i = 0; i < 6; i++) lines.push(Buffer.from(JSON.stringify({ text: i % 2 ? '   ' : '\u200b\n\t' })));
    for (let i = 0; i < 2; i++) lines.push(Buffer.from(JSON.stringify({ text: words(1000 + i, 2000) })));
    lines.push(Buffer.from(''));
    writeFileSync(join(dir, 'd.jsonl'), Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])));

    const { report, write } = await analyse({
      ...dataset({ policy: 'lenient', clean: { max_chars: 5000 } }),
      main: { source: fileSource(join(dir, 'd.jsonl')), label: 'd.jsonl' },
    });
    expect(report.dropped).to.deep.equal({
      invalid_utf8: 3,
      invalid_json: 4,
      empty: 6,
      too_long: 2,
      exact_duplicate: 8,
      near_duplicate: 5,
    });
    expect(report.records_total).to.equal(200 + 8 + 5 + 3 + 4 + 6 + 2);
    expect(report.records_invalid).to.equal(7);
    expect(report.train_records + report.eval_records).to.equal(200);
    expect(report.eval_records).to.equal(20);
    expect(report.examples.invalid_utf8?.[0]).to.include({ file: 'd.jsonl', line: 214 }); // 200 + 8 exact + 5 near lines before it
    const w = await write(join(dir, 'train.jsonl'), join(dir, 'eval.jsonl'));
    expect(w).to.deep.equal({ train: 180, eval: 20 });
    const written = readFileSync(join(dir, 'train.jsonl'), 'utf8').trim().split('\n');
    expect(written).to.have.length(180);
    const evalLines = new Set(readFileSync(join(dir, 'eval.jsonl'), 'utf8').trim().split('\n'));
    for (const l of written) expect(evalLines.has(l)).to.equal(false);
  });

  it('prepare - strict policy fails on malformed records, listing them with line numbers', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'prep-'));
    writeFileSync(join(dir, 'd.jsonl'), '{"text":"one"}\n{"text":\n{"prompt":"p","completion":"c"}\n{"text":"two"}\n');
    const e = await rejection(
      analyse({ ...dataset(), main: { source: fileSource(join(dir, 'd.jsonl')), label: 'd.jsonl' } }),
      'malformed records under policy strict',
    );
    expect(e).to.be.instanceOf(TunefleetErrors);
    expect(e.message)
      .to.match(/d\.jsonl:2: not JSON/)
      .and.match(/d\.jsonl:3: a prompt_completion record in a text file/)
      .and.match(/lenient/);
  });

  it('prepare - eval records that repeat or nearly repeat training records are removed as leakage', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'prep-'));
    const train = Array.from({ length: 30 }, (_, i) => words(i + 1, 40));
    writeFileSync(join(dir, 't.jsonl'), train.map((t) => JSON.stringify({ text: t })).join('\n') + '\n');
    const evals = [train[3], train[4]?.replace(/^\w+/, 'qqqqqq'), words(500, 40), words(501, 40)];
    writeFileSync(join(dir, 'e.jsonl'), evals.map((t) => JSON.stringify({ text: t })).join('\n') + '\n');
    const { report } = await analyse({
      ...dataset({ eval_path: 'e.jsonl' }),
      main: { source: fileSource(join(dir, 't.jsonl')), label: 't.jsonl' },
      eval: { source: fileSource(join(dir, 'e.jsonl')), label: 'e.jsonl' },
    });
    expect(report.dropped).to.deep.equal({ eval_leakage: 2 });
    expect(report.train_records).to.equal(30);
    expect(report.eval_records).to.equal(2);
  });

  it('prepare - no dedup keeps duplicates; a higher threshold keeps near ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'prep-'));
    const a = words(1, 60);
    const near = a
      .split(' ')
      .map((w, i) => (i % 30 === 0 ? 'zzzzzz' : w))
      .join(' '); // 2 of 60 words: Jaccard about 0.9
    writeFileSync(join(dir, 'd.jsonl'), [a, a, near, words(2, 60)].map((t) => JSON.stringify({ text: t })).join('\n'));
    const off = await analyse({
      ...dataset({ dedup: { exact: false, near: false } }),
      main: { source: fileSource(join(dir, 'd.jsonl')), label: 'd' },
    });
    expect(off.report.dropped).to.deep.equal({});
    const strictSim = await analyse({
      ...dataset({ dedup: { threshold: 0.99 } }),
      main: { source: fileSource(join(dir, 'd.jsonl')), label: 'd' },
    });
    expect(strictSim.report.dropped).to.deep.equal({ exact_duplicate: 1 });
    const loose = await analyse({ ...dataset(), main: { source: fileSource(join(dir, 'd.jsonl')), label: 'd' } });
    expect(loose.report.dropped).to.deep.equal({ exact_duplicate: 1, near_duplicate: 1 });
  });
});

describe('prepare - cleaning rules', () => {
  const all = { nfc: true, whitespace: true, control_chars: true, strip_html: true, min_chars: 1, max_chars: 100 };
  it('prepare - NFC, control characters, whitespace and HTML', () => {
    expect(cleanText('Cafe\u0301', all)).to.equal('Caf\u00e9');
    expect(cleanText('a\u0000b\u200bc\r\nd', all)).to.equal('abc\nd');
    expect(cleanText('  a \t  b \n\n\n\n c  ', all)).to.equal('a b\n\nc');
    expect(cleanText('<p>Fish &amp; chips</p><br/>', all)).to.equal('Fish & chips');
    expect(cleanText('<p>kept</p>', { ...all, strip_html: false })).to.equal('<p>kept</p>');
  });

  it('prepare - MinHash estimates Jaccard similarity', () => {
    const a = words(7, 80);
    const b = a
      .split(' ')
      .map((w, i) => (i < 4 ? 'zzzzzz' : w))
      .join(' ');
    const s = similarity(minhash(shingles(a)), minhash(shingles(b)));
    expect(s).to.be.within(0.8, 1);
    expect(similarity(minhash(shingles(a)), minhash(shingles(words(8, 80))))).to.be.below(0.1);
  });
});

describe('prepare - augmentation', () => {
  it('prepare - drop_system_prompt adds system-less copies to the training split only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'prep-'));
    const recs = Array.from({ length: 20 }, (_, i) => ({
      messages: [
        ...(i % 2 === 0 ? [{ role: 'system', content: 'You answer briefly.' }] : []),
        { role: 'user', content: words(i + 1, 12) },
        { role: 'assistant', content: words(i + 100, 3) },
      ],
    }));
    writeFileSync(join(dir, 'c.jsonl'), recs.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const { report, write } = await analyse({
      ...dataset({ eval_fraction: 0.2, augment: { drop_system_prompt: true } }),
      main: { source: fileSource(join(dir, 'c.jsonl')), label: 'c.jsonl' },
    });
    const w = await write(join(dir, 'train.jsonl'), join(dir, 'eval.jsonl'));
    const train = readFileSync(join(dir, 'train.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { messages: { role: string }[] });
    const evalRecs = readFileSync(join(dir, 'eval.jsonl'), 'utf8').trim().split('\n');
    expect(evalRecs).to.have.length(4);
    const withSystem = train.filter((r) => r.messages.some((m) => m.role === 'system')).length;
    expect(report.augmented).to.equal(withSystem);
    expect(train).to.have.length(16 + withSystem);
    expect(report.train_records).to.equal(train.length);
    expect(w.train).to.equal(train.length);
  });
});
