// How every tunefleet process connects to NATS: as one identity (a role or agent-<id>),
// authenticated by its nkey, over TLS with its client certificate, trusting only the
// fleet's CA. The files come from --nats-creds / TUNEFLEET_NATS_CREDS (the nkey seed; the
// certificate and key sit next to it as <name>.crt and <name>.key) or, by default, from
// the TLS directory (--tls-dir / TUNEFLEET_TLS_DIR, default $TUNEFLEET_HOME/secrets) as
// <identity>.nk. Reads files: workflow code never imports this module.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { nkeyAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import { natsServers, type Config } from './config';
import { ErrorCode, TunefleetError } from './errors';
import { inboxPrefix, isIdentity } from './permissions';

export interface NatsCredentialFiles {
  seed: string;
  cert: string;
  key: string;
  ca: string;
}

export function credentialFiles(cfg: Pick<Config, 'natsCreds' | 'tlsDir'>, identity: string): NatsCredentialFiles {
  const seed = cfg.natsCreds ?? join(cfg.tlsDir, `${identity}.nk`);
  const base = seed.replace(/\.nk$/, '');
  return { seed, cert: `${base}.crt`, key: `${base}.key`, ca: join(cfg.tlsDir, 'ca.pem') };
}

/** Connection options for `identity`; a missing file is named, with the command that makes it. */
export function natsConnectOptions(
  cfg: Pick<Config, 'natsCreds' | 'tlsDir' | 'natsUrl'>,
  identity: string,
): ConnectionOptions {
  const f = credentialFiles(cfg, identity);
  for (const [what, path] of Object.entries(f))
    if (!existsSync(path))
      throw new TunefleetError(
        ErrorCode.StackUnavailable,
        `no NATS ${what === 'ca' ? 'CA certificate' : `${what} file`} for ${identity} at ${path}: ` +
          (identity.startsWith('agent-')
            ? `run 'tunefleet secrets add-agent ${identity.slice(6)}' where the fleet's secrets are, and copy ` +
              `${identity}.nk, .crt, .key and ca.pem to this machine (--nats-creds, --tls-dir)`
            : "run 'tunefleet secrets init' (or give --nats-creds and --tls-dir)"),
        { field: what === 'ca' ? 'tls-dir' : 'nats-creds' },
      );
  const seed = new TextEncoder().encode(readFileSync(f.seed, 'utf8').trim());
  // the identity the seed is (its file's name), whose inbox prefix the server lets it read
  const own = basename(f.seed).replace(/\.nk$/, '');
  return {
    servers: natsServers(cfg.natsUrl),
    authenticator: nkeyAuthenticator(seed),
    tls: { caFile: f.ca, certFile: f.cert, keyFile: f.key },
    inboxPrefix: inboxPrefix(isIdentity(own) ? own : identity),
  };
}

/**
 * A failed NATS request or JetStream write, said for people: a timeout or "no responders" on a write means JetStream
 * did not acknowledge it — on a cluster, a majority of the stream's nodes is unreachable (no quorum); on one server,
 * the server is down. Either way nothing was stored, and the write is safe to repeat once they are back.
 */
export function natsFailure(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  if (code === 'TIMEOUT' || code === '503')
    return (
      `${String((e as Error).message ?? e)}: JetStream did not acknowledge the write — no quorum (a majority of the ` +
      "stream's NATS nodes unreachable) or no server; nothing was stored"
    );
  return String((e as Error)?.message ?? e);
}

/**
 * Close a connection for good: drain it (pending messages out, subscriptions finished), then
 * close it if the drain did not. nats.js's drain gives up without closing when its flush
 * fails (the server gone), leaving the connection reconnecting forever, and with the server
 * gone it may wait; so the drain gets `ms` and the close always follows.
 */
export async function closeNats(nc: NatsConnection, ms = 10_000): Promise<void> {
  if (nc.isClosed()) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([nc.drain().catch(() => {}), new Promise<void>((res) => (timer = setTimeout(res, ms)))]);
  clearTimeout(timer);
  if (!nc.isClosed()) await nc.close().catch(() => {});
}
