// The control plane's NATS: connection, the JetStream assets it owns (events stream,
// object stores, adverts bucket); object transfers with sha256 checks are shared/objects.ts.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
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
import { getFile, objectSha256, openKv, putFile } from '../shared/objects';

export { ADVERT_TTL_MS };

export { getFile, objectSha256, putFile };

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
    adverts: () => openKv(js, ADVERTS_BUCKET),
    agentStates: () => openKv(js, AGENT_STATES_BUCKET),
    kv: (bucket) => openKv(js, bucket),
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

export async function fileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}
