// The local stack's services as `tunefleet up` starts them: the Temporal dev server on a database kept across
// restarts (the real `temporal` binary).
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTemporal, stopProcess } from '../../infra/services';
import { SEARCH_ATTRIBUTES } from '../../workflows/searchAttributes';
import { installedHome } from '../harness/stack';

describe('services - the Temporal dev server', function () {
  this.timeout(180_000);

  it('services - a database made before some search attributes existed gets them at the next start (the others kept)', async () => {
    const home = installedHome();
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-services-'));
    const o = { home, dataDir: join(dir, 'data'), logDir: join(dir, 'logs') };
    const temporal = join(home, 'bin', 'temporal');
    const names = (address: string): string[] =>
      execFileSync(temporal, ['operator', 'search-attribute', 'list', '--address', address, '-o', 'json'], {
        encoding: 'utf8',
      })
        .split('"')
        .filter((w) => w.startsWith('Tunefleet'));
    let t = await startTemporal(o);
    try {
      // as an older tunefleet left it: the two newest attributes absent
      const older = ['TunefleetAttempt', 'TunefleetParent'];
      execFileSync(temporal, [
        'operator',
        'search-attribute',
        'remove',
        '--address',
        t.address,
        '--yes',
        ...older.flatMap((n) => ['--name', n]),
      ]);
      expect(names(t.address)).to.not.include.members(older);
      await stopProcess(t.pid, 10_000);
      t = await startTemporal(o);
      expect(new Set(names(t.address))).to.deep.equal(new Set(SEARCH_ATTRIBUTES.map((k) => k.name)));
    } finally {
      await stopProcess(t.pid, 10_000);
    }
  });
});
