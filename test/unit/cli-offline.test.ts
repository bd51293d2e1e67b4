// The CLI's commands that need no cluster: --version and shell completion (the bash script
// is sourced in a real bash and asked to complete).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { buildProgram } from '../../scheduler/cli/main';
import { ROOT } from '../harness/stack';

const BIN = join(ROOT, 'bin', 'tunefleet');
const cli = (...args: string[]): { status: number | null; stdout: string; stderr: string } => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};

describe('cli offline - version and completion', function () {
  this.timeout(30_000);

  it('cli offline - --version prints the package version and the protocol versions', () => {
    const r = cli('--version');
    expect(r.status).to.equal(0);
    expect(r.stdout.trim()).to.match(/^tunefleet \d+\.\d+\.\d+ \(adverts v2, trainer events v1\)$/);
  });

  it('cli offline - the bash completion, sourced in bash, completes commands, subcommands and flags', () => {
    const script = cli('completion', 'bash');
    expect(script.status, script.stderr).to.equal(0);
    const complete = (...words: string[]): string => {
      const r = spawnSync(
        'bash',
        [
          '-c',
          `eval "$(cat)"; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); ` +
            'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _tunefleet; echo "${COMPREPLY[*]}"',
        ],
        { input: script.stdout, encoding: 'utf8' },
      );
      expect(r.status, r.stderr).to.equal(0);
      return r.stdout.trim();
    };
    expect(complete('tunefleet', 'sub')).to.equal('submit');
    expect(complete('tunefleet', 'submit', '--dr')).to.equal('--dry-run');
    expect(complete('tunefleet', 'review', 'ex')).to.equal('export');
    expect(complete('tunefleet', 'ag')).to.equal('agent');
  });

  it('cli offline - zsh and fish scripts are printed; another shell is refused with exit 2', () => {
    expect(cli('completion', 'zsh').stdout)
      .to.match(/^#compdef tunefleet/)
      .and.contain("'submit:");
    expect(cli('completion', 'fish').stdout).to.contain('complete -c tunefleet -n __fish_use_subcommand -a submit');
    const bad = cli('completion', 'tcsh');
    expect(bad.status).to.equal(2);
    expect(bad.stderr).to.match(/'tcsh' is not a shell this prints for: bash, zsh or fish/);
  });

  it('cli offline - list refuses a bad --state, --since or --limit before reaching any stack, naming the flag', () => {
    for (const [flag, value] of [
      ['--state', 'nope'],
      ['--since', 'yesterday'],
      ['--limit', '0'],
    ]) {
      const r = cli('list', flag as string, value as string);
      expect(r.status, `${flag} ${value}`).to.equal(2);
      expect(r.stderr).to.contain(`${flag} '${value}'`);
    }
  });

  it("cli offline - every command's --help has an example line", () => {
    const leaves = (c: Command, path: string[]): [string, Command][] =>
      c.commands.length ? c.commands.flatMap((s) => leaves(s, [...path, s.name()])) : [[path.join(' '), c]];
    const all = leaves(buildProgram(), []);
    expect(all.length).to.be.greaterThan(15);
    for (const [name, c] of all) {
      let text = '';
      c.configureOutput({ writeOut: (t) => (text += t), writeErr: (t) => (text += t) });
      c.outputHelp();
      expect(text, name).to.match(/\nExample:\n {2}tunefleet \S/);
    }
  });

  it('cli offline - a small eval split warns at data check and submit, fails with --strict-eval; gates on an empty one are refused', () => {
    const data = join(ROOT, 'examples', 'person-extraction.jsonl');
    const check = cli('data', 'check', data);
    expect(check.status, check.stderr).to.equal(0);
    expect(check.stderr).to.match(/warning: the eval split has 2 records, fewer than 20/);
    const strict = cli('data', 'check', data, '--strict-eval');
    expect(strict.status).to.equal(2);
    expect(strict.stderr).to.match(/refused \(--strict-eval\)/);

    const spec = join(ROOT, 'examples', 'chat-unit-conversions.yaml');
    const dry = cli('submit', spec, '--dry-run');
    expect(dry.status, dry.stderr).to.equal(0);
    expect(dry.stderr).to.match(/warning: the eval split has 5 records/);
    expect(cli('submit', spec, '--dry-run', '--strict-eval').status).to.equal(2);

    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-eval-'));
    writeFileSync(join(dir, 'one.jsonl'), '{"prompt": "a", "completion": "b"}\n');
    writeFileSync(
      join(dir, 'job.yaml'),
      'name: one\nmodel: m\nmethod: lora\ndataset: {path: one.jsonl}\nevaluation: {gates: ["eval_loss <= base"]}\n',
    );
    const gated = cli('submit', join(dir, 'job.yaml'), '--dry-run');
    expect(gated.status).to.equal(2);
    expect(gated.stderr).to.match(
      /the eval split would be empty \(1 record\), so the gates \(eval_loss <= base\) cannot/,
    );
  });
});
