// `npm run lint` (infra/lint.sh) fails on a file that is not formatted, on a Python lint
// error and on an over-long line, naming the check; it passes on formatted files. Runs the
// real prettier and ruff (bootstrap installs ruff into $TUNEFLEET_HOME/bin).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../harness/stack';

describe('lint - infra/lint.sh', function () {
  this.timeout(60_000);
  let dir: string;
  const lint = (...files: string[]): { status: number | null; out: string } => {
    const r = spawnSync('bash', [join(ROOT, 'infra', 'lint.sh'), ...files.map((f) => join(dir, f))], {
      encoding: 'utf8',
    });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tunefleet-lint-'));
    writeFileSync(join(dir, 'good.ts'), 'export const greeting = (name: string): string => `hello ${name}`;\n');
    writeFileSync(join(dir, 'good.py'), 'def greeting(name):\n    return f"hello {name}"\n');
    writeFileSync(join(dir, 'unformatted.ts'), 'export const greeting=(name:string):string=>{return "hello "+name}\n');
    writeFileSync(join(dir, 'unformatted.py'), 'def greeting( name ):\n  return "hello "+name\n');
    writeFileSync(join(dir, 'unused.py'), 'import os\n\n\ndef greeting(name):\n    return name\n');
    writeFileSync(join(dir, 'long.ts'), `// ${'x'.repeat(130)}\nexport const a = 1;\n`);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('lint - formatted TypeScript and Python pass', () => {
    const r = lint('good.ts', 'good.py');
    expect(r.status, r.out).to.equal(0);
  });

  it('lint - unformatted TypeScript fails, naming prettier and the file', () => {
    const r = lint('good.ts', 'unformatted.ts');
    expect(r.status).to.equal(1);
    expect(r.out)
      .to.contain('unformatted.ts')
      .and.match(/lint failed: prettier/);
  });

  it('lint - unformatted Python fails ruff format; an unused import fails ruff check', () => {
    const f = lint('unformatted.py');
    expect(f.status).to.equal(1);
    expect(f.out).to.match(/lint failed: .*ruff format/);
    const u = lint('unused.py');
    expect(u.status).to.equal(1);
    expect(u.out)
      .to.contain('F401')
      .and.match(/lint failed: ruff check/);
  });

  it('lint - a line over 120 characters fails, with file, line and length', () => {
    const r = lint('long.ts');
    expect(r.status).to.equal(1);
    expect(r.out)
      .to.match(/long\.ts:1: 133 characters \(at most 120\)/)
      .and.match(/line length/);
  });
});
