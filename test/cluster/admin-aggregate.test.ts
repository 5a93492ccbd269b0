/**
 * Issue 13 with cluster.workers: 2: every admin endpoint answers for the whole process group. openssl s_client
 * clients with known offers (-tls1_2, -tls1_3, -groups, -ciphersuites, -cipher) are spread over both workers (each
 * is shown to have served some), then GET /tls/clients counts every one of them exactly (the what-if recomputed
 * from the summed counts), /metrics's handshake counters and GET /dashboard/data show the same totals, the recent
 * failures and certificates come from the workers, drain/undrain is applied by both, and a worker that does not
 * answer in time (SIGSTOPped) is left out of the answer, which says so.
 */
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import type { ListenerCensus } from "../../src/tls/client-census.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { parsePrometheus, sum, value } from "../helpers/prometheus.ts"
import { clusterYaml, type RunningCluster, startCluster, waitWorkers } from "./workers-harness.ts"
import { waitUntilAsync } from "./workers-wait.ts"

let pki: Pki
let echo: TestBackend
let cluster: RunningCluster
const dir = mkdtempSync(join(tmpdir(), "pc-admin-aggregate-"))

interface WorkerRef {
  worker: number
  pid: number | null
}
interface Answered<T = object> {
  answered: (WorkerRef & T)[]
  missing: (WorkerRef & { error: string })[]
}
interface CensusBody {
  listeners: Record<string, ListenerCensus>
  workers: Answered<{ clients: number }>
}

/** The known offers: each kind is run once per round (all four at once, so the kernel spreads the accepts). */
const KINDS = {
  // TLS 1.2 only, a suite the ECDSA certificate can serve (its P-256 curve must be in the client's groups).
  tls12: ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-groups", "P-256:P-384"],
  // TLS 1.3, one suite, one group each.
  aes: ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256", "-groups", "X25519"],
  chacha: ["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256", "-groups", "P-256"],
  // TLS 1.2 with static RSA key exchange only: nothing the ECDSA certificate can serve (no_shared_cipher).
  refused: ["-tls1_2", "-cipher", "AES128-SHA", "-groups", "P-384"],
} as const

let rounds = 0

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  const site = await pki.issue({ names: ["localhost"], keyType: "ecdsa" })
  const yaml = clusterYaml({ ...site, upstream: "echo", upstreams: { echo: echo.port }, workers: 2 })
  // census_sample 1: the one-certificate listener counts every ClientHello, so the counts can be exact.
  cluster = await startCluster(dir, `${yaml}metrics: { census_sample: 1 }\n`, pki)
  await waitWorkers(cluster, (s) => s.workers.every((w) => w.ready), "both workers ready")
  // Rounds of the four clients at once until both workers have accepted some (at least 3 rounds, at most 25).
  for (rounds = 1; rounds <= 25; rounds++) {
    const results = await Promise.all(Object.values(KINDS).map((flags) => sClient(cluster.port, flags)))
    for (const [i, r] of results.entries()) {
      const kind = Object.keys(KINDS)[i]!
      if (kind === "refused") assert.doesNotMatch(r, /New, TLSv1\.[23]/, `${kind}: refused\n${r}`)
      else assert.match(r, /New, TLSv1\.[23]/, `${kind}: served\n${r}`)
    }
    const s = await cluster.status()
    if (rounds >= 3 && s.workers.every((w) => w.accepted > 0)) break
  }
})

after(async () => {
  await cluster?.pc.stop("SIGKILL")
  await echo?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

/** sClient runs openssl s_client with these flags (stdin closed: it handshakes and leaves); resolves its output. */
function sClient(port: number, flags: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost", "-CAfile", pki.ca.certPath, ...flags],
      { stdio: ["ignore", "pipe", "pipe"] },
    )
    let output = ""
    const timer = setTimeout(() => child.kill(), 10_000)
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString()
    })
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString()
    })
    child.on("error", reject)
    // 'close', not 'exit': the output pipes may still hold data when the process has exited.
    child.on("close", () => {
      clearTimeout(timer)
      resolve(output)
    })
  })
}

async function getJson<T>(path: string): Promise<T> {
  const res = await cluster.get(path)
  assert.equal(res.status, 200, path)
  return (await res.json()) as T
}

/** The clients run: every kind `rounds` times. */
const total = () => rounds * Object.keys(KINDS).length

