// Split a byte stream into lines without holding more than one line (plus a chunk) in
// memory. A line longer than maxBytes is not kept: it comes out as { oversize: its byte
// count } and reading goes on at the next line, so one 100 MB line cannot take the
// process's memory (nor, by repeated concatenation, its time).

/** Longest JSONL line (one record) read; the spec's clean.max_chars is far below it by default. */
export const MAX_LINE_BYTES = 16 * 2 ** 20;

export type Line =
  { line: Buffer; lineNo: number; oversize?: undefined } | { line: null; lineNo: number; oversize: number };

export async function* readLines(source: AsyncIterable<Uint8Array>, maxBytes = MAX_LINE_BYTES): AsyncGenerator<Line> {
  const maxLen = maxBytes + 1; // room for a CR before the newline
  let parts: Buffer[] = [];
  let held = 0;
  let skipping = 0; // > 0: inside an oversize line, this many bytes so far
  let lineNo = 0;
  const finish = (tail: Buffer): Line => {
    lineNo += 1;
    if (skipping > 0 || held + tail.length > maxLen) {
      const n = (skipping || held) + tail.length;
      skipping = 0;
      parts = [];
      held = 0;
      return { line: null, lineNo, oversize: n };
    }
    let buf = parts.length ? Buffer.concat([...parts, tail]) : tail;
    parts = [];
    held = 0;
    if (buf.length > 0 && buf[buf.length - 1] === 0x0d) buf = buf.subarray(0, buf.length - 1);
    return { line: buf, lineNo };
  };
  for await (const chunk of source) {
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let nl: number;
    while ((nl = buf.indexOf(0x0a)) !== -1) {
      yield finish(buf.subarray(0, nl));
      buf = buf.subarray(nl + 1);
    }
    if (buf.length === 0) continue;
    if (skipping > 0) skipping += buf.length;
    else if (held + buf.length > maxLen) {
      skipping = held + buf.length;
      parts = [];
      held = 0;
    } else {
      parts.push(Buffer.from(buf)); // a copy: the source may reuse its chunk
      held += buf.length;
    }
  }
  if (held > 0 || skipping > 0) yield finish(Buffer.alloc(0));
}
