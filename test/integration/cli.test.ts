// The CLI refuses bad specs before anything starts, with no stack running.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..', '..');

function submit(spec: string, withData = true): { status: number | null; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tunefleet-cli-'));
  if (withData) writeFileSync(join(dir, 'data.jsonl'), '{"text":"x"}\n');
  writeFileSync(join(dir, 'job.yaml'), spec);
  // addresses where nothing listens: the spec must be refused before any connection
  const env = {
    ...process.env,
    TUNEFLEET_HOME: dir,
    TUNEFLEET_NATS_URL: 'nats://127.0.0.1:1',
    TUNEFLEET_TEMPORAL_ADDRESS: '127.0.0.1:1',
  };
  return spawnSync(process.execPath, [join(ROOT, 'bin', 'tunefleet'), 'submit', join(dir, 'job.yaml')], {
    env,
    encoding: 'utf8',
  });
}

const good =
  'name: j\nmodel: SmolLM2-135M-Instruct\nmethod: lora\ndataset:\n  path: data.jsonl\ntraining:\n  learning_rate: 0.001\n';

describe('cli - bad specs are refused before anything starts', function () {
  this.timeout(30_000);
  const cases: [string, string, RegExp][] = [
    ['an unknown method', good.replace('method: lora', 'method: lorra'), /job\.yaml:3: method: /],
    ['a negative learning rate', good.replace('0.001', '-0.001'), /job\.yaml:7: training\.learning_rate: /],
    ['an unknown key', good + 'gpus: 8\n', /job\.yaml:8: gpus: unknown key/],
    ['a wrong type', good.replace('learning_rate: 0.001', 'learning_rate: fast'), /training\.learning_rate: .*number/],
  ];
  for (const [what, spec, pattern] of cases) {
    it(`cli - ${what}`, () => {
      const r = submit(spec);
      expect(r.status).to.equal(2);
      expect(r.stderr).to.match(pattern);
    });
  }

  it('cli - a missing dataset file names dataset.path', () => {
    const r = submit(good, false);
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(/dataset\.path: no such file/);
  });

  it('cli - a valid spec with no stack says the stack is not up', () => {
    const r = submit(good);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/tunefleet up/);
  });

  it('cli - --help lists the commands', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'tunefleet'), '--help'], { encoding: 'utf8' });
    for (const c of [
      'submit',
      'status',
      'list',
      'result',
      'download',
      'models',
      'export',
      'generate',
      'chat',
      'watch',
      'logs',
      'explain',
      'cancel',
      'fleet',
      'cordon',
      'uncordon',
      'drain',
      'data',
      'worker',
      'tunefleet up',
      'tunefleet agent start',
    ])
      expect(r.stdout).to.include(c);
    const agent = spawnSync(process.execPath, [join(ROOT, 'bin', 'tunefleet'), 'agent', 'start', '--help'], {
      encoding: 'utf8',
    });
    for (const f of ['--capacity', '--max-sessions', '--heartbeat', '--label']) expect(agent.stdout).to.include(f);
  });
});
