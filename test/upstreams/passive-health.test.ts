/** OutlierDetector and slow start: ejection after consecutive failures, doubling, caps, ramp-up. */
import assert from "node:assert/strict"
import { describe, test } from "node:test"
import { RoundRobin } from "../../src/upstreams/balancers/round-robin.ts"
import { effectiveWeight, OutlierDetector, type OutlierKind } from "../../src/upstreams/health/passive.ts"
import { makeBackends } from "./balancer.contract.ts"

const T0 = 1_700_000_000_000

describe("OutlierDetector", () => {
  test("ejects after N consecutive failures, for the base time", () => {
    const [b] = makeBackends([1])
    const detector = new OutlierDetector({ consecutiveErrors: 3, baseEjection: 30_000 })
    assert.equal(detector.onFailure(b!, "connect", T0), false)
    assert.equal(detector.onFailure(b!, "reset", T0), false)
    assert.equal(detector.onFailure(b!, "timeout", T0), true)
    assert.equal(b!.ejectedUntil, T0 + 30_000)
  })

  test("a success in between resets the streak", () => {
    const [b] = makeBackends([1])
    const detector = new OutlierDetector({ consecutiveErrors: 3 })
    const events: (OutlierKind | "ok")[] = ["connect", "connect", "ok", "connect", "connect"]
    for (const e of events) {
      if (e === "ok") detector.onSuccess(b!, T0)
      else assert.equal(detector.onFailure(b!, e, T0), false)
    }
    assert.equal(b!.ejectedUntil, 0)
  })

  test("ejection time doubles per ejection and is capped at maxEjection (table)", () => {
    const [b] = makeBackends([1])
    const detector = new OutlierDetector({ consecutiveErrors: 1, baseEjection: 10_000, maxEjection: 50_000 })
    const expected = [10_000, 20_000, 40_000, 50_000, 50_000]
    let now = T0
    for (const duration of expected) {
      assert.equal(detector.ejectionDuration(b!), duration)
      assert.equal(detector.onFailure(b!, "connect", now), true)
      assert.equal(b!.ejectedUntil - now, duration)
      now = b!.ejectedUntil // back in service; fails again at once
    }
  })

  test("a success long after the last ejection resets the doubling", () => {
    const [b] = makeBackends([1])
    const detector = new OutlierDetector({ consecutiveErrors: 1, baseEjection: 1000, maxEjection: 4000 })
    detector.onFailure(b!, "connect", T0)
    detector.onFailure(b!, "connect", T0 + 1000)
    assert.equal(detector.ejectionDuration(b!), 4000)
    detector.onSuccess(b!, T0 + 5000)
    assert.equal(detector.ejectionDuration(b!), 4000, "too soon to forget")
    detector.onSuccess(b!, T0 + 1000 + 8001)
    assert.equal(detector.ejectionDuration(b!), 1000)
  })

  test("failures while ejected (requests already in flight) do not extend the ejection", () => {
    const [b] = makeBackends([1])
    const detector = new OutlierDetector({ consecutiveErrors: 1, baseEjection: 1000 })
    detector.onFailure(b!, "connect", T0)
    for (let i = 0; i < 10; i++) assert.equal(detector.onFailure(b!, "reset", T0 + 500), false)
    assert.equal(b!.ejectedUntil, T0 + 1000)
    assert.equal(detector.ejectionDuration(b!), 2000, "counted as one ejection")
  })

  test("5xx counts only with count5xx", () => {
    const [a, b] = makeBackends([1, 1])
    const counting = new OutlierDetector({ consecutiveErrors: 2, count5xx: true })
    const ignoring = new OutlierDetector({ consecutiveErrors: 2, count5xx: false })
    counting.onFailure(a!, "5xx", T0)
    assert.equal(counting.onFailure(a!, "5xx", T0), true)
    ignoring.onFailure(b!, "5xx", T0)
    assert.equal(ignoring.onFailure(b!, "5xx", T0), false)
    assert.equal(b!.ejectedUntil, 0)
  })

  test("defaults: 5 failures, 30 s base, 5 min cap, 5xx counted", () => {
    const d = new OutlierDetector()
    assert.deepEqual([d.consecutiveErrors, d.baseEjection, d.maxEjection, d.count5xx], [5, 30_000, 300_000, true])
  })

  test("never ejects more than maxEjectedPercent of the backends (but always one)", () => {
    const backends = makeBackends([1, 1, 1, 1])
    const detector = new OutlierDetector({ consecutiveErrors: 1, maxEjectedPercent: 50, backends })
    const results = backends.map((b) => detector.onFailure(b, "connect", T0))
    assert.deepEqual(results, [true, true, false, false])
    const [only] = makeBackends([1])
    const single = new OutlierDetector({ consecutiveErrors: 1, maxEjectedPercent: 10, backends: [only!] })
    assert.equal(single.onFailure(only!, "connect", T0), true)
  })

  test("an ejected backend is skipped by balancers until the ejection ends", () => {
    const backends = makeBackends([1, 1])
    const detector = new OutlierDetector({ consecutiveErrors: 1, baseEjection: 60_000 })
    detector.onFailure(backends[0]!, "connect")
    const rr = new RoundRobin()
    for (let i = 0; i < 10; i++) assert.equal(rr.pick(backends), backends[1])
    backends[0]!.ejectedUntil = Date.now() - 1
    const picked = new Set(Array.from({ length: 4 }, () => rr.pick(backends)))
    assert.equal(picked.size, 2)
  })

  test("status lists backends with failures or ejections", () => {
    const backends = makeBackends([1, 1])
    const detector = new OutlierDetector({ consecutiveErrors: 2, backends })
    detector.onFailure(backends[0]!, "connect", T0)
    assert.deepEqual(detector.status(), [
      { id: "127.0.0.1:3001", consecutiveFailures: 1, timesEjected: 0, ejectedUntil: 0 },
    ])
    detector.onSuccess(backends[0]!, T0)
    assert.deepEqual(detector.status(), [])
  })
})

