/** The renewal schedule and ARI parsing: pure logic, as tables. */
import assert from "node:assert/strict"
import { describe, test } from "node:test"
import { parseRenewalInfo } from "../../../src/tls/acme/ari.ts"
import { backoffDelay, renewalTime } from "../../../src/tls/acme/renewal.ts"

const H = 3_600_000
const D = 24 * H

describe("renewalTime", () => {
  const cases: [string, number, number, Parameters<typeof renewalTime>[2], number, number][] = [
    // name, notBefore, notAfter, policy, random, expected
    ["two thirds of a 90-day lifetime, no jitter", 0, 90 * D, {}, 0, 60 * D],
    ["two thirds less a thirtieth at most", 0, 90 * D, {}, 0.999999, 60 * D - 3 * D * 0.999999],
    ["renew_before 30d, no jitter", 0, 90 * D, { renewBeforeMs: 30 * D }, 0, 60 * D],
    ["renew_before jitter is at most an hour", 0, 90 * D, { renewBeforeMs: 30 * D }, 0.5, 60 * D - 0.5 * H],
    [
      "the ARI window wins: its start",
      0,
      90 * D,
      { renewBeforeMs: 30 * D, window: { start: 10 * D, end: 12 * D } },
      0,
      10 * D,
    ],
    ["the ARI window wins: its middle", 0, 90 * D, { window: { start: 10 * D, end: 12 * D } }, 0.5, 11 * D],
  ]
  for (const [name, nb, na, policy, random, expected] of cases) {
    test(name, () =>
      assert.equal(
        renewalTime(nb, na, policy, () => random),
        expected,
      ),
    )
  }
})

describe("backoffDelay", () => {
  test("doubles from initial up to max, plus at most 10% jitter", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((n) => backoffDelay(n, 60_000, 6 * H, () => 0)),
      [60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_840_000, 7_680_000, 15_360_000, 6 * H].map((v) =>
        Math.min(v, 6 * H),
      ),
    )
    assert.equal(
      backoffDelay(1, 60_000, 6 * H, () => 0.999),
      60_000 + 5_994,
    )
    assert.equal(
      backoffDelay(20, 60_000, 6 * H, () => 0.999),
      6 * H,
    )
  })
})

describe("parseRenewalInfo", () => {
  const body = JSON.stringify({ suggestedWindow: { start: "2026-01-01T00:00:00Z", end: "2026-01-02T00:00:00Z" } })
  test("reads the window and Retry-After in seconds or as a date", () => {
    const now = Date.parse("2025-12-31T00:00:00Z")
    assert.deepEqual(parseRenewalInfo(body, "120", now), {
      window: { start: Date.parse("2026-01-01T00:00:00Z"), end: Date.parse("2026-01-02T00:00:00Z") },
      retryAfterMs: 120_000,
      explanationUrl: undefined,
    })
    assert.equal(parseRenewalInfo(body, "Wed, 31 Dec 2025 01:00:00 GMT", now)?.retryAfterMs, H)
    assert.equal(parseRenewalInfo(body, undefined, now)?.retryAfterMs, 6 * H)
  })
  test("refuses what is not a window", () => {
    assert.equal(parseRenewalInfo("{}", undefined), undefined)
    assert.equal(parseRenewalInfo("not json", undefined), undefined)
    const backwards = JSON.stringify({
      suggestedWindow: { start: "2026-01-02T00:00:00Z", end: "2026-01-01T00:00:00Z" },
    })
    assert.equal(parseRenewalInfo(backwards, undefined), undefined)
  })
})
