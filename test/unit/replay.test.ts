// Determinism guard: replay every recorded workflow history (fineTune, chat, sweep) (test/fixtures/histories,
// History protobufs recorded by the integration tests with TUNEFLEET_RECORD_HISTORIES=1) against the
// current workflow code. A change that reorders commands, timers or activities fails here.
import { expect } from 'chai';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { installRuntime } from '../../shared/metrics';

const DIR = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'histories');

describe('replay - recorded workflow histories', function () {
  this.timeout(120_000);
  const files = readdirSync(DIR)
    .filter((f) => f.endsWith('.pb'))
    .sort();

  it('replay - there are recorded histories: succeeded, recovered after kill -9, cancelled, queued, queued across a continue-as-new, a chat, a sweep and its promoted trial', () => {
    expect(files).to.include.members([
      'succeeded.pb',
      'recovered-after-kill9.pb',
      'cancelled.pb',
      'queued-then-placed.pb',
      // the run that handed over (ends ContinuedAsNew) and the run that took over and finished
      'queued-continued-as-new.pb',
      'queued-after-continue-as-new.pb',
      // a chat: two turn signals, the agent's turns, the end signal, chatEnd and the release
      'chat.pb',
      // an ASHA sweep (children started, trials' signals, promotions, stops) and a trial it promoted to the end
      'sweep-asha.pb',
      'sweep-trial-promoted.pb',
    ]);
  });

  it('replay - every history replays on the current workflow code', async () => {
    await installRuntime();
    const histories = files.map((f) => ({
      workflowId: f.replace(/\.pb$/, ''),
      history: temporal.api.history.v1.History.decode(readFileSync(join(DIR, f))),
    }));
    const failures: string[] = [];
    for await (const r of Worker.runReplayHistories({ workflowsPath: require.resolve('../../workflows') }, histories)) {
      if (r.error) failures.push(`${r.workflowId}: ${r.error.message}`);
    }
    expect(failures).to.deep.equal([]);
  });
});
