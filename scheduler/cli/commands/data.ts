// Datasets without a cluster: data check.
import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { ErrorCode, TunefleetError, datasetSchema, MIN_EVAL_RECORDS, smallEvalSplit } from '../../../shared';
import { loadSpecFile } from '../client';
import { formatDataReport } from '../format';

export function dataCommands(program: Command): void {
  const data = program.command('data').description('datasets, without a cluster');
  data
    .command('check')
    .addHelpText('after', '\nExample:\n  tunefleet data check train.jsonl --spec job.yaml')
    .description('run the prepare pipeline (checks, cleaning, dedup, split) on a local JSONL file and print the report')
    .argument('<file>', 'JSONL dataset')
    .option('--spec <job.yaml>', "use this spec's dataset options (policy, clean, dedup, split)")
    .option('--lenient', 'drop malformed records instead of failing')
    .option('--json', 'machine-readable report')
    .option('--strict-eval', `fail (exit 2) when the eval split has fewer than ${MIN_EVAL_RECORDS} records`)
    .action(async (file: string, opts: { spec?: string; lenient?: boolean; json?: boolean; strictEval?: boolean }) => {
      const { analyse, fileSource } = await import('../../prepare');
      const dataset = opts.spec ? (await loadSpecFile(opts.spec)).spec.dataset : datasetSchema.parse({ path: file });
      if (opts.lenient) dataset.policy = 'lenient';
      if (!existsSync(file))
        throw new TunefleetError(ErrorCode.DatasetMissing, `no such file: ${file}`, { field: 'file' });
      const { report } = await analyse({ spec: { dataset }, main: { source: fileSource(file), label: file } });
      console.log(opts.json ? JSON.stringify(report, null, 1) : formatDataReport(report));
      const small = smallEvalSplit(report.eval_records);
      if (small && opts.strictEval)
        throw new TunefleetError(ErrorCode.DatasetInvalid, `${small}; refused (--strict-eval)`);
      if (small) console.error(`warning: ${small}`);
    });
}
