// The model registry: every registered adapter with where it came from and what it scored.
import { Command } from 'commander';
import type { ModelRecord } from '../../../shared';
import { listModels, removeModel, showModel } from '../client';
import { f4, table } from '../format';
import { withClient } from './common';

const short = (sha: string | null | undefined): string => (sha ? sha.slice(0, 12) : '-');

/** `tunefleet models show`: the record as a person reads it (the model card has the same, in Markdown). */
export function formatModel(r: ModelRecord): string {
  const s = r.spec.training;
  const rows: [string, string][] = [
    ['model', `${r.id} (${r.state}, registered ${r.created})`],
    ['base', `${r.base.name}, weights sha256 ${r.base.sha256 ?? 'not recorded'}`],
    ['method', r.method],
    ['parent', r.parent ?? 'none (trained from the base model)'],
    [
      'dataset',
      `sha256 ${r.data.dataset.sha256} (${r.data.dataset.bytes} bytes, ${r.data.format})` +
        (r.data.evalDataset ? `; eval file sha256 ${r.data.evalDataset.sha256}` : ''),
    ],
    [
      'splits',
      `${r.data.trainRecords} train (sha256 ${r.data.trainSha256 ?? '-'}), ` +
        `${r.data.evalRecords} eval (sha256 ${r.data.evalSha256 ?? '-'})`,
    ],
    [
      'training',
      `${r.training.steps} steps, batch ${s.batch_size}, learning rate ${s.learning_rate} (${s.lr_scheduler}), ` +
        `attempt ${r.training.attempt} on ${r.training.agentId}, ${r.training.seconds.toFixed(0)} s`,
    ],
    ['eval loss', `${f4(r.metrics.base.eval_loss)} -> ${f4(r.metrics.tuned.eval_loss)} (base -> fine-tuned)`],
    ...r.gates.map((g): [string, string] => ['gate', `${g.passed ? 'passed' : 'FAILED'}: ${g.message}`]),
    [
      'versions',
      r.versions
        ? Object.entries(r.versions)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')
        : 'not reported',
    ],
    ['adapter', `${r.adapter.files.map((f) => f.name).join(', ')} (tunefleet download ${r.id})`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

export function modelCommands(program: Command): void {
  const models = program
    .command('models')
    .description('the model registry: every registered adapter, its base model, data, settings and scores');
  models
    .command('list', { isDefault: true })
    .addHelpText('after', '\nExample:\n  tunefleet models --json')
    .description('every registered adapter, newest first: base model, method, dataset, steps, eval loss, gates')
    .option('--json', 'machine-readable output (the records)')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const all = await listModels(client, (m) => console.error(`warning: ${m}`));
        if (opts.json) return console.log(JSON.stringify(all, null, 1));
        if (all.length === 0) return console.log('no registered adapters yet (a job registers one when it finishes)');
        console.log(
          table(
            ['MODEL', 'BASE', 'METHOD', 'DATASET', 'STEPS', 'EVAL LOSS BASE -> TUNED', 'GATES', 'REGISTERED'],
            all.map((r) => [
              r.id,
              r.base.name,
              r.method,
              short(r.data.dataset.sha256),
              r.training.steps,
              `${f4(r.metrics.base.eval_loss)} -> ${f4(r.metrics.tuned.eval_loss)}`,
              r.gates.length ? `${r.gates.filter((g) => g.passed).length}/${r.gates.length} passed` : '-',
              r.created.replace('T', ' ').slice(0, 16),
            ]),
          ),
        );
      });
    });
  models
    .command('show')
    .addHelpText('after', '\nExample:\n  tunefleet models show mime-extensions-mf3k2a')
    .description("one adapter's record: lineage (base weights, dataset and split digests, parent), spec, scores")
    .argument('<model>', 'the id of the job that trained it')
    .option('--json', 'the whole record, with the full spec')
    .action(async (id: string, opts: { json?: boolean }, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const r = await showModel(client, id);
        console.log(opts.json ? JSON.stringify(r, null, 1) : formatModel(r));
      });
    });
  models
    .command('rm')
    .addHelpText('after', '\nExample:\n  tunefleet models rm mime-extensions-mf3k2a')
    .description(
      "remove a registered adapter (its files, event files and record; the job's result stays); " +
        'refused while a running job continues from it',
    )
    .argument('<model>', 'the id of the job that trained it')
    .action(async (id: string, _opts: object, cmd: Command) => {
      await withClient(cmd, async (client) => {
        const r = await removeModel(client, id);
        console.log(`removed the adapter of ${id}: ${r.files} files, ${r.bytes} bytes`);
      });
    });
}
