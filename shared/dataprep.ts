// Data preparation, the pure part: cleaning and normalisation rules, exact and near
// duplicate detection (MinHash + LSH), and the report's counters. The prepare activity
// and `tunefleet data check` stream records through one Pipeline; both give the same
// report for the same file and options.
import { createHash } from 'node:crypto';
import { checkLine, detectFormat, type DatasetFormat } from './dataset';

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

// --- exact duplicates: a set of 64-bit hashes in typed arrays (16 bytes per record) ---

export class HashSet64 {
  private hi = new Uint32Array(1 << 12);
  private lo = new Uint32Array(1 << 12);
  private used = new Uint8Array(1 << 12);
  size = 0;

  /** true when added, false when it was there already */
  add(h: number, l: number): boolean {
    if ((this.size + 1) * 4 > this.used.length * 3) this.grow(); // load factor up to 0.75
    const mask = this.used.length - 1;
    let i = (l ^ Math.imul(h, 0x9e3779b1)) & mask;
    while (this.used[i]) {
      if (this.hi[i] === h && this.lo[i] === l) return false;
      i = (i + 1) & mask;
    }
    this.used[i] = 1;
    this.hi[i] = h;
    this.lo[i] = l;
    this.size += 1;
    return true;
  }

  has(h: number, l: number): boolean {
    const mask = this.used.length - 1;
    let i = (l ^ Math.imul(h, 0x9e3779b1)) & mask;
    while (this.used[i]) {
      if (this.hi[i] === h && this.lo[i] === l) return true;
      i = (i + 1) & mask;
    }
    return false;
  }

  private grow(): void {
    const { hi, lo, used } = this;
    const n = used.length * 2;
    this.hi = new Uint32Array(n);
    this.lo = new Uint32Array(n);
    this.used = new Uint8Array(n);
    this.size = 0;
    for (let i = 0; i < used.length; i++) if (used[i]) this.add(hi[i] as number, lo[i] as number);
  }
}

export function hash64(s: string): [number, number] {
  const d = createHash('md5').update(s).digest();
  return [d.readUInt32LE(0), d.readUInt32LE(4)];
}

// --- near duplicates: MinHash over character 5-gram shingles, LSH banding ---------------
//
// Memory per kept record: a 64-byte signature (the low 8 bits of each of the 64 minimums,
// "b-bit MinHash", with the collision rate corrected in the estimate) and per band one
// chain link (4 bytes): about 100 bytes with growth slack, in typed arrays; plus 32 MiB of
// bucket heads, whatever the size.

export const MINHASH_K = 64;
// 8 bands x 8 rows: a pair at Jaccard 0.85 is a candidate with p = 0.92, at 0.9 with p = 0.99
export const LSH_BANDS = 8;
const ROWS = MINHASH_K / LSH_BANDS;
const SHINGLE = 5;

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

// h_k(x) = a_k * x + b_k (mod 2^32), a_k odd: a cheap permutation family over already-mixed shingle hashes
const A = Uint32Array.from({ length: MINHASH_K }, (_, i) => fmix32(0x9747b28c + i * 0x632be5ab) | 1);
const B = Uint32Array.from({ length: MINHASH_K }, (_, i) => fmix32(0x1b873593 ^ (i * 0x85ebca6b)));

/**
 * 32-bit hashes of the text's character 5-grams (lower-cased, whitespace collapsed); repeats do not matter to MinHash.
 */
export function shingles(text: string): Uint32Array {
  const t = text.toLowerCase().replace(/\s+/g, ' ');
  const n = Math.max(1, t.length - SHINGLE + 1);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    let h = 0x811c9dc5;
    for (let j = i; j < Math.min(t.length, i + SHINGLE); j++) h = Math.imul(h ^ t.charCodeAt(j), 0x01000193);
    out[i] = fmix32(h >>> 0);
  }
  return out;
}

export function minhash(sh: Uint32Array): Uint32Array {
  const sig = new Uint32Array(MINHASH_K).fill(0xffffffff);
  for (let k = 0; k < MINHASH_K; k++) {
    const a = A[k] as number;
    const b = B[k] as number;
    let m = 0xffffffff;
    for (let s = 0; s < sh.length; s++) {
      const v = (Math.imul(a, sh[s] as number) + b) >>> 0;
      if (v < m) m = v;
    }
    sig[k] = m;
  }
  return sig;
}

/** Estimated Jaccard similarity of two full signatures. */
export function similarity(a: Uint32Array, b: Uint32Array): number {
  let eq = 0;
  for (let k = 0; k < MINHASH_K; k++) if (a[k] === b[k]) eq += 1;
  return eq / MINHASH_K;
}

/** Buckets per band: 2^20 heads (4 MiB a band); a bucket holds the records whose band hash falls in it. */
const BUCKET_BITS = 20;

/**
 * The kept records' signatures and, per band, chains of records whose band hash falls in
 * the same bucket. No band key is stored: every candidate is verified on its signature, so
 * a bucket shared by chance costs one 64-byte comparison, never a wrong answer.
 */
export class NearDupIndex {
  private sigs = new Uint8Array(MINHASH_K * 1024);
  private next = new Int32Array(LSH_BANDS * 1024);
  private readonly heads = new Int32Array(LSH_BANDS << BUCKET_BITS).fill(-1);
  size = 0;

  /** The id of a kept record at or above the threshold, or -1. */
  find(sig: Uint32Array, threshold: number): number {
    const seen = new Set<number>();
    for (let b = 0; b < LSH_BANDS; b++) {
      for (let id = this.heads[bucket(sig, b)] as number; id >= 0; id = this.next[id * LSH_BANDS + b] as number) {
        if (seen.has(id)) continue;
        seen.add(id);
        if (this.estimate(sig, id) >= threshold) return id;
      }
    }
    return -1;
  }

  add(sig: Uint32Array): number {
    const id = this.size++;
    if (this.size * MINHASH_K > this.sigs.length) {
      // grow by half: less slack than doubling for the largest arrays here
      const records = Math.ceil((this.sigs.length / MINHASH_K) * 1.5);
      const s = new Uint8Array(records * MINHASH_K);
      s.set(this.sigs);
      this.sigs = s;
      const n = new Int32Array(records * LSH_BANDS);
      n.set(this.next);
      this.next = n;
    }
    for (let k = 0; k < MINHASH_K; k++) this.sigs[id * MINHASH_K + k] = (sig[k] as number) & 0xff;
    for (let b = 0; b < LSH_BANDS; b++) {
      const slot = bucket(sig, b);
      this.next[id * LSH_BANDS + b] = this.heads[slot] as number;
      this.heads[slot] = id;
    }
    return id;
  }

  /** Jaccard estimate from 8-bit minimums: matches by chance 1/256 of the time, corrected. */
  private estimate(sig: Uint32Array, id: number): number {
    let eq = 0;
    const o = id * MINHASH_K;
    for (let k = 0; k < MINHASH_K; k++) if (((sig[k] as number) & 0xff) === this.sigs[o + k]) eq += 1;
    const c = 1 / 256;
    return (eq / MINHASH_K - c) / (1 - c);
  }
}

function bucket(sig: Uint32Array, b: number): number {
  let h = 0x811c9dc5 ^ b;
  for (let r = b * ROWS; r < (b + 1) * ROWS; r++) h = fmix32(h ^ (sig[r] as number));
  return (b << BUCKET_BITS) | (h & ((1 << BUCKET_BITS) - 1));
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
