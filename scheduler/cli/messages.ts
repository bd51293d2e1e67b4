// An error as one line for people: its message and its causes' messages, each once.
export function failureMessage(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  while (cur instanceof Error) {
    parts.push(cur.message);
    cur = (cur as { cause?: unknown }).cause;
  }
  return [...new Set(parts.filter(Boolean))].join(': ') || String(e);
}
