/**
 * Ticket keys outlive a binary takeover without a fleet store (issue 12, item 2): the old process hands its ring
 * to the new one over the takeover's IPC channel, so a TLS 1.2 and a TLS 1.3 session made before `upgrade`
 * resume after it; and a worker started after a crash or a rolling restart gets the primary's keys.
 */
import assert from "node:assert/strict"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { connect } from "./harness.ts"
import { isAlive, stopPid } from "./takeover-harness.ts"
import { clusterYaml, type RunningCluster, startCluster, waitWorkers } from "./workers-harness.ts"

const VERSIONS = ["TLSv1.2", "TLSv1.3"] as const
let pki: Pki
let echo: TestBackend
let site: { certPath: string; keyPath: string }
const dir = mkdtempSync(join(tmpdir(), "pc-takeover-tickets-"))
const pids: number[] = []
const clusters: RunningCluster[] = []

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  site = await pki.issue({ names: ["localhost"] })
})

after(async () => {
  for (const c of clusters) await c.pc.stop("SIGKILL")
  for (const pid of pids) await stopPid(pid)
  await echo?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

async function start(workers: number): Promise<RunningCluster> {
  const yaml = clusterYaml({ ...site, upstream: "echo", upstreams: { echo: echo.port }, workers, grace: "500ms" })
  const cluster = await startCluster(mkdtempSync(join(dir, "c-")), yaml, pki)
  clusters.push(cluster)
  if (workers > 1) await waitWorkers(cluster, (s) => s.workers.every((w) => w.ready), "every worker ready")
  return cluster
}

/** sessions makes one full handshake per version and returns the sessions to resume. */
async function sessions(cluster: RunningCluster): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>()
  for (const version of VERSIONS) {
    const first = await connect(cluster.port, cluster.ca, version)
    assert.equal(first.status, "HTTP/1.1 200")
    assert.equal(first.reused, false)
    assert.ok(first.session, `${version}: a session to resume`)
    out.set(version, first.session)
  }
  return out
}

/** resumesAll asserts that each session resumes, `times` times each (new connections, so every worker is tried). */
async function resumesAll(cluster: RunningCluster, held: Map<string, Buffer>, why: string, times = 1): Promise<void> {
  for (const [version, session] of held) {
    for (let i = 0; i < times; i++) {
      const again = await connect(cluster.port, cluster.ca, version as (typeof VERSIONS)[number], session)
      assert.equal(again.status, "HTTP/1.1 200")
      assert.equal(again.reused, true, `${version} session resumed ${why} (try ${i + 1})`)
    }
  }
}

/** upgrade asks for the takeover and waits until the old process has exited. */
async function upgrade(cluster: RunningCluster): Promise<number> {
  const oldPid = cluster.pc.child.pid!
  const exited = new Promise<number | null>((r) => cluster.pc.child.once("exit", (code) => r(code)))
  const reply = await cluster.post("/upgrade")
  // The successor writes to our output: its last lines say why it did not come up.
  assert.equal(reply.status, 200, `${JSON.stringify(reply.body)}\n${cluster.pc.output().slice(-4000)}`)
  const successor = Number(reply.body["successor"])
  pids.push(successor)
  assert.equal(await exited, 0, "the old process drained and exited")
  assert.ok(!isAlive(oldPid))
  const status = (await (await cluster.get("/status")).json()) as { pid: number }
  assert.equal(status.pid, successor, "the successor answers")
  return successor
}

test("one process: TLS 1.2 and 1.3 sessions made before an upgrade resume after it", async () => {
  const cluster = await start(1)
  const held = await sessions(cluster)
  await resumesAll(cluster, held, "before the upgrade")
  await upgrade(cluster)
  await resumesAll(cluster, held, "on the successor")
})

test("2 workers: sessions resume after an upgrade, a rolling restart and crashed workers' replacements", async () => {
  const cluster = await start(2)
  const held = await sessions(cluster)
  await upgrade(cluster)
  await waitWorkers(cluster, (s) => s.workers.every((w) => w.ready), "the successor's workers ready")
  await resumesAll(cluster, held, "on the successor's workers", 4)

  const before = (await cluster.status()).workers.map((w) => w.pid)
  const restarted = await cluster.post("/restart")
  assert.equal(restarted.status, 200, JSON.stringify(restarted.body))
  const afterRestart = await waitWorkers(
    cluster,
    (s) => s.workers.every((w) => w.ready && !before.includes(w.pid)),
    "every worker replaced by the restart",
  )
  await resumesAll(cluster, held, "on the restarted workers", 4)

  const pidsNow = afterRestart.workers.map((w) => w.pid!)
  for (const pid of pidsNow) process.kill(pid, "SIGKILL")
  await waitWorkers(
    cluster,
    (s) => s.workers.every((w) => w.ready && w.pid !== null && !pidsNow.includes(w.pid)),
    "both crashed workers replaced",
  )
  await resumesAll(cluster, held, "on the workers that replaced crashed ones", 4)
})
