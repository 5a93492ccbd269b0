/**
 * Worker processes (issue 12, item 1), cluster.workers: 2 run as an operator would: both workers accept on the
 * primary's socket and their counts add up in /status and /metrics; active health is probed once (by the primary),
 * not once per worker; a SIGKILLed worker is replaced (not ready meanwhile) and a retrying client loses no
 * request; a crash loop is slowed by a doubling delay. The port is one listening socket that the primary and both
 * workers hold, and the primary holds none of the connections: the kernel hands each accept to a worker (what the
 * cluster module calls SCHED_NONE), so no connection passes through the primary (SCHED_RR) and there is no socket
 * per worker (SO_REUSEPORT).
 */
import assert from "node:assert/strict"
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import tls from "node:tls"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { parsePrometheus, sum, value } from "../helpers/prometheus.ts"
import { clusterYaml, type RunningCluster, startCluster, waitWorkers } from "./workers-harness.ts"
import { waitUntilAsync } from "./workers-wait.ts"

let pki: Pki
let echo: TestBackend
let cluster: RunningCluster
const dir = mkdtempSync(join(tmpdir(), "pc-workers-"))

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  const site = await pki.issue({ names: ["localhost"] })
  cluster = await startCluster(
    dir,
    clusterYaml({
      ...site,
      upstream: "echo",
      upstreams: { echo: echo.port },
      workers: 2,
      health: "{ path: /probe, interval: 200ms }",
    }),
    pki,
  )
  await waitWorkers(cluster, (s) => s.workers.every((w) => w.ready), "both workers ready")
})

after(async () => {
  await cluster?.pc.stop("SIGKILL")
  await echo?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

test("requests through both workers are summed in /status and /metrics", async () => {
  const before = await cluster.status()
  const accepted0 = before.listeners[0]!.accepted
  let sent = 0
  // The kernel spreads the accepts: go on until both workers have taken some (bounded).
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 20; i++) {
      assert.equal(await cluster.send(), "200 hello from echo")
      sent++
    }
    const s = await cluster.status()
    if (s.workers.every((w) => w.accepted > 0)) break
  }
  const s = await cluster.status()
  assert.ok(
    s.workers.every((w) => w.accepted > 0),
    `both workers served: ${JSON.stringify(s.workers)}`,
  )
  assert.equal(s.workers.length, 2)
  assert.equal(s.listeners[0]!.accepted - accepted0, sent, "the listener's accepted count is the sum")
  assert.equal(
    s.workers.reduce((n, w) => n + w.accepted, 0),
    s.listeners[0]!.accepted,
    "per-worker counts add up to the total",
  )
  // The strict parser also proves the merged text is one series per label set.
  const metrics = parsePrometheus(await (await cluster.get("/metrics")).text())
  assert.equal(
    sum(metrics, "portcullis_http_requests_total"),
    s.listeners[0]!.accepted,
    "portcullis_http_requests_total sums both workers",
  )
  assert.equal(sum(metrics, "portcullis_listener_connections_total"), s.listeners[0]!.accepted)
  assert.equal(value(metrics, "portcullis_cluster_workers"), 2)
})

/** sockets lists the TCP sockets on the local port in `state` (ss -H -t -n -p), each with the pids that hold it. */
function sockets(state: "listening" | "established", port: number): { line: string; pids: number[] }[] {
  const out = execFileSync("ss", ["-H", "-t", "-n", "-p", "state", state, "sport", "=", `:${port}`], {
    encoding: "utf8",
  })
  return out
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((line) => ({ line, pids: [...line.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])).sort() }))
}

