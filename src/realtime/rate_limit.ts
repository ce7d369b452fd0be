/**
 * @module Per-connection rate limiting, shared by every transport (WebSocket and the course's TCP
 * protocol) so that each allows the same RATE_LIMIT_PER_SEC and RATE_LIMIT_BURST.
 */

/** A token bucket: `rate` requests a second on average, `burst` at once. */
export class TokenBucket {
  #tokens: number;
  #at = performance.now();
  constructor(private readonly rate: number, private readonly burst: number) {
    this.#tokens = burst;
  }
  /** 0 when a token was taken, else milliseconds until one is available. */
  take(): number {
    const now = performance.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#at) / 1000) * this.rate);
    this.#at = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.#tokens) / this.rate) * 1000);
  }
}
