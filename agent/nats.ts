// The agent's NATS: adverts KV, job events, and object transfers (datasets and adapters
// down, checkpoints and adapters up), every download checked against its sha256.
import { connect, StorageType, type JetStreamClient, type KV, type NatsConnection, type ObjectStore } from 'nats';
import { ADVERTS_BUCKET, AGENT_STATES_BUCKET, ErrorCode, TunefleetError, type Config } from '../shared';
import { natsConnectOptions, natsFailure } from '../shared/natsconn';
import { commitClient, type Commits } from './commits';
import { agentIdentity } from '../shared/permissions';
import { getFile, openKv, putFile } from '../shared/objects';

export interface AgentNats {
  nc: NatsConnection;
  js: JetStreamClient;
  store(bucket: string): Promise<ObjectStore>;
  adverts(): Promise<KV>;
  agentStates(): Promise<KV>;
  /** epoch claims and checkpoint commits, through the control workers' commit service */
  commits: Commits;
}

/** Connect as agent-<id>: the server lets it write only its own advert and state keys (shared/permissions.ts). */
export async function connectAgentNats(
  cfg: Pick<Config, 'natsUrl' | 'natsCreds' | 'tlsDir'>,
  agentId: string,
): Promise<AgentNats> {
  let nc: NatsConnection;
  const identity = agentIdentity(agentId);
  const options = natsConnectOptions(cfg, identity);
  try {
    nc = await connect({ ...options, name: `tunefleet-${identity}`, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
  } catch (cause) {
    const m = String((cause as Error)?.message ?? cause);
    throw new TunefleetError(
      ErrorCode.StackUnavailable,
      `agent ${agentId} cannot reach NATS at ${cfg.natsUrl} as ${identity}: ${m}`,
      {},
      { cause },
    );
  }
  const js = nc.jetstream();
  return {
    nc,
    js,
    store: (bucket) => js.views.os(bucket, { storage: StorageType.File }),
    adverts: () => openKv(js, ADVERTS_BUCKET),
    agentStates: () => openKv(js, AGENT_STATES_BUCKET),
    commits: commitClient(nc, agentId),
  };
}

/** Upload a file to the store, streaming. */
export async function upload(store: ObjectStore, name: string, path: string): Promise<void> {
  await putFile(store, name, path);
}

/** Download to `path` via a temporary name; refuse it unless the sha256 matches (null: no check). */
export const download = (store: ObjectStore, name: string, path: string, sha256: string | null): Promise<void> =>
  getFile(store, name, path, sha256);

/**
 * Run a NATS operation until it succeeds, backing off from 250 ms to 4 s, for at most
 * `maxMs` (a nats-server restart or a network blip is ridden out; the client reconnects
 * by itself). Only for operations that are safe to repeat: publishing an event (the stream
 * de-duplicates by message id), putting an object under a fixed name, a compare-and-set
 * commit (a repeat of one that landed answers 'duplicate').
 */
export async function persistently<T>(
  what: string,
  fn: () => Promise<T>,
  log: (m: string) => void,
  maxMs = 60_000,
  retryable: (e: unknown) => boolean = () => true,
): Promise<T> {
  const t0 = Date.now();
  let wait = 250;
  for (let n = 1; ; n++) {
    try {
      return await fn();
    } catch (e) {
      if (!retryable(e) || Date.now() - t0 + wait > maxMs) throw e;
      if (n === 1) log(`${what} failed (${natsFailure(e)}); retrying for up to ${Math.round(maxMs / 1000)} s`);
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(4000, wait * 2);
    }
  }
}
