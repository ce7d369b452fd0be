/**
 * @module Sliding-window throttles against guessing and flooding: failed logins per name and per
 * client address, registrations per address. In memory, per node: a cluster behind a load
 * balancer multiplies the allowance by its node count, which still stops a brute force.
 */

/** At most `limit` events per key in any `windowMs`. */
export class SlidingWindow {
  #events = new Map<string, number[]>();
  #sweeps = 0;

  constructor(private readonly limit: number, private readonly windowMs = 60_000) {}

  /** Milliseconds until `key` may have another event; 0 when it may now. */
  wait(key: string, now = Date.now()): number {
    const times = this.#live(key, now);
    if (times.length < this.limit) return 0;
    return Math.max(1, times[times.length - this.limit] + this.windowMs - now);
  }

  record(key: string, now = Date.now()): void {
    const times = this.#live(key, now);
    times.push(now);
    this.#events.set(key, times);
    if (++this.#sweeps % 1000 === 0) this.#sweep(now);
  }

  forget(key: string): void {
    this.#events.delete(key);
  }

  #live(key: string, now: number): number[] {
    return (this.#events.get(key) ?? []).filter((t) => now - t < this.windowMs);
  }

  /** Drops keys with no event in the window, so that memory follows the attackers, not history. */
  #sweep(now: number) {
    for (const [key, times] of this.#events) {
      if (times.every((t) => now - t >= this.windowMs)) this.#events.delete(key);
    }
  }
}
