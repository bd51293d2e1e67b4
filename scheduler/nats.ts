// The control plane's NATS: connection, the JetStream assets it owns (events stream,
// object stores, adverts bucket), and object-store transfers with sha256 checks.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  connect,
  RetentionPolicy,
  StorageType,
  type NatsConnection,
  type ObjectStore,
  type JetStreamClient,
  type KV,
} from 'nats';
import {
  ADAPTERS_BUCKET,
  ADVERT_TTL_MS,
  ADVERTS_BUCKET,
  AGENT_STATES_BUCKET,
  CHECKPOINTS_BUCKET,
  COMMITS_BUCKET,
  DATASETS_BUCKET,
  DECISIONS_BUCKET,
  ErrorCode,
  EVENTS_STREAM,
  EVENTS_SUBJECTS,
  LEASES_BUCKET,
  QUEUE_BUCKET,
  TunefleetError,
} from '../shared';

export { ADVERT_TTL_MS };

/** History kept per key: commits keep theirs so an audit can see that no commit went backwards. */
export const KV_HISTORY: Record<string, number> = { [COMMITS_BUCKET]: 64 };

export interface Nats {
  nc: NatsConnection;
  js: JetStreamClient;
  objects(bucket: string): Promise<ObjectStore>;
  adverts(): Promise<KV>;
  agentStates(): Promise<KV>;
  /** leases, queue, commits, decisions: plain KV buckets (file storage) */
  kv(bucket: string): Promise<KV>;
  close(): Promise<void>;
}

export async function connectNats(url: string, name: string): Promise<Nats> {
  let nc: NatsConnection;
  try {
    nc = await connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
  } catch (cause) {
    throw new TunefleetError(
      ErrorCode.StackUnavailable,
      `cannot reach NATS at ${url}: is the stack up? ('tunefleet up')`,
      {},
      { cause },
    );
  }
  const js = nc.jetstream();
  const stores = new Map<string, Promise<ObjectStore>>();
  return {
    nc,
    js,
    objects(bucket) {
      let s = stores.get(bucket);
      if (!s) {
        s = js.views.os(bucket, { storage: StorageType.File });
        stores.set(bucket, s);
      }
      return s;
    },
    adverts: () => js.views.kv(ADVERTS_BUCKET, { ttl: ADVERT_TTL_MS, history: 1, storage: StorageType.File }),
    agentStates: () => js.views.kv(AGENT_STATES_BUCKET, { history: 5, storage: StorageType.File }),
    kv: (bucket) => js.views.kv(bucket, { history: KV_HISTORY[bucket] ?? 1, storage: StorageType.File }),
    close: () => nc.drain(),
  };
}

/** Create the events stream and the buckets if missing (idempotent). */
export async function ensureAssets(n: Nats): Promise<void> {
  const jsm = await n.nc.jetstreamManager();
  try {
    await jsm.streams.info(EVENTS_STREAM);
  } catch {
    await jsm.streams.add({
      name: EVENTS_STREAM,
      subjects: [EVENTS_SUBJECTS],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      max_age: 30 * 24 * 3600 * 1e9, // 30 days, in ns
      max_msgs_per_subject: 200_000,
    });
  }
  for (const b of [DATASETS_BUCKET, CHECKPOINTS_BUCKET, ADAPTERS_BUCKET]) await n.objects(b);
  await n.adverts();
  await n.agentStates();
  for (const b of [LEASES_BUCKET, QUEUE_BUCKET, COMMITS_BUCKET, DECISIONS_BUCKET]) await n.kv(b);
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/** Upload a file, streaming. -> bytes written. */
export async function putFile(store: ObjectStore, name: string, path: string): Promise<number> {
  const info = await store.put(
    { name },
    Readable.toWeb(createReadStream(path)) as unknown as ReadableStream<Uint8Array>,
  );
  return info.size;
}

/** Stream an object to a file (temporary name, renamed when the sha256 matches). */
export async function getFile(store: ObjectStore, name: string, path: string, sha256?: string): Promise<void> {
  const obj = await store.get(name);
  if (!obj) throw new TunefleetError(ErrorCode.ObjectMissing, `object '${name}' is not in the store`);
  const tmp = `${path}.part`;
  const h = createHash('sha256');
  const src = Readable.fromWeb(obj.data as unknown as import('node:stream/web').ReadableStream<Uint8Array>);
  src.on('data', (chunk: Buffer) => h.update(chunk));
  await pipeline(src, createWriteStream(tmp));
  const err = await obj.error;
  if (err) throw new TunefleetError(ErrorCode.ChecksumMismatch, `object '${name}': ${err.message}`, {}, { cause: err });
  const digest = h.digest('hex');
  if (sha256 && digest !== sha256) {
    throw new TunefleetError(
      ErrorCode.ChecksumMismatch,
      `object '${name}' has sha256 ${digest.slice(0, 12)}…, expected ${sha256.slice(0, 12)}…`,
    );
  }
  await rename(tmp, path);
}

export async function fileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}
