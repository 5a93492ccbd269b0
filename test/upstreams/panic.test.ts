/**
 * Issue 14, finding 8: the only backend is ejected only on failures from more than one client or route, and an
 * upstream whose every backend is ejected sends requests to them all (panic mode) rather than answer 503.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { parseConfig } from "../../src/config/load.ts"
import { silentLogger } from "../../src/core/log.ts"
import { OutlierDetector } from "../../src/upstreams/health/passive.ts"
import { Upstream } from "../../src/upstreams/upstream.ts"
import { makeBackends } from "./balancer.contract.ts"

const T0 = 1_700_000_000_000
const ROUTE_A = { route: "a" }
const ROUTE_B = { route: "b" }

function upstreamFrom(yaml: string): Upstream {
  const config = parseConfig(
    `listeners:\n  - { name: web, address: 127.0.0.1:1, tls: { certificates: [{ self_signed: [localhost] }] }, upstream: app }\nupstreams:\n  app:\n${yaml}`,
    "inline.yaml",
    "/tmp",
  )
  return new Upstream("app", config.upstreams["app"]!, { log: silentLogger() })
}

test("one client on one route cannot eject the only backend, however often it fails", () => {
  const backends = makeBackends([1])
  const detector = new OutlierDetector({ consecutiveErrors: 5, backends })
  for (let i = 0; i < 50; i++) {
    assert.equal(detector.onFailure(backends[0]!, "reset", T0, { client: "10.0.0.1", route: ROUTE_A }), false)
  }
  assert.equal(backends[0]!.ejectedUntil, 0)
  // A second client failing too: the fault is the backend's, and it goes.
  assert.equal(detector.onFailure(backends[0]!, "reset", T0, { client: "10.0.0.2", route: ROUTE_A }), true)
})

test("one client failing on two routes ejects the only backend", () => {
  const backends = makeBackends([1])
  const detector = new OutlierDetector({ consecutiveErrors: 2, backends })
  assert.equal(detector.onFailure(backends[0]!, "reset", T0, { client: "10.0.0.1", route: ROUTE_A }), false)
  assert.equal(detector.onFailure(backends[0]!, "reset", T0, { client: "10.0.0.1", route: ROUTE_B }), true)
})

test("a success ends the streak and its sources: one source again does not eject", () => {
  const backends = makeBackends([1])
  const detector = new OutlierDetector({ consecutiveErrors: 2, backends })
  detector.onFailure(backends[0]!, "reset", T0, { client: "10.0.0.2", route: ROUTE_A })
  detector.onSuccess(backends[0]!, T0)
  for (let i = 0; i < 5; i++) {
    assert.equal(detector.onFailure(backends[0]!, "reset", T0, { client: "10.0.0.1", route: ROUTE_A }), false)
  }
})

test("with more than one backend one source still ejects (the others serve)", () => {
  const backends = makeBackends([1, 1])
  const detector = new OutlierDetector({ consecutiveErrors: 2, backends })
  detector.onFailure(backends[0]!, "reset", T0, { client: "10.0.0.1", route: ROUTE_A })
  assert.equal(detector.onFailure(backends[0]!, "reset", T0, { client: "10.0.0.1", route: ROUTE_A }), true)
})

test("panic mode: every backend ejected, a pick still returns one of them; none ejected: the normal pick", () => {
  const u = upstreamFrom("    backends: [127.0.0.1:3000, 127.0.0.1:3001]\n    balance: round_robin\n")
  const later = Date.now() + 60_000
  for (const b of u.backends) b.ejectedUntil = later
  const picked = new Set([u.pick(), u.pick(), u.pick(), u.pick()])
  assert.deepEqual([...picked].map((b) => b?.id).sort(), ["127.0.0.1:3000", "127.0.0.1:3001"])
  // The ejections stay in force: panic lifts them for the pick only.
  for (const b of u.backends) assert.equal(b.ejectedUntil, later)
  u.backends[1]!.ejectedUntil = 0
  for (let i = 0; i < 4; i++) assert.equal(u.pick()?.id, "127.0.0.1:3001")
})

test("no panic when a backend is in service but busy, or when the backends are down or draining", () => {
  const busy = upstreamFrom(
    "    backends: [127.0.0.1:3000, { address: 127.0.0.1:3001, max_connections: 1 }]\n    balance: round_robin\n",
  )
  busy.backends[0]!.ejectedUntil = Date.now() + 60_000
  busy.backends[1]!.inFlight = 1
  assert.equal(busy.pick(), undefined, "the free-but-busy backend makes the request wait, not panic")
  const down = upstreamFrom("    backends: [127.0.0.1:3000, 127.0.0.1:3001]\n")
  down.backends[0]!.state = "down"
  down.backends[1]!.state = "draining"
  down.backends[1]!.ejectedUntil = Date.now() + 60_000
  assert.equal(down.pick(), undefined)
  // Draining one, the other ejected: the ejected one is all that is in service, so panic picks it.
  down.backends[0]!.state = "up"
  down.backends[0]!.ejectedUntil = Date.now() + 60_000
  assert.equal(down.pick()?.id, "127.0.0.1:3000")
})

test("panic mode is off with passive health off (nothing is ejected then)", () => {
  const u = upstreamFrom("    backends: [127.0.0.1:3000]\n    passive: { enabled: false }\n")
  u.backends[0]!.ejectedUntil = Date.now() + 60_000
  assert.equal(u.pick(), undefined)
})
