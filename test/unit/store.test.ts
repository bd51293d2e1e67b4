// The JetStream store's cap is chosen once per store and kept: the streams' limits are shares of it, and nats-server
// refuses every stream update once the limits already given exceed a cap that shrank with the free disk.
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeLimit } from '../../infra/services';

describe('store - the JetStream store cap', () => {
  it('store - chosen once (at most 100 GiB, at most half the free disk), written into the store, and the same afterwards', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-store-'));
    try {
      const first = storeLimit(dir);
      expect(first)
        .to.be.greaterThan(0)
        .and.at.most(100 * 2 ** 30);
      expect(Number(readFileSync(join(dir, 'tunefleet-store-cap'), 'utf8'))).to.equal(first);
      // the disk's free space changing does not move it: what the file says is the cap
      writeFileSync(join(dir, 'tunefleet-store-cap'), `${5 * 2 ** 30}\n`);
      expect(storeLimit(dir)).to.equal(5 * 2 ** 30);
      // an unreadable value is chosen again (from the free disk now) and kept
      writeFileSync(join(dir, 'tunefleet-store-cap'), 'lots\n');
      const again = storeLimit(dir);
      expect(again)
        .to.be.greaterThan(0)
        .and.at.most(100 * 2 ** 30);
      expect(Number(readFileSync(join(dir, 'tunefleet-store-cap'), 'utf8'))).to.equal(again);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
