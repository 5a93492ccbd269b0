/**
 * Per-client request rates with cluster.workers (issue 12, items 1 and 4): each worker decides with its own token
 * bucket and the primary passes each the others' counts every 250 ms (and, with scope fleet, the other
 * instances' through Redis), so a client whose new connections land on both workers gets about the rate once:
 * scope local means the machine (as nginx's limit_req zones and HAProxy's stick tables), scope fleet the fleet.
 * Tolerance: what passes in T seconds is within [0.75, 1.5] × (per_second × T + burst); every bucket starts with
 * a burst, and what a worker accepted reaches the others up to a window (250 ms; two more through Redis) later.
 * Before this, each worker allowed the whole rate (2 workers: about twice it), and scope fleet was refused.
 * Redis SIGKILLed mid-run: requests go on passing (each machine counts alone), nothing but 200 and 429.
 */
import assert from "node:assert/strict"
import { mkdtempSync, rmSync } from "node:fs"
import https from "node:https"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, type TestContext, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { startRedis } from "../helpers/servers.ts"
import { type RedisProcess, redisOn } from "./harness.ts"
import { type RunningCluster, startCluster, waitWorkers } from "./workers-harness.ts"

const PER_SECOND = 5
const BURST = 5
const RUN_MS = 6000
/**
 * Request loops at once, each a new connection per request (so the kernel spreads them over the workers), TLS
 * resumed (cheap enough that even a loaded machine offers well over twice the rate).
 */
const LOOPS = 4

let pki: Pki
let echo: TestBackend
let site: { certPath: string; keyPath: string }
let redis: RedisProcess
let redisPort: number
const dir = mkdtempSync(join(tmpdir(), "pc-workers-rate-"))
const clusters: RunningCluster[] = []

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  site = await pki.issue({ names: ["localhost"] })
  // Win a port with startRedis, then run our own redis-server there, which a test can SIGKILL.
  const first = await startRedis()
  redisPort = first.port
  await first.close()
  redis = redisOn(redisPort, dir)
  await redis.start()
})

after(async () => {
  await Promise.allSettled(clusters.map((c) => c.pc.stop("SIGKILL")))
  await redis?.kill()
  await echo?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

async function start(t: TestContext, scope: "local" | "fleet"): Promise<RunningCluster> {
  const yaml = `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    limits: { rate: { per_second: ${PER_SECOND}, burst: ${BURST}, scope: ${scope} } }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
admin: { address: "127.0.0.1:0" }
access_log: { enabled: false }
shutdown_grace: 500ms
cluster: { workers: 2${scope === "fleet" ? `, store: { redis: "redis://127.0.0.1:${redisPort}" }` : ""} }
`
  const cluster = await startCluster(mkdtempSync(join(dir, "c-")), yaml, pki)
  clusters.push(cluster)
  t.after(() => cluster.pc.stop("SIGKILL"))
  await waitWorkers(cluster, (s) => s.workers.every((w) => w.ready), "both workers ready")
  return cluster
}

interface Run {
  ok: number
  limited: number
  other: string[]
  expected: number
  /** per instance, what each worker accepted during the run */
  accepted: number[][]
  /** requests that passed after `midway` ran (if given) */
  okAfterMidway: number
}

/** hammer sends requests on new connections over the instances in turn for RUN_MS, LOOPS at a time. */
async function hammer(instances: RunningCluster[], midway?: () => Promise<void>): Promise<Run> {
  const before = await Promise.all(instances.map((c) => c.status()))
  let ok = 0
  let limited = 0
  let okAfterMidway = 0
  let past = false
  const other: string[] = []
  const started = Date.now()
  let turn = 0
  const agents = instances.map(() => new https.Agent({ keepAlive: false, maxCachedSessions: 16 }))
  const loop = async () => {
    while (Date.now() - started < RUN_MS) {
      const n = turn++ % instances.length
      const c = instances[n]!
      try {
        const r = await request({ port: c.port, ca: c.ca, headers: { connection: "close" }, agent: agents[n]! })
        if (r.status === 200) {
          ok++
          if (past) okAfterMidway++
        } else if (r.status === 429) limited++
        else other.push(`status ${r.status}`)
      } catch (err) {
        other.push(String(err))
      }
    }
  }
  const loops = Array.from({ length: LOOPS }, loop)
  if (midway) {
    await new Promise((r) => setTimeout(r, RUN_MS / 2))
    await midway()
    past = true
  }
  await Promise.all(loops)
  for (const agent of agents) agent.destroy()
  const seconds = (Date.now() - started) / 1000
  const afterRun = await Promise.all(instances.map((c) => c.status()))
  const accepted = afterRun.map((s, i) =>
    s.workers.map((w) => w.accepted - (before[i]!.workers.find((b) => b.pid === w.pid)?.accepted ?? 0)),
  )
  return { ok, limited, other, expected: PER_SECOND * seconds + BURST, accepted, okAfterMidway }
}

function assertBothServed(r: Run, detail: string): void {
  for (const workers of r.accepted) {
    assert.equal(workers.length, 2, detail)
    assert.ok(
      workers.every((n) => n > 0),
      `both workers of each instance served: ${detail}`,
    )
  }
}

function assertAboutTheRate(r: Run, detail: string): void {
  assert.deepEqual(r.other, [], `only 200 and 429: ${detail}`)
  // Else the run cannot tell one bucket per worker from one per machine (a machine too loaded to offer the load).
  assert.ok(r.ok + r.limited >= 2.5 * r.expected, `the client offered well over its rate: ${detail}`)
  assert.ok(r.ok <= 1.5 * r.expected, `at most 1.5 × the rate passed: ${detail}`)
  assert.ok(r.ok >= 0.75 * r.expected, `at least 0.75 × the rate passed: ${detail}`)
}

test("scope local, 2 workers: a client spread over both workers gets the rate once for the machine", async (t) => {
  const cluster = await start(t, "local")
  const r = await hammer([cluster])
  const detail = JSON.stringify(r)
  t.diagnostic(detail)
  assertBothServed(r, detail)
  assertAboutTheRate(r, detail)
})

test("scope fleet, 2 instances × 2 workers (Redis): a client spread over all four gets the rate once", async (t) => {
  const a = await start(t, "fleet")
  const b = await start(t, "fleet")
  const r = await hammer([a, b])
  const detail = JSON.stringify(r)
  t.diagnostic(detail)
  assertBothServed(r, detail)
  assertAboutTheRate(r, detail)
})

test("scope fleet, 2 instances × 2 workers: Redis SIGKILLed mid-run, requests go on passing, only 200 and 429", async (t) => {
  const a = await start(t, "fleet")
  const b = await start(t, "fleet")
  const r = await hammer([a, b], () => redis.kill())
  const detail = JSON.stringify(r)
  t.diagnostic(detail)
  assertBothServed(r, detail)
  assert.deepEqual(r.other, [], `no error but 429: ${detail}`)
  assert.ok(r.okAfterMidway > 0, `requests passed after Redis went: ${detail}`)
  assert.ok(r.limited > 0, `the local limits still refused: ${detail}`)
  // Each machine then counts alone: at most about twice the rate for the second half, never unlimited.
  assert.ok(r.ok <= 2.5 * r.expected, `the machines' limits held: ${detail}`)
  await redis.start()
})
