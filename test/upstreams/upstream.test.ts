/** Upstream wiring: config to balancer, health, passive and slow start; state kept across a runtime reload. */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { parseConfig } from "../../src/config/load.ts"
import { classifyCode } from "../../src/core/failure.ts"
import { silentLogger } from "../../src/core/log.ts"
import { effectiveWeight } from "../../src/upstreams/health/slow-start.ts"
import { Upstream } from "../../src/upstreams/upstream.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { type FlakyBackend, startFlakyBackend, upstreamStatus } from "./harness.ts"

function upstreamFrom(yaml: string): Upstream {
  const config = parseConfig(
    `listeners:\n  - { name: web, address: 127.0.0.1:1, tls: { certificates: [{ self_signed: [localhost] }] }, upstream: app }\nupstreams:\n  app:\n${yaml}`,
    "inline.yaml",
    "/tmp",
  )
  return new Upstream("app", config.upstreams["app"]!, { log: silentLogger() })
}

test("defaults: p2c, passive on (5 errors, 30s..5m, 5xx, 50%), no sticky, no hash, no health, queue 100/10s", () => {
  const u = upstreamFrom("    backends: [127.0.0.1:3000]\n")
  assert.equal(u.sticky, undefined)
  assert.equal(u.hashKey, undefined)
  assert.equal(u.health, undefined)
  assert.equal(u.limited, false)
  const o = u.outliers!
  assert.deepEqual(
    [o.consecutiveErrors, o.baseEjection, o.maxEjection, o.count5xx, o.maxEjectedPercent],
    [5, 30_000, 300_000, true, 50],
  )
  assert.deepEqual(u.status().queue, { waiting: 0, size: 100 })
  assert.equal(u.config.queue.timeout, 10_000)
  assert.equal(u.config.retries, 2)
  assert.equal(u.config.retry_body_limit, 64 * 1024)
})

test("slow_start reaches every backend: a returning one ramps up from 10%", () => {
  const u = upstreamFrom("    backends: [{ address: 127.0.0.1:3000, weight: 10 }]\n    slow_start: 10s\n")
  const backend = u.backends[0]!
  const now = Date.now()
  backend.returnedAt = now
  assert.equal(effectiveWeight(backend, now), 1)
  assert.equal(effectiveWeight(backend, now + 5000), 5)
  assert.equal(effectiveWeight(backend, now + 10_000), 10)
})

test("passive failures eject through the upstream and are counted", () => {
  const u = upstreamFrom("    backends: [127.0.0.1:3000, 127.0.0.1:3001]\n    passive: { consecutive_errors: 1 }\n")
  const backend = u.backends[0]!
  assert.equal(u.failed(backend, classifyCode("ECONNREFUSED")), true)
  assert.ok(!backend.available)
  assert.equal(u.stats.ejections.value, 1)
})

test("a failure that is not the backend's never counts against it", () => {
  const u = upstreamFrom("    backends: [127.0.0.1:3000, 127.0.0.1:3001]\n    passive: { consecutive_errors: 1 }\n")
  const backend = u.backends[0]!
  // A client body shorter than its content-length (undici refuses it), a client gone, a client's reset, no backend.
  for (const failure of [
    classifyCode("UND_ERR_REQ_CONTENT_LENGTH_MISMATCH"),
    classifyCode("UND_ERR_ABORTED"),
    classifyCode("ECONNRESET", "client"),
    classifyCode("PC_NO_BACKEND"),
    classifyCode("PC_INTERNAL"),
  ]) {
    assert.equal(u.failed(backend, failure), false, failure.code)
  }
  assert.ok(backend.available)
  assert.deepEqual(u.status().passive, [])
  assert.equal(u.failed(backend, classifyCode("ECONNRESET")), true, "the same code from the backend's side counts")
})

let pki: Pki
let pc: RunningPortcullis | undefined
let down: FlakyBackend
let upb: FlakyBackend

before(async () => {
  pki = await createPki()
  down = await startFlakyBackend("down")
  upb = await startFlakyBackend("up")
  down.healthy = false
})

after(async () => {
  await pc?.close()
  await down?.kill()
  await upb?.kill()
  await pki?.close()
})

test("a reload keeps active health: a backend found down stays down, and gets no request in between", async () => {
  const site = await pki.issue({ names: ["localhost"] })
  const yaml = (interval: string) => `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: app
upstreams:
  app:
    backends: ["127.0.0.1:${down.port}", "127.0.0.1:${upb.port}"]
    health: { path: /healthz, interval: ${interval}, rise: 2, fall: 2 }
access_log: { enabled: false }
`
  pc = await startPortcullis(yaml("10s"))
  const port = pc.port()
  assert.equal(upstreamStatus(pc, "app").backends[0]!.state, "down")
  // The new generation's first check finds it down again; before and after, it stays down (rise needs 2).
  down.healthy = true
  await pc.reload(yaml("20s"))
  const status = upstreamStatus(pc, "app")
  assert.equal(status.backends[0]!.state, "down", "one passing check is not rise: 2")
  assert.equal(status.health![0]!.consecutive_successes, 1)
  for (let i = 0; i < 4; i++) assert.equal((await request({ port, ca: pki.ca.cert })).text, "up")
  assert.equal(down.total(), 0)
})

test("an ejected backend that active checks bring back up is in service at once, not after its ejection", async (t) => {
  const flaky = await startFlakyBackend("flaky")
  t.after(() => flaky.kill())
  flaky.healthy = false
  const u = upstreamFrom(
    `    backends: ["127.0.0.1:${flaky.port}", 127.0.0.1:1]\n    health: { path: /healthz, interval: 1m, rise: 2, fall: 1 }\n    passive: { consecutive_errors: 1, base_ejection: 5m }\n`,
  )
  t.after(() => u.destroy())
  await u.start()
  const backend = u.backends[0]!
  assert.equal(backend.state, "down")
  u.failed(backend, classifyCode("ECONNRESET"))
  assert.ok(backend.ejectedUntil > Date.now() + 60_000)
  flaky.healthy = true
  await u.health!.checkNow()
  await u.health!.checkNow()
  assert.equal(backend.state, "up")
  assert.equal(backend.ejectedUntil, 0)
  assert.ok(backend.available)
})
