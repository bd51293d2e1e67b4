// Split a byte stream into lines without holding more than one line (plus a chunk) in memory.
export async function* readLines(source: AsyncIterable<Uint8Array>): AsyncGenerator<{ line: Buffer; lineNo: number }> {
  let rest: Buffer = Buffer.alloc(0);
  let lineNo = 0;
  for await (const chunk of source) {
    let buf = rest.length ? Buffer.concat([rest, Buffer.from(chunk)]) : Buffer.from(chunk);
    let nl: number;
    while ((nl = buf.indexOf(0x0a)) !== -1) {
      lineNo += 1;
      const end = nl > 0 && buf[nl - 1] === 0x0d ? nl - 1 : nl;
      yield { line: buf.subarray(0, end), lineNo };
      buf = buf.subarray(nl + 1);
    }
    rest = Buffer.from(buf);
  }
  if (rest.length > 0) yield { line: rest, lineNo: lineNo + 1 };
}
