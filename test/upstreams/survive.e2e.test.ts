/**
 * The scenario issue 4 is named for: clients keep sending GETs while two of three backends die abruptly, and not
 * one GET fails; with all three dead the answer is a quick 502/503; when they return, 200s come back within
 * rise x interval.
 */
import assert from "node:assert/strict"
import https from "node:https"
import { after, before, test } from "node:test"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"
import { type FlakyBackend, sleep, startFlakyBackend } from "./harness.ts"

const INTERVAL = 200
const RISE = 2
const CLIENTS = 8

let pki: Pki
let pc: RunningPortcullis
let port: number
let backends: FlakyBackend[]
let agent: https.Agent

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  backends = [await startFlakyBackend("a"), await startFlakyBackend("b"), await startFlakyBackend("c")]
  agent = new https.Agent({ keepAlive: true, maxSockets: CLIENTS, ca: pki.ca.cert })
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: app
upstreams:
  app:
    backends: [${backends.map((b) => `"127.0.0.1:${b.port}"`).join(", ")}]
    health: { path: /healthz, interval: ${INTERVAL}ms, timeout: 500ms, rise: ${RISE}, fall: 2 }
    timeouts: { connect: 1s }
access_log: { enabled: false }
`)
  port = pc.port()
})

after(async () => {
  agent?.destroy()
  await pc?.close()
  for (const b of backends ?? []) await b.kill()
  await pki?.close()
})

function get(path = "/") {
  return request({ port, path, ca: pki.ca.cert, agent, timeoutMs: 5000 })
}

test("two of three backends killed under load: every GET gets a 200; all killed: 502/503 fast; back within rise x interval", async () => {
  // 8 clients send GETs back to back; once every backend has served some of them, two die abruptly; the load goes
  // on for 400 more GETs (all of them sent after the kill), then stops.
  const failures: string[] = []
  let ok = 0
  let killed = false
  let afterKill = 0
  const AFTER_KILL = 400
  const giveUpAt = Date.now() + 30_000
  const client = async (n: number) => {
    for (let i = 0; i < 5000 && afterKill < AFTER_KILL && Date.now() < giveUpAt; i++) {
      if (killed) afterKill++
      try {
        const reply = await get(i % 3 === 0 ? "/slow?ms=20" : `/?client=${n}`)
        if (reply.status === 200) ok++
        else failures.push(`client ${n} request ${i}: ${reply.status} ${reply.text.trim()}`)
      } catch (err) {
        failures.push(`client ${n} request ${i}: ${(err as Error).message}`)
      }
    }
  }
  const load = Promise.all(Array.from({ length: CLIENTS }, (_, n) => client(n)))
  await waitUntil(() => backends.every((b) => b.total() >= 20), "every backend served 20 GETs of the load", 15_000)
  const servedBefore = backends.map((b) => b.total())
  await Promise.all([backends[0]!.kill(), backends[1]!.kill()])
  killed = true
  await load
  assert.ok(afterKill >= AFTER_KILL, `only ${afterKill} GETs were sent after the kill`)
  assert.deepEqual(failures, [], `${failures.length} failed GETs out of ${ok + failures.length}`)
  assert.ok(ok > 100, `only ${ok} GETs completed`)
  assert.ok(
    servedBefore.every((n) => n > 0),
    `every backend served before the kill: ${servedBefore}`,
  )

  // All dead: quick errors, never a hang.
  await backends[2]!.kill()
  for (let i = 0; i < 5; i++) {
    const started = Date.now()
    const reply = await get()
    assert.ok(reply.status === 502 || reply.status === 503, `status ${reply.status}`)
    assert.ok(Date.now() - started < 2000, "an error answer comes quickly")
  }
  await waitUntil(
    () => pc.runtime.status().upstreams[0]!.backends.every((b) => b.state === "down"),
    "all marked down",
    5000,
  )
  assert.equal((await get()).status, 503)

  // They come back on the same addresses: 200 again within rise x interval (plus a round and some slack).
  for (const b of backends) await b.revive()
  const deadline = Date.now() + (RISE + 1) * INTERVAL + 1500
  let status = 0
  while (Date.now() < deadline) {
    status = (await get()).status
    if (status === 200) break
    await sleep(20)
  }
  assert.equal(status, 200, "served again after the backends returned")
  await waitUntil(
    () => pc.runtime.status().upstreams[0]!.backends.every((b) => b.state === "up"),
    "all up again",
    (RISE + 1) * INTERVAL + 1500,
  )
})
