// The wait queue's order and what a lease holds.
import { expect } from 'chai';
import { ahead, heldOn, leaseLive, queueOrder, type QueueEntry } from '../../scheduler/leases';

import { GiB, advert } from '../harness/placement-fixtures';

describe('queue and leases', () => {
  const q = (jobId: string, priority: number, submitted: string): QueueEntry => ({
    jobId,
    priority,
    submitted,
    bytes: GiB,
    refreshed: 0,
  });
  it('queue - higher priority first, then earlier submission', () => {
    const list = [
      q('c', 50, '2026-01-01T00:00:03Z'),
      q('a', 50, '2026-01-01T00:00:01Z'),
      q('z', 90, '2026-01-01T00:00:09Z'),
    ].sort(queueOrder);
    expect(list.map((x) => x.jobId)).to.deep.equal(['z', 'a', 'c']);
    expect(
      ahead(list, { jobId: 'c', priority: 50, submitted: '2026-01-01T00:00:03Z' }).map((x) => x.jobId),
    ).to.deep.equal(['z', 'a']);
    expect(ahead(list, { jobId: 'z', priority: 90, submitted: '2026-01-01T00:00:09Z' })).to.deep.equal([]);
  });

  it('leases - a lease counts while young or while the agent reports the session; a leaked one stops counting', () => {
    const l = { jobId: 'j', attempt: 2, bytes: GiB, purpose: 'train' as const, time: 0 };
    expect(leaseLive(l, undefined, 1000)).to.equal(true);
    expect(leaseLive(l, advert('a'), 10 * 60_000)).to.equal(false);
    expect(
      leaseLive(
        l,
        advert('a', { sessions: [{ job_id: 'j', attempt: 2, reserved_bytes: GiB, devices: [] }] }),
        10 * 60_000,
      ),
    ).to.equal(true);
  });

  it('leases - a session the agent still runs after its lease was released holds its memory and slot until the advert drops it', () => {
    const lease = { jobId: 'new', attempt: 1, bytes: GiB, purpose: 'train' as const, time: 0 };
    // the workflow gave attempt 1 of "old" up (heartbeat timeout) and released its lease; the agent has not stopped it yet
    const a = advert('a', {
      sessions: [
        { job_id: 'old', attempt: 1, reserved_bytes: 2 * GiB, devices: [] },
        { job_id: 'new', attempt: 1, reserved_bytes: GiB, devices: [] },
      ],
    });
    expect(heldOn([lease], a, 1000)).to.include({ bytes: 3 * GiB, sessions: 2 });
    // an earlier try of the placement being made is not a competitor, as a lease or as a session
    expect(heldOn([lease], a, 1000, { jobId: 'new', attempt: 1 })).to.include({ bytes: 2 * GiB, sessions: 1 });
    expect(heldOn([lease], advert('a'), 1000)).to.include({ bytes: GiB, sessions: 1 });
  });
});
