/**
 * protocol: auto on TLS upstreams (issue 15, item 2): the first connection offers ALPN h2 and http/1.1, and what the
 * backend picks is what its requests use; for HTTP/2 the probing connection is the pool's first, not an extra one.
 */
import assert from "node:assert/strict"
import http2 from "node:http2"
import https from "node:https"
import { after, before, test } from "node:test"
import { h2request, request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"

let pki: Pki
let h2only: http2.Http2SecureServer
let h1only: https.Server
let pc: RunningPortcullis
let h2Connections = 0
let h1Connections = 0

const answer = (
  req: http2.Http2ServerRequest | import("node:http").IncomingMessage,
  res: {
    end: (s: string) => void
  },
) => res.end(JSON.stringify({ version: req.httpVersion }))

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "h1.test"] })
  const backendCert = await pki.issue({ names: ["backend.internal"] })
  h2only = http2.createSecureServer({ cert: backendCert.cert, key: backendCert.key, allowHTTP1: false }, answer)
  h2only.on("secureConnection", () => h2Connections++)
  h1only = https.createServer({ cert: backendCert.cert, key: backendCert.key, ALPNProtocols: ["http/1.1"] }, answer)
  h1only.on("secureConnection", () => h1Connections++)
  const listen = (s: http2.Http2SecureServer | https.Server) =>
    new Promise<number>((resolve) => s.listen(0, "127.0.0.1", () => resolve((s.address() as { port: number }).port)))
  const h2Port = await listen(h2only)
  const h1Port = await listen(h1only)
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [h1.test], upstream: old }
      - { upstream: new }
upstreams:
  new:
    backends: ["127.0.0.1:${h2Port}"]
    protocol: auto
    tls: { ca: ${pki.ca.certPath}, servername: backend.internal }
  old:
    backends: ["127.0.0.1:${h1Port}"]
    protocol: auto
    tls: { ca: ${pki.ca.certPath}, servername: backend.internal }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  h2only?.close()
  h1only?.close()
  await pki?.close()
})

test("a backend that picks h2 is spoken to in HTTP/2, over the probing connection", async () => {
  const replies = await Promise.all([1, 2, 3].map(() => request({ port: pc.port(), ca: pki.ca.cert })))
  for (const r of replies) assert.equal(JSON.parse(r.text).version, "2.0")
  assert.equal(h2Connections, 1, "three requests, one connection: the probe's, multiplexed")
})

test("a backend that only speaks http/1.1 is spoken to in HTTP/1.1, from an HTTP/2 client too", async () => {
  const started = Date.now()
  const reply = await h2request({ port: pc.port(), host: "h1.test", servername: "h1.test", ca: pki.ca.cert })
  assert.equal(reply.status, 200)
  assert.equal(JSON.parse(reply.text).version, "1.1")
  // undici's own connection, and the probe's if the backend finished its handshake before the probe closed.
  assert.ok(h1Connections >= 1 && h1Connections <= 2, `${h1Connections} connections`)
  assert.ok(Date.now() - started < 5_000)
})
