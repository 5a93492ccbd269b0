/**
 * Rolling restart (issue 12, item 2): POST /restart under steady load (wrk over HTTP/1.1 keep-alive, h2load over
 * HTTP/2, 50 WebSockets) replaces both workers one by one with 0 failed requests; the WebSockets stay open through
 * the restart and are closed only after shutdown_grace.
 */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { assertNoFailures, h2client, h2load, type OpenSocket, openWebSocket, wrk } from "./load.ts"
import { type EchoCluster, type RunningCluster, startEchoCluster, waitWorkers } from "./workers-harness.ts"

const GRACE_MS = 4_000
let echoCluster: EchoCluster
let cluster: RunningCluster

before(async () => {
  echoCluster = await startEchoCluster("pc-rolling-", 2, GRACE_MS)
  cluster = echoCluster.cluster
})

after(async () => {
  await echoCluster?.close()
})

test("a rolling restart under HTTP/1.1, HTTP/2 and WebSocket load fails no request; WebSockets close after the grace", async (t) => {
  const before = await cluster.status()
  const sockets: OpenSocket[] = []
  for (let i = 0; i < 50; i++) sockets.push(await openWebSocket(cluster.port, cluster.ca))
  const loads = Promise.all([
    wrk(cluster.port, 8),
    h2load(cluster.port, 8),
    h2client(cluster.port, cluster.ca, 8, 2, 4, true),
  ])
  await new Promise((r) => setTimeout(r, 1_500))
  const restartAt = Date.now()
  const restart = await cluster.post("/restart")
  assert.equal(restart.status, 200, JSON.stringify(restart.body))
  const afterRestart = await cluster.status()
  for (const [i, w] of afterRestart.workers.entries()) {
    assert.notEqual(w.pid, before.workers[i]!.pid, `worker ${i} was replaced`)
    assert.ok(w.ready)
  }
  // The old workers drain: their WebSockets still carry messages.
  if (Date.now() - restartAt < GRACE_MS - 500) {
    const open = sockets.filter((s) => s.closedAt() === undefined)
    assert.equal(open.length, 50, "no WebSocket closed before the grace")
    assert.deepEqual(await Promise.all(open.slice(0, 5).map((s) => s.echo("still here"))), Array(5).fill("still here"))
  }
  const results = await loads
  assertNoFailures(t, results)
  const deadline = Date.now() + GRACE_MS + 15_000
  while (sockets.some((s) => s.closedAt() === undefined) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100))
  }
  for (const s of sockets) {
    const closed = s.closedAt()
    assert.ok(closed !== undefined, "the old workers closed their WebSockets at the end of the grace")
    assert.ok(closed - restartAt >= GRACE_MS - 200, `a WebSocket closed ${closed - restartAt} ms after the restart`)
  }
  const final = await waitWorkers(cluster, (s) => s.workers.every((w) => w.ready), "workers ready")
  assert.equal(final.listeners[0]!.accepted >= 0, true)
})
