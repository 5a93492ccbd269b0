/**
 * Issue 14, finding 7: slow-client shielding. A request body is held until its first limits.body_buffer bytes (or
 * its end) arrive before a backend connection is taken; a body that pauses longer than limits.body_timeout gets 408
 * and the connection closed; a client that stops reading a response that long is closed and the backend freed.
 */
import assert from "node:assert/strict"
import http from "node:http"
import http2 from "node:http2"
import type { AddressInfo } from "node:net"
import { after, before, test } from "node:test"
import tls from "node:tls"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

let pki: Pki
let site: CertFiles
let backend: TestBackend

before(async () => {
  pki = await createPki()
  site = await pki.issue({ names: ["localhost"] })
  backend = await startEchoBackend("echo")
})
after(async () => {
  await backend?.close()
  await pki?.close()
})

const yaml = (limits = "{}") => `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
    limits: ${limits}
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
access_log: { enabled: false }
`

/** connect opens an HTTP/1.1-over-TLS connection and collects what the proxy sends back. */
function connect(port: number): Promise<{ socket: tls.TLSSocket; received: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    let text = ""
    let onClose: () => void = () => {}
    const closed = new Promise<void>((r) => {
      onClose = r
    })
    const socket = tls.connect(
      { host: "127.0.0.1", port, servername: "localhost", ca: pki.ca.cert, ALPNProtocols: ["http/1.1"] },
      () => resolve({ socket, received: () => text, closed }),
    )
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1")
    })
    socket.on("error", reject)
    socket.on("close", () => onClose())
  })
}

const uploads = () => backend.seen.filter((r) => r.url.startsWith("/upload")).length

function socketsOf(pc: RunningPortcullis): number {
  const sockets = pc.runtime.status().sockets
  return Object.values(sockets).reduce((n, s) => n + s.connections, 0)
}

test("200 slow uploads hold no backend connection until their first 64 KiB or their end arrives", async (t) => {
  const pc = await startPortcullis(yaml())
  t.after(() => pc.close())
  const port = pc.port()
  const before = uploads()
  const size = 100 * 1024
  const clients = await Promise.all(Array.from({ length: 200 }, () => connect(port)))
  for (const c of clients) {
    c.socket.write(
      `POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n${"x".repeat(100)}`,
    )
  }
  await waitUntil(() => socketsOf(pc) >= 200, "200 client connections")
  // A complete request behind them: once it is answered, the proxy has read what the 200 sent before it.
  const control = await request({ port, method: "POST", path: "/echo", body: "done", ca: pki.ca.cert })
  assert.equal(control.status, 200)
  for (const c of clients) c.socket.write("y".repeat(1000))
  const barrier = await request({ port, path: "/echo", ca: pki.ca.cert })
  assert.equal(barrier.status, 200)
  assert.equal(uploads() - before, 0, "no slow upload reached the backend")
  assert.ok(backend.connections() <= 2, `backend connections: ${backend.connections()}`)

  // Half of them send past 64 KiB: those, and only those, go to the backend now.
  const half = clients.slice(0, 100)
  for (const c of half) c.socket.write("z".repeat(64 * 1024))
  await waitUntil(() => uploads() - before >= 100, "the 100 that passed 64 KiB reach the backend")
  const third = await request({ port, path: "/echo", ca: pki.ca.cert })
  assert.equal(third.status, 200)
  assert.equal(uploads() - before, 100)

  // Everyone finishes: every body arrives whole, the held part first.
  for (const [i, c] of clients.entries()) {
    const sent = 100 + 1000 + (i < 100 ? 64 * 1024 : 0)
    c.socket.write("w".repeat(size - sent))
  }
  await Promise.all(clients.map((c) => c.closed))
  for (const c of clients) {
    assert.match(c.received(), /^HTTP\/1\.1 200 /)
    assert.match(c.received(), new RegExp(`\\{"received":${size}\\}$`))
  }
})

