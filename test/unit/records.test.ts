// What crosses a trust boundary is checked: KV records on read, text before it is printed,
// credentials in URLs, the trainer's environment, a request as the agent receives it.
import { expect } from 'chai';
import { ApplicationFailure } from '@temporalio/activity';
import { resolveConfig, TunefleetError } from '../../shared';
import { agentLeasesSchema, commitRecordSchema, printable, queueEntrySchema, readRecord } from '../../shared/records';
import { formatEvent } from '../../scheduler/cli/progress';
import { trainerEnv } from '../../shared/trainerenv';
import { checkRequest } from '../../agent/session/inputs';
import { spec } from '../harness/placement-fixtures';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('records - KV values are checked when read', () => {
  it('records - a value that is not JSON, or not the record, is skipped with a warning naming where it was', () => {
    const warnings: string[] = [];
    const warn = (m: string): number => warnings.push(m);
    expect(readRecord(agentLeasesSchema, bytes('not json'), 'leases/agent-a (revision 7)', warn)).to.equal(null);
    expect(readRecord(agentLeasesSchema, bytes('{"leases":[{"jobId":"j"}]}'), 'leases/agent-b', warn)).to.equal(null);
    expect(readRecord(queueEntrySchema, bytes('{"jobId":"x","priority":"high"}'), 'queue/x', warn)).to.equal(null);
    // a commit with a huge epoch but none of the rest is not a commit
    expect(readRecord(commitRecordSchema, bytes('{"epoch":1e9}'), 'commits/j', warn)).to.equal(null);
    expect(warnings).to.have.length(4);
    expect(warnings[0]).to.match(/^skipped leases\/agent-a \(revision 7\): not JSON/);
    expect(warnings[1]).to.match(/^skipped leases\/agent-b: not a valid record \(leases\.0\.attempt: /);
    expect(warnings[2]).to.match(/priority/);
  });

  it('records - a valid record reads back as itself', () => {
    const lease = { jobId: 'j-1', attempt: 2, bytes: 1024, purpose: 'train', time: 5, devices: ['GPU-1'] };
    const warn = (m: string): never => {
      throw new Error(m);
    };
    expect(readRecord(agentLeasesSchema, bytes(JSON.stringify({ leases: [lease] })), 'l', warn)).to.deep.equal({
      leases: [lease],
    });
  });
});

describe('records - text from other processes is printed without control characters', () => {
  it('records - escape sequences, bidi overrides and other control characters are removed; newlines and tabs stay', () => {
    expect(printable('ok\x1b]0;owned\x07 \x1b[2Jdone\u202e!\n\tnext')).to.equal('ok]0;owned [2Jdone!\n\tnext');
  });

  it('records - a forged log event with an escape sequence prints none', () => {
    const line = formatEvent({
      type: 'log',
      level: 'warning',
      message: 'innocent \x1b[2J\x1b]52;c;ZXZpbA==\x07text',
      time: 1,
      v: 1,
      agent_id: 'a',
      job_id: 'j',
      attempt: 1,
    } as never);
    expect(line).to.equal('innocent [2J]52;c;ZXZpbA==text');
    expect(line).to.not.match(/[\x00-\x08\x0b-\x1f\x7f]/);
  });
});

describe('records - credentials never travel in a URL', () => {
  it('records - a NATS URL with user info is refused, and the message does not repeat it', () => {
    let err: unknown = null;
    try {
      resolveConfig({}, { natsUrl: 'nats://admin:s3cret@10.0.0.5:4222' }, '/home/x', () => null);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(TunefleetError);
    expect((err as Error).message).to.match(/carries credentials/);
    expect((err as Error).message).to.not.contain('s3cret');
    expect(resolveConfig({}, { natsUrl: 'nats://10.0.0.5:4222' }, '/home/x', () => null).natsUrl).to.equal(
      'nats://10.0.0.5:4222',
    );
  });
});

describe('records - a trainer inherits a filtered environment', () => {
  it('records - locale, paths and CUDA/torch/HF knobs pass; tunefleet settings, tokens and other secrets do not', () => {
    const env = trainerEnv({
      PATH: '/usr/bin',
      HOME: '/home/x',
      LC_ALL: 'C.UTF-8',
      CUDA_LAUNCH_BLOCKING: '1',
      NCCL_DEBUG: 'INFO',
      HF_HOME: '/cache/hf',
      HF_TOKEN: 'hf_secret',
      AWS_SECRET_ACCESS_KEY: 'x',
      TUNEFLEET_NATS_URL: 'nats://127.0.0.1:4222',
      TUNEFLEET_TEMPORAL_TLS_KEY: '/secrets/key.pem',
      SSH_AUTH_SOCK: '/tmp/agent.sock',
    });
    expect(Object.keys(env).sort()).to.deep.equal([
      'CUDA_LAUNCH_BLOCKING',
      'HF_HOME',
      'HOME',
      'LC_ALL',
      'NCCL_DEBUG',
      'PATH',
    ]);
  });
});

describe('records - the agent checks a request again as Temporal delivered it', () => {
  const req = { jobId: 'job-1', spec, devices: ['GPU-0000-aaaa'] };

  it('records - a valid request passes, defaults filled in', () => {
    const { resources: _dropped, ...older } = spec;
    const checked = checkRequest({ ...req, spec: older as typeof spec });
    expect(checked.spec.resources.gpus).to.equal(1);
  });

  it('records - an invalid spec, job id or device name is refused without retry, naming the field', () => {
    const bad = (r: Parameters<typeof checkRequest>[0]): ApplicationFailure => {
      try {
        checkRequest(r);
      } catch (e) {
        return e as ApplicationFailure;
      }
      throw new Error('not refused');
    };
    const spec1 = bad({ ...req, spec: { ...spec, training: { ...spec.training, learning_rate: -1 } } });
    expect(spec1.nonRetryable).to.equal(true);
    expect(spec1.message).to.match(/training\.learning_rate/);
    expect(bad({ ...req, jobId: '../../etc' }).message).to.match(/is not a job id/);
    expect(bad({ ...req, devices: ['GPU-1,GPU-2'] }).message).to.match(/is not a device name/);
  });
});
