/** Reload without dropping: new certificates on reload, open connections finish, a bad config keeps the old one. */
import assert from "node:assert/strict"
import https from "node:https"
import { after, before, test } from "node:test"
import { ConfigError } from "../../../src/core/errors.ts"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { request } from "../../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../../helpers/portcullis.ts"

let pki: Pki
let backend: TestBackend
let pc: RunningPortcullis
let port: number
let first: CertFiles
let second: CertFiles

const configWith = (cert: CertFiles) => `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${cert.certPath}, key: ${cert.keyPath} }] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
access_log: { enabled: false }
shutdown_grace: 5s
`

before(async () => {
  pki = await createPki()
  first = await pki.issue({ names: ["localhost"], commonName: "first" })
  second = await pki.issue({ names: ["localhost"], commonName: "second" })
  backend = await startEchoBackend("app")
  pc = await startPortcullis(configWith(first))
  port = pc.port()
})

after(async () => {
  await pc?.close()
  await backend?.close()
  await pki?.close()
})

/** get sends a GET on the given keep-alive agent and reports the certificate CN and the socket used. */
function get(agent: https.Agent): Promise<{ status: number; cn: string; socketId: unknown }> {
  return new Promise((resolve, reject) => {
    https
      .get({ host: "127.0.0.1", port, path: "/", servername: "localhost", ca: pki.ca.cert, agent }, (res) => {
        const socket = res.socket as import("node:tls").TLSSocket
        res.resume()
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            cn: socket.getPeerCertificate().subject.CN as string,
            socketId: socket,
          }),
        )
      })
      .on("error", reject)
  })
}

test("reloading to new certificates keeps an open connection serving; new connections get the new certificate", async () => {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 })
  try {
    const before1 = await get(agent)
    assert.equal(before1.status, 200)
    assert.equal(before1.cn, "first")
    await pc.reload(configWith(second))
    // The same connection still answers (the old generation finishes it) ...
    const during = await get(agent)
    assert.equal(during.status, 200)
    assert.equal(during.socketId, before1.socketId, "the open connection was kept")
    assert.equal(during.cn, "first")
    // ... and a new connection sees the new certificate.
    const fresh = await request({ port, ca: pki.ca.cert })
    assert.equal(fresh.status, 200)
    assert.equal(fresh.peerCN, "second")
  } finally {
    agent.destroy()
  }
})

test("a bad config on reload is refused with its errors and the running one keeps serving", async () => {
  await assert.rejects(
    pc.reload(configWith(second).replace("upstream: app", "upstream: nope")),
    (err: unknown) => err instanceof ConfigError && /unknown upstream "nope"/.test(err.message),
  )
  await assert.rejects(pc.reload(configWith({ ...second, certPath: "/nonexistent/cert.pem" })), /nonexistent/)
  const reply = await request({ port, ca: pki.ca.cert })
  assert.equal(reply.status, 200)
  assert.equal(reply.peerCN, "second")
})
