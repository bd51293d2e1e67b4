import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { buildAgentProgram } from '../../agent/cli';
import {
  defaultMaxSessions,
  onPath,
  parseNice,
  threadEnv,
  threadsPerSession,
  withPriority,
} from '../../agent/priority';
import { TunefleetError } from '../../shared';

const niceOfChild = (argv: string[]): number => {
  // the child prints its own /proc stat; field 19 is nice
  const out = execFileSync(argv[0] as string, [...argv.slice(1)], { encoding: 'utf8' });
  return Number(out.slice(out.lastIndexOf(')') + 2).split(' ')[16]);
};

describe('priority - trainers below their agent', function () {
  this.timeout(20_000); // real child processes (python3 among them) on a loaded machine
  it('priority - nice (and ionice where present) go in front of the command; nice 0 adds nothing', () => {
    const all = (n: string): string | null => `/usr/bin/${n}`;
    expect(withPriority(['py', '-m', 't'], { nice: 10 }, all).argv).to.deep.equal([
      '/usr/bin/nice',
      '-n',
      '10',
      '/usr/bin/ionice',
      '-c',
      '2',
      '-n',
      '7',
      '-t',
      'py',
      '-m',
      't',
    ]);
    expect(withPriority(['py'], { nice: 5 }, (n) => (n === 'nice' ? '/bin/nice' : null)).argv).to.deep.equal([
      '/bin/nice',
      '-n',
      '5',
      'py',
    ]);
    expect(withPriority(['py'], { nice: 0 }, all)).to.deep.equal({ argv: ['py'], note: null });
    const none = withPriority(['py'], { nice: 10 }, () => null);
    expect(none.argv).to.deep.equal(['py']);
    expect(none.note).to.match(/'nice' is not on PATH/);
  });

  it('priority - the wrapped process really runs 10 levels below its parent, every thread of it', () => {
    const mine = niceOfChild(['cat', '/proc/self/stat']);
    const { argv } = withPriority(['cat', '/proc/self/stat'], { nice: 10 });
    expect(niceOfChild(argv)).to.equal(Math.min(19, mine + 10));
    // threads started by the child inherit it: python's threads report their own nice
    const py = onPath('python3');
    if (!py) return;
    const r = spawnSync(
      withPriority([py], { nice: 10 }).argv[0] as string,
      [
        ...withPriority(
          [
            py,
            '-c',
            `
import os, threading
out = []
def nice(): out.append(int(open('/proc/self/task/%d/stat' % threading.get_native_id()).read().rsplit(')', 1)[1].split()[16]))
t = threading.Thread(target=nice); t.start(); t.join(); nice()
print(out)`,
          ],
          { nice: 10 },
        ).argv.slice(1),
      ],
      { encoding: 'utf8' },
    );
    expect(JSON.parse(r.stdout)).to.deep.equal([Math.min(19, mine + 10), Math.min(19, mine + 10)]);
  });

  it('priority - --trainer-nice takes 0 to 19 and names the flag otherwise', async () => {
    expect([
      parseNice('0'),
      parseNice('10'),
      parseNice('19'),
      parseNice('20'),
      parseNice('-1'),
      parseNice('1.5'),
      parseNice('ten'),
    ]).to.deep.equal([0, 10, 19, null, null, null, null]);
    const err = await buildAgentProgram()
      .exitOverride()
      .parseAsync(['node', 'tunefleet agent', 'start', '--id', 'a', '--trainer-nice', '25'])
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(err).to.be.instanceOf(TunefleetError);
    expect((err as TunefleetError).describe())
      .to.match(/--trainer-nice/)
      .and.match(/0 to 19/);
  });

  it('priority - sessions split the cores: cores / max sessions threads each, at least one', async () => {
    expect([
      threadsPerSession(2, 4),
      threadsPerSession(2, 1),
      threadsPerSession(96, 8),
      threadsPerSession(8, 3),
      threadsPerSession(1, 0),
    ]).to.deep.equal([1, 2, 12, 2, 1]);
    // CPU agents: one session per 2 cores (1 to 4), so a lone trainer on 2 cores has both; CUDA agents: 4
    expect([1, 2, 3, 4, 8, 64].map((c) => defaultMaxSessions(false, c))).to.deep.equal([1, 1, 1, 2, 4, 4]);
    expect([defaultMaxSessions(true, 2), defaultMaxSessions(true, 64)]).to.deep.equal([4, 4]);
    expect(threadsPerSession(2, defaultMaxSessions(false, 2))).to.equal(2);
    expect(threadEnv(3)).to.deep.equal({ OMP_NUM_THREADS: '3', MKL_NUM_THREADS: '3' });
    for (const bad of ['0', '1.5', 'many', '2000']) {
      const err = await buildAgentProgram()
        .exitOverride()
        .parseAsync(['node', 'tunefleet agent', 'start', '--id', 'a', '--trainer-threads', bad])
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err, bad).to.be.instanceOf(TunefleetError);
      expect((err as TunefleetError).describe()).to.match(/--trainer-threads/);
    }
  });
});