test("a chunked body that ends inside the buffer reaches the backend whole, with its length", async (t) => {
  const pc = await startPortcullis(yaml())
  t.after(() => pc.close())
  const c = await connect(pc.port())
  c.socket.write("POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
  c.socket.write("5\r\nhello\r\n")
  c.socket.write("6\r\n world\r\n0\r\n\r\n")
  await c.closed
  const body = JSON.parse(c.received().slice(c.received().indexOf("\r\n\r\n") + 4)) as {
    bodyLength: number
    headers: Record<string, string>
  }
  assert.equal(body.bodyLength, 11)
  assert.equal(body.headers["content-length"], "11")
})

test("HTTP/2: a slow upload reaches the backend only after 64 KiB, and arrives whole", async (t) => {
  const pc = await startPortcullis(yaml())
  t.after(() => pc.close())
  const before = uploads()
  const session = http2.connect(`https://127.0.0.1:${pc.port()}`, { servername: "localhost", ca: pki.ca.cert })
  t.after(() => session.close())
  const stream = session.request({ ":method": "POST", ":path": "/upload?h2", ":authority": "localhost" })
  let text = ""
  stream.on("data", (d: Buffer) => {
    text += d.toString()
  })
  const ended = new Promise<void>((r) => stream.on("end", () => r()))
  stream.write(Buffer.alloc(1000, "a"))
  const barrier = await request({ port: pc.port(), path: "/echo", ca: pki.ca.cert })
  assert.equal(barrier.status, 200)
  assert.equal(uploads() - before, 0)
  stream.write(Buffer.alloc(70 * 1024, "b"))
  await waitUntil(() => uploads() - before === 1, "the upload reaches the backend past 64 KiB")
  stream.end(Buffer.alloc(30 * 1024, "c"))
  await ended
  assert.deepEqual(JSON.parse(text), { received: 1000 + 100 * 1024 })
})

for (const [phase, prefix] of [
  ["while the body is held", 10],
  ["after it began to stream to the backend", 80 * 1024],
] as const) {
  test(`a body that stops for longer than body_timeout gets 408 and the connection closed (${phase})`, {
    timeout: 20_000,
  }, async (t) => {
    // Its own backend, which counts the requests it is still reading.
    const open = { count: 0, seen: 0 }
    const counting = http.createServer((req, res) => {
      open.seen++
      open.count++
      req.on("close", () => open.count--)
      req.resume()
      req.on("end", () => res.end("ok"))
    })
    await new Promise<void>((r) => counting.listen(0, "127.0.0.1", r))
    t.after(() => {
      counting.closeAllConnections()
      counting.close()
    })
    const countingPort = (counting.address() as AddressInfo).port
    const pc = await startPortcullis(
      yaml("{ body_timeout: 300ms }").replace(`127.0.0.1:${backend.port}`, `127.0.0.1:${countingPort}`),
    )
    t.after(() => pc.close())
    const uploads = () => open.seen
    const before = uploads()
    const c = await connect(pc.port())
    const started = Date.now()
    c.socket.write(`POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200000\r\n\r\n${"x".repeat(prefix)}`)
    await c.closed
    assert.match(c.received(), /^HTTP\/1\.1 408 /)
    assert.ok(Date.now() - started >= 250, `closed after ${Date.now() - started} ms`)
    if (prefix > 64 * 1024) {
      assert.equal(uploads() - before, 1, "the streamed one had reached the backend")
      // The try is aborted: the backend connection that carried it is closed. (undici then opens a fresh one to
      // the backend, which idles out after keepAliveTimeout: why this counts requests and not connections.)
      await waitUntil(() => open.count === 0, "the backend's request is ended", 2_000)
    } else {
      assert.equal(uploads() - before, 0)
    }
  })
}

test("a client that stops reading a response for longer than body_timeout is closed, and the backend freed", {
  timeout: 20_000,
}, async (t) => {
  const pc = await startPortcullis(yaml("{ body_timeout: 300ms }"))
  t.after(() => pc.close())
  const c = await connect(pc.port())
  c.socket.pause()
  c.socket.write("GET /bytes?n=200000000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
  await waitUntil(() => backend.connections() >= 1, "the backend is sending")
  // Neither side of ours stays: the client connection is closed, and so is the backend connection.
  await waitUntil(() => socketsOf(pc) === 0, "the client connection is closed", 5_000)
  await waitUntil(() => backend.connections() === 0, "the backend connection is closed", 5_000)
  assert.ok(backend.bytesSent() < 200_000_000)
  c.socket.destroy()
})
