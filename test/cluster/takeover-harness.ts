/**
 * The binary takeover under load, for one process and for a primary with workers: POST /upgrade starts the program
 * anew on the listening sockets; the old process drains and exits; no request fails and no connection is refused.
 */
import assert from "node:assert/strict"
import type { TestContext } from "node:test"
import { request } from "../helpers/clients.ts"
import { assertNoFailures, h2client, h2load, type OpenSocket, openWebSocket, wrk } from "./load.ts"
import type { RunningCluster } from "./workers-harness.ts"

/** connectLoop opens a new connection per request until stopped, with no retry: a refused connect is a failure. */
export function connectLoop(cluster: RunningCluster): { stop: () => Promise<{ ok: number; failures: string[] }> } {
  let stopped = false
  let ok = 0
  const failures: string[] = []
  const done = (async () => {
    while (!stopped) {
      try {
        const r = await request({ port: cluster.port, ca: cluster.ca, headers: { connection: "close" } })
        if (r.status === 200) ok++
        else failures.push(`status ${r.status}`)
      } catch (err) {
        failures.push(String(err))
      }
    }
  })()
  return {
    stop: async () => {
      stopped = true
      await done
      return { ok, failures }
    },
  }
}

/** isAlive: the process exists (signal 0). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** stopPid sends SIGTERM and waits (bounded) for the process to go, then SIGKILLs it. */
export async function stopPid(pid: number | undefined): Promise<void> {
  if (!pid || !isAlive(pid)) return
  process.kill(pid, "SIGTERM")
  const deadline = Date.now() + 15_000
  while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  if (isAlive(pid)) process.kill(pid, "SIGKILL")
}

/**
 * takeoverUnderLoad runs wrk, h2load, Node's HTTP/2 client, a new-connection loop and `webSockets` WebSockets,
 * upgrades in the middle, and checks: 0 failures everywhere, the old process exited 0, the successor serves on the
 * same port and admin address, the WebSockets were closed by the old process only after its grace.
 */
export async function takeoverUnderLoad(
  t: TestContext,
  cluster: RunningCluster,
  graceMs: number,
  webSockets: number,
): Promise<number> {
  const oldPid = cluster.pc.child.pid!
  const sockets: OpenSocket[] = []
  // Whatever fails below, the WebSockets and the new process go with the test (a failed assertion must not leave
  // the file waiting on them).
  t.after(() => {
    for (const s of sockets) s.destroy()
  })
  for (let i = 0; i < webSockets; i++) sockets.push(await openWebSocket(cluster.port, cluster.ca))
  const exited = new Promise<number | null>((r) => cluster.pc.child.once("exit", (code) => r(code)))
  const loads = Promise.all([
    wrk(cluster.port, 8),
    h2load(cluster.port, 8),
    h2client(cluster.port, cluster.ca, 8, 2, 4, true),
  ])
  const connects = connectLoop(cluster)
  await new Promise((r) => setTimeout(r, 1_500))
  const upgradeAt = Date.now()
  const upgrade = await cluster.post("/upgrade")
  assert.equal(upgrade.status, 200, JSON.stringify(upgrade.body))
  const successor = Number(upgrade.body["successor"])
  assert.ok(successor > 0 && successor !== oldPid)
  t.after(() => stopPid(successor))
  const results = await loads
  const loop = await connects.stop()
  t.diagnostic(`new-connection loop: ${loop.ok} ok, ${loop.failures.length} failed`)
  assert.deepEqual(loop.failures, [], "no connection refused or request failed")
  assertNoFailures(t, results)
  assert.equal(await exited, 0, "the old process drained and exited 0")
  for (const s of sockets) {
    const closed = s.closedAt()
    assert.ok(closed !== undefined, "the old process closed its WebSockets before it exited")
    assert.ok(closed - upgradeAt >= graceMs - 200, `a WebSocket closed ${closed - upgradeAt} ms after the upgrade`)
  }
  // The successor holds the same listening sockets: the port and the admin address answer, from the new pid.
  const status = (await (await cluster.get("/status")).json()) as { pid: number }
  assert.equal(status.pid, successor)
  assert.equal(await cluster.send(), "200 hello from echo")
  return successor
}
