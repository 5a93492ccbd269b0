/**
 * Two Portcullis processes, run like an operator would (`portcullis --config FILE`), with one config naming one
 * redis-server in cluster.store: a TLS 1.2 and a TLS 1.3 session issued by one resumes on the other, and each one's
 * GET /status lists both instances with version, addresses and status.
 */
import assert from "node:assert/strict"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import {
  type ChildPortcullis,
  type RunningPorts,
  runningPorts,
  spawnPortcullis,
  writeTemp,
} from "../helpers/portcullis.ts"
import { type ExternalServer, startRedis } from "../helpers/servers.ts"
import { connect } from "./harness.ts"

let pki: Pki
let ca: Buffer
let echo: TestBackend
let redis: ExternalServer
const children: ChildPortcullis[] = []
const ports: RunningPorts[] = []
const dir = mkdtempSync(join(tmpdir(), "pc-two-"))

interface FleetStatus {
  instances: {
    id: string
    connected: boolean
    instances: { pid: number; version: string; status: string; addresses: Record<string, string> }[]
  }
}

before(async () => {
  pki = await createPki()
  ca = readFileSync(pki.ca.certPath)
  echo = await startEchoBackend("echo")
  redis = await startRedis()
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
cluster: { store: { redis: "redis://127.0.0.1:${redis.port}" } }
`,
  )
  for (let i = 0; i < 2; i++) {
    const pc = spawnPortcullis(["--config", file])
    children.push(pc)
    // 60 s, not 15: with the fleet store a start waits on Redis, and the suite runs the load tests of the workers
    // and takeover files beside this one on two shared cores (seen at 16 s).
    ports.push(await runningPorts(pc, 60_000))
  }
})

after(async () => {
  await Promise.allSettled(children.map((c) => c.stop()))
  await redis?.close()
  await echo?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
  test(`a ${version} session issued by process A resumes on process B`, async () => {
    const first = await connect(ports[0]!.ports.web!, ca, version)
    assert.ok(first.session)
    const onB = await connect(ports[1]!.ports.web!, ca, version, first.session)
    assert.equal(onB.status, "HTTP/1.1 200")
    assert.equal(onB.reused, true)
  })
}

test("GET /status lists both processes with version, addresses and status", async () => {
  let status: FleetStatus | undefined
  const read = async () => {
    status = (await (await fetch(`http://127.0.0.1:${ports[1]!.admin}/status`)).json()) as FleetStatus
    return status.instances.instances.filter((i) => i.status === "serving").length === 2
  }
  const deadline = Date.now() + 10_000
  while (!(await read()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  const listed = status!.instances.instances
  assert.deepEqual(new Set(listed.map((i) => i.pid)), new Set(children.map((c) => c.child.pid)))
  assert.ok(status!.instances.connected)
  const own = JSON.parse(readFileSync(join(import.meta.dirname, "../../package.json"), "utf8")).version as string
  for (const i of listed) assert.equal(i.version, own)
  assert.deepEqual(new Set(listed.map((i) => i.addresses.web)), new Set(ports.map((p) => `127.0.0.1:${p.ports.web}`)))
})
