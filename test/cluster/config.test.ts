/** The cluster config keys (issue 12): cluster.store and cluster.workers (auto | N), and limits.rate.scope fleet
 * needs a store (and no workers yet). */
import assert from "node:assert/strict"
import { test } from "node:test"
import { parseConfig } from "../../src/config/load.ts"

const base = (extra: string, scope = "local") => `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ self_signed: [localhost] }] }
    limits: { rate: { per_second: 5, scope: ${scope} } }
    upstream: x
upstreams:
  x: { backends: ["127.0.0.1:1"] }
${extra}
`

test("cluster.store.redis is read; rate scope defaults to local", () => {
  const config = parseConfig(base(`cluster: { store: { redis: "redis://127.0.0.1:6379" } }`), "t.yaml", "/tmp")
  assert.equal(config.cluster?.store?.redis, "redis://127.0.0.1:6379")
  assert.equal(config.listeners[0]!.limits.rate?.scope, "local")
})

test("cluster.workers takes auto or a number; absent it is one process; the store beside it is still checked", () => {
  assert.equal(parseConfig(base(`cluster: { workers: auto }`), "t.yaml", "/tmp").cluster?.workers, "auto")
  assert.equal(parseConfig(base(`cluster: { workers: 2 }`), "t.yaml", "/tmp").cluster?.workers, 2)
  assert.equal(parseConfig(base(""), "t.yaml", "/tmp").cluster?.workers, undefined)
  assert.throws(() => parseConfig(base(`cluster: { workers: 0 }`), "t.yaml", "/tmp"), /cluster\.workers/)
  assert.throws(
    () => parseConfig(base(`cluster: { workers: 2, store: { redis: "http://x" } }`), "t.yaml", "/tmp"),
    /cluster\.store\.redis/,
  )
})

test("limits.rate.scope fleet is taken with cluster.workers (the primary counts for its workers)", () => {
  const config = parseConfig(
    base(`cluster: { workers: 2, store: { redis: "redis://127.0.0.1" } }`, "fleet"),
    "t.yaml",
    "/tmp",
  )
  assert.equal(config.listeners[0]!.limits.rate?.scope, "fleet")
  assert.equal(config.cluster?.workers, 2)
})

test("limits.rate.scope fleet without cluster.store is refused", () => {
  assert.throws(() => parseConfig(base("", "fleet"), "t.yaml", "/tmp"), /scope fleet needs cluster.store/)
  assert.equal(
    parseConfig(base(`cluster: { store: { redis: "redis://127.0.0.1" } }`, "fleet"), "t.yaml", "/tmp").listeners[0]!
      .limits.rate?.scope,
    "fleet",
  )
})
