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

/** How often `roughlyBounded` looks at its deadlines. */
const SWEEP_MS = 100;

interface Deadline {
  at: number;
  settled: boolean;
  expire: () => void;
}

let deadlines: Deadline[] = [];
let sweeper: ReturnType<typeof setInterval> | undefined;

function sweep(): void {
  const now = performance.now();
  deadlines = deadlines.filter((d) => {
    if (d.settled) return false;
    if (d.at > now) return true;
    d.expire();
    return false;
  });
  if (deadlines.length === 0) {
    clearInterval(sweeper);
    sweeper = undefined;
  }
}

/**
 * `bounded` for the request path: the same answer, at most SWEEP_MS late, without a timer per
 * call. Every request of every socket is bounded, and a timer set and cleared per request (with
 * its closure and Timeout object) cost more than the check itself; here one interval, running only
 * while deadlines are pending, checks them all.
 */
export function roughlyBounded<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const deadline: Deadline = {
      at: performance.now() + ms,
      settled: false,
      expire: () => resolve(undefined),
    };
    promise.then((value) => {
      deadline.settled = true;
      resolve(value);
    }, (error) => {
      deadline.settled = true;
      reject(error);
    });
    deadlines.push(deadline);
    if (sweeper === undefined) {
      sweeper = setInterval(sweep, SWEEP_MS);
      // A pending deadline alone never keeps the process alive.
      Deno.unrefTimer(sweeper as unknown as number);
    }
  });
}
