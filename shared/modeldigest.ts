// The identity of a base model's weights on this agent, recorded with every adapter trained
// on it: sha256 over "<file> <sha256>\n" of each weight file of the model directory (the
// *.safetensors, *.bin and *.gguf files at its top level, in name order). Hashing a large
// model takes a while, so each digest is kept for as long as its files' names, sizes and
// modification times stay the same.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

const WEIGHTS = /\.(safetensors|bin|gguf)$/;
const known = new Map<string, { key: string; digest: Promise<string> }>();

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The digest of the weights in `dir`; null when it holds no weight file or cannot be read. */
export async function modelDigest(dir: string): Promise<string | null> {
  try {
    const names = (await readdir(dir)).filter((n) => WEIGHTS.test(n)).sort();
    if (names.length === 0) return null;
    const stats = await Promise.all(names.map((n) => stat(join(dir, n))));
    const key = names.map((n, i) => `${n}:${stats[i]?.size}:${stats[i]?.mtimeMs}`).join('|');
    const hit = known.get(dir);
    if (hit && hit.key === key) return await hit.digest;
    const digest = (async () => {
      const lines: string[] = [];
      for (const n of names) lines.push(`${n} ${await fileSha256(join(dir, n))}\n`);
      return createHash('sha256').update(lines.join('')).digest('hex');
    })();
    known.set(dir, { key, digest });
    return await digest.catch((e: unknown) => {
      known.delete(dir);
      throw e;
    });
  } catch {
    return null;
  }
}
