// Human review: `tunefleet review export` writes a seeded sample of a job's evaluation
// generations (prompt, reference, base output, fine-tuned output) as CSV or JSONL with
// empty grade columns; people fill in base_grade and tuned_grade (whole numbers 1-5, or
// leave a row empty) and `tunefleet review import` attaches the grades to the result.
// Import checks every row against the stored generations before anything is written.
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import { ErrorCode, TunefleetError, TunefleetErrors, seededRandom, type ReviewSummary } from '../../shared';

export interface OutputRow {
  prompt: string;
  reference: string;
  base: string;
  tuned: string;
}
export type ReviewFormat = 'csv' | 'jsonl';
export const REVIEW_COLUMNS = [
  'id',
  'prompt',
  'reference',
  'base_output',
  'tuned_output',
  'base_grade',
  'tuned_grade',
  'comment',
] as const;

export interface GradedRow {
  id: number;
  base_grade: number;
  tuned_grade: number;
  comment: string;
}

/** `n` rows picked with a seeded shuffle, in id order. */
export function sampleRows(rows: OutputRow[], n: number, seed: number): { id: number; row: OutputRow }[] {
  const ids = rows.map((_, i) => i);
  const rand = seededRandom(seed);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [ids[i], ids[j]] = [ids[j] as number, ids[i] as number];
  }
  return ids
    .slice(0, n)
    .sort((a, b) => a - b)
    .map((id) => ({ id, row: rows[id] as OutputRow }));
}

export function writeReview(sample: { id: number; row: OutputRow }[], format: ReviewFormat): string {
  const records = sample.map(({ id, row }) => ({
    id,
    prompt: row.prompt,
    reference: row.reference,
    base_output: row.base,
    tuned_output: row.tuned,
    base_grade: '',
    tuned_grade: '',
    comment: '',
  }));
  if (format === 'jsonl') return records.map((r) => JSON.stringify(r)).join('\n') + '\n';
  return stringify(records, { header: true, columns: [...REVIEW_COLUMNS] });
}

/**
 * Parse a filled-in review file against the stored generations. Rows with both grades
 * empty are skipped (not graded); anything else wrong is an error naming the line.
 */
export function readReview(text: string, format: ReviewFormat, file: string, stored: OutputRow[]): GradedRow[] {
  const problems: TunefleetError[] = [];
  const bad = (line: number, msg: string): void =>
    void problems.push(new TunefleetError(ErrorCode.SpecInvalid, msg, { file, line }));
  let records: { line: number; r: Record<string, unknown> }[] = [];
  if (format === 'jsonl') {
    text.split('\n').forEach((l, i) => {
      if (!l.trim()) return;
      try {
        const r = JSON.parse(l) as unknown;
        if (typeof r !== 'object' || r === null || Array.isArray(r)) bad(i + 1, 'a row must be a JSON object');
        else records.push({ line: i + 1, r: r as Record<string, unknown> });
      } catch (e) {
        bad(i + 1, `not JSON (${(e as Error).message})`);
      }
    });
  } else {
    try {
      const rows = parse(text, { columns: true, skip_empty_lines: true, bom: true, info: true }) as {
        record: Record<string, unknown>;
        info: { lines: number };
      }[];
      records = rows.map((x) => ({ line: x.info.lines, r: x.record }));
    } catch (e) {
      throw new TunefleetError(ErrorCode.SpecInvalid, `not a CSV file this tool can read: ${(e as Error).message}`, {
        file,
      });
    }
    const header = text.split('\n', 1)[0] ?? '';
    for (const c of ['id', 'base_grade', 'tuned_grade'])
      if (!header.includes(c))
        throw new TunefleetError(
          ErrorCode.SpecInvalid,
          `the header has no '${c}' column (export a file with 'tunefleet review export')`,
          { file, line: 1 },
        );
  }
  const grade = (line: number, r: Record<string, unknown>, k: string): number | null => {
    const v = r[k];
    if (v === undefined || v === null || String(v).trim() === '') return null;
    const n = Number(String(v).trim());
    if (!Number.isInteger(n) || n < 1 || n > 5) {
      bad(line, `${k} ${JSON.stringify(v)} is not a whole number from 1 to 5`);
      return null;
    }
    return n;
  };
  const seen = new Set<number>();
  const out: GradedRow[] = [];
  for (const { line, r } of records) {
    const id = Number(r.id);
    if (!Number.isInteger(id) || id < 0 || id >= stored.length) {
      bad(line, `id ${JSON.stringify(r.id)} is not one of this job's ${stored.length} evaluation answers`);
      continue;
    }
    if (seen.has(id)) {
      bad(line, `id ${id} appears twice`);
      continue;
    }
    seen.add(id);
    if (r.prompt !== undefined && String(r.prompt) !== (stored[id] as OutputRow).prompt) {
      bad(line, `id ${id}: the prompt differs from the stored one (a file from another job or an edited prompt)`);
      continue;
    }
    const [b, t] = [grade(line, r, 'base_grade'), grade(line, r, 'tuned_grade')];
    const emptyB = r.base_grade === undefined || String(r.base_grade ?? '').trim() === '';
    const emptyT = r.tuned_grade === undefined || String(r.tuned_grade ?? '').trim() === '';
    if (emptyB && emptyT) continue;
    if (emptyB !== emptyT) {
      bad(line, `id ${id}: grade both answers or neither`);
      continue;
    }
    if (b !== null && t !== null) out.push({ id, base_grade: b, tuned_grade: t, comment: String(r.comment ?? '') });
  }
  if (problems.length)
    throw new TunefleetErrors(
      ErrorCode.SpecInvalid,
      problems.slice(0, 20),
      `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}; nothing was imported`,
    );
  if (out.length === 0)
    throw new TunefleetError(
      ErrorCode.SpecInvalid,
      'no graded row (fill in base_grade and tuned_grade, 1-5); nothing was imported',
      { file },
    );
  return out;
}

export function summarise(rows: GradedRow[], file: string, at: Date): ReviewSummary {
  const mean = (k: 'base_grade' | 'tuned_grade'): number => rows.reduce((s, r) => s + r[k], 0) / rows.length;
  return {
    graded: rows.length,
    base_mean: mean('base_grade'),
    tuned_mean: mean('tuned_grade'),
    tuned_better: rows.filter((r) => r.tuned_grade > r.base_grade).length / rows.length,
    tuned_worse: rows.filter((r) => r.tuned_grade < r.base_grade).length / rows.length,
    file,
    imported_at: at.toISOString(),
  };
}
