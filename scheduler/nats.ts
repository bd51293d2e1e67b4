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
  type Config,
} from '../shared';
import { getFile, KV_MAX_BYTES, objectSha256, openKv, putFile } from '../shared/objects';
import { closeNats, natsConnectOptions } from '../shared/natsconn';

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

/** Connect as `identity` (control, cli, operator or admin: shared/permissions.ts). */
export async function connectNats(
  cfg: Pick<Config, 'natsUrl' | 'natsCreds' | 'tlsDir'>,
  identity: string,
  name = `tunefleet-${identity}`,
): Promise<Nats> {
  let nc: NatsConnection;
  const options = natsConnectOptions(cfg, identity);
  try {
    nc = await connect({ ...options, name, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
  } catch (cause) {
    throw new TunefleetError(
      ErrorCode.StackUnavailable,
      `cannot reach NATS at ${cfg.natsUrl} as ${identity}: ${natsRefusal(cause)}`,
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
    close: () => closeNats(nc),
  };
}

/** Why a connection was refused, in words (the server's authorization and TLS answers). */
export function natsRefusal(e: unknown): string {
  const m = String((e as Error)?.message ?? e);
  if (/authorization|authentication/i.test(m)) return `the server refused these credentials (${m})`;
  if (/certificate|tls|ssl/i.test(m)) return `TLS failed (${m})`;
  return `${m}: is the stack up? ('tunefleet up')`;
}

/** The KV buckets (each capped at KV_MAX_BYTES). */
export const KV_BUCKETS = [
  ADVERTS_BUCKET,
  AGENT_STATES_BUCKET,
  LEASES_BUCKET,
  QUEUE_BUCKET,
  COMMITS_BUCKET,
  DECISIONS_BUCKET,
] as const;

/**
 * How the JetStream store is shared out: each stream and bucket gets a size limit, a fraction of `total` (the KV
 * buckets a fixed KV_MAX_BYTES each), so that no one of them can fill the disk.
 */
export function assetLimits(total: number): Record<string, number> {
  const rest = total - KV_BUCKETS.length * KV_MAX_BYTES;
  return {
    [EVENTS_STREAM]: Math.floor(rest * 0.05),
    [DATASETS_BUCKET]: Math.floor(rest * 0.35),
    [CHECKPOINTS_BUCKET]: Math.floor(rest * 0.4),
    [ADAPTERS_BUCKET]: Math.floor(rest * 0.15),
  };
}

/**
 * Create the events stream and the buckets, each with its size limit and `replicas` copies (3 on a NATS cluster, 1 on
 * one server) — admin credentials: nobody else may. Idempotent: an existing stream gets the current limit and
 * replica count (JetStream moves the data; a count above the cluster's servers is refused by the server, named).
 */
export async function ensureAssets(n: Nats, totalBytes: number, replicas = 1): Promise<void> {
  const limits = assetLimits(totalBytes);
  try {
    await ensureAssetsAt(n, limits, replicas);
  } catch (cause) {
    const m = String((cause as Error)?.message ?? cause);
    if (/insufficient storage/i.test(m))
      throw new TunefleetError(
        ErrorCode.StackUnavailable,
        `NATS refused the streams' limits (${m}): the limits they already have add up to more than the store's cap ` +
          "now (it shrank with the free disk). Give the store its old cap (its 'tunefleet-store-cap' file; " +
          "'nats assets --store-limit' for a cluster), or free disk",
        { field: 'store-limit' },
        { cause },
      );
    if (/insufficient resources|replicas/i.test(m))
      throw new TunefleetError(
        ErrorCode.StackUnavailable,
        `NATS could not keep ${replicas} replicas of every stream (${m}): a cluster needs at least ${replicas} ` +
          'JetStream servers up (the embedded stack has 1)',
        { field: 'replicas' },
        { cause },
      );
    throw cause;
  }
}

async function ensureAssetsAt(n: Nats, limits: Record<string, number>, replicas: number): Promise<void> {
  const jsm = await n.nc.jetstreamManager();
  const events = {
    name: EVENTS_STREAM,
    subjects: [EVENTS_SUBJECTS],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    max_age: 30 * 24 * 3600 * 1e9, // 30 days, in ns
    max_msgs_per_subject: 200_000,
    max_bytes: limits[EVENTS_STREAM] ?? -1,
    num_replicas: replicas,
  };
  const exists = await jsm.streams.info(EVENTS_STREAM).then(
    () => true,
    () => false,
  );
  if (exists) await jsm.streams.update(EVENTS_STREAM, events);
  else await jsm.streams.add(events);
  for (const b of [DATASETS_BUCKET, CHECKPOINTS_BUCKET, ADAPTERS_BUCKET]) {
    // made with one replica, then moved to `replicas` below: nats.js copies its `replicas` option into the stream
    // configuration as an unknown field, which the server refuses
    const os = await n.js.views.os(b, { storage: StorageType.File, max_bytes: limits[b] ?? -1 });
    const stream = (await os.status()).streamInfo.config;
    if (stream.max_bytes !== limits[b] || stream.num_replicas !== replicas)
      await jsm.streams.update(stream.name, { ...stream, max_bytes: limits[b], num_replicas: replicas });
  }
  for (const b of KV_BUCKETS) {
    await openKv(n.js, b, true, replicas);
    // a bucket made before it had a limit (or with another replica count) gets it
    const { config } = await jsm.streams.info(`KV_${b}`);
    if (config.max_bytes !== KV_MAX_BYTES || config.num_replicas !== replicas)
      await jsm.streams.update(config.name, { ...config, max_bytes: KV_MAX_BYTES, num_replicas: replicas });
  }
}

/** Every stream and bucket exists (a component binds to them; only admin creates them). */
export async function checkAssets(n: Nats): Promise<void> {
  const jsm = await n.nc.jetstreamManager();
  const streams = [
    EVENTS_STREAM,
    ...[DATASETS_BUCKET, CHECKPOINTS_BUCKET, ADAPTERS_BUCKET].map((b) => `OBJ_${b}`),
    ...KV_BUCKETS.map((b) => `KV_${b}`),
  ];
  for (const s of streams)
    await jsm.streams.info(s).catch((cause: unknown) => {
      throw new TunefleetError(
        ErrorCode.StackUnavailable,
        `NATS has no stream ${s}: 'tunefleet up' creates them, or 'tunefleet nats assets' with admin credentials`,
        {},
        { cause },
      );
    });
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
