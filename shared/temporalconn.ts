// How every tunefleet process connects to Temporal: plaintext to the embedded dev server
// (loopback only), or TLS — the server's CA, a client certificate and key for mutual TLS,
// a server name — and an API key from a file, for a self-hosted server with mTLS or
// Temporal Cloud. Settings: TUNEFLEET_TEMPORAL_TLS=1, TUNEFLEET_TEMPORAL_TLS_{CA,CERT,KEY,
// SERVER_NAME} (PEM files) and TUNEFLEET_TEMPORAL_API_KEY_FILE, or the matching flags.
// Reads files: workflow code never imports this module.
import { readFileSync } from 'node:fs';
import type { Config } from './config';
import { ErrorCode, TunefleetError } from './errors';

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

/** Options for Connection.connect and NativeConnection.connect (the same shape). */
export function temporalConnectOptions(
  cfg: Pick<Config, 'temporalAddress' | 'temporalTls' | 'temporalApiKeyFile'>,
): TemporalConnectOptions {
  const o: TemporalConnectOptions = { address: cfg.temporalAddress };
  const t = cfg.temporalTls;
  if (t) {
    o.tls = {};
    if (t.ca) o.tls.serverRootCACertificate = read(t.ca, 'TUNEFLEET_TEMPORAL_TLS_CA');
    if (t.cert && t.key)
      o.tls.clientCertPair = {
        crt: read(t.cert, 'TUNEFLEET_TEMPORAL_TLS_CERT'),
        key: read(t.key, 'TUNEFLEET_TEMPORAL_TLS_KEY'),
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
