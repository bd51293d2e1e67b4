// The operator's commands: fleet (view), cordon, uncordon, drain, and running a control worker.
import { Command, Option } from 'commander';
import { hostname, userInfo } from 'node:os';
import { loadConfig } from '../../config';
import { fleetJson, fleetTable, openFleet, setAgentState } from '../fleetcmd';
import { startControlWorker } from '../../worker';
import { parseMetricsAddress } from '../../../shared/metrics';
import { ErrorCode, TunefleetError } from '../../../shared';
import { startUi } from '../../ui/start';
import { join } from 'node:path';
import { globalFlags, redraws, withClient } from './common';

export function fleetCommands(program: Command): void {
  program
    .command('fleet')
    .addHelpText('after', '\nExample:\n  tunefleet fleet --watch')
    .description('every live agent: state, GPUs, memory, utilisation, temperature, CUDA, jobs')
    .option('--json', 'machine-readable output (the adverts, with allocatable bytes)')
    .option('--watch', 'redraw in place as adverts change (Ctrl-C to stop)')
    .action(async (opts: { json?: boolean; watch?: boolean }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const view = await openFleet(await client.nats());
        try {
          if (!opts.watch) {
            const entries = view.snapshot();
            console.log(opts.json ? JSON.stringify(fleetJson(entries), null, 1) : fleetTable(entries));
            return;
          }
          const draw = (): void => {
            const entries = view.snapshot();
            const body = opts.json ? JSON.stringify(fleetJson(entries)) : fleetTable(entries);
            // on a terminal the view is redrawn in place; elsewhere each change is appended
            const clear = redraws() ? '\x1b[H\x1b[2J' : '';
            process.stdout.write(`${clear}${new Date().toISOString()}  ${entries.length} agents\n\n${body}\n`);
          };
          draw();
          let pending = false;
          view.onChange(() => {
            if (pending) return;
            pending = true;
            setTimeout(() => {
              pending = false;
              draw();
            }, 100);
          });
          const tick = setInterval(draw, 1000); // agents that fall silent expire without an event
          await new Promise<void>((res) =>
            process.once('SIGINT', () => {
              clearInterval(tick);
              res();
            }),
          );
        } finally {
          await view.stop();
        }
      });
    });

  for (const [name, state, what] of [
    ['cordon', 'cordoned', 'take no new jobs; running ones continue'],
    ['uncordon', 'ready', 'take new jobs again (also ends a drain)'],
    ['drain', 'draining', 'take no new jobs; running jobs checkpoint now and move to other agents; then drained'],
  ] as const) {
    program
      .command(name)
      .addHelpText('after', `\nExample:\n  tunefleet ${name} gpu-7`)
      .description(what)
      .argument('<agent>')
      .action(async (agentId: string, _opts: unknown, cmd: Command) => {
        await withClient(
          cmd,
          async (client) => {
            const r = await setAgentState(await client.nats(), agentId, state, `${userInfo().username}@${hostname()}`);
            console.log(
              r.confirmed
                ? `${agentId}: ${r.confirmed}`
                : `${agentId}: ${state} recorded; the agent has not confirmed it (is it running?). ` +
                    'Placement honours it already.',
            );
          },
          'operator',
        );
      });
  }

  program
    .command('ui')
    .addHelpText('after', '\nExample:\n  tunefleet ui --address 127.0.0.1:8300   # then open the printed address')
    .description(
      'the web console: the fleet (devices, jobs on them, cordon/drain), the queue and jobs (cancel), each job ' +
        '(live loss, attempts, placement, evaluation); prints its address with a login token',
    )
    .addOption(
      new Option('--address <host:port>', 'where to listen (loopback by default; port 0: any free one)')
        .env('TUNEFLEET_UI_ADDRESS')
        .default('127.0.0.1:8300'),
    )
    .addOption(
      new Option('--temporal-ui <url>', "Temporal's web UI, for a link from each job (e.g. http://temporal:8080)").env(
        'TUNEFLEET_TEMPORAL_UI',
      ),
    )
    .action(async (opts: { address: string; temporalUi?: string }, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      const where = parseMetricsAddress(opts.address, '--address');
      if (!where)
        throw new TunefleetError(ErrorCode.FlagInvalid, 'the console needs an address', { field: '--address' });
      const ui = await startUi(cfg, where, undefined, opts.temporalUi ?? null);
      console.log(`[ui] console on ${ui.url}/fleet?token=${ui.tokens.operator}`);
      console.log(
        `[ui] operator token: ${join(cfg.home, 'secrets', 'ui-operator.token')}; read-only token: ` +
          `${join(cfg.home, 'secrets', 'ui-viewer.token')}`,
      );
      const stop = (): void => void ui.close().then(() => process.exit(0));
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      await new Promise(() => {});
    });

  program
    .command('worker')
    .addHelpText(
      'after',
      '\nExample:\n  tunefleet worker --temporal-address temporal.internal:7233 --nats-url nats://nats.internal:4222',
    )
    .description('run a control worker (workflows, placement, data preparation) until SIGTERM')
    .addOption(
      new Option(
        '--metrics-address <host:port>',
        'where to serve Prometheus /metrics (port 0: any free one; off: none)',
      )
        .env('TUNEFLEET_WORKER_METRICS_ADDRESS')
        .default('127.0.0.1:9465'),
    )
    .action(async (opts: { metricsAddress: string }, cmd: Command) => {
      const cfg = loadConfig(globalFlags(cmd));
      const metricsAddress = parseMetricsAddress(opts.metricsAddress, '--metrics-address');
      const w = await startControlWorker(cfg, undefined, metricsAddress ? { metricsAddress } : {});
      console.log(`[worker] polling tunefleet-control on ${cfg.temporalAddress}; NATS ${cfg.natsUrl}`);
      const stop = (): void => void w.stop();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      await w.run;
    });
}
