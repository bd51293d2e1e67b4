// The fleet view: adverts in (validated), a snapshot of live agents out.
import { expect } from 'chai';
import { parseAdvert, TunefleetError } from '../../shared';
import { FleetView } from '../../scheduler/fleet';
import { thrown } from '../harness/expect';

import { advert } from '../harness/placement-fixtures';

describe('fleet - adverts in, snapshot out', () => {
  const enc = (x: unknown): Uint8Array => new TextEncoder().encode(typeof x === 'string' ? x : JSON.stringify(x));
  it('fleet - malformed and impossible adverts are skipped and logged', () => {
    const logs: string[] = [];
    const view = new FleetView(
      null as never,
      10_000,
      (m) => logs.push(m),
      () => 1000,
    );
    view.apply('a', 'PUT', enc(advert('a')), 1);
    view.apply('b', 'PUT', enc('{not json'), 2);
    view.apply('c', 'PUT', enc(advert('c', { memory: { total: 10, available: 20 } })), 3);
    view.apply('d', 'PUT', enc({ ...advert('d'), memory: { total: -5, available: 0 } }), 4);
    view.apply('e', 'PUT', enc(advert('someone-else')), 5);
    expect(view.snapshot().map((x) => x.advert.agent_id)).to.deep.equal(['a']);
    expect(logs).to.have.length(4);
    expect(logs.join('\n'))
      .to.match(/advert b/)
      .and.match(/advert c/)
      .and.match(/advert d/)
      .and.match(/someone-else/);
  });

  it('fleet - an agent silent past the TTL leaves the view; a delete removes at once', () => {
    let now = 0;
    const view = new FleetView(
      null as never,
      10_000,
      () => {},
      () => now,
    );
    view.apply('a', 'PUT', enc(advert('a')), 1);
    view.apply('b', 'PUT', enc(advert('b')), 2);
    now = 5_000;
    view.apply('b', 'PUT', enc(advert('b')), 3);
    view.apply('x', 'PUT', enc(advert('x')), 4);
    view.apply('x', 'DEL', new Uint8Array(), 5);
    now = 11_000;
    expect(view.snapshot().map((x) => x.advert.agent_id)).to.deep.equal(['b']);
  });

  it('fleet - parseAdvert refuses absurd memory', () => {
    for (const memory of [
      { total: 2 ** 60, available: 1 },
      { total: 100, available: -1 },
    ]) {
      const e = thrown(() => parseAdvert('a', JSON.stringify(advert('a', { memory }))), 'an impossible advert');
      expect(e).to.be.instanceOf(TunefleetError);
      expect((e as TunefleetError).describe()).to.match(/^advert a: memory\.(total|available): /);
    }
  });
});
