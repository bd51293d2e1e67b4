// test/bench/RESULTS.md: newest table first, under the page's title and introduction.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const RESULTS = join(resolve(__dirname, '..', '..', '..'), 'test', 'bench', 'RESULTS.md');
const HEAD =
  '# Benchmark results\n\nNewest first. Each table comes from one run of the named benchmark; ratios compare with a baseline measured in the same run.';

export function recordResult(table: string): void {
  const text = existsSync(RESULTS) ? readFileSync(RESULTS, 'utf8') : `${HEAD}\n`;
  const [title, intro, ...rest] = text.split('\n\n');
  writeFileSync(
    RESULTS,
    [title, intro, table, ...rest]
      .filter((x) => x !== undefined && x !== '')
      .join('\n\n')
      .replace(/\n*$/, '\n'),
  );
}
