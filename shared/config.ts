// Configuration: flags > environment (TUNEFLEET_*) > the embedded local stack's
// addresses (recorded by `tunefleet up` in $TUNEFLEET_HOME/stack.json) > defaults.
// Pure: callers pass in the environment, the flags and the stack file's contents.
import { ErrorCode, TunefleetError } from './errors';
import type { FineTuneInput } from './jobs';

export interface Config {
  home: string;
  natsUrl: string;
  /** the NATS nkey seed file to connect as (null: <tlsDir>/<the process's identity>.nk) */
  natsCreds: string | null;
  /** the directory with the fleet's CA (ca.pem) and, by default, each identity's credentials */
  tlsDir: string;
  temporalAddress: string;
  /** TLS and API key for a secured Temporal (Temporal Cloud, a self-hosted server with mTLS); null: plaintext */
  temporalTls: TemporalTls | null;
  /** file holding a Temporal API key (sent as a bearer token; needs TLS) */
  temporalApiKeyFile: string | null;
  namespace: string;
  /** python interpreter with the trainer's environment */
  python: string;
  /** directory holding base models (one sub-directory per model name) */
  modelsDir: string;
  /** the evaluation judge exported to ONNX at bootstrap (model.onnx + tokenizer files) */
  judgeDir: string;
  /**
   * agent-activity timeouts for new jobs (seconds; null: the workflow's defaults: heartbeat 10 s, 60 s for full
   * fine-tuning; 120 s to start)
   */
  heartbeatTimeoutS: number | null;
  scheduleToStartS: number | null;
  /**
   * how new jobs poll while queued (FineTuneInput.queue); unset in production, a test shortens it to see a long wait
   * quickly
   */
  queue?: FineTuneInput['queue'];
  /** new sweeps continue as new past this many history events (unset: the workflow's default; a test lowers it) */
  sweepHistoryEvents?: number;
}

export interface TemporalTls {
  /** the server's CA (PEM file); null: the system's roots */
  ca: string | null;
  /** client certificate and key (PEM files) for mutual TLS; both or neither */
  cert: string | null;
  key: string | null;
  /** the name the server's certificate must carry (default: the address's host) */
  serverName: string | null;
  /**
   * TUNEFLEET_TEMPORAL_TLS=fleet: mutual TLS with the fleet's own CA (tls-dir/ca.pem) and each process's own
   * client certificate, the one it uses for NATS (control.crt, agent-<id>.crt, cli.crt); the files above override.
   */
  fleet: boolean;
}

export interface StackFile {
  natsUrl: string;
  temporalAddress: string;
  /** 'fleet': the stack's Temporal server takes mutual TLS with the fleet's certificates (`tunefleet up --ha`) */
  temporalTls?: 'fleet';
  /** the name the stack's Temporal server certificate is checked for (its address is an IP: not a TLS server name) */
  temporalTlsServerName?: string;
}

export const DEFAULT_NATS_PORT = 4222;
export const DEFAULT_TEMPORAL_PORT = 7233;

export type Flags = Partial<
  Pick<Config, 'natsUrl' | 'temporalAddress' | 'namespace' | 'home' | 'natsCreds' | 'tlsDir'>
> &
  Partial<{
    /** --temporal-tls: on (1), off (0) or fleet */
    temporalTls: string;
    temporalTlsCa: string;
    temporalTlsCert: string;
    temporalTlsKey: string;
    temporalTlsServerName: string;
  }>;

