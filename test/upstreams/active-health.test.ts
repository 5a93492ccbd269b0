/** HealthChecker against real sockets on 127.0.0.1: HTTP, TCP and TLS checks, rise/fall, one log line per change. */
import assert from "node:assert/strict"
import http from "node:http"
import https from "node:https"
import net from "node:net"
import { Writable } from "node:stream"
import { test } from "node:test"
import tls from "node:tls"
import type { HealthConfig } from "../../src/config/schema.ts"
import { createLogger } from "../../src/core/log.ts"
import { Backend } from "../../src/upstreams/backend.ts"
import { HealthChecker, type HealthCheckerOptions, HealthRegistry } from "../../src/upstreams/health/active.ts"
import { waitUntil } from "../helpers/wait.ts"
import { makePki } from "./health-pki.ts"

/** config is a HealthConfig with a long interval: tests drive rounds with checkNow() unless they say otherwise. */
function config(change: Partial<HealthConfig> = {}): HealthConfig {
  return {
    type: "http",
    path: "/healthz",
    expect_status: "200-399",
    interval: 60_000,
    timeout: 2000,
    rise: 2,
    fall: 2,
    ...change,
  }
}

/** captureLog is a real pino logger whose lines are kept, parsed, for assertions. */
function captureLog() {
  const lines: { msg: string; level: number }[] = []
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split("\n")) if (line) lines.push(JSON.parse(line))
      callback()
    },
  })
  return { log: createLogger({ level: "info", destination }), lines, messages: () => lines.map((l) => l.msg) }
}

function backendAt(port: number): Backend {
  return new Backend({ address: { host: "127.0.0.1", port } })
}

function listen(server: net.Server): Promise<number> {
  track(server)
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port))
  })
}

/** closeServer stops listening and destroys every connection still open, then waits for the close. */
function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve())
    for (const socket of openSockets.get(server) ?? []) socket.destroy()
  })
}

const openSockets = new WeakMap<net.Server, Set<net.Socket>>()

/** track remembers a server's connections so closeServer can end them (a silent socket never sees the client's EOF). */
function track<S extends net.Server>(server: S): S {
  const sockets = new Set<net.Socket>()
  openSockets.set(server, sockets)
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
  })
  return server
}

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = net.createServer()
  const port = await listen(server)
  await closeServer(server)
  return port
}

/** flippingBackend answers GET /healthz with `status` (changeable) and records Host headers. */
async function flippingBackend(t: test.TestContext) {
  const state = { status: 200, body: "ok", hosts: [] as string[], paths: [] as string[] }
  const server = http.createServer((req, res) => {
    state.hosts.push(req.headers.host ?? "")
    state.paths.push(req.url ?? "")
    res.writeHead(state.status).end(state.body)
  })
  const port = await listen(server)
  t.after(() => closeServer(server))
  return { state, port }
}

function checker(t: test.TestContext, options: HealthCheckerOptions): HealthChecker {
  const c = new HealthChecker(options)
  t.after(() => c.close())
  return c
}

test("a backend flipping 200 -> 500 -> 200 goes down after fall and up after rise, logging each change once", async (t) => {
  const { state, port } = await flippingBackend(t)
  const backend = backendAt(port)
  const { log, messages } = captureLog()
  const hc = checker(t, { backends: [backend], config: config(), log, upstream: "web" })
  await hc.start()
  assert.equal(backend.state, "up")
  assert.deepEqual(messages(), [], "a first check that finds the backend up logs nothing")

  state.status = 500
  await hc.checkNow()
  assert.equal(backend.state, "up", "one failure is below fall 2")
  await hc.checkNow()
  assert.equal(backend.state, "down")
  await hc.checkNow()
  assert.deepEqual(messages(), [`backend 127.0.0.1:${port} of upstream web is down: status 500 (expected 200-399)`])

  state.status = 204
  await hc.checkNow()
  assert.equal(backend.state, "down", "one success is below rise 2")
  const before = Date.now()
  await hc.checkNow()
  assert.equal(backend.state, "up")
  assert.ok(backend.returnedAt >= before, "returnedAt marks the return for slow start")
  await hc.checkNow()
  assert.deepEqual(messages().slice(1), [`backend 127.0.0.1:${port} of upstream web is up`])
  assert.equal(hc.status()[0]!.consecutiveSuccesses, 3)
})