describe("two workers, one answer", () => {
  test("both workers served some of the clients, and their per-worker counts add up to all of them", async (t) => {
    const s = await cluster.status()
    t.diagnostic(`${rounds} rounds of 4 clients; accepted per worker: ${s.workers.map((w) => w.accepted).join(", ")}`)
    assert.equal(s.workers.length, 2)
    assert.ok(
      s.workers.every((w) => w.accepted > 0),
      `both workers accepted: ${JSON.stringify(s.workers)}`,
    )
    assert.equal(
      s.workers.reduce((n, w) => n + w.accepted, 0),
      total(),
    )
    assert.equal(s.listeners[0]!.accepted, total())
  })

  test("GET /tls/clients counts every client of both workers exactly; the what-if is from the summed counts", async () => {
    const body = await getJson<CensusBody>("/tls/clients")
    const r = rounds
    const c = body.listeners["web"]!
    assert.ok(c, JSON.stringify(body))
    // Per worker: both counted some, and together all (the pids are the workers /status lists).
    const pids = (await cluster.status()).workers.map((w) => w.pid).sort()
    assert.deepEqual(body.workers.missing, [])
    assert.deepEqual(body.workers.answered.map((w) => w.pid).sort(), pids)
    assert.ok(
      body.workers.answered.every((w) => w.clients > 0),
      `both workers' censuses hold clients: ${JSON.stringify(body.workers)}`,
    )
    assert.equal(
      body.workers.answered.reduce((n, w) => n + w.clients, 0),
      total(),
    )
    assert.equal(c.clients, total())
    assert.deepEqual(c.window, { size: 2000, seen: total() })
    assert.deepEqual(c.versions, { "TLSv1.2": 2 * r, "TLSv1.3": 2 * r })
    // The refused client offers no ECDHE suite, so openssl sends it no supported_groups extension at all.
    assert.deepEqual(c.groups, { secp256r1: 2 * r, secp384r1: r, X25519: r })
    // openssl s_client adds the RFC 5746 signal to its suites (also with -tls1_3).
    assert.deepEqual(c.ciphers, {
      TLS_EMPTY_RENEGOTIATION_INFO_SCSV: 4 * r,
      TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: r,
      TLS_AES_128_GCM_SHA256: r,
      TLS_CHACHA20_POLY1305_SHA256: r,
      TLS_RSA_WITH_AES_128_CBC_SHA: r,
    })
    // modern refuses exactly the TLS 1.2-only clients; the listener's own policy exactly the refused handshakes.
    assert.deepEqual(c.whatif["modern"], { refused: 2 * r, reasons: { no_shared_version: 2 * r } })
    assert.deepEqual(c.whatif["current"], { refused: r, reasons: { no_shared_cipher: r } })
    assert.deepEqual(c.whatif["intermediate"], { refused: r, reasons: { no_shared_cipher: r } })
  })

  test("/metrics: the handshake counters are the total of both workers", async () => {
    const r = rounds
    let metrics = parsePrometheus(await (await cluster.get("/metrics")).text())
    // A handshake is counted when the server has read the client's Finished, just after s_client left: wait for it.
    await waitUntilAsync(async () => {
      metrics = parsePrometheus(await (await cluster.get("/metrics")).text())
      return sum(metrics, "portcullis_tls_handshakes_total") >= 3 * r
    }, "every handshake counted")
    assert.equal(sum(metrics, "portcullis_tls_handshakes_total"), 3 * r)
    assert.equal(sum(metrics, "portcullis_tls_handshakes_total", { version: "TLSv1.3" }), 2 * r)
    assert.equal(sum(metrics, "portcullis_tls_handshakes_total", { version: "TLSv1.2" }), r)
    assert.equal(sum(metrics, "portcullis_tls_handshake_failures_total"), r)
    assert.equal(sum(metrics, "portcullis_tls_handshake_failures_total", { reason: "no_shared_cipher" }), r)
    assert.equal(sum(metrics, "portcullis_listener_connections_total"), total())
    assert.equal(value(metrics, "portcullis_cluster_workers_unanswered"), 0)
  })

  test("GET /dashboard/data shows the same totals, and the census, from both workers", async () => {
    const r = rounds
    type Data = {
      handshakes: Record<string, number>
      versions: Record<string, number>
      ciphers: Record<string, number>
      failures: Record<string, number>
      listeners: { name: string; accepted: number; address: string }[]
      upstreams: { name: string; backends: { id: string }[] }[]
      certificates: { names: string[]; days_left: number }[]
      census: { listeners: Record<string, ListenerCensus> } | null
      recent_failures: { reason: string }[]
      workers: Answered
    }
    let data: Data | undefined
    // The feed serves one snapshot a second: wait for one made after every handshake was counted.
    await waitUntilAsync(async () => {
      data = await getJson<Data>("/dashboard/data")
      return (data.handshakes["full"] ?? 0) + (data.handshakes["resumed"] ?? 0) >= 3 * r
    }, "the dashboard counts every handshake")
    const d = data!
    assert.equal(d.workers.answered.length, 2)
    assert.deepEqual(d.workers.missing, [])
    assert.deepEqual(d.handshakes, { full: 3 * r, resumed: 0 })
    assert.deepEqual(d.versions, { "TLSv1.3": 2 * r, "TLSv1.2": r })
    assert.equal(
      Object.values(d.ciphers).reduce((a, b) => a + b, 0),
      3 * r,
    )
    assert.deepEqual(d.failures, { no_shared_cipher: r })
    assert.equal(d.listeners.length, 1)
    assert.equal(d.listeners[0]!.accepted, total())
    assert.equal(d.listeners[0]!.address, `127.0.0.1:${cluster.port}`)
    assert.equal(d.census?.listeners["web"]?.clients, total())
    assert.deepEqual(d.census?.listeners["web"]?.whatif["modern"], {
      refused: 2 * r,
      reasons: { no_shared_version: 2 * r },
    })
    assert.equal(d.recent_failures.length, Math.min(10, r))
    assert.ok(d.recent_failures.every((f) => f.reason === "no_shared_cipher"))
    assert.equal(d.upstreams[0]!.backends.length, 1)
    assert.deepEqual(d.certificates[0]!.names, ["localhost"])
  })

  test("GET /tls/failures lists the refused handshakes of both workers; /certificates is the workers' rows", async () => {
    const failures = await getJson<{ failures: { reason: string; sni: string }[]; workers: Answered }>("/tls/failures")
    assert.equal(failures.failures.length, rounds)
    assert.ok(failures.failures.every((f) => f.reason === "no_shared_cipher" && f.sni === "localhost"))
    assert.equal(failures.workers.answered.length, 2)
    const certs = await getJson<{ certificates: { names: string[]; listener: string }[]; workers: Answered }>(
      "/certificates",
    )
    assert.deepEqual(
      certs.certificates.map((c) => [c.listener, c.names]),
      [["web", ["localhost"]]],
    )
    assert.equal(certs.workers.answered.length, 2)
  })

  test("drain and undrain are applied by both workers, and the answer says which", async () => {
    const backend = (await cluster.status()).upstreams[0]!.backends[0]!.id
    const pids = (await cluster.status()).workers.map((w) => w.pid).sort()
    for (const action of ["drain", "undrain"] as const) {
      const { status, body } = await cluster.post(`/upstreams/echo/backends/${encodeURIComponent(backend)}/${action}`)
      assert.equal(status, 200, JSON.stringify(body))
      const workers = body["workers"] as Answered<{ draining: boolean }>
      assert.deepEqual(workers.missing, [])
      assert.deepEqual(workers.answered.map((w) => w.pid).sort(), pids)
      assert.ok(workers.answered.every((w) => w.draining === (action === "drain")))
    }
    assert.equal((await cluster.post("/upstreams/echo/backends/127.0.0.1:1/drain")).status, 404)
  })

  test("a worker that does not answer in time is left out, and every answer says which one", async () => {
    const s = await cluster.status()
    const stopped = s.workers[1]!
    const census0 = await getJson<CensusBody>("/tls/clients")
    const kept = census0.workers.answered.find((w) => w.worker !== stopped.worker)!
    process.kill(stopped.pid!, "SIGSTOP")
    try {
      const started = Date.now()
      const [census, metricsText, failures] = await Promise.all([
        getJson<CensusBody>("/tls/clients"),
        cluster.get("/metrics").then((r) => r.text()),
        getJson<{ workers: Answered }>("/tls/failures"),
      ])
      // Answered at the deadline (5 s), not held until the stopped worker comes back.
      assert.ok(Date.now() - started < 9_000, `answered in ${Date.now() - started} ms`)
      assert.deepEqual(
        census.workers.missing.map((m) => [m.worker, m.pid]),
        [[stopped.worker, stopped.pid]],
      )
      assert.match(census.workers.missing[0]!.error, /did not answer within 5000 ms/)
      assert.deepEqual(
        census.workers.answered.map((w) => w.pid),
        [kept.pid],
      )
      assert.equal(census.listeners["web"]!.clients, kept.clients, "only the answering worker's clients")
      assert.equal(value(parsePrometheus(metricsText), "portcullis_cluster_workers_unanswered"), 1)
      assert.deepEqual(
        failures.workers.missing.map((m) => m.worker),
        [stopped.worker],
      )
      // Neither answers: the dashboard still lists the listener, backend and certificate (of the primary's build).
      process.kill(kept.pid!, "SIGSTOP")
      const none = await getJson<{
        workers: Answered
        listeners: { name: string }[]
        upstreams: { backends: unknown[] }[]
        certificates: { names: string[] }[]
        handshakes: Record<string, number>
      }>("/dashboard/data")
      assert.deepEqual(
        none.workers.missing.map((m) => m.worker),
        [0, 1],
      )
      assert.deepEqual(none.workers.answered, [])
      assert.deepEqual(
        none.listeners.map((l) => l.name),
        ["web"],
      )
      assert.equal(none.upstreams[0]!.backends.length, 1)
      assert.deepEqual(none.certificates[0]!.names, ["localhost"])
    } finally {
      process.kill(stopped.pid!, "SIGCONT")
      process.kill(kept.pid!, "SIGCONT")
    }
    const again = await getJson<CensusBody>("/tls/clients")
    assert.deepEqual(again.workers.missing, [])
    assert.equal(again.listeners["web"]!.clients, total())
  })
})
