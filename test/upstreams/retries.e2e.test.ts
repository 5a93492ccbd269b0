/** Retries through the proxy: refused and reset tries go to another backend; never after a response started. */
import assert from "node:assert/strict"
import { after, before, beforeEach, describe, test } from "node:test"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type HeldPort, type RunningPortcullis, refusingPort, startPortcullis } from "../helpers/portcullis.ts"
import { type FlakyBackend, startFlakyBackend, upstreamStatus } from "./harness.ts"

let pki: Pki
let pc: RunningPortcullis
let port: number
let dead: HeldPort
let failing: FlakyBackend
let good: FlakyBackend

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "refused.test", "failing.test", "big.test", "budget.test"] })
  failing = await startFlakyBackend("failing")
  good = await startFlakyBackend("good")
  dead = await refusingPort()
  // round_robin starts at the first backend, so each test's first request meets the bad one first.
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [refused.test], upstream: refused }
      - { hosts: [failing.test], upstream: failing }
      - { hosts: [big.test], upstream: big }
      - { hosts: [budget.test], upstream: budget }
      - { upstream: refused }
upstreams:
  refused:
    backends: ["127.0.0.1:${dead.port}", "127.0.0.1:${good.port}"]
    balance: round_robin
    passive: { enabled: false }
  failing:
    backends: ["127.0.0.1:${failing.port}", "127.0.0.1:${good.port}"]
    balance: round_robin
    passive: { enabled: false }
  big:
    backends: ["127.0.0.1:${dead.port}", "127.0.0.1:${good.port}"]
    balance: round_robin
    retry_body_limit: 1KiB
    passive: { enabled: false }
  budget:
    backends: ["127.0.0.1:${dead.port}", "127.0.0.1:${good.port}"]
    balance: round_robin
    retries: 0
    passive: { enabled: false }
access_log: { enabled: false }
`)
  port = pc.port()
})

after(async () => {
  dead?.close()
  await pc?.close()
  await failing?.kill()
  await good?.kill()
  await pki?.close()
})

beforeEach(() => {
  failing.hits.clear()
  good.hits.clear()
  failing.mode = "ok"
})

function send(host: string, options: { path?: string; method?: string; body?: string } = {}) {
  return request({ port, host, ca: pki.ca.cert, ...options })
}

describe("retries on another backend", () => {
  test("a refused connect is retried: every GET and POST gets the good backend's 200", async () => {
    for (let i = 0; i < 4; i++) {
      const get = await send("refused.test", { path: "/echo" })
      assert.equal(get.status, 200)
      assert.equal(JSON.parse(get.text).name, "good")
      // Nothing of a refused request reached a backend, so even a POST may go elsewhere; its body goes too.
      const post = await send("refused.test", { path: "/echo", method: "POST", body: "hello" })
      assert.equal(post.status, 200)
      assert.deepEqual(JSON.parse(post.text), { name: "good", method: "POST", bodyLength: 5 })
    }
    assert.ok(upstreamStatus(pc, "refused").stats.retries >= 4)
  })

  test("a reset before any response byte is retried for a GET; the failing backend saw it once", async () => {
    failing.mode = "reset"
    for (let i = 0; i < 4; i++) {
      const reply = await send("failing.test", { path: "/echo" })
      assert.equal(reply.status, 200, `request ${i}`)
      assert.equal(JSON.parse(reply.text).name, "good")
    }
    assert.equal(failing.hits.get("/echo"), 2, "round robin sent every other first try to the failing backend")
    assert.equal(good.hits.get("/echo"), 4)
  })

  test("an idempotent PUT with a small body is retried after a reset, body and all", async () => {
    failing.mode = "reset"
    for (let i = 0; i < 2; i++) {
      const reply = await send("failing.test", { path: "/echo", method: "PUT", body: "x".repeat(100) })
      assert.equal(reply.status, 200)
      assert.deepEqual(JSON.parse(reply.text), { name: "good", method: "PUT", bodyLength: 100 })
    }
  })

  test("a POST with a body that reached the backend is never repeated: 502", async () => {
    failing.mode = "reset"
    const statuses: number[] = []
    for (let i = 0; i < 2; i++) {
      const reply = await send("failing.test", { path: "/echo", method: "POST", body: "pay once" })
      statuses.push(reply.status)
    }
    assert.deepEqual(statuses.sort(), [200, 502])
    assert.equal(failing.hits.get("/echo"), 1)
    assert.equal(good.hits.get("/echo"), 1, "the good backend got only the POST that round robin sent it")
  })

  test("never a retry once the response started: the client sees a broken response, the other backend nothing", async () => {
    failing.mode = "half"
    let broken = 0
    for (let i = 0; i < 2; i++) {
      try {
        const reply = await send("failing.test", { path: "/half" })
        assert.equal(reply.text, "good")
      } catch {
        broken++
      }
    }
    assert.equal(broken, 1)
    assert.equal(failing.hits.get("/half"), 1)
    assert.equal(good.hits.get("/half"), 1)
  })

  test("a body over retry_body_limit streams and is not retried", async () => {
    const statuses: number[] = []
    for (let i = 0; i < 2; i++) {
      const reply = await send("big.test", { path: "/echo", method: "POST", body: "z".repeat(4096) })
      statuses.push(reply.status)
      if (reply.status === 200) assert.equal(JSON.parse(reply.text).bodyLength, 4096)
    }
    assert.deepEqual(statuses.sort(), [200, 502])
  })

  test("retries: 0 never retries", async () => {
    const statuses: number[] = []
    for (let i = 0; i < 2; i++) statuses.push((await send("budget.test", { path: "/echo" })).status)
    assert.deepEqual(statuses.sort(), [200, 502])
  })
})
