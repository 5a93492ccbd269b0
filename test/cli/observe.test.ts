/**
 * What an operator sees of a running instance: one JSON access log line per request (without secrets), the admin
 * status (without key material), and the client-side idle keep-alive timeout.
 */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import tls from "node:tls"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { type ChildPortcullis, runningPorts, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

let pki: Pki
let backend: TestBackend
let site: CertFiles
let pc: ChildPortcullis
let port: number
let adminPort: number

before(async () => {
  pki = await createPki()
  backend = await startEchoBackend("app")
  site = await pki.issue({ names: ["localhost"] })
  const file = writeTemp(
    pki.dir,
    "observe.yaml",
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
    limits: { idle_timeout: 500ms }
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
admin: { address: "127.0.0.1:0" }
`,
  )
  pc = spawnPortcullis(["--config", file])
  const running = await runningPorts(pc)
  port = running.ports["web"]!
  adminPort = running.admin!
})

after(async () => {
  await pc?.stop()
  await backend?.close()
  await pki?.close()
})

test("each request writes one JSON access log line with the TLS, HTTP and upstream fields", async () => {
  const reply = await request({
    port,
    path: "/echo?q=1",
    ca: pki.ca.cert,
    headers: { authorization: "Bearer very-secret-token", cookie: "session=also-secret" },
    tlsOptions: { ALPNProtocols: ["http/1.1"] },
  })
  assert.equal(reply.status, 200)
  const line = await pc.waitFor(/\{[^\n]*"path":"\/echo\?q=1"[^\n]*\}/)
  const entry = JSON.parse(line) as Record<string, unknown>
  assert.equal(entry.client, "127.0.0.1")
  assert.equal(entry.sni, "localhost")
  assert.equal(entry.tls, "TLSv1.3")
  assert.match(String(entry.cipher), /^TLS_/)
  assert.equal(entry.alpn, "http/1.1")
  assert.equal(entry.method, "GET")
  assert.equal(entry.host, "localhost")
  assert.equal(entry.status, 200)
  assert.equal(entry.bytes, reply.body.length)
  assert.equal(entry.upstream, "app")
  assert.equal(entry.backend, `127.0.0.1:${backend.port}`)
  assert.equal(typeof entry.duration_ms, "number")
  assert.equal(typeof entry.time, "number")
  assert.doesNotMatch(pc.output(), /very-secret-token|also-secret/)
})

test("the admin status shows listeners, certificates and upstreams, and never key material", async () => {
  const res = await fetch(`http://127.0.0.1:${adminPort}/status`)
  assert.equal(res.status, 200)
  const text = await res.text()
  const status = JSON.parse(text)
  assert.equal(status.listeners[0].name, "web")
  assert.ok(status.listeners[0].handshakes >= 1)
  assert.deepEqual(status.listeners[0].certificates[0].names, ["localhost"])
  assert.equal(status.upstreams[0].name, "app")
  assert.doesNotMatch(text, /PRIVATE KEY/)
  assert.doesNotMatch(pc.output(), /PRIVATE KEY/)
})

test("an idle keep-alive connection is closed by the proxy after limits.idle_timeout", async () => {
  // A raw TLS client: Node's Agent would close on its own after the Keep-Alive hint, hiding the proxy's timer.
  const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: pki.ca.cert })
  socket.on("error", () => {})
  let text = ""
  socket.on("data", (d: Buffer) => {
    text += d.toString()
  })
  await new Promise((resolve) => socket.once("secureConnect", resolve))
  socket.write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
  await waitUntil(() => text.includes("hello from app"), "the first response arrives", 5000)
  const answeredAt = Date.now()
  assert.equal(socket.destroyed, false, "the connection stays open after the response")
  const closedAfter = await new Promise<number>((resolve) => {
    const timer = setTimeout(() => resolve(-1), 5000)
    socket.on("close", () => {
      clearTimeout(timer)
      resolve(Date.now() - answeredAt)
    })
  })
  assert.ok(
    closedAfter >= 400 && closedAfter < 4000,
    `closed ${closedAfter} ms after the response (idle_timeout 500ms)`,
  )
})
