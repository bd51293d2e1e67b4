// Credentials and nats-server's configuration for a fleet: `tunefleet secrets ...` makes and
// rotates the keys and certificates under $TUNEFLEET_HOME/secrets; `tunefleet nats ...`
// writes nats-server's configuration from them and creates the streams and buckets.
// (`tunefleet up` does all of this for the embedded stack.)
import { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../config';
import { connectNats, ensureAssets } from '../../nats';
import {
  addAgent,
  addNode,
  identities,
  initSecrets,
  rotate,
  secretsDir,
  writeNatsConfig,
} from '../../../infra/secrets';
import { storeLimit } from '../../../infra/services';
import { reloadLocalNats } from '../../../infra/stack';
import { globalFlags, intFlag } from './common';
import { ErrorCode, TunefleetError } from '../../../shared';

export function secretsCommands(program: Command): void {
  const secrets = program
    .command('secrets')
    .description(
      "credentials for every identity: the fleet's CA, nats-server's certificate, nkeys and client certificates",
    )
    .addHelpText(
      'after',
      `
Files (directory 0700, files 0600) under $TUNEFLEET_HOME/secrets (--home):
  ca.pem, ca.key                 the CA; nats-server.crt/.key its server certificate
  <identity>.nk/.crt/.key        nkey seed and client certificate of admin, control, cli, operator, agent-<id>
Example:
  tunefleet secrets init --host nats.internal --host 10.0.0.5
  tunefleet secrets add-agent gpu-7     # then copy agent-gpu-7.nk/.crt/.key and ca.pem to that machine`,
    );
  secrets
    .command('init')
    .addHelpText('after', '\nExample:\n  tunefleet secrets init --host nats.internal --host 10.0.0.5')
    .description('make the CA, the server certificate and credentials for every role (existing ones are kept)')
    .option('--host <name>', 'a name or address nats-server is reached by (repeatable)', collect, [])
    .action(async (o: { host: string[] }, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      const r = await initSecrets(cfg.home, o.host);
      console.log(r.created.length ? `made in ${r.dir}: ${r.created.join(', ')}` : `${r.dir} has every credential`);
    });
  secrets
    .command('add-agent')
    .addHelpText('after', '\nExample:\n  tunefleet secrets add-agent gpu-7')
    .description("credentials for one agent (agent-<id>); then reload nats-server's configuration")
    .argument('<agent>')
    .action(async (agentId: string, _o: unknown, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      const made = await addAgent(cfg.home, agentId);
      const dir = secretsDir(cfg.home);
      if (!made) return console.log(`agent-${agentId} already has credentials in ${dir}`);
      const local = await reloadLocalNats(cfg.home, `agent-${agentId}`);
      console.log(
        `made ${join(dir, `agent-${agentId}`)}.nk, .crt and .key; ` +
          (local
            ? "the local stack's nats-server has reloaded them"
            : "run 'tunefleet nats config' and reload nats-server (nats-server --signal reload)"),
      );
    });
  secrets
    .command('add-node')
    .addHelpText('after', '\nExample:\n  tunefleet secrets add-node n1 --host nats-1.internal --host 10.0.0.11')
    .description(
      "a NATS cluster node's certificate, nats-<node>.crt/.key, for its clients and its TLS routes (replaced if there)",
    )
    .argument('<node>')
    .option('--host <name>', 'a name or address the node is reached by (repeatable)', collect, [])
    .action(async (node: string, o: { host: string[] }, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      await addNode(cfg.home, node, o.host).catch((e: unknown) => {
        throw new TunefleetError(ErrorCode.FlagInvalid, (e as Error).message, { field: 'node' });
      });
      console.log(
        `made ${join(secretsDir(cfg.home), `nats-${node}`)}.crt and .key; then 'tunefleet nats config --node ${node}'`,
      );
    });
  secrets
    .command('rotate')
    .addHelpText('after', '\nExample:\n  tunefleet secrets rotate cli agent-gpu-7')
    .description('new nkeys and client certificates for the named identities (all when none is named)')
    .argument('[identity...]')
    .action(async (names: string[], _o: unknown, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      const done = await rotate(cfg.home, names);
      const local = await reloadLocalNats(cfg.home, done[0] ?? 'admin');
      console.log(
        `rotated ${done.join(', ')}; ` +
          (local
            ? "the local stack's nats-server has reloaded them"
            : "run 'tunefleet nats config' and reload nats-server") +
          '; restart the processes that use them',
      );
    });
  secrets
    .command('list')
    .addHelpText('after', '\nExample:\n  tunefleet secrets list')
    .description('every identity with credentials: its public nkey and when its certificate expires')
    .action((_o: unknown, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      for (const i of identities(cfg.home)) console.log(`${i.name.padEnd(24)} ${i.publicKey}  ${i.expires}`);
    });

  const nats = program
    .command('nats')
    .description("nats-server's configuration from the credentials, and the streams and buckets tunefleet uses");
  nats
    .command('config')
    .addHelpText('after', '\nExample:\n  tunefleet nats config --listen 0.0.0.0 --port 4222 --store /var/lib/nats')
    .description(
      "write $TUNEFLEET_HOME/secrets/nats.conf: TLS with client certificates, one user per identity with its role's " +
        'permissions (reload nats-server after a change: nats-server --signal reload)',
    )
    .option('--listen <addr>', 'address to listen on', '0.0.0.0')
    .option('--port <n>', 'port', '4222')
    .requiredOption('--store <dir>', "JetStream's store directory")
    .option('--node <name>', 'a cluster node (its certificate from secrets add-node): writes nats-<node>.conf')
    .option(
      '--route <url>',
      "every node's route URL, nats-route://<its certificate's DNS name>:port (repeatable; with --node)",
      collect,
      [],
    )
    .option('--cluster-name <name>', 'the cluster name, the same on every node', 'tunefleet')
    .option('--route-port <n>', 'where this node listens for routes', '6222')
    .option('--monitor-port <n>', 'HTTP monitoring on 127.0.0.1 (0: none)', '8222')
    .option('--sync-always', 'fsync every write: for nodes that share a failure domain (one host, one power feed)')
    .action((o: NatsConfigFlags, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      if (o.node && o.route.length < 3)
        throw new TunefleetError(
          ErrorCode.FlagInvalid,
          `--route: a JetStream cluster needs at least 3 nodes' route URLs (got ${o.route.length})`,
          { field: 'route' },
        );
      const path = writeNatsConfig(cfg.home, {
        host: o.listen,
        port: intFlag(o.port, '--port', 1),
        storeDir: o.store,
        maxStore: existsSync(o.store) ? storeLimit(o.store) : 100 * 2 ** 30,
        ...(o.node
          ? {
              cluster: {
                name: o.clusterName,
                node: o.node,
                routeHost: o.listen,
                routePort: intFlag(o.routePort, '--route-port', 1),
                routes: o.route,
                monitorPort: intFlag(o.monitorPort, '--monitor-port', 0),
                syncAlways: o.syncAlways === true,
              },
            }
          : {}),
      });
      const users = (JSON.parse(readFileSync(path, 'utf8')) as { authorization: { users: unknown[] } }).authorization
        .users.length;
      console.log(`wrote ${path} (${users} identities); run: nats-server -c ${path}`);
    });
  nats
    .command('assets')
    .addHelpText('after', '\nExample:\n  tunefleet nats assets --nats-url tls://nats.internal:4222 --store-limit 500')
    .description('create the events stream and every bucket with its size limit (admin credentials; idempotent)')
    .option('--store-limit <GiB>', 'the bytes shared out over the streams and buckets', '100')
    .option('--replicas <n>', 'copies of every stream and bucket: 3 on a 3-node cluster, 1 on one server', '1')
    .action(async (o: { storeLimit: string; replicas: string }, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      const replicas = intFlag(o.replicas, '--replicas', 1);
      if (replicas > 5) throw new TunefleetError(ErrorCode.FlagInvalid, '--replicas: at most 5', { field: 'replicas' });
      const n = await connectNats(cfg, 'admin');
      try {
        await ensureAssets(n, intFlag(o.storeLimit, '--store-limit', 1) * 2 ** 30, replicas);
      } finally {
        await n.close();
      }
      console.log(`streams and buckets ready on ${cfg.natsUrl}, ${replicas} replica${replicas > 1 ? 's' : ''} each`);
    });
}

interface NatsConfigFlags {
  listen: string;
  port: string;
  store: string;
  node?: string;
  route: string[];
  clusterName: string;
  routePort: string;
  monitorPort: string;
  syncAlways?: boolean;
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}
