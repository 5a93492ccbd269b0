/** canRetry as a table: which failed attempts may go to another backend. */
import assert from "node:assert/strict"
import { test } from "node:test"
import { canRetry, type RetryState } from "../../src/upstreams/retry-policy.ts"

const base: RetryState = {
  method: "GET",
  bytesSent: 0,
  responseStarted: false,
  attempt: 1,
  retries: 1,
  startedAt: 1_000_000,
  tryDuration: 0,
  bodyBuffered: true,
  now: 1_000_500,
}

const table: [string, Partial<RetryState>, boolean][] = [
  ["GET with nothing sent", {}, true],
  ["GET after the request was sent (idempotent)", { bytesSent: 120 }, true],
  ["PUT after sending", { bytesSent: 80, method: "PUT" }, true],
  ["DELETE after sending", { bytesSent: 80, method: "DELETE" }, true],
  ["TRACE after sending", { bytesSent: 80, method: "TRACE" }, true],
  ["OPTIONS after sending", { bytesSent: 80, method: "OPTIONS" }, true],
  ["HEAD after sending", { bytesSent: 80, method: "HEAD" }, true],
  ["POST with no byte sent (connect failed)", { method: "POST" }, true],
  ["POST after a byte was sent", { method: "POST", bytesSent: 1 }, false],
  ["PATCH after sending", { method: "PATCH", bytesSent: 300 }, false],
  ["PUT whose streamed body cannot be replayed", { method: "PUT", bytesSent: 300, bodyBuffered: false }, false],
  ["PUT with an unbuffered body but nothing sent yet", { method: "PUT", bodyBuffered: false }, true],
  ["GET once the response started", { responseStarted: true }, false],
  [
    "GET once the response started, nothing sent (impossible, still no)",
    { responseStarted: true, bytesSent: 0 },
    false,
  ],
  ["retries 0: never", { retries: 0 }, false],
  ["second attempt failed with retries 1: no tries left", { attempt: 2, retries: 1 }, false],
  ["second attempt failed with retries 2", { attempt: 2, retries: 2 }, true],
  ["within try_duration", { tryDuration: 1000 }, true],
  ["try_duration used up", { tryDuration: 500 }, false],
  ["try_duration 0 means no overall limit", { tryDuration: 0, now: 9_999_999_999 }, true],
]

for (const [name, change, expected] of table) {
  test(`canRetry: ${name} -> ${expected}`, () => {
    assert.equal(canRetry({ ...base, ...change }), expected)
  })
}

test("canRetry reads the clock when now is not given", () => {
  const { now: _, ...state } = base
  assert.equal(canRetry({ ...state, startedAt: Date.now(), tryDuration: 60_000 }), true)
  assert.equal(canRetry({ ...state, startedAt: Date.now() - 120_000, tryDuration: 60_000 }), false)
})
