// Expecting a refusal: the error a call throws or a promise rejects with, failing the test
// (with what was expected) when it succeeds instead. Unlike try { ...; expect.fail() }
// catch (e) { ... }, the failure cannot be caught and checked as if it were the refusal.
import { expect } from 'chai';

const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

/** The error `fn` throws; the test fails when it returns. */
export function thrown(fn: () => unknown, what: string): Error {
  try {
    fn();
  } catch (e) {
    return asError(e);
  }
  return expect.fail(`${what}: it returned instead of throwing`);
}

/** The error `p` rejects with; the test fails when it resolves. */
export function rejection(p: Promise<unknown>, what: string): Promise<Error> {
  return p.then(() => expect.fail(`${what}: it resolved instead of being refused`), asError);
}
