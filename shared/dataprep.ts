// Data preparation, the pure part: cleaning and normalisation rules, exact and near
// duplicate detection (MinHash + LSH, shared/dedup.ts), and the report's counters. The prepare activity
// and `tunefleet data check` stream records through one Pipeline; both give the same
// report for the same file and options.
import { checkLine, detectFormat, type DatasetFormat } from './dataset';
import { HashSet64, NearDupIndex, hash64, minhash, shingles } from './dedup';

export interface CleanOptions {
  nfc: boolean;
  whitespace: boolean;
  control_chars: boolean;
  strip_html: boolean;
  min_chars: number;
  max_chars: number;
}

export interface DedupOptions {
  exact: boolean;
  near: boolean;
  /** Jaccard similarity of character 5-gram shingles at or above which a record is a near duplicate */
  threshold: number;
}

export const RULES = [
  'invalid_utf8',
  'invalid_json',
  'invalid_record',
  'mixed_format',
  'empty',
  'too_short',
  'too_long',
  'exact_duplicate',
  'near_duplicate',
  'eval_leakage',
] as const;
export type Rule = (typeof RULES)[number];

// --- cleaning ---------------------------------------------------------------------------

const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u200B-\u200D\u2060\uFEFF]/g;
const HTML_TAG = /<\/?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?\/?>/g;
const ENTITIES: Record<string, string> = {
  '&amp;': '&',
  '&lt;': '<',
  '&gt;': '>',
  '&quot;': '"',
  '&#39;': "'",
  '&nbsp;': ' ',
};

export function cleanText(s: string, o: CleanOptions): string {
  let t = s;
  if (o.nfc) t = t.normalize('NFC');
  if (o.control_chars) t = t.replace(/\r\n?/g, '\n').replace(CONTROL, '');
  if (o.strip_html) t = t.replace(HTML_TAG, '').replace(/&(amp|lt|gt|quot|#39|nbsp);/g, (m) => ENTITIES[m] ?? m);
  if (o.whitespace) {
    t = t
      .replace(/[ \t\u00A0\u2000-\u200A\u3000]+/g, ' ')
      .replace(/ *\n */g, '\n')
      .replace(/\n{3,}/g, '\n\n')
      .trim();
  }
  return t;
}

type Rec = Record<string, unknown>;

/** Clean every text field of a record (its format's fields only). */
export function cleanRecord(rec: Rec, format: DatasetFormat, o: CleanOptions): Rec {
  if (format === 'text') return { text: cleanText(rec.text as string, o) };
  if (format === 'prompt_completion') {
    // a completion's leading space is part of the answer's tokenisation: keep one
    const c = rec.completion as string;
    const lead = /^\s/.test(c) ? ' ' : '';
    return { prompt: cleanText(rec.prompt as string, o), completion: lead + cleanText(c, o) };
  }
  const msgs = rec.messages as { role: string; content: string }[];
  return { messages: msgs.map((m) => ({ role: m.role, content: cleanText(m.content, o) })) };
}

/** The text a record is judged by for length and duplicates. */
export function contentOf(rec: Rec, format: DatasetFormat): string {
  if (format === 'text') return rec.text as string;
  if (format === 'prompt_completion') return `${rec.prompt as string}\u0001${rec.completion as string}`;
  return (rec.messages as { role: string; content: string }[]).map((m) => `${m.role}\u0002${m.content}`).join('\u0001');
}

/** A record is empty when any field a model must learn from is empty after cleaning. */
export function isEmpty(rec: Rec, format: DatasetFormat): boolean {
  if (format === 'text') return (rec.text as string).trim() === '';
  if (format === 'prompt_completion')
    return (rec.prompt as string).trim() === '' || (rec.completion as string).trim() === '';
  const msgs = rec.messages as { role: string; content: string }[];
  return (
    msgs.some((m) => m.role === 'assistant' && m.content.trim() === '') || msgs.every((m) => m.content.trim() === '')
  );
}

// --- the per-record pipeline -------------------------------------------------------------

export interface PrepOptions {
  clean: CleanOptions;
  dedup: DedupOptions;
}

export type Verdict = { keep: true; record: Rec; format: DatasetFormat } | { keep: false; rule: Rule; message: string };

export class Pipeline {
  format: DatasetFormat | null = null;
  private readonly exact = new HashSet64();
  private readonly near = new NearDupIndex();

  constructor(private readonly o: PrepOptions) {}

  /**
   * Judge one line. `register` false checks against what is kept without adding to it
   * (an eval file checked for leakage against the training set).
   */
  judge(line: Uint8Array, register = true): Verdict {
    const c = checkLine(line);
    if (!c.ok) {
      const rule: Rule =
        c.message === 'not valid UTF-8'
          ? 'invalid_utf8'
          : c.message.startsWith('not JSON')
            ? 'invalid_json'
            : 'invalid_record';
      return { keep: false, rule, message: c.message };
    }
    if (this.format && c.format !== this.format)
      return {
        keep: false,
        rule: 'mixed_format',
        message: `a ${c.format} record in a ${this.format} file (one format per file)`,
      };
    const format = c.format;
    const rec = cleanRecord(c.record as Rec, format, this.o.clean);
    if (isEmpty(rec, format)) return { keep: false, rule: 'empty', message: 'empty after cleaning' };
    const content = contentOf(rec, format);
    if (content.length < this.o.clean.min_chars)
      return {
        keep: false,
        rule: 'too_short',
        message: `${content.length} characters, fewer than min_chars ${this.o.clean.min_chars}`,
      };
    if (content.length > this.o.clean.max_chars)
      return {
        keep: false,
        rule: 'too_long',
        message: `${content.length} characters, more than max_chars ${this.o.clean.max_chars}`,
      };
    if (this.o.dedup.exact) {
      const [h, l] = hash64(content);
      if (register ? !this.exact.add(h, l) : this.exact.has(h, l))
        return {
          keep: false,
          rule: register ? 'exact_duplicate' : 'eval_leakage',
          message: 'the same content as an earlier record',
        };
    }
    if (this.o.dedup.near) {
      const sig = minhash(shingles(content));
      const hit = this.near.find(sig, this.o.dedup.threshold);
      if (hit >= 0)
        return {
          keep: false,
          rule: register ? 'near_duplicate' : 'eval_leakage',
          message: `near duplicate (Jaccard >= ${this.o.dedup.threshold}) of an earlier record`,
        };
      if (register) this.near.add(sig);
    }
    if (register) this.format ??= format;
    return { keep: true, record: rec, format };
  }
}

export { detectFormat };
