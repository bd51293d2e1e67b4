// How every tunefleet process connects to Temporal: plaintext to the embedded dev server
// (loopback only), or TLS — the server's CA, a client certificate and key for mutual TLS,
// a server name — and an API key from a file, for a self-hosted server with mTLS or
// Temporal Cloud. Settings: TUNEFLEET_TEMPORAL_TLS=1, TUNEFLEET_TEMPORAL_TLS_{CA,CERT,KEY,
// SERVER_NAME} (PEM files) and TUNEFLEET_TEMPORAL_API_KEY_FILE, or the matching flags.
// TUNEFLEET_TEMPORAL_TLS=fleet (what `tunefleet up --ha` writes into its stack file): mutual
// TLS with the fleet's CA and the process's own certificate, the one its NATS identity uses.
// Reads files: workflow code never imports this module.
import { readFileSync } from 'node:fs';
import type { Config } from './config';
import { ErrorCode, TunefleetError } from './errors';
import { credentialFiles } from './natsconn';

export interface TemporalConnectOptions {
  address: string;
  tls?: {
    serverRootCACertificate?: Buffer;
    clientCertPair?: { crt: Buffer; key: Buffer };
    serverNameOverride?: string;
  };
  apiKey?: string;
}

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new TunefleetError(ErrorCode.FlagInvalid, `${what} ${path} cannot be read: ${(e as Error).message}`, {
      field: what,
    });
  }
}

/**
 * Options for Connection.connect and NativeConnection.connect (the same shape), for the process whose NATS identity
 * is `identity` (control, agent-<id>, cli, admin): with fleet TLS it presents that identity's certificate.
 */
export function temporalConnectOptions(
  cfg: Pick<Config, 'temporalAddress' | 'temporalTls' | 'temporalApiKeyFile' | 'natsCreds' | 'tlsDir'>,
  identity: string,
): TemporalConnectOptions {
  const o: TemporalConnectOptions = { address: cfg.temporalAddress };
  const t = cfg.temporalTls;
  if (t) {
    o.tls = {};
    const own = t.fleet ? credentialFiles(cfg, identity) : null;
    const ca = t.ca ?? own?.ca;
    const cert = t.cert ?? own?.cert;
    const key = t.key ?? own?.key;
    if (ca) o.tls.serverRootCACertificate = read(ca, 'TUNEFLEET_TEMPORAL_TLS_CA');
    if (cert && key)
      o.tls.clientCertPair = {
        crt: read(cert, 'TUNEFLEET_TEMPORAL_TLS_CERT'),
        key: read(key, 'TUNEFLEET_TEMPORAL_TLS_KEY'),
      };
    if (t.serverName) o.tls.serverNameOverride = t.serverName;
  }
  if (cfg.temporalApiKeyFile) {
    const key = read(cfg.temporalApiKeyFile, 'TUNEFLEET_TEMPORAL_API_KEY_FILE').toString('utf8').trim();
    if (!key)
      throw new TunefleetError(ErrorCode.FlagInvalid, `${cfg.temporalApiKeyFile} is empty`, {
        field: 'TUNEFLEET_TEMPORAL_API_KEY_FILE',
      });
    o.apiKey = key;
  }
  return o;
}
