import { expect } from 'chai';
import { checkLine, evalIndices } from '../../shared';
import { readLines } from '../../scheduler/lines';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('dataset - record checks', () => {
  it('dataset - the three formats are recognised', () => {
    expect(checkLine(enc('{"text":"hello"}'))).to.deep.include({ ok: true, format: 'text' });
    expect(checkLine(enc('{"prompt":"a","completion":"b"}'))).to.deep.include({
      ok: true,
      format: 'prompt_completion',
    });
    expect(
      checkLine(enc('{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}')),
    ).to.deep.include({ ok: true, format: 'messages' });
  });

  it('dataset - invalid UTF-8 is named', () => {
    const r = checkLine(new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]));
    expect(r).to.deep.equal({ ok: false, message: 'not valid UTF-8' });
  });

  it('dataset - malformed JSON, non-objects and unknown shapes are refused', () => {
    expect(checkLine(enc('{"text": ')).ok).to.equal(false);
    expect(checkLine(enc('[1,2]'))).to.deep.equal({ ok: false, message: 'a record must be a JSON object' });
    expect(checkLine(enc('{"foo":1}')).ok).to.equal(false);
  });

  it('dataset - a prompt without completion and a chat without assistant are refused; blank text is well-formed', () => {
    expect(checkLine(enc('{"text":"   "}'))).to.deep.include({ ok: true });
    const r = checkLine(enc('{"prompt":"a"}'));
    expect(r.ok).to.equal(false);
    if (!r.ok) expect(r.message).to.match(/completion/);
    const c = checkLine(enc('{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}'));
    expect(c.ok).to.equal(false);
    if (!c.ok) expect(c.message).to.match(/assistant/);
  });

  it('dataset - unknown keys in a record are named', () => {
    const r = checkLine(enc('{"text":"a","label":1}'));
    expect(r.ok).to.equal(false);
    if (!r.ok) expect(r.message).to.match(/label/);
  });
});

describe('dataset - split', () => {
  it('dataset - the split is seeded, exact in size and stable', () => {
    const a = evalIndices(1000, 0.1, 42);
    expect(a.size).to.equal(100);
    expect([...evalIndices(1000, 0.1, 42)]).to.deep.equal([...a]);
    expect([...evalIndices(1000, 0.1, 43)]).to.not.deep.equal([...a]);
    for (const i of a) expect(i).to.be.within(0, 999);
  });

  it('dataset - tiny sets keep at least one record on each side', () => {
    expect(evalIndices(2, 0.01, 1).size).to.equal(1);
    expect(evalIndices(10, 0.99, 1).size).to.equal(9);
    expect(evalIndices(1, 0.5, 1).size).to.equal(0);
  });
});

describe('dataset - line reader', () => {
  async function* chunks(parts: string[]): AsyncGenerator<Uint8Array> {
    for (const p of parts) yield enc(p);
  }
  it('dataset - lines split across chunks, CRLF and a last line without newline', async () => {
    const out: [string, number][] = [];
    for await (const { line, lineNo } of readLines(chunks(['{"a":', '1}\r\n{"b"', ':2}\n\n{"c":3}'])))
      out.push([String(line), lineNo]);
    expect(out).to.deep.equal([
      ['{"a":1}', 1],
      ['{"b":2}', 2],
      ['', 3],
      ['{"c":3}', 4],
    ]);
  });
  it('dataset - a line over the limit comes out as its size and reading goes on at the next line', async () => {
    const out: [string | null, number, number | undefined][] = [];
    const long = 'x'.repeat(25);
    for await (const l of readLines(
      chunks(['{"a":1}\n', long.slice(0, 10), long.slice(10), '\n{"b":2}\n', long, '\r\n', 'y'.repeat(30)]),
      20,
    ))
      out.push([l.line?.toString() ?? null, l.lineNo, l.oversize]);
    expect(out).to.deep.equal([
      ['{"a":1}', 1, undefined],
      [null, 2, 25],
      ['{"b":2}', 3, undefined],
      [null, 4, 26],
      [null, 5, 30],
    ]);
  });
});
