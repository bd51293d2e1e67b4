// The fleet view: a snapshot of every live agent, kept from a watch on the adverts KV
// bucket (not polling). KV expiry is not always announced to watchers, so the view keeps
// its own last-seen time per agent and drops agents silent for longer than the TTL.
import type { KV, KvEntry, QueuedIterator } from 'nats';
import { parseAdvert, type Advert, TunefleetError } from '../shared';

export interface FleetEntry {
  advert: Advert;
  revision: number;
  lastSeen: number;
}

export class FleetView {
  private readonly agents = new Map<string, FleetEntry>();
  private watcher: QueuedIterator<KvEntry> | null = null;
  private loop: Promise<void> | null = null;
  private readyResolve: (() => void) | null = null;
  readonly ready: Promise<void>;

  constructor(
    private readonly kv: KV,
    private readonly ttlMs: number,
    private readonly log: (msg: string) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {
    this.ready = new Promise((r) => (this.readyResolve = r));
  }

  async start(): Promise<void> {
    this.watcher = await this.kv.watch({ key: '>', initializedFn: () => this.readyResolve?.() });
    const w = this.watcher;
    this.loop = (async () => {
      for await (const e of w) this.apply(e.key, e.operation, e.value, e.revision);
    })();
    await this.ready;
  }

  /** Apply one KV entry; a bad advert is logged and skipped, never thrown. */
  apply(key: string, operation: string, value: Uint8Array, revision: number): void {
    if (operation === 'DEL' || operation === 'PURGE') {
      this.agents.delete(key);
      return;
    }
    try {
      const advert = parseAdvert(key, value);
      this.agents.set(key, { advert, revision, lastSeen: this.now() });
    } catch (e) {
      this.agents.delete(key);
      this.log(`skipped advert: ${e instanceof TunefleetError ? e.describe() : String(e)}`);
    }
  }

  /** Agents seen within the TTL, sorted by id. */
  snapshot(): FleetEntry[] {
    const cutoff = this.now() - this.ttlMs;
    for (const [k, v] of this.agents) if (v.lastSeen < cutoff) this.agents.delete(k);
    return [...this.agents.values()].sort((a, b) => a.advert.agent_id.localeCompare(b.advert.agent_id));
  }

  async stop(): Promise<void> {
    this.watcher?.stop();
    await this.loop?.catch(() => {});
  }
}
