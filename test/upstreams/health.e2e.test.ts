/** Health through the proxy: active checks take a flipping backend out and back, passive ejection with backoff. */
import assert from "node:assert/strict"
import { after, before, describe, test } from "node:test"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"
import { type FlakyBackend, startFlakyBackend, upstreamStatus } from "./harness.ts"

const INTERVAL = 150
const RISE = 2
const FALL = 2

let pki: Pki
let pc: RunningPortcullis
let port: number
let flip: FlakyBackend
let steady: FlakyBackend
let bad: FlakyBackend
let fine: FlakyBackend

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "active.test", "passive.test"] })
  flip = await startFlakyBackend("flip")
  steady = await startFlakyBackend("steady")
  bad = await startFlakyBackend("bad")
  fine = await startFlakyBackend("fine")
  flip.healthy = false // a new backend starts in the state its first check finds
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [active.test], upstream: active }
      - { hosts: [passive.test], upstream: passive }
upstreams:
  active:
    backends: ["127.0.0.1:${flip.port}", "127.0.0.1:${steady.port}"]
    balance: round_robin
    health: { path: /healthz, interval: ${INTERVAL}ms, timeout: 500ms, rise: ${RISE}, fall: ${FALL} }
    passive: { enabled: false }
  passive:
    backends: ["127.0.0.1:${bad.port}", "127.0.0.1:${fine.port}"]
    balance: round_robin
    passive: { consecutive_errors: 3, base_ejection: 600ms, max_ejection: 5s }
access_log: { enabled: false }
`)
  port = pc.port()
})

after(async () => {
  await pc?.close()
  for (const backend of [flip, steady, bad, fine]) await backend?.kill()
  await pki?.close()
})

function get(host: string) {
  return request({ port, host, ca: pki.ca.cert })
}

function backendOf(upstream: string, b: FlakyBackend) {
  return upstreamStatus(pc, upstream).backends.find((x) => x.id === `127.0.0.1:${b.port}`)!
}

describe("active health checks", () => {
  test("a backend found down by the first check gets no request from the start", async () => {
    assert.equal(backendOf("active", flip).state, "down")
    for (let i = 0; i < 4; i++) assert.equal((await get("active.test")).text, "steady")
    assert.equal(flip.total(), 0)
    const health = upstreamStatus(pc, "active").health!
    assert.equal(health.find((h) => h.id === `127.0.0.1:${flip.port}`)?.healthy, false)
  })

  test("it comes up within rise x interval of turning healthy, goes down after fall failures, and back", async () => {
    for (let cycle = 0; cycle < 2; cycle++) {
      flip.healthy = true
      // rise x interval, plus one interval for the round in progress, plus slack for a loaded machine.
      await waitUntil(() => backendOf("active", flip).state === "up", "flip up", (RISE + 1) * INTERVAL + 1000)
      const names = new Set<string>()
      for (let i = 0; i < 4; i++) names.add((await get("active.test")).text)
      assert.deepEqual([...names].sort(), ["flip", "steady"])

      flip.healthy = false
      await waitUntil(() => backendOf("active", flip).state === "down", "flip down", (FALL + 2) * INTERVAL + 1000)
      const before = flip.total()
      for (let i = 0; i < 4; i++) assert.equal((await get("active.test")).text, "steady")
      assert.equal(flip.total(), before)
    }
  })
})

describe("passive health", () => {
  test("consecutive 5xx eject a backend; the next ejection lasts twice as long", async () => {
    bad.mode = "500"
    const ejections: number[] = []
    for (let round = 0; round < 2; round++) {
      // Round robin alternates, so the bad backend sees a failure every other request.
      for (let i = 0; i < 40 && !backendOf("passive", bad).ejected; i++) await get("passive.test")
      const status = backendOf("passive", bad)
      assert.ok(status.ejected, `round ${round}: ejected`)
      ejections.push(status.ejected_until - Date.now())
      const before = bad.total()
      for (let i = 0; i < 4; i++) assert.equal((await get("passive.test")).text, "fine")
      assert.equal(bad.total(), before, "no request reaches an ejected backend")
      await waitUntil(() => !backendOf("passive", bad).ejected, "ejection over", 5000)
    }
    assert.ok(ejections[0]! <= 600, `first ejection ${ejections[0]} ms`)
    assert.ok(ejections[1]! > 600 && ejections[1]! <= 1200, `second ejection ${ejections[1]} ms`)
    const passive = upstreamStatus(pc, "passive")
    assert.equal(passive.stats.ejections, 2)
    assert.equal(passive.passive?.find((p) => p.id === `127.0.0.1:${bad.port}`)?.times_ejected, 2)

    bad.mode = "ok"
    const names = new Set<string>()
    for (let i = 0; i < 4; i++) names.add((await get("passive.test")).text)
    assert.deepEqual([...names].sort(), ["bad", "fine"], "back in rotation after the ejection")
  })
})