test("one listening socket, held by the primary and both workers; each connection is held by one worker only", async () => {
  const s = await cluster.status()
  const workers = s.workers.map((w) => w.pid!)
  const primary = cluster.pc.child.pid!
  const listening = sockets("listening", cluster.port)
  assert.equal(
    listening.length,
    1,
    `one listening socket for the port (no SO_REUSEPORT socket per worker): ${JSON.stringify(listening)}`,
  )
  assert.deepEqual(
    listening[0]!.pids,
    [primary, ...workers].sort(),
    "the primary and both workers hold the same socket (the workers accept on it themselves)",
  )
  // Connections held open: the kernel gave each to a worker, and the primary never had one (with SCHED_RR it accepts
  // each connection and passes it on, and the socket is then listened on by the primary alone).
  const held: tls.TLSSocket[] = []
  try {
    for (let i = 0; i < 8; i++) {
      const socket = tls.connect({ port: cluster.port, host: "127.0.0.1", servername: "localhost", ca: cluster.ca })
      held.push(socket)
      await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject))
    }
    const established = sockets("established", cluster.port)
    assert.equal(established.length, held.length, `the server side of every connection: ${JSON.stringify(established)}`)
    for (const c of established) {
      assert.equal(c.pids.length, 1, `one process holds the connection: ${c.line}`)
      assert.ok(workers.includes(c.pids[0]!), `a worker holds it, not the primary (${primary}): ${c.line}`)
    }
  } finally {
    for (const socket of held) socket.destroy()
  }
})

test("active health checks run once, in the primary: one probe per interval, not one per worker", async () => {
  const probes = () => echo.seen.filter((r) => r.url === "/probe").length
  const start = probes()
  const t0 = Date.now()
  await new Promise((r) => setTimeout(r, 2_000))
  const n = probes() - start
  const expected = (Date.now() - t0) / 200
  assert.ok(n >= expected * 0.5 && n <= expected + 2, `${n} probes in ${Date.now() - t0} ms at a 200 ms interval`)
})

test("a SIGKILLed worker is replaced and a retrying client loses no request", async () => {
  const before = await cluster.status()
  const victim = before.workers[0]!
  let stop = false
  let ok = 0
  const failures: string[] = []
  const load = (async () => {
    while (!stop) {
      try {
        const reply = await cluster.send("/", 3)
        if (reply === "200 hello from echo") ok++
        else failures.push(reply)
      } catch (err) {
        failures.push(String(err))
      }
    }
  })()
  process.kill(victim.pid!, "SIGKILL")
  await waitUntilAsync(async () => (await cluster.get("/readyz")).status === 503, "not ready while a worker is down")
  const after = await waitWorkers(
    cluster,
    (s) => s.workers[0]!.pid !== victim.pid && s.workers[0]!.ready && s.workers[0]!.restarts === victim.restarts + 1,
    "worker 0 replaced",
  )
  // Some traffic after the replacement too.
  const target = ok + 20
  while (ok < target && failures.length === 0) await new Promise((r) => setTimeout(r, 20))
  stop = true
  await load
  assert.deepEqual(failures, [], "no request lost")
  assert.ok(ok >= 20)
  assert.notEqual(after.workers[0]!.pid, victim.pid)
  assert.equal(after.workers[1]!.pid, before.workers[1]!.pid, "the other worker was not touched")
  assert.equal((await cluster.get("/readyz")).status, 200)
})

test("a worker that keeps crashing is replaced with a doubling delay (a crash loop does not spin)", async () => {
  const delays: number[] = []
  for (let i = 0; i < 3; i++) {
    const s = await waitWorkers(cluster, (x) => x.workers[1]!.ready, "worker 1 ready")
    process.kill(s.workers[1]!.pid!, "SIGKILL")
    const line = await cluster.pc.waitFor(/^.*"worker 1 exited.*$/m, 20_000)
    delays.push((JSON.parse(line) as { restart_in_ms: number }).restart_in_ms)
  }
  // Each died within 10 s of serving: 100 ms, then 200, then 400 (the first kill finds a long-lived one: 100).
  assert.equal(delays[2], delays[1]! * 2, `delays ${delays}`)
  assert.ok(delays[1]! >= 200, `delays ${delays}`)
  await waitWorkers(cluster, (x) => x.workers.every((w) => w.ready), "both workers ready again")
})
