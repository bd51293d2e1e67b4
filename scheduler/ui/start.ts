// `tunefleet ui`: the console's tokens (made once in the secrets directory, 0600) and the
// server, started over the stack's NATS and Temporal with the cli identity for reads and
// cancels and the operator identity for cordon, uncordon and drain.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../../shared';
import { JobClient } from '../cli/client';
import { openFleet } from '../cli/fleetcmd';
import { buildUi, type Role } from './server';

/** The token file of a role under $TUNEFLEET_HOME/secrets (made when missing: 32 random bytes, hex, mode 0600). */
export function uiToken(home: string, role: Role): string {
  const dir = join(home, 'secrets');
  const path = join(dir, `ui-${role}.token`);
  if (!existsSync(path)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      writeFileSync(path, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      // another process (up, a second console) made it first: its token stands
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  return readFileSync(path, 'utf8').trim();
}

export interface RunningUi {
  /** http://host:port */
  url: string;
  tokens: Record<Role, string>;
  close(): Promise<void>;
}

export async function startUi(
  cfg: Config,
  where: { host: string; port: number },
  log: (m: string) => void = (m) => console.log(`[ui] ${m}`),
  temporalUi: string | null = null,
): Promise<RunningUi> {
  const tokens = { viewer: uiToken(cfg.home, 'viewer'), operator: uiToken(cfg.home, 'operator') };
  const jobs = await JobClient.connect(cfg, 'cli');
  const operator = await JobClient.connect(cfg, 'operator');
  const fleet = await openFleet(await jobs.nats());
  const app = buildUi({ jobs, operator, fleet, tokens, temporalUi, log });
  await app.listen({ host: where.host, port: where.port });
  const a = app.server.address();
  const port = typeof a === 'object' && a ? a.port : where.port;
  const host = where.host.includes(':') ? `[${where.host}]` : where.host;
  return {
    url: `http://${host}:${port}`,
    tokens,
    async close() {
      await app.close();
      await fleet.stop();
      await jobs.close();
      await operator.close();
    },
  };
}
