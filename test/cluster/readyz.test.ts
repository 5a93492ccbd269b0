/**
 * Liveness and readiness (issue 12, item 3) on a child process run like an operator would, with a fleet store:
 * GET /readyz is 200 while serving and 503 through the shutdown grace (a request still in flight), while
 * GET /healthz stays 200; GET /status carries the fleet's instance list.
 */
import assert from "node:assert/strict"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type ChildPortcullis, runningPorts, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { type ExternalServer, startRedis } from "../helpers/servers.ts"
import { waitUntil } from "../helpers/wait.ts"

let pki: Pki
let echo: TestBackend
let redis: ExternalServer
let pc: ChildPortcullis | undefined
const dir = mkdtempSync(join(tmpdir(), "pc-readyz-"))

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  redis = await startRedis()
})

after(async () => {
  await pc?.stop("SIGKILL")
  await redis?.close()
  await echo?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

test("/readyz: 200 while serving, 503 during the shutdown grace; /healthz 200 throughout", async () => {
  const site = await pki.issue({ names: ["localhost"] })
  const file = writeTemp(
    dir,
    "portcullis.yaml",
    `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
admin: { address: "127.0.0.1:0" }
shutdown_grace: 20s
cluster: { store: { redis: "redis://127.0.0.1:${redis.port}" } }
`,
  )
  pc = spawnPortcullis(["--config", file])
  const { ports, admin } = await runningPorts(pc)
  const get = (path: string) => fetch(`http://127.0.0.1:${admin}${path}`)
  assert.equal((await get("/readyz")).status, 200)
  assert.equal((await get("/healthz")).status, 200)
  const status = (await (await get("/status")).json()) as { instances: { id: string; instances: { pid: number }[] } }
  assert.ok(status.instances.id, "the fleet id is shown")
  // A request held by the backend keeps the process in its grace period after SIGTERM.
  const seen = echo.seen.length
  const slow = request({ port: ports.web!, path: "/slow?ms=3000", ca: readFileSync(pki.ca.certPath) })
  await waitUntil(() => echo.seen.length > seen, "the backend has the slow request")
  const exited = new Promise<number | null>((r) => pc!.child.once("exit", (code) => r(code)))
  pc.child.kill("SIGTERM")
  await pc.waitFor(/SIGTERM: stopping/)
  const during = await get("/readyz")
  assert.equal(during.status, 503)
  assert.deepEqual(await during.json(), { ready: false })
  assert.equal((await get("/healthz")).status, 200, "still live")
  const reload = await fetch(`http://127.0.0.1:${admin}/reload`, { method: "POST" })
  assert.equal(reload.status, 422, "no reload while shutting down")
  assert.equal((await slow).status, 200, "the in-flight request finished in the grace")
  assert.equal(await exited, 0, pc.output())
})
