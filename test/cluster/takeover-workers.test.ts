/** Binary takeover (issue 12, item 2) with cluster.workers: 2: the new primary's workers listen on the old sockets. */
import assert from "node:assert/strict"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { stopPid, takeoverUnderLoad } from "./takeover-harness.ts"
import { clusterYaml, type RunningCluster, startCluster, waitWorkers } from "./workers-harness.ts"

const GRACE_MS = 3_000
let pki: Pki
let echo: TestBackend
let cluster: RunningCluster
let successor: number | undefined
const dir = mkdtempSync(join(tmpdir(), "pc-takeover-w-"))

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  const site = await pki.issue({ names: ["localhost"] })
  cluster = await startCluster(
    dir,
    clusterYaml({ ...site, upstream: "echo", upstreams: { echo: echo.port }, workers: 2, grace: `${GRACE_MS}ms` }),
    pki,
  )
  await waitWorkers(cluster, (s) => s.workers.every((w) => w.ready), "both workers ready")
})

after(async () => {
  await cluster?.pc.stop("SIGKILL")
  await stopPid(successor)
  await echo?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

test("a new primary takes over the listening sockets from one with 2 workers under load: 0 failed, none refused", async (t) => {
  successor = await takeoverUnderLoad(t, cluster, GRACE_MS, 50)
  const s = await waitWorkers(cluster, (x) => x.workers.every((w) => w.ready), "the successor's workers ready")
  assert.equal(s.workers.length, 2)
})
