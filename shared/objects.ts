// NATS JetStream storage both sides use: the settings of every KV bucket (one definition,
// whoever opens it first creates it with these), and object transfers: a streamed upload,
// and a download written under a temporary name and renamed only when its sha256 matches.
// The one module of shared/ that does I/O; workflow code never imports it.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StorageType, type JetStreamClient, type KV, type ObjectStore } from 'nats';
import { ErrorCode, TunefleetError } from './errors';
import { ADVERT_TTL_MS, ADVERTS_BUCKET, AGENT_STATES_BUCKET, COMMITS_BUCKET } from './names';

/** Per bucket: how many values a key keeps, and for adverts how long one lives. */
const KV_SETTINGS: Record<string, { history: number; ttl?: number }> = {
  [ADVERTS_BUCKET]: { history: 1, ttl: ADVERT_TTL_MS },
  [AGENT_STATES_BUCKET]: { history: 5 },
  // an audit can see that no commit ever went backwards
  [COMMITS_BUCKET]: { history: 64 },
};

/** Each KV bucket's size limit: JetStream refuses writes past it instead of filling the disk. */
export const KV_MAX_BYTES = 64 * 2 ** 20;

/**
 * Bind to an existing KV bucket. Only admin creates buckets (`create`: with its settings and size limit, file
 * storage; idempotent): every other identity is refused stream management by the server.
 */
export function openKv(js: JetStreamClient, bucket: string, create = false, replicas = 1): Promise<KV> {
  if (!create) return js.views.kv(bucket, { bindOnly: true, allow_direct: true });
  const s = KV_SETTINGS[bucket] ?? { history: 1 };
  return js.views.kv(bucket, { ...s, storage: StorageType.File, max_bytes: KV_MAX_BYTES, replicas });
}

/** Upload a file, streaming. -> bytes stored. */
export async function putFile(store: ObjectStore, name: string, path: string): Promise<number> {
  const info = await store.put(
    { name },
    Readable.toWeb(createReadStream(path)) as unknown as ReadableStream<Uint8Array>,
  );
  return info.size;
}

/** The sha256 (hex) of an object's content, streamed; null when it is not in the store. */
export async function objectSha256(store: ObjectStore, name: string): Promise<string | null> {
  const obj = await store.get(name);
  if (!obj) return null;
  const h = createHash('sha256');
  for await (const chunk of Readable.fromWeb(
    obj.data as unknown as import('node:stream/web').ReadableStream<Uint8Array>,
  ))
    h.update(chunk as Buffer);
  const err = await obj.error;
  if (err) throw new TunefleetError(ErrorCode.ChecksumMismatch, `object '${name}': ${err.message}`, {}, { cause: err });
  return h.digest('hex');
}

/**
 * Stream an object to `path` via `path.part`, renamed only when the transfer completed and,
 * when `sha256` is given, the content hashes to it: a torn or altered object never lands.
 */
export async function getFile(store: ObjectStore, name: string, path: string, sha256?: string | null): Promise<void> {
  const obj = await store.get(name);
  if (!obj) throw new TunefleetError(ErrorCode.ObjectMissing, `object '${name}' is not in the store`);
  const part = `${path}.part`;
  const h = createHash('sha256');
  const src = Readable.fromWeb(obj.data as unknown as import('node:stream/web').ReadableStream<Uint8Array>);
  src.on('data', (chunk: Buffer) => h.update(chunk));
  await pipeline(src, createWriteStream(part));
  const err = await obj.error;
  if (err) throw new TunefleetError(ErrorCode.ChecksumMismatch, `object '${name}': ${err.message}`, {}, { cause: err });
  const digest = h.digest('hex');
  if (sha256 && digest !== sha256) {
    throw new TunefleetError(
      ErrorCode.ChecksumMismatch,
      `object '${name}' has sha256 ${digest.slice(0, 12)}…, expected ${sha256.slice(0, 12)}…`,
    );
  }
  await rename(part, path);
}
