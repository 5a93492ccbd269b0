/** The cluster config keys (issue 12): cluster.store is accepted, cluster.workers is refused as not built yet, and
 * limits.rate.scope fleet needs a store. */
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

test("cluster.workers is refused with its own message, cluster.store beside it is still checked", () => {
  assert.throws(
    () => parseConfig(base(`cluster: { workers: 2, store: { redis: "http://x" } }`), "t.yaml", "/tmp"),
    (err: Error) =>
      /t\.yaml:10:12 cluster\.workers: worker processes are not implemented yet/.test(err.message) &&
      /cluster\.store\.redis/.test(err.message),
  )
})

test("limits.rate.scope fleet without cluster.store is refused", () => {
  assert.throws(() => parseConfig(base("", "fleet"), "t.yaml", "/tmp"), /scope fleet needs cluster.store/)
  assert.equal(
    parseConfig(base(`cluster: { store: { redis: "redis://127.0.0.1" } }`, "fleet"), "t.yaml", "/tmp").listeners[0]!
      .limits.rate?.scope,
    "fleet",
  )
})
