// The connection flags every tunefleet command line takes (the control CLI and `tunefleet
// agent start`): where NATS and Temporal are, and the credentials to reach them with. Each
// flag has its TUNEFLEET_* environment variable; resolveConfig (config.ts) reads them.
import { Option, type Command } from 'commander';
import type { Flags } from './config';

export function connectionOptions(): Option[] {
  return [
    new Option('--nats-url <url>', "NATS server, or a cluster's seed list (URLs separated by commas)").env(
      'TUNEFLEET_NATS_URL',
    ),
    new Option('--nats-creds <file>', 'NATS nkey seed (<identity>.nk; its .crt and .key beside it)').env(
      'TUNEFLEET_NATS_CREDS',
    ),
    new Option('--tls-dir <dir>', "the fleet's ca.pem and credentials (default $TUNEFLEET_HOME/secrets)").env(
      'TUNEFLEET_TLS_DIR',
    ),
    new Option('--temporal-address <host:port>', 'Temporal frontend').env('TUNEFLEET_TEMPORAL_ADDRESS'),
    new Option(
      '--temporal-tls <mode>',
      "TLS to Temporal: on, off, or fleet (mutual TLS with the fleet's CA and this identity's own certificate)",
    ).env('TUNEFLEET_TEMPORAL_TLS'),
    new Option('--temporal-tls-ca <file>', "Temporal server's CA (PEM)").env('TUNEFLEET_TEMPORAL_TLS_CA'),
    new Option('--temporal-tls-cert <file>', 'Temporal client certificate (PEM)').env('TUNEFLEET_TEMPORAL_TLS_CERT'),
    new Option('--temporal-tls-key <file>', 'Temporal client key (PEM)').env('TUNEFLEET_TEMPORAL_TLS_KEY'),
    new Option('--temporal-tls-server-name <name>', "the name on Temporal's certificate").env(
      'TUNEFLEET_TEMPORAL_TLS_SERVER_NAME',
    ),
    new Option('--namespace <ns>', 'Temporal namespace').env('TUNEFLEET_NAMESPACE'),
  ];
}

/** `c` with the connection options added (for a chain of commander calls). */
export function withConnectionOptions(c: Command): Command {
  for (const o of connectionOptions()) c.addOption(o);
  return c;
}

/** The parsed connection flags (and --home), as resolveConfig takes them. */
export function connectionFlags(o: Flags): Flags {
  return {
    natsUrl: o.natsUrl,
    natsCreds: o.natsCreds,
    tlsDir: o.tlsDir,
    temporalAddress: o.temporalAddress,
    temporalTls: o.temporalTls,
    temporalTlsCa: o.temporalTlsCa,
    temporalTlsCert: o.temporalTlsCert,
    temporalTlsKey: o.temporalTlsKey,
    temporalTlsServerName: o.temporalTlsServerName,
    namespace: o.namespace,
    home: o.home,
  };
}
