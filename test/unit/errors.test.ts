// One error vocabulary: every code an attempt can end with is in shared/errors.ts with its
// failure class, the trainer's list (errors.py CODES) is the same as TRAINER_ERROR_CODES,
// and every code literal the trainer raises or the agent throws is in the vocabulary.
import { expect } from 'chai';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ATTEMPT_ERRORS, TRAINER_ERROR_CODES, attemptErrorClass } from '../../shared/errors';
import { FAILURE_POLICY } from '../../workflows/failures';
import { ROOT } from '../harness/stack';
import { natsFailure } from '../../shared/natsconn';
import { failureMessage } from '../../scheduler/cli/messages';

const TRAINER = join(ROOT, 'agent', 'trainer', 'tunefleet_trainer');
const read = (p: string): string => readFileSync(p, 'utf8');
const all = (re: RegExp, text: string): string[] => [...text.matchAll(re)].map((m) => m[1] as string);

describe('errors - one vocabulary', () => {
  it("errors - every attempt-error code has a failure class the workflow's table knows", () => {
    for (const [code, cls] of Object.entries(ATTEMPT_ERRORS)) expect(FAILURE_POLICY, code).to.have.property(cls);
    expect(attemptErrorClass('NO_SUCH_CODE')).to.equal('trainer_crash');
    expect(attemptErrorClass('CONFIG_INVALID')).to.equal('bad_input');
  });

  it("errors - the trainer's CODES and TRAINER_ERROR_CODES hold the same names", () => {
    const block = /CODES = frozenset\(\s*\{([^}]*)\}/.exec(read(join(TRAINER, 'errors.py')))?.[1] ?? '';
    const python = all(/"([A-Z_]+)"/g, block).sort();
    expect(python.length).to.be.greaterThan(10);
    expect(python).to.deep.equal([...TRAINER_ERROR_CODES].sort());
  });

  it('errors - every code the trainer raises or emits is in the vocabulary', () => {
    const used = new Set<string>();
    for (const f of readdirSync(TRAINER).filter((x) => x.endsWith('.py'))) {
      const src = read(join(TRAINER, f));
      for (const c of all(/TrainerError\(\s*"([A-Z_]+)"/g, src)) used.add(c);
      for (const c of all(/code="([A-Z_]+)"/g, src)) used.add(c);
    }
    expect(used.size, 'codes found in the trainer').to.be.greaterThan(10);
    const known = new Set<string>(TRAINER_ERROR_CODES);
    expect([...used].filter((c) => !known.has(c))).to.deep.equal([]);
  });

  it('errors - every failure type the agent throws is in the vocabulary', () => {
    const session = join(ROOT, 'agent', 'session');
    const files = [join(ROOT, 'agent', 'activities.ts'), ...readdirSync(session).map((f) => join(session, f))];
    const src = files.map(read).join('\n');
    const thrown = all(/attemptFailure\([^;]{0,300}?'([A-Z_]{3,})'/g, src);
    expect(thrown.length, 'attemptFailure calls found').to.be.greaterThan(5);
    expect(thrown.filter((c) => !(c in ATTEMPT_ERRORS))).to.deep.equal([]);
    // nothing bypasses the typed helper: its own body is the one raw retryable failure
    expect(src.match(/ApplicationFailure\.retryable\(/g) ?? []).to.have.length(1);
  });

  it('errors - a NATS write nobody acknowledged is said as no quorum, nothing stored; other errors pass unchanged', () => {
    const timeout = Object.assign(new Error('TIMEOUT'), { code: 'TIMEOUT' });
    expect(natsFailure(timeout)).to.match(
      /^TIMEOUT: JetStream did not acknowledge the write — no quorum .*nothing was stored$/,
    );
    expect(natsFailure(Object.assign(new Error('503'), { code: '503' }))).to.match(/no quorum/);
    expect(natsFailure(new Error('permissions violation'))).to.equal('permissions violation');
    // the CLI's one line says it too, behind what was being done
    const wrapped = Object.assign(new Error('submit failed'), { cause: timeout });
    expect(failureMessage(wrapped)).to.match(/^submit failed: TIMEOUT: JetStream did not acknowledge .*no quorum/);
  });
});
