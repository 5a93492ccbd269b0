/**
 * Issue 14, finding 5: a reload is all or nothing, the admin API included. Moving the admin API to a busy port
 * leaves the old generation and the old admin listener in force, answers the POST /reload with the reason, and
 * logs the truth; a move to a free port answers the POST on the old address and then serves on the new one.
 */
import assert from "node:assert/strict"
import net from "node:net"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { freePort, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { canConnect } from "../helpers/servers.ts"

let pki: Pki
let site: CertFiles
let first: TestBackend
let second: TestBackend

before(async () => {
  pki = await createPki()
  site = await pki.issue({ names: ["localhost"] })
  first = await startEchoBackend("first")
  second = await startEchoBackend("second")
})
after(async () => {
  await first?.close()
  await second?.close()
  await pki?.close()
})

interface Shape {
  port: number
  adminPort: number
  backend: TestBackend
  /** a second listener, new in this config */
  extraPort?: number
}

const config = (s: Shape) => `listeners:
  - name: web
    address: 127.0.0.1:${s.port}
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
${
  s.extraPort
    ? `  - name: extra
    address: 127.0.0.1:${s.extraPort}
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
`
    : ""
}upstreams:
  app: { backends: ["127.0.0.1:${s.backend.port}"] }
admin: { address: "127.0.0.1:${s.adminPort}" }
`

/** whoAnswers asks the proxy which backend serves it now (the backends answer "hello from NAME"). */
async function whoAnswers(port: number): Promise<string> {
  return (await request({ port, path: "/", ca: pki.ca.cert })).text
}

test("moving the admin API to a busy port changes nothing, says so, and answers the POST", async (t) => {
  const busy = net.createServer()
  await new Promise<void>((r) => busy.listen(0, "127.0.0.1", r))
  t.after(() => new Promise<void>((r) => busy.close(() => r())))
  const busyPort = (busy.address() as net.AddressInfo).port
  const [port, adminPort, extraPort] = [await freePort(), await freePort(), await freePort()]
  const file = writeTemp(pki.dir, "atomic.yaml", config({ port, adminPort, backend: first }))
  const pc = spawnPortcullis(["--config", file])
  t.after(() => pc.stop())
  await pc.waitFor(/portcullis is running/)
  assert.equal(await whoAnswers(port), "hello from first")

  writeTemp(pki.dir, "atomic.yaml", config({ port, adminPort: busyPort, backend: second, extraPort }))
  const res = await fetch(`http://127.0.0.1:${adminPort}/reload`, { method: "POST" })
  const body = (await res.json()) as { reloaded: boolean; error: string }
  assert.equal(res.status, 422)
  assert.equal(body.reloaded, false)
  assert.match(body.error, new RegExp(`binding admin 127\\.0\\.0\\.1:${busyPort}: EADDRINUSE`))
  await pc.waitFor(/reload refused; the running config stays/)
  assert.doesNotMatch(pc.output(), /"msg":"reloaded"/)

  // Everything of the old generation is in force: its backend, its admin API; the new listener was closed again.
  assert.equal(await whoAnswers(port), "hello from first")
  const status = await fetch(`http://127.0.0.1:${adminPort}/status`)
  assert.equal(status.status, 200)
  assert.equal(((await status.json()) as { generation: number }).generation, 1)
  assert.equal(await canConnect(extraPort), false, "the new listener's address was closed again")

  // A move to a free port: the POST is answered on the old address, then the API serves on the new one only.
  const movedPort = await freePort()
  writeTemp(pki.dir, "atomic.yaml", config({ port, adminPort: movedPort, backend: second }))
  const ok = await fetch(`http://127.0.0.1:${adminPort}/reload`, { method: "POST" })
  assert.equal(ok.status, 200)
  assert.deepEqual(await ok.json(), { reloaded: true })
  const moved = await fetch(`http://127.0.0.1:${movedPort}/status`)
  assert.equal(((await moved.json()) as { generation: number }).generation, 2)
  assert.equal(await whoAnswers(port), "hello from second")
  // The old address stops accepting at once (net.Server.close), not when its last connection ends.
  assert.equal(await canConnect(adminPort), false, "the old admin address stops accepting")
})
