/** Operating a running instance: SIGHUP and `portcullis reload` re-read the config; SIGTERM drains in-flight requests. */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import {
  type ChildPortcullis,
  freePort,
  MAIN,
  runningPorts,
  spawnPortcullis,
  writeTemp,
} from "../helpers/portcullis.ts"
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

const config = (adminPort: number, cert: CertFiles, upstream = "app") => `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${cert.certPath}, key: ${cert.keyPath} }] }
    routes: [{ upstream: ${upstream} }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
admin: { address: "127.0.0.1:${adminPort}" }
shutdown_grace: 10s
`

/**
 * startWithAdminPort runs the child on a config whose admin API has a concrete port: `portcullis reload --config
 * FILE` finds the API through the file, so the file must name the port before the child starts (port 0 would not
 * do). freePort gives a candidate; when another process binds it first, the child exits with EADDRINUSE and the
 * next candidate is tried (up to 5), so a lost race cannot fail the test or reach someone else's server.
 */
async function startWithAdminPort(
  file: (adminPort: number) => string,
): Promise<{ pc: ChildPortcullis; port: number; adminPort: number }> {
  let output = ""
  for (let attempt = 0; attempt < 5; attempt++) {
    const adminPort = await freePort()
    const pc = spawnPortcullis(["--config", file(adminPort)])
    try {
      const running = await runningPorts(pc)
      assert.equal(running.admin, adminPort)
      return { pc, port: running.ports["web"]!, adminPort }
    } catch (err) {
      await pc.stop()
      output = pc.output()
      if (!/EADDRINUSE/.test(output)) throw err
    }
  }
  throw new Error(`no admin port could be bound in 5 tries:\n${output}`)
}

test("SIGHUP reloads new certificates; a bad file is refused and the old config keeps serving", async (t) => {
  const first = await pki.issue({ names: ["localhost"], commonName: "first" })
  const second = await pki.issue({ names: ["localhost"], commonName: "second" })
  let file = ""
  const { pc, port, adminPort } = await startWithAdminPort((admin) => {
    file = writeTemp(pki.dir, "hup.yaml", config(admin, first))
    return file
  })
  t.after(() => pc.stop())
  assert.equal((await request({ port, ca: pki.ca.cert })).peerCN, "first")

  writeTemp(pki.dir, "hup.yaml", config(adminPort, second))
  pc.child.kill("SIGHUP")
  await pc.waitFor(/"msg":"reloaded"/)
  assert.equal((await request({ port, ca: pki.ca.cert })).peerCN, "second")

  writeTemp(pki.dir, "hup.yaml", config(adminPort, first, "missing"))
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
  writeTemp(pki.dir, "hup.yaml", config(adminPort, first))
  const ok = await new Promise<number>((resolve) =>
    execFile(process.execPath, [MAIN, "reload", "--admin", `127.0.0.1:${adminPort}`], { timeout: 15_000 }, (err) =>
      resolve(err ? Number(err.code) : 0),
    ),
  )
  assert.equal(ok, 0)
  assert.equal((await request({ port, ca: pki.ca.cert })).peerCN, "first")
})

test("SIGTERM lets an in-flight request finish, then exits 0", async () => {
  const cert = await pki.issue({ names: ["localhost"] })
  const pc = spawnPortcullis(["--config", writeTemp(pki.dir, "term.yaml", config(0, cert))])
  const port = (await runningPorts(pc)).ports["web"]!
  const inFlight = request({ port, path: "/slow?ms=1500", ca: pki.ca.cert })
  await waitUntil(() => backend.seen.some((s) => s.url === "/slow?ms=1500"), "the slow request reached the backend")
  const exit = pc.stop("SIGTERM")
  const reply = await inFlight
  assert.equal(reply.status, 200)
  assert.equal(reply.text, "slow app")
  assert.equal(await exit, 0)
})
