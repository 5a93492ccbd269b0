/**
 * Issue 14, finding 8, end to end: one client asking for a path where the only backend resets the connection
 * cannot eject it for everyone; and when failures from two routes do eject it, panic mode keeps it serving.
 */
import assert from "node:assert/strict"
import http from "node:http"
import type { AddressInfo } from "node:net"
import { after, before, test } from "node:test"
import { request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { startPortcullis } from "../helpers/portcullis.ts"
import { upstreamStatus } from "../upstreams/harness.ts"

let pki: Pki
let site: CertFiles
let backend: http.Server
let backendPort: number

before(async () => {
  pki = await createPki()
  site = await pki.issue({ names: ["localhost"] })
  // Resets the connection on any path that ends in /reset; answers "ok" otherwise.
  backend = http.createServer((req, res) => {
    if (req.url?.endsWith("/reset")) req.socket.destroy()
    else res.end("ok")
  })
  await new Promise<void>((r) => backend.listen(0, "127.0.0.1", r))
  backendPort = (backend.address() as AddressInfo).port
})
after(async () => {
  backend?.closeAllConnections()
  await new Promise<void>((r) => backend?.close(() => r()))
  await pki?.close()
})

const yaml = () => `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { path_prefix: /a, upstream: app }
      - { path_prefix: /b, upstream: app }
upstreams:
  app: { backends: ["127.0.0.1:${backendPort}"] }
access_log: { enabled: false }
`

test("one client hitting a resetting path 20 times does not make other clients get 503", async (t) => {
  const pc = await startPortcullis(yaml())
  t.after(() => pc.close())
  const port = pc.port()
  for (let i = 0; i < 20; i++) {
    const reply = await request({ port, path: "/a/reset", ca: pki.ca.cert })
    assert.equal(reply.status, 502, `try ${i}`)
  }
  assert.equal(upstreamStatus(pc, "app").backends[0]!.ejected, false)
  for (const path of ["/a/ok", "/b/ok"]) {
    const reply = await request({ port, path, ca: pki.ca.cert })
    assert.equal(reply.status, 200, `${path}: ${reply.text}`)
  }
})

test("failures on two routes eject the only backend, and panic mode keeps sending requests to it", async (t) => {
  const pc = await startPortcullis(yaml())
  t.after(() => pc.close())
  const port = pc.port()
  for (let i = 0; i < 10 && !upstreamStatus(pc, "app").backends[0]!.ejected; i++) {
    await request({ port, path: i % 2 === 0 ? "/a/reset" : "/b/reset", ca: pki.ca.cert })
  }
  assert.equal(upstreamStatus(pc, "app").backends[0]!.ejected, true)
  for (let i = 0; i < 5; i++) {
    const reply = await request({ port, path: "/a/ok", ca: pki.ca.cert })
    assert.equal(reply.status, 200, reply.text)
  }
})
