/** Operating a running instance: SIGHUP and `portcullis reload` re-read the config; SIGTERM drains in-flight requests. */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { freePort, MAIN, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

let pki: Pki
let backend: TestBackend

before(async () => {
  pki = await createPki()
  backend = await startEchoBackend("app")
})
after(async () => {
  await backend?.close()
  await pki?.close()
})

const config = (port: number, adminPort: number, cert: CertFiles, upstream = "app") => `listeners:
  - name: web
    address: 127.0.0.1:${port}
    tls: { certificates: [{ cert: ${cert.certPath}, key: ${cert.keyPath} }] }
    routes: [{ upstream: ${upstream} }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
admin: { address: "127.0.0.1:${adminPort}" }
shutdown_grace: 10s
`

test("SIGHUP reloads new certificates; a bad file is refused and the old config keeps serving", async (t) => {
  const [port, adminPort] = [await freePort(), await freePort()]
  const first = await pki.issue({ names: ["localhost"], commonName: "first" })
  const second = await pki.issue({ names: ["localhost"], commonName: "second" })
  const file = writeTemp(pki.dir, "hup.yaml", config(port, adminPort, first))
  const pc = spawnPortcullis(["--config", file])
  t.after(() => pc.stop())
  await pc.waitFor(/portcullis is running/)
  assert.equal((await request({ port, ca: pki.ca.cert })).peerCN, "first")

  writeTemp(pki.dir, "hup.yaml", config(port, adminPort, second))
  pc.child.kill("SIGHUP")
  await pc.waitFor(/"msg":"reloaded"/)
  assert.equal((await request({ port, ca: pki.ca.cert })).peerCN, "second")

  writeTemp(pki.dir, "hup.yaml", config(port, adminPort, first, "missing"))
  pc.child.kill("SIGHUP")
  await pc.waitFor(/reload refused; the running config stays/)
  assert.match(pc.output(), /hup\.yaml:5:\d+ listeners\[0\]\.routes\[0\]\.upstream: unknown upstream \\"missing\\"/)
  const reply = await request({ port, ca: pki.ca.cert })
  assert.equal(reply.status, 200)
  assert.equal(reply.peerCN, "second")

  // `portcullis reload` reaches the admin API and reports the refusal too.
  const out = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile(process.execPath, [MAIN, "reload", "--config", file], { timeout: 15_000 }, (err, _stdout, stderr) =>
      resolve({ code: err ? Number(err.code) : 0, stderr }),
    ),
  )
  assert.equal(out.code, 1)
  assert.match(out.stderr, /unknown upstream "missing"/)
  writeTemp(pki.dir, "hup.yaml", config(port, adminPort, first))
  const ok = await new Promise<number>((resolve) =>
    execFile(process.execPath, [MAIN, "reload", "--admin", `127.0.0.1:${adminPort}`], { timeout: 15_000 }, (err) =>
      resolve(err ? Number(err.code) : 0),
    ),
  )
  assert.equal(ok, 0)
  assert.equal((await request({ port, ca: pki.ca.cert })).peerCN, "first")
})

test("SIGTERM lets an in-flight request finish, then exits 0", async () => {
  const [port, adminPort] = [await freePort(), await freePort()]
  const cert = await pki.issue({ names: ["localhost"] })
  const pc = spawnPortcullis(["--config", writeTemp(pki.dir, "term.yaml", config(port, adminPort, cert))])
  await pc.waitFor(/portcullis is running/)
  const inFlight = request({ port, path: "/slow?ms=1500", ca: pki.ca.cert })
  await waitUntil(() => backend.seen.some((s) => s.url === "/slow?ms=1500"), "the slow request reached the backend")
  const exit = pc.stop("SIGTERM")
  const reply = await inFlight
  assert.equal(reply.status, 200)
  assert.equal(reply.text, "slow app")
  assert.equal(await exit, 0)
})
