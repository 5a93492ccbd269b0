/** @module token-bucket: a rate limit that allows short bursts: `rate` tokens per second, holding at most `burst`. */

/**
 * TokenBucket starts full. Each take() spends one token if there is one; tokens refill continuously at `rate` per
 * second up to `burst`. Time is passed in (ms since any fixed origin, e.g. Date.now() or performance.now()), so the
 * bucket holds no timers and tests need no clocks.
 */
export class TokenBucket {
  readonly rate: number
  readonly burst: number
  #tokens: number
  #updatedAt: number

  /** rate: tokens per second (> 0); burst: bucket size (>= 1); now: the time it starts full. */
  constructor(rate: number, burst: number, now = Date.now()) {
    if (!(rate > 0) || !(burst >= 1))
      throw new RangeError(`token bucket needs rate > 0 and burst >= 1, got ${rate}, ${burst}`)
    this.rate = rate
    this.burst = burst
    this.#tokens = burst
    this.#updatedAt = now
  }

  /** take spends one token and returns true, or returns false (spending nothing) when the bucket is empty. */
  take(now = Date.now()): boolean {
    this.#refill(now)
    if (this.#tokens < 1) return false
    this.#tokens -= 1
    return true
  }

  /** retryAfterSeconds is the whole seconds until a token will be there (0 if one is now): for Retry-After. */
  retryAfterSeconds(now = Date.now()): number {
    this.#refill(now)
    if (this.#tokens >= 1) return 0
    return Math.ceil((1 - this.#tokens) / this.rate)
  }

  /** full says whether the bucket is back at burst, i.e. forgetting it would change nothing. */
  full(now = Date.now()): boolean {
    this.#refill(now)
    return this.#tokens >= this.burst
  }

  /** tokens is the current token count (fractional), for status and tests. */
  tokens(now = Date.now()): number {
    this.#refill(now)
    return this.#tokens
  }

  #refill(now: number): void {
    const elapsed = now - this.#updatedAt
    // A clock that steps back refills nothing rather than draining the bucket.
    if (elapsed <= 0) return
    this.#tokens = Math.min(this.burst, this.#tokens + (elapsed / 1000) * this.rate)
    this.#updatedAt = now
  }
}
