/** Limits through the proxy: backend max_connections with its queue, request rate, per-client and listener connections. */
import assert from "node:assert/strict"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import type tls from "node:tls"
import { request, tlsConnect } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { loopback, type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"
import { type FlakyBackend, startFlakyBackend, upstreamStatus } from "./harness.ts"

let pki: Pki
let pc: RunningPortcullis
let ports: { web: number; rated: number; perclient: number; small: number }
/** Each listener binds port 0 on its own loopback address (see loopback). */
const HOSTS = { web: loopback(1), rated: loopback(2), perclient: loopback(3), small: loopback(4) }
let backend: FlakyBackend

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "queue.test", "wait.test"] })
  backend = await startFlakyBackend("one")
  const tlsBlock = `tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }`
  pc = await startPortcullis(`
listeners:
  - name: web
    address: ${HOSTS.web}:0
    ${tlsBlock}
    routes:
      - { hosts: [queue.test], upstream: queued }
      - { hosts: [wait.test], upstream: waiting }
      - { upstream: plain }
  - name: rated
    address: ${HOSTS.rated}:0
    ${tlsBlock}
    limits: { rate: { per_second: 0.5, burst: 3 } }
    upstream: plain
  - name: perclient
    address: ${HOSTS.perclient}:0
    ${tlsBlock}
    limits: { per_client_connections: 2 }
    upstream: plain
  - name: small
    address: ${HOSTS.small}:0
    ${tlsBlock}
    limits: { max_connections: 2 }
    upstream: plain
upstreams:
  plain: { backends: ["127.0.0.1:${backend.port}"] }
  queued:
    backends: [{ address: "127.0.0.1:${backend.port}", max_connections: 1 }]
    queue: { size: 1, timeout: 10s }
  waiting:
    backends: [{ address: "127.0.0.1:${backend.port}", max_connections: 1 }]
    queue: { size: 5, timeout: 200ms }
access_log: { enabled: false }
`)
  ports = { web: pc.port("web"), rated: pc.port("rated"), perclient: pc.port("perclient"), small: pc.port("small") }
})

after(async () => {
  await pc?.close()
  await backend?.kill()
  await pki?.close()
})

describe("backend max_connections and the queue", () => {
  test("one slot, one queue place: the third request is refused with 503 at once, the queued one is served", async () => {
    const first = request({ port: ports.web, host: "queue.test", path: "/slow?ms=600", ca: pki.ca.cert })
    await waitUntil(() => upstreamStatus(pc, "queued").backends[0]!.in_flight === 1, "first request in flight")
    const second = request({ port: ports.web, host: "queue.test", path: "/slow?ms=10", ca: pki.ca.cert })
    await waitUntil(() => upstreamStatus(pc, "queued").queue.waiting === 1, "second request queued")
    const third = await request({ port: ports.web, host: "queue.test", path: "/slow?ms=10", ca: pki.ca.cert })
    assert.equal(third.status, 503)
    assert.equal(third.text, "Service Unavailable\n")
    assert.equal((await first).status, 200)
    const queued = await second
    assert.equal(queued.status, 200)
    assert.equal(queued.text, "slow one")
    const status = upstreamStatus(pc, "queued")
    assert.equal(status.stats.queue_full, 1)
    assert.equal(status.stats.queued, 1)
    assert.equal(status.backends[0]!.max_connections, 1)
  })

  test("a request that waits longer than queue.timeout gets 503", async () => {
    const holder = request({ port: ports.web, host: "wait.test", path: "/slow?ms=1500", ca: pki.ca.cert })
    await waitUntil(() => upstreamStatus(pc, "waiting").backends[0]!.in_flight === 1, "holder in flight")
    const waited = await request({ port: ports.web, host: "wait.test", path: "/", ca: pki.ca.cert })
    assert.equal(waited.status, 503)
    assert.equal(upstreamStatus(pc, "waiting").stats.queue_timeouts, 1)
    assert.equal((await holder).status, 200)
  })
})

describe("client limits", () => {
  test("over the request rate: 429 with Retry-After, counted in the status", async () => {
    const statuses: number[] = []
    let retryAfter: string | string[] | undefined
    for (let i = 0; i < 5; i++) {
      const reply = await request({ address: HOSTS.rated, port: ports.rated, ca: pki.ca.cert })
      statuses.push(reply.status)
      if (reply.status === 429) retryAfter = reply.headers["retry-after"]
    }
    assert.deepEqual(statuses, [200, 200, 200, 429, 429])
    assert.ok(Number(retryAfter) >= 1, `Retry-After: ${retryAfter}`)
    const clients = pc.runtime.status().clients as Record<string, { refused_requests: number }>
    assert.equal(clients[`${HOSTS.rated}:0`]?.refused_requests, 2)
  })

  test("per_client_connections: a client's third connection is closed; after one closes, a new one is served", async () => {
    const open: tls.TLSSocket[] = []
    const connect = () =>
      tlsConnect({ host: HOSTS.perclient, port: ports.perclient, servername: "localhost", ca: pki.ca.cert })
    try {
      open.push(await connect(), await connect())
      const third = await connect()
      open.push(third)
      await waitUntil(() => third.destroyed || third.readyState === "closed", "third connection closed", 5000)
      const reply = await request({ address: HOSTS.perclient, port: ports.perclient, ca: pki.ca.cert }).catch(
        (err: Error) => err,
      )
      assert.ok(reply instanceof Error, "a new connection is refused while the client holds two")
      open[0]!.destroy()
      await waitUntil(() => clientConnections("perclient") < 2, "first connection counted out")
      assert.equal((await request({ address: HOSTS.perclient, port: ports.perclient, ca: pki.ca.cert })).status, 200)
    } finally {
      for (const s of open) s.destroy()
    }
  })

  test("listener max_connections: connections past it are closed at accept, counted as refused", async () => {
    const open: net.Socket[] = []
    try {
      for (let i = 0; i < 2; i++) {
        const s = net.connect(ports.small, HOSTS.small)
        s.on("error", () => {})
        await new Promise((r) => s.once("connect", r))
        open.push(s)
      }
      await waitUntil(() => socketStatus("small").connections === 2, "two connections open")
      const extra = net.connect(ports.small, HOSTS.small)
      extra.on("error", () => {})
      open.push(extra)
      await new Promise((r) => extra.once("close", r))
      assert.equal(socketStatus("small").refused, 1)
      for (const s of open) s.destroy()
      await waitUntil(() => socketStatus("small").connections === 0, "connections closed")
      assert.equal((await request({ address: HOSTS.small, port: ports.small, ca: pki.ca.cert })).status, 200)
    } finally {
      for (const s of open) s.destroy()
    }
  })
})

function socketStatus(listener: keyof typeof HOSTS): { connections: number; refused: number } {
  return pc.runtime.status().sockets[`${HOSTS[listener]}:0`]!
}

function clientConnections(listener: keyof typeof HOSTS): number {
  const gate = pc.runtime.generation!.gates.get(`${HOSTS[listener]}:0`)!
  return gate.limiter.connections("127.0.0.1")
}
