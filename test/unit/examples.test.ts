// Every example job spec (examples/*.yaml) is accepted by `tunefleet submit --dry-run` (the
// spec and its dataset checked as a real submit would, without a cluster). The demo's spec
// gets its data the way `npm run demo` makes it, from /etc/mime.types.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEMO_SPEC_FILE, MIME_TYPES, mimeRecords } from '../../infra/demo';
import { ROOT } from '../harness/stack';

const EXAMPLES = join(ROOT, 'examples');

describe('examples - job specs a user can copy', function () {
  this.timeout(60_000);
  const specs = readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml'));
  const dryRun = (spec: string): { status: number | null; out: string } => {
    const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'tunefleet'), 'submit', spec, '--dry-run'], {
      encoding: 'utf8',
    });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };

  it('examples - the demo, a chat job, a QLoRA job and a job with a tool scorer and gates are there, each commented', () => {
    expect(specs).to.include.members([
      'mime-extensions.yaml',
      'chat-unit-conversions.yaml',
      'qlora-gpu.yaml',
      'json-extraction-tool-gates.yaml',
    ]);
    for (const f of specs) expect(readFileSync(join(EXAMPLES, f), 'utf8'), f).to.match(/^# /);
    expect(DEMO_SPEC_FILE).to.equal(join(EXAMPLES, 'mime-extensions.yaml'));
  });

  for (const f of readdirSync(EXAMPLES).filter((x) => x.endsWith('.yaml'))) {
    it(`examples - ${f} passes submit --dry-run`, () => {
      let spec = join(EXAMPLES, f);
      let tmp: string | null = null;
      if (f === 'mime-extensions.yaml') {
        expect(existsSync(MIME_TYPES), `${MIME_TYPES} (bootstrap installs media-types)`).to.equal(true);
        tmp = mkdtempSync(join(tmpdir(), 'tunefleet-example-'));
        const records = mimeRecords(readFileSync(MIME_TYPES, 'utf8'));
        writeFileSync(join(tmp, 'mime-extensions.jsonl'), records.map((r) => JSON.stringify(r)).join('\n') + '\n');
        spec = join(tmp, f);
        copyFileSync(join(EXAMPLES, f), spec);
      }
      try {
        const r = dryRun(spec);
        expect(r.status, r.out).to.equal(0);
        expect(r.out).to.match(/: valid \(/);
      } finally {
        if (tmp) rmSync(tmp, { recursive: true, force: true });
      }
    });
  }

  const SWEEPS = join(EXAMPLES, 'sweeps');
  it('examples - every example sweep (examples/sweeps) passes sweep submit --dry-run, listing its trials', () => {
    const sweeps = readdirSync(SWEEPS).filter((x) => x.endsWith('.yaml'));
    expect(sweeps).to.include('unit-conversions-lr-rank.yaml');
    for (const f of sweeps) {
      expect(readFileSync(join(SWEEPS, f), 'utf8'), f).to.match(/^# /);
      const r = spawnSync(
        process.execPath,
        [join(ROOT, 'bin', 'tunefleet'), 'sweep', 'submit', join(SWEEPS, f), '--dry-run', '--json'],
        { encoding: 'utf8' },
      );
      expect(r.status, r.stderr).to.equal(0);
      const out = JSON.parse(r.stdout) as { sweep: { budget: { max_trials: number } }; trials: unknown[] };
      expect(out.trials.length, f).to.be.within(1, out.sweep.budget.max_trials);
    }
  });
});