test("a new backend starts in the state its first check finds: down at once, logged once", async (t) => {
  const port = await closedPort()
  const backend = backendAt(port)
  const { log, messages } = captureLog()
  const changes: boolean[] = []
  const hc = checker(t, {
    backends: [backend],
    config: config({ fall: 3 }),
    log,
    upstream: "web",
    onChange: (_b, healthy) => changes.push(healthy),
  })
  await hc.start()
  assert.equal(backend.state, "down")
  assert.deepEqual(messages(), [
    `backend 127.0.0.1:${port} of upstream web is down: connect ECONNREFUSED 127.0.0.1:${port}`,
  ])
  assert.deepEqual(changes, [false])
})

test("sends GET to the path with the configured Host header, or the backend address", async (t) => {
  const { state, port } = await flippingBackend(t)
  const { log } = captureLog()
  await checker(t, { backends: [backendAt(port)], config: config({ path: "/status?deep=1" }), log }).start()
  await checker(t, { backends: [backendAt(port)], config: config({ host: "app.internal" }), log }).start()
  assert.deepEqual(state.paths, ["/status?deep=1", "/healthz"])
  assert.deepEqual(state.hosts, [`127.0.0.1:${port}`, "app.internal"])
})

test("expect_status as a single code and expect_body as a substring", async (t) => {
  const { state, port } = await flippingBackend(t)
  const { log } = captureLog()
  const backend = backendAt(port)
  const hc = checker(t, {
    backends: [backend],
    config: config({ expect_status: "200", expect_body: '"ready":true', rise: 1, fall: 1 }),
    log,
  })
  state.body = '{"ready":true}'
  await hc.start()
  assert.equal(backend.state, "up")
  state.body = '{"ready":false}'
  await hc.checkNow()
  assert.equal(backend.state, "down")
  assert.equal(hc.status()[0]!.lastError, 'body does not contain "\\"ready\\":true"')
  state.body = '{"ready":true}'
  state.status = 204
  await hc.checkNow()
  assert.equal(hc.status()[0]!.lastError, "status 204 (expected 200)")
})

test("a backend that closes the connection without answering is down", async (t) => {
  const server = net.createServer((socket) => socket.destroy())
  const port = await listen(server)
  t.after(() => closeServer(server))
  const backend = backendAt(port)
  const { log, messages } = captureLog()
  await checker(t, { backends: [backend], config: config(), log, upstream: "web" }).start()
  assert.equal(backend.state, "down")
  assert.match(messages()[0]!, /is down: (socket hang up|read ECONNRESET|connection closed before a response)$/)
})

test("a backend that never answers is down after the timeout", async (t) => {
  const server = net.createServer(() => {})
  const port = await listen(server)
  t.after(() => closeServer(server))
  const backend = backendAt(port)
  const { log } = captureLog()
  const hc = checker(t, { backends: [backend], config: config({ timeout: 150 }), log })
  const started = Date.now()
  await hc.start()
  assert.ok(Date.now() - started >= 140)
  assert.equal(backend.state, "down")
  assert.equal(hc.status()[0]!.lastError, "timed out after 150 ms")
})

test("tcp check: a closed port is down, a listening one up", async (t) => {
  const server = net.createServer((socket) => socket.end())
  const open = await listen(server)
  t.after(() => closeServer(server))
  const closed = await closedPort()
  const up = backendAt(open)
  const down = backendAt(closed)
  const { log, messages } = captureLog()
  await checker(t, { backends: [up, down], config: config({ type: "tcp" }), log, upstream: "cache" }).start()
  assert.equal(up.state, "up")
  assert.equal(down.state, "down")
  assert.deepEqual(messages(), [
    `backend 127.0.0.1:${closed} of upstream cache is down: connect ECONNREFUSED 127.0.0.1:${closed}`,
  ])
})

test("never overrides draining, but applies the health once the drain is lifted", async (t) => {
  const { state, port } = await flippingBackend(t)
  const backend = backendAt(port)
  backend.state = "draining"
  const { log } = captureLog()
  const hc = checker(t, { backends: [backend], config: config({ rise: 1, fall: 1 }), log })
  state.status = 503
  await hc.start()
  assert.equal(backend.state, "draining")
  assert.equal(hc.status()[0]!.healthy, false)
  backend.state = "up" // the admin lifts the drain
  await hc.checkNow()
  assert.equal(backend.state, "down")
})