describe("effectiveWeight (slow start)", () => {
  const table: [string, { slowStart: number; returnedAt: number; weight: number }, number, number][] = [
    ["slow start off", { slowStart: 0, returnedAt: T0, weight: 4 }, T0, 4],
    ["never left", { slowStart: 10_000, returnedAt: 0, weight: 4 }, T0, 4],
    ["just returned: 10% floor", { slowStart: 10_000, returnedAt: T0, weight: 4 }, T0, 0.4],
    ["still ejected (returns later): floor", { slowStart: 10_000, returnedAt: T0 + 5000, weight: 4 }, T0, 0.4],
    ["halfway", { slowStart: 10_000, returnedAt: T0, weight: 4 }, T0 + 5000, 2],
    ["three quarters", { slowStart: 10_000, returnedAt: T0, weight: 4 }, T0 + 7500, 3],
    ["done ramping", { slowStart: 10_000, returnedAt: T0, weight: 4 }, T0 + 10_000, 4],
    ["long after", { slowStart: 10_000, returnedAt: T0, weight: 4 }, T0 + 1e9, 4],
  ]
  for (const [name, spec, now, expected] of table) {
    test(`${name}: ${expected}`, () => {
      const [b] = makeBackends([{ weight: spec.weight, slowStart: spec.slowStart }])
      b!.returnedAt = spec.returnedAt
      assert.equal(effectiveWeight(b!, now), expected)
    })
  }

  test("an ejection sets returnedAt to its end, so the backend ramps up when it comes back", () => {
    const [b] = makeBackends([{ slowStart: 10_000 }])
    new OutlierDetector({ consecutiveErrors: 1, baseEjection: 1000 }).onFailure(b!, "connect", T0)
    assert.equal(b!.returnedAt, T0 + 1000)
    assert.equal(effectiveWeight(b!, T0 + 1000 + 5000), 0.5)
  })

  test("round robin gives a returning backend a ramped share", () => {
    const backends = makeBackends([{ weight: 1, slowStart: 60_000 }, 1])
    backends[0]!.returnedAt = Date.now() // at 10% while the test runs (60 s ramp)
    const rr = new RoundRobin()
    let first = 0
    for (let i = 0; i < 1100; i++) if (rr.pick(backends) === backends[0]) first++
    assert.ok(first >= 95 && first <= 110, `returning backend got ${first} of 1100`)
  })
})