/** The servers of a NATS URL setting: one URL, or a cluster's seed list separated by commas. */
export function natsServers(natsUrl: string): string[] {
  return natsUrl
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

export function resolveConfig(
  env: Record<string, string | undefined>,
  flags: Flags,
  homeDir: string,
  readStack: (home: string) => StackFile | null,
): Config {
  const home = flags.home ?? env.TUNEFLEET_HOME ?? `${homeDir}/.tunefleet`;
  const stack = readStack(home);
  const natsUrl = flags.natsUrl ?? env.TUNEFLEET_NATS_URL ?? stack?.natsUrl ?? `nats://127.0.0.1:${DEFAULT_NATS_PORT}`;
  const temporalAddress =
    flags.temporalAddress ??
    env.TUNEFLEET_TEMPORAL_ADDRESS ??
    stack?.temporalAddress ??
    `127.0.0.1:${DEFAULT_TEMPORAL_PORT}`;
  // credentials never travel in a URL: it is logged, shown in process lists and error messages (not echoed here)
  if (natsUrl.includes('@'))
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      'the NATS URL carries credentials (user:password@ or token@): they would be logged; ' +
        'give the bare URL and keep credentials in a credentials file',
      { field: 'nats-url' },
    );
  // one URL, or a cluster's seed list: URLs separated by commas
  for (const one of natsServers(natsUrl))
    if (!/^(nats|tls|wss?):\/\/[^\s/,]+$/.test(one)) {
      throw new TunefleetError(
        ErrorCode.FlagInvalid,
        `'${one}' is not a NATS URL like nats://127.0.0.1:4222 (a cluster: URLs separated by commas)`,
        { field: 'nats-url' },
      );
    }
  if (!/^[^\s/:]+:\d{1,5}$/.test(temporalAddress)) {
    throw new TunefleetError(ErrorCode.FlagInvalid, `'${temporalAddress}' is not a host:port address`, {
      field: 'temporal-address',
    });
  }
  const tls = {
    ca: flags.temporalTlsCa ?? env.TUNEFLEET_TEMPORAL_TLS_CA ?? null,
    cert: flags.temporalTlsCert ?? env.TUNEFLEET_TEMPORAL_TLS_CERT ?? null,
    key: flags.temporalTlsKey ?? env.TUNEFLEET_TEMPORAL_TLS_KEY ?? null,
    serverName:
      flags.temporalTlsServerName ?? env.TUNEFLEET_TEMPORAL_TLS_SERVER_NAME ?? stack?.temporalTlsServerName ?? null,
  };
  if (!tls.cert !== !tls.key)
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      'a Temporal client certificate needs its key (TUNEFLEET_TEMPORAL_TLS_CERT and TUNEFLEET_TEMPORAL_TLS_KEY)',
      { field: tls.cert ? 'temporal-tls-key' : 'temporal-tls-cert' },
    );
  const tlsMode =
    flags.temporalTls ?? env.TUNEFLEET_TEMPORAL_TLS ?? (stack?.temporalTls === 'fleet' ? 'fleet' : undefined);
  if (tlsMode !== undefined && !['', '0', 'off', '1', 'on', 'fleet'].includes(tlsMode))
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      `TLS to Temporal '${tlsMode}': expected on (or 1), off (or 0) or fleet ` +
        "(mutual TLS with the fleet's certificates)",
      { field: flags.temporalTls !== undefined ? 'temporal-tls' : 'TUNEFLEET_TEMPORAL_TLS' },
    );
  const fleet = tlsMode === 'fleet';
  const off = tlsMode === '0' || tlsMode === 'off';
  const temporalApiKeyFile = env.TUNEFLEET_TEMPORAL_API_KEY_FILE || null;
  const tlsOn = !off && (tlsMode === '1' || tlsMode === 'on' || fleet || Object.values(tls).some((v) => v !== null));
  if (temporalApiKeyFile && !tlsOn)
    throw new TunefleetError(
      ErrorCode.FlagInvalid,
      'a Temporal API key is only sent over TLS: set TUNEFLEET_TEMPORAL_TLS=1 (or a TUNEFLEET_TEMPORAL_TLS_* file)',
      { field: 'TUNEFLEET_TEMPORAL_API_KEY_FILE' },
    );
  return {
    home,
    natsUrl,
    natsCreds: flags.natsCreds ?? env.TUNEFLEET_NATS_CREDS ?? null,
    tlsDir: flags.tlsDir ?? env.TUNEFLEET_TLS_DIR ?? `${home}/secrets`,
    temporalAddress,
    temporalTls: tlsOn ? { ...tls, fleet } : null,
    temporalApiKeyFile,
    namespace: flags.namespace ?? env.TUNEFLEET_NAMESPACE ?? 'default',
    python: env.TUNEFLEET_PYTHON ?? `${home}/bin/python`,
    modelsDir: env.TUNEFLEET_MODELS_DIR ?? `${home}/models`,
    judgeDir: env.TUNEFLEET_JUDGE_DIR ?? `${home}/judge/all-MiniLM-L6-v2`,
    heartbeatTimeoutS: seconds(env.TUNEFLEET_HEARTBEAT_TIMEOUT, 'TUNEFLEET_HEARTBEAT_TIMEOUT'),
    scheduleToStartS: seconds(env.TUNEFLEET_SCHEDULE_TO_START_TIMEOUT, 'TUNEFLEET_SCHEDULE_TO_START_TIMEOUT'),
  };
}

function seconds(v: string | undefined, name: string): number | null {
  if (v === undefined || v === '') return null;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 1 || n > 86_400)
    throw new TunefleetError(ErrorCode.FlagInvalid, `${name}='${v}' must be a number of seconds from 1 to 86400`, {
      field: name,
    });
  return n;
}