test("a registry carries health across a reload: the new checker's backend starts down and needs rise to return", async (t) => {
  const { state, port } = await flippingBackend(t)
  const registry = new HealthRegistry()
  const { log, messages } = captureLog()
  state.status = 500
  const first = new HealthChecker({ backends: [backendAt(port)], config: config(), log, registry, upstream: "web" })
  await first.start()
  await first.close()
  state.status = 200
  const backend = backendAt(port) // the new generation's Backend object
  const second = checker(t, { backends: [backend], config: config({ rise: 2 }), log, registry, upstream: "web" })
  await second.start()
  assert.equal(backend.state, "down", "one success after reload is below rise 2")
  await second.checkNow()
  assert.equal(backend.state, "up")
  assert.deepEqual(messages(), [
    `backend 127.0.0.1:${port} of upstream web is down: status 500 (expected 200-399)`,
    `backend 127.0.0.1:${port} of upstream web is up`,
  ])
  registry.retain([])
  assert.equal(registry.get(backend.id), undefined)
})

test("checks repeat every interval on their own", async (t) => {
  const { state, port } = await flippingBackend(t)
  const backend = backendAt(port)
  const { log } = captureLog()
  const hc = checker(t, { backends: [backend], config: config({ interval: 30, rise: 1, fall: 1 }), log })
  await hc.start()
  state.status = 500
  await waitUntil(() => backend.state === "down", "backend marked down by a scheduled check", 5000)
  state.status = 200
  await waitUntil(() => backend.state === "up", "backend marked up by a scheduled check", 5000)
})

test("close cuts a hanging check short and stops the schedule", async (t) => {
  const sockets: net.Socket[] = []
  const server = net.createServer((socket) => sockets.push(socket))
  const port = await listen(server)
  t.after(() => closeServer(server))
  const { log } = captureLog()
  const hc = new HealthChecker({ backends: [backendAt(port)], config: config({ timeout: 30_000 }), log })
  const starting = hc.start()
  await waitUntil(() => sockets.length === 1, "the check connected", 5000)
  const started = Date.now()
  await hc.close()
  await starting
  assert.ok(Date.now() - started < 1000, "close did not wait for the 30 s timeout")
})

test("checks an https backend over TLS, verifying it against the upstream's CA and name", async (t) => {
  const pki = makePki("backend.test")
  t.after(pki.cleanup)
  const server = https.createServer({ cert: pki.cert, key: pki.key }, (_req, res) => res.end("ok"))
  const port = await listen(server)
  t.after(() => closeServer(server))
  const { log, messages } = captureLog()

  const good = backendAt(port)
  await checker(t, {
    backends: [good],
    config: config(),
    tls: { ca: pki.ca, servername: "backend.test", rejectUnauthorized: true },
    log,
  }).start()
  assert.equal(good.state, "up")

  const untrusted = backendAt(port)
  const hc = checker(t, {
    backends: [untrusted],
    config: config(),
    tls: { ca: pki.otherCa, servername: "backend.test", rejectUnauthorized: true },
    log,
    upstream: "api",
  })
  await hc.start()
  assert.equal(untrusted.state, "down")
  assert.match(messages()[0]!, /of upstream api is down: .*(unable to get local issuer|self[- ]signed|verify)/i)

  const wrongName = backendAt(port)
  const named = checker(t, {
    backends: [wrongName],
    config: config(),
    tls: { ca: pki.ca, servername: "other.test", rejectUnauthorized: true },
    log,
  })
  await named.start()
  assert.equal(wrongName.state, "down")
  assert.match(named.status()[0]!.lastError ?? "", /does not match certificate's altnames/)
})

test("a tcp check over TLS needs the handshake to pass, not just the connect", async (t) => {
  const pki = makePki("cache.test")
  t.after(pki.cleanup)
  const sni: string[] = []
  const context = tls.createSecureContext({ cert: pki.cert, key: pki.key })
  // SNICallback sees the ClientHello: the check closes right after its handshake, before the server may finish its own.
  const server = tls.createServer(
    {
      cert: pki.cert,
      key: pki.key,
      SNICallback: (name, callback) => {
        sni.push(name)
        callback(null, context)
      },
    },
    (socket) => socket.end(),
  )
  server.on("tlsClientError", () => {})
  const port = await listen(server)
  t.after(() => closeServer(server))
  const { log } = captureLog()
  const up = backendAt(port)
  await checker(t, {
    backends: [up],
    config: config({ type: "tcp" }),
    tls: { ca: pki.ca, servername: "cache.test", rejectUnauthorized: true },
    log,
  }).start()
  assert.equal(up.state, "up")
  assert.deepEqual(sni, ["cache.test"])

  const untrusted = backendAt(port)
  const hc = checker(t, {
    backends: [untrusted],
    config: config({ type: "tcp" }),
    tls: { ca: pki.otherCa, servername: "cache.test", rejectUnauthorized: true },
    log,
  })
  await hc.start()
  assert.equal(untrusted.state, "down")
  assert.match(hc.status()[0]!.lastError ?? "", /certificate/)
})
