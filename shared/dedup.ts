// Duplicate detection for data preparation (shared/dataprep.ts): exact duplicates as a
// set of 64-bit hashes, near duplicates by MinHash over character shingles with LSH
// banding, both in typed arrays so memory stays bounded per record.
import { createHash } from 'node:crypto';

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
