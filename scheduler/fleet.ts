// The fleet view: a snapshot of every live agent, kept from a watch on the adverts KV
// bucket (not polling), plus the operators' desired states (cordon, drain), which apply
// at once, before the agent itself re-advertises. KV expiry is not always announced to
// watchers, so the view keeps its own last-seen time per agent and drops agents silent
// for longer than the TTL.
import type { KV, KvEntry, QueuedIterator } from 'nats';
import { desiredStateSchema, parseAdvert, type Advert, type DesiredStateRecord, TunefleetError } from '../shared';

export interface FleetEntry {
  advert: Advert;
  revision: number;
  lastSeen: number;
  /** what an operator asked for, if anything */
  desired: DesiredStateRecord | null;
}

export class FleetView {
  private readonly agents = new Map<string, Omit<FleetEntry, 'desired'>>();
  private readonly desired = new Map<string, DesiredStateRecord>();
  private readonly watchers: QueuedIterator<KvEntry>[] = [];
  private stopped = false;
  private readonly loops: Promise<void>[] = [];
  private readonly listeners = new Set<(agentId: string) => void>();
  ready: Promise<void> = Promise.resolve();

  constructor(
    private readonly kv: KV,
    private readonly ttlMs: number,
    private readonly log: (msg: string) => void = () => {},
    private readonly now: () => number = Date.now,
    private readonly states: KV | null = null,
  ) {}

  async start(): Promise<void> {
    // a watch that fails or ends (its NATS node was lost, say) is made again: the view must not freeze, and an
    // error in it must not end the worker
    const watch = async (kv: KV, what: string, apply: (e: KvEntry) => void): Promise<void> => {
      let initialized!: () => void;
      const done = new Promise<void>((r) => (initialized = r));
      let w = await kv.watch({ key: '>', initializedFn: () => initialized() });
      this.watchers.push(w);
      this.loops.push(
        (async () => {
          while (!this.stopped) {
            try {
              for await (const e of w) apply(e);
              if (this.stopped) return;
              this.log(`the ${what} watch ended; watching again in 1 s`);
            } catch (err) {
              if (this.stopped) return;
              this.log(`the ${what} watch failed (${String(err)}); watching again in 1 s`);
            }
            await new Promise((r) => setTimeout(r, 1000));
            if (this.stopped) return;
            try {
              w = await kv.watch({ key: '>' });
              this.watchers.push(w);
            } catch (err) {
              this.log(`watching the ${what} again failed (${String(err)})`);
            }
          }
        })(),
      );
      await done;
    };
    this.ready = Promise.all([
      watch(this.kv, 'adverts', (e) => this.apply(e.key, e.operation, e.value, e.revision)),
      this.states
        ? watch(this.states, 'agent states', (e) => this.applyDesired(e.key, e.operation, e.value))
        : Promise.resolve(),
    ]).then(() => undefined);
    await this.ready;
  }

  /** Called after every change, with the agent's id (for `tunefleet fleet --watch` and the benchmark). */
  onChange(fn: (agentId: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private changed(agentId: string): void {
    for (const fn of this.listeners) fn(agentId);
  }

  /** One agent's current advert, if it is in the view. */
  get(agentId: string): Advert | null {
    return this.agents.get(agentId)?.advert ?? null;
  }

  /** Apply one advert entry; a bad advert is logged and skipped, never thrown. */
  apply(key: string, operation: string, value: Uint8Array, revision: number): void {
    if (operation === 'DEL' || operation === 'PURGE') {
      this.agents.delete(key);
      this.changed(key);
      return;
    }
    try {
      const advert = parseAdvert(key, value);
      this.agents.set(key, { advert, revision, lastSeen: this.now() });
    } catch (e) {
      this.agents.delete(key);
      this.log(`skipped advert: ${e instanceof TunefleetError ? e.describe() : String(e)}`);
    }
    this.changed(key);
  }

  applyDesired(key: string, operation: string, value: Uint8Array): void {
    if (operation === 'DEL' || operation === 'PURGE') this.desired.delete(key);
    else {
      try {
        this.desired.set(key, desiredStateSchema.parse(JSON.parse(new TextDecoder().decode(value))));
      } catch (e) {
        this.log(`skipped desired state for ${key}: ${String(e)}`);
      }
    }
    this.changed(key);
  }

  /** Agents seen within the TTL, sorted by id; an operator's cordon or drain overrides a 'ready' advert. */
  snapshot(): FleetEntry[] {
    const cutoff = this.now() - this.ttlMs;
    for (const [k, v] of this.agents) if (v.lastSeen < cutoff) this.agents.delete(k);
    return [...this.agents.values()]
      .map((e) => {
        const desired = this.desired.get(e.advert.agent_id) ?? null;
        const override = desired && desired.state !== 'ready' && e.advert.state === 'ready' ? desired.state : null;
        return { ...e, desired, advert: override ? { ...e.advert, state: override } : e.advert };
      })
      .sort((a, b) => a.advert.agent_id.localeCompare(b.advert.agent_id));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.watchers) w.stop();
    await Promise.all(this.loops.map((l) => l.catch(() => {})));
  }
}
