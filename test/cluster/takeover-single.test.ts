/** Binary takeover (issue 12, item 2) with one process (no cluster.workers): the new process listens on the inherited descriptors. */
import assert from "node:assert/strict"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { stopPid, takeoverUnderLoad } from "./takeover-harness.ts"
import { clusterYaml, type RunningCluster, startCluster } from "./workers-harness.ts"

const GRACE_MS = 3_000
let pki: Pki
let echo: TestBackend
let cluster: RunningCluster
let successor: number | undefined
const dir = mkdtempSync(join(tmpdir(), "pc-takeover-1-"))

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  const site = await pki.issue({ names: ["localhost"] })
  cluster = await startCluster(
    dir,
    clusterYaml({ ...site, upstream: "echo", upstreams: { echo: echo.port }, workers: 1, grace: `${GRACE_MS}ms` }),
    pki,
  )
})

after(async () => {
  await cluster?.pc.stop("SIGKILL")
  await stopPid(successor)
  await echo?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

test("a new primary takes over the listening sockets from a single process under load: 0 failed, none refused", async (t) => {
  successor = await takeoverUnderLoad(t, cluster, GRACE_MS, 50)
  const s = (await (await cluster.get("/status")).json()) as { workers?: unknown }
  assert.equal(s.workers, undefined, "still one process")
})
