/**
 * @module Waiting with a bound: the few timing helpers the server shares.
 */

export { setTimeout as delay } from "node:timers/promises";

/** `promise`, or `undefined` once `ms` have passed without it settling. */
export async function bounded<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) =>
    timer = setTimeout(() => resolve(undefined), ms)
  );
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
