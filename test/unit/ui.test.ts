// The console's server-side pure logic: reads shared between the askers of the same list.
import { expect } from 'chai';
import { sharedReads } from '../../scheduler/ui/server';

describe('ui - shared reads', () => {
  it('ui - askers of the same key while a read is in flight, or just after it, share it; an older one reads afresh', async () => {
    const recent = sharedReads(50);
    let reads = 0;
    let release: (v: number) => void = () => {};
    const slow = (): Promise<number> => {
      reads += 1;
      return new Promise<number>((r) => (release = r));
    };
    const a = recent('k', slow);
    const b = recent('k', slow); // in flight: shared, however long it takes
    await new Promise((r) => setTimeout(r, 80));
    const c = recent('k', slow);
    expect(reads).to.equal(1);
    release(7);
    expect(await Promise.all([a, b, c])).to.deep.equal([7, 7, 7]);
    expect(await recent('k', async () => (reads += 1))).to.equal(7); // finished just now: reused
    expect(await recent('other', async () => (reads += 1) && 9)).to.equal(9); // another key reads
    await new Promise((r) => setTimeout(r, 80));
    expect(await recent('k', async () => ((reads += 1), 8))).to.equal(8); // finished long ago: read afresh
    expect(reads).to.equal(3);
  });

  it('ui - a failed read is not kept: the next asker reads again', async () => {
    const recent = sharedReads(1000);
    const failed = recent('k', async () => {
      throw new Error('temporal unavailable');
    });
    await failed.then(
      () => expect.fail('should have failed'),
      (e: Error) => expect(e.message).to.equal('temporal unavailable'),
    );
    expect(await recent('k', async () => 5)).to.equal(5);
  });
});
