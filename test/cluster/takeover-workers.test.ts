/** Binary takeover (issue 12, item 2) with cluster.workers: 2: the new primary's workers listen on the old sockets. */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { stopPid, takeoverUnderLoad } from "./takeover-harness.ts"
import { type EchoCluster, type RunningCluster, startEchoCluster, waitWorkers } from "./workers-harness.ts"

const GRACE_MS = 3_000
let echoCluster: EchoCluster
let cluster: RunningCluster
let successor: number | undefined

before(async () => {
  echoCluster = await startEchoCluster("pc-takeover-w-", 2, GRACE_MS)
  cluster = echoCluster.cluster
})

after(async () => {
  await stopPid(successor)
  await echoCluster?.close()
})

test("a new primary takes over the listening sockets from one with 2 workers under load: 0 failed, none refused", async (t) => {
  successor = await takeoverUnderLoad(t, cluster, GRACE_MS, 50)
  const s = await waitWorkers(cluster, (x) => x.workers.every((w) => w.ready), "the successor's workers ready")
  assert.equal(s.workers.length, 2)
})
