/** TokenBucket: bursts, refill rate, Retry-After. */
import assert from "node:assert/strict"
import { test } from "node:test"
import { TokenBucket } from "../../../src/listeners/limits/token-bucket.ts"

test("starts full: allows a burst, then refuses", () => {
  const bucket = new TokenBucket(10, 5, 0)
  const results = Array.from({ length: 7 }, () => bucket.take(0))
  assert.deepEqual(results, [true, true, true, true, true, false, false])
})

test("refills at rate per second, never above burst", () => {
  const bucket = new TokenBucket(10, 5, 0)
  for (let i = 0; i < 5; i++) bucket.take(0)
  assert.equal(bucket.take(50), false, "half a token after 50 ms")
  assert.equal(bucket.take(100), true, "one token after 100 ms")
  assert.equal(bucket.take(100), false)
  assert.equal(bucket.tokens(60_000), 5, "capped at burst after a long idle")
  assert.equal(bucket.full(60_000), true)
})

test("a sustained rate is allowed, a faster one is cut to the rate", () => {
  const bucket = new TokenBucket(100, 1, 0)
  let allowed = 0
  // 1000 attempts over 2 s (one every 2 ms = 500/s) at 100/s: about 200 + the burst of 1.
  for (let t = 0; t < 2000; t += 2) if (bucket.take(t)) allowed++
  assert.ok(allowed >= 199 && allowed <= 202, `allowed ${allowed}`)
})

test("retryAfterSeconds rounds the wait for a token up to whole seconds", () => {
  const bucket = new TokenBucket(0.5, 1, 0)
  assert.equal(bucket.retryAfterSeconds(0), 0)
  bucket.take(0)
  assert.equal(bucket.retryAfterSeconds(0), 2)
  assert.equal(bucket.retryAfterSeconds(1500), 1)
  assert.equal(bucket.retryAfterSeconds(2000), 0)
})

test("a clock stepping back neither refills nor drains", () => {
  const bucket = new TokenBucket(1, 2, 10_000)
  bucket.take(10_000)
  assert.equal(bucket.tokens(5_000), 1)
  assert.equal(bucket.tokens(11_000), 2)
})

test("rejects a zero rate or a burst below 1", () => {
  assert.throws(() => new TokenBucket(0, 1), RangeError)
  assert.throws(() => new TokenBucket(1, 0), RangeError)
})
