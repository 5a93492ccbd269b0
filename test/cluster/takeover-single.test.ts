/** Binary takeover (issue 12, item 2) with one process (no cluster.workers): the new process listens on the inherited descriptors. */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { stopPid, takeoverUnderLoad } from "./takeover-harness.ts"
import { type EchoCluster, type RunningCluster, startEchoCluster } from "./workers-harness.ts"

const GRACE_MS = 3_000
let echoCluster: EchoCluster
let cluster: RunningCluster
let successor: number | undefined

before(async () => {
  echoCluster = await startEchoCluster("pc-takeover-1-", 1, GRACE_MS)
  cluster = echoCluster.cluster
})

after(async () => {
  await stopPid(successor)
  await echoCluster?.close()
})

test("a new primary takes over the listening sockets from a single process under load: 0 failed, none refused", async (t) => {
  successor = await takeoverUnderLoad(t, cluster, GRACE_MS, 50)
  const s = (await (await cluster.get("/status")).json()) as { workers?: unknown }
  assert.equal(s.workers, undefined, "still one process")
})
