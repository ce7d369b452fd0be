/**
 * @module Assertions for the tests, on top of node:assert/strict (JSR's @std/assert cannot be
 * reached from here), named as Deno users expect.
 */
import nodeAssert from "node:assert/strict";

export function assert(value: unknown, message?: string): asserts value {
  nodeAssert.ok(value, message);
}

export function assertEquals<T>(
  actual: unknown,
  expected: T,
  message?: string,
): asserts actual is T {
  nodeAssert.deepStrictEqual(actual, expected, message);
}

export function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  nodeAssert.notDeepStrictEqual(actual, expected, message);
}

export function assertMatch(actual: string, pattern: RegExp, message?: string): void {
  nodeAssert.match(actual, pattern, message);
}

/** Runs `fn`, which must throw an instance of `type` (whose message includes `includes`). */
export function assertThrows<E extends Error>(
  fn: () => unknown,
  type: new (...args: never[]) => E,
  includes?: string,
): E {
  try {
    fn();
  } catch (error) {
    return thrown(error, type, includes);
  }
  throw new nodeAssert.AssertionError({ message: `expected ${type.name} to be thrown` });
}

/** Awaits `fn`, which must reject with an instance of `type` (whose message includes `includes`). */
export async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  type: new (...args: never[]) => E,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (error) {
    return thrown(error, type, includes);
  }
  throw new nodeAssert.AssertionError({ message: `expected ${type.name} to be rejected` });
}

function thrown<E extends Error>(
  error: unknown,
  type: new (...args: never[]) => E,
  includes: string | undefined,
): E {
  nodeAssert.ok(error instanceof type, `expected ${type.name}, got ${error}`);
  if (includes) {
    nodeAssert.ok(error.message.includes(includes), `"${error.message}" lacks "${includes}"`);
  }
  return error;
}
