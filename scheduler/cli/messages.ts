import { natsFailure } from '../../shared/natsconn';
// An error as one line for people: its message and its causes' messages, each once.
export function failureMessage(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  while (cur instanceof Error) {
    // a NATS write nobody acknowledged: say what that means (no quorum, nothing stored)
    const code = (cur as { code?: unknown }).code;
    parts.push(code === 'TIMEOUT' || code === '503' ? natsFailure(cur) : cur.message);
    cur = (cur as { cause?: unknown }).cause;
  }
  return [...new Set(parts.filter(Boolean))].join(': ') || String(e);
}
