/**
 * GET /metrics after known traffic (issue 13, item 1): N requests, M full and K resumed handshakes, a refused cipher,
 * an unknown SNI name, a missing and a bad client certificate, bytes that are not TLS; the scrape, read by a strict
 * Prometheus text parser, has exactly those counts.
 */
import assert from "node:assert/strict"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { AdminApi } from "../../src/admin/api.ts"
import { CONTENT_TYPE, renderMetrics, scrape } from "../../src/admin/metrics-endpoint.ts"
import { silentLogger } from "../../src/core/log.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { loopback, type RunningPortcullis, refusingPort, startPortcullis } from "../helpers/portcullis.ts"
import { type ParsedFamily, parsePrometheus, samples, sum, value } from "../helpers/prometheus.ts"
import { waitUntil } from "../helpers/wait.ts"

let pki: Pki
let otherPki: Pki
let echo: TestBackend
let pc: RunningPortcullis
let admin: AdminApi

before(async () => {
  pki = await createPki()
  otherPki = await createPki()
  echo = await startEchoBackend("echo")
  const site = await pki.issue({ names: ["localhost"] })
  const other = await pki.issue({ names: ["other.test"] })
  pc = await startPortcullis(`
listeners:
  - name: web
    address: "${loopback(1)}:0"
    tls:
      certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }, { cert: ${other.certPath}, key: ${other.keyPath} }]
      profile: intermediate
    upstream: echo
  - name: mtls
    address: "${loopback(2)}:0"
    tls:
      certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]
      client_auth: { mode: require, ca: ${pki.ca.certPath} }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
`)
  admin = new AdminApi(
    { host: "127.0.0.1", port: 0 },
    { status: () => pc.runtime.status(), reload: async () => {}, drain: () => {}, metrics: () => scrape(pc.runtime) },
    silentLogger(),
  )
  await admin.start()
})

after(async () => {
  await admin?.close()
  await pc?.close()
  await echo?.close()
  await pki?.close()
  await otherPki?.close()
})

/** get sends one HTTP/1.1 GET over a new TLS connection and resolves with the status, the session and reuse. */
function get(
  port: number,
  options: tls.ConnectionOptions,
): Promise<{ status: number; session: Buffer | undefined; reused: boolean }> {
  return new Promise((resolve, reject) => {
    let session: Buffer | undefined
    let reused = false
    let text = ""
    const socket = tls.connect({ host: "127.0.0.1", port, ALPNProtocols: ["http/1.1"], ...options }, () => {
      reused = socket.isSessionReused()
      socket.write(`GET /hello HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n`)
    })
    socket.on("session", (s: Buffer) => {
      session = s
    })
    socket.setEncoding("utf8")
    socket.on("data", (d: string) => {
      text += d
    })
    socket.on("error", reject)
    socket.on("end", () => {
      socket.destroy()
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), session, reused })
    })
  })
}

/** refused opens a TLS connection that must not complete a request; resolves once it is gone either way. */
function refused(port: number, options: tls.ConnectionOptions): Promise<void> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ...options }, () => {
      socket.write("GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
    })
    socket.on("error", () => resolve())
    socket.on("close", () => resolve())
  })
}

async function scrapeOverHttp(): Promise<{ families: Map<string, ParsedFamily>; contentType: string | null }> {
  const res = await fetch(`http://127.0.0.1:${admin.port}/metrics`)
  assert.equal(res.status, 200)
  return { families: parsePrometheus(await res.text()), contentType: res.headers.get("content-type") }
}

describe("GET /metrics", () => {
  test("counts exactly the traffic sent: handshakes full/resumed, failures by reason, requests, histograms", async () => {
    const web = pc.port("web")
    const mtls = pc.port("mtls")
    const trust = { ca: pki.ca.cert, servername: "localhost" }
    // M = 3 full handshakes with requests, then K = 2 resumed ones on the first session's ticket.
    const first = await get(web, trust)
    assert.equal(first.status, 200)
    assert.ok(first.session, "a session ticket arrived")
    assert.equal((await get(web, trust)).reused, false)
    assert.equal((await get(web, trust)).reused, false)
    for (let i = 0; i < 2; i++) {
      const again = await get(web, { ...trust, session: first.session })
      assert.equal(again.status, 200)
      assert.equal(again.reused, true, "resumed")
    }
    // An SNI name no certificate covers: the default certificate is served (a full handshake and a request).
    assert.equal((await get(web, { rejectUnauthorized: false, servername: "nobody.test" })).status, 200)
    // A client offering only a cipher the intermediate profile refuses (CBC, TLS 1.2).
    await refused(web, { ...trust, maxVersion: "TLSv1.2", ciphers: "AES128-SHA" })
    // Bytes that are not TLS.
    await new Promise<void>((resolve) => {
      const s = net.connect(web, "127.0.0.1", () => s.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n"))
      s.on("error", () => resolve())
      s.on("close", () => resolve())
    })
    // mTLS: no client certificate, then one from a CA the listener does not trust.
    const mtlsHost = { host: pc.host("mtls") }
    await refused(mtls, { ...trust, ...mtlsHost })
    const stranger = await otherPki.issue({ names: ["stranger"], client: true })
    await refused(mtls, { ...trust, ...mtlsHost, cert: stranger.cert, key: stranger.key })

    // The failures are counted when the server side closes: wait for all four, then read everything exactly.
    const failureCount = () => sum(parsePrometheus(scrape(pc.runtime)), "portcullis_tls_handshake_failures_total")
    await waitUntil(() => failureCount() >= 4, "four handshake failures counted").catch((err: Error) => {
      const lines = scrape(pc.runtime).split("\n")
      throw new Error(`${err.message}:\n${lines.filter((l) => l.includes("failures_total{")).join("\n")}`)
    })
    const { families: m, contentType } = await scrapeOverHttp()
    assert.equal(contentType, CONTENT_TYPE)

    const hs = "portcullis_tls_handshakes_total"
    assert.equal(sum(m, hs, { listener: "web", handshake: "full" }), 4)
    assert.equal(sum(m, hs, { listener: "web", handshake: "resumed" }), 2)
    assert.equal(sum(m, hs, { listener: "mtls" }), 0)
    for (const s of samples(m, hs, { listener: "web" })) {
      assert.equal(s.labels["version"], "TLSv1.3")
      assert.match(s.labels["cipher"]!, /^TLS_(AES|CHACHA20)_/)
    }
    const failures = "portcullis_tls_handshake_failures_total"
    assert.equal(value(m, failures, { listener: "web", reason: "no_shared_cipher" }), 1)
    assert.equal(value(m, failures, { listener: "web", reason: "not_tls" }), 1)
    assert.equal(value(m, failures, { listener: "mtls", reason: "client_cert_missing" }), 1)
    assert.equal(value(m, failures, { listener: "mtls", reason: "client_cert_bad" }), 1)
    assert.equal(samples(m, failures).length, 4, "no other failure series")
    assert.equal(value(m, "portcullis_tls_unknown_sni_total", { listener: "web" }), 1)

    // 8 connections on web (6 served, 2 refused), 2 on mtls.
    assert.equal(value(m, "portcullis_listener_connections_total", { listener: "web" }), 8)
    assert.equal(value(m, "portcullis_listener_connections_total", { listener: "mtls" }), 2)
    const requests = "portcullis_http_requests_total"
    assert.equal(
      value(m, requests, { listener: "web", route: "0", upstream: "echo", status_class: "2xx", method: "GET" }),
      6,
    )
    assert.equal(sum(m, requests), 6)
    assert.equal(value(m, "portcullis_tls_handshake_duration_seconds_count", { listener: "web" }), 6)
    assert.equal(value(m, "portcullis_http_first_byte_seconds_count", { listener: "web", upstream: "echo" }), 6)
    assert.equal(value(m, "portcullis_http_request_duration_seconds_count", { listener: "web", upstream: "echo" }), 6)
    // Each served connection closed: its TLS bytes are counted.
    await waitUntil(
      () => value(parsePrometheus(scrape(pc.runtime)), "portcullis_listener_sent_bytes_total", { listener: "web" }) > 0,
      "bytes counted",
    )
    assert.ok(value(m, "portcullis_listener_received_bytes_total", { listener: "web" }) > 0)

    // Each backend connection opened for these requests is one connect-time observation.
    const opened = value(m, "portcullis_backend_connect_duration_seconds_count", { upstream: "echo" })
    assert.ok(opened >= 1 && opened <= 6, `connect observations: ${opened}`)
    const backend = { upstream: "echo", backend: `127.0.0.1:${echo.port}` }
    assert.equal(value(m, "portcullis_backend_up", backend), 1)
    assert.equal(value(m, "portcullis_backend_ejected", backend), 0)
    assert.equal(value(m, "portcullis_backend_in_flight_requests", backend), 0)
    assert.equal(value(m, "portcullis_upstream_queue_length", { upstream: "echo" }), 0)
    assert.equal(value(m, "portcullis_config_generation"), 1)
    const notAfter = value(m, "portcullis_tls_certificate_not_after_seconds", {
      listener: "web",
      name: "localhost",
      source: "file",
    })
    const leaf = new (await import("node:crypto")).X509Certificate(pki.ca.cert)
    assert.ok(notAfter > Date.now() / 1000 && notAfter <= new Date(leaf.validTo).getTime() / 1000 + 86_400 * 3650)
    // No client addresses and no paths in any label: the only addresses are the configured listeners' and backend's.
    const configured = new Set([`${loopback(1)}:0`, `${loopback(2)}:0`, backend.backend])
    for (const f of m.values()) {
      for (const s of f.samples) {
        for (const v of Object.values(s.labels)) {
          assert.ok(!v.includes("/hello"), `${s.name}: a path in a label`)
          if (/\d+\.\d+\.\d+\.\d+/.test(v)) assert.ok(configured.has(v), `${s.name}: address ${v} in a label`)
        }
      }
    }
  })

  test("the writer escapes label values and the strict parser reads them back", () => {
    const text = renderMetrics([
      {
        name: "portcullis_test_things_total",
        help: "a help with a \\ and\na newline",
        type: "counter",
        series: [{ labels: { name: 'a "quoted"\\ value\nnext' }, value: 3 }],
      },
    ])
    const m = parsePrometheus(text)
    assert.equal(value(m, "portcullis_test_things_total", { name: 'a "quoted"\\ value\nnext' }), 3)
  })

  test("the parser refuses malformed expositions", () => {
    const good = "# TYPE a_total counter\na_total 1\n"
    assert.equal(value(parsePrometheus(good), "a_total"), 1)
    for (const bad of [
      "a_total 1\n", // no TYPE
      "# TYPE a_total counter\na_total one\n",
      "# TYPE a_total counter\na_total{x=1} 1\n",
      '# TYPE a_total counter\na_total{x="1} 1\n',
      '# TYPE a_total counter\na_total{x="1"} 1\na_total{x="1"} 2\n',
      "# TYPE a_total counter\na_total 1",
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
    ]) {
      assert.throws(() => parsePrometheus(bad), Error, JSON.stringify(bad))
    }
  })
})

describe("per-backend retries", () => {
  test("a try refused by one backend and answered by another counts one retry under the refusing backend", async () => {
    const dead = await refusingPort()
    const site = await pki.issue({ names: ["localhost"] })
    const run = await startPortcullis(`
listeners:
  - name: retrying
    address: "${loopback(3)}:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: flaky
upstreams:
  flaky:
    backends: ["127.0.0.1:${dead.port}", "127.0.0.1:${echo.port}"]
    balance: round_robin
    retries: 1
`)
    try {
      const res = await get(run.port(), { host: run.host(), ca: pki.ca.cert, servername: "localhost" })
      assert.equal(res.status, 200)
      const m = parsePrometheus(scrape(run.runtime))
      assert.equal(value(m, "portcullis_backend_retries_total", { backend: `127.0.0.1:${dead.port}` }), 1)
      assert.equal(sum(m, "portcullis_backend_retries_total"), 1)
      // One connection opened (to echo); the refused one never connected, so it is not a connect time.
      assert.equal(value(m, "portcullis_backend_connect_duration_seconds_count", { upstream: "flaky" }), 1)
      assert.equal(value(m, "portcullis_upstream_retries_total", { upstream: "flaky" }), 1)
      assert.equal(value(m, "portcullis_http_requests_total", { listener: "retrying", status_class: "2xx" }), 1)
    } finally {
      await run.close()
      dead.close()
    }
  })
})

describe("more failure reasons", () => {
  test("a client that sends nothing is a timeout, one that leaves mid-ClientHello a reset, TLS 1.1 only a version", async () => {
    const site = await pki.issue({ names: ["localhost"] })
    const run = await startPortcullis(`
listeners:
  - name: strict
    address: "${loopback(4)}:0"
    tls:
      certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]
      handshake_timeout: 300ms
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
`)
    try {
      const port = run.port()
      const host = run.host()
      // Silent: the listener closes it at handshake_timeout.
      await new Promise<void>((resolve) => {
        const s = net.connect(port, host)
        s.on("error", () => resolve())
        s.on("close", () => resolve())
      })
      // Half a ClientHello record header, then gone.
      await new Promise<void>((resolve) => {
        const s = net.connect(port, host, () => {
          s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
          setImmediate(() => s.destroy())
        })
        s.on("error", () => resolve())
        s.on("close", () => resolve())
      })
      await refusedAt(host, port, { minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" })
      const failures = () => parsePrometheus(scrape(run.runtime))
      await waitUntil(() => sum(failures(), "portcullis_tls_handshake_failures_total") >= 3, "three failures")
      const m = failures()
      const f = "portcullis_tls_handshake_failures_total"
      assert.equal(value(m, f, { listener: "strict", reason: "timeout" }), 1)
      assert.equal(value(m, f, { listener: "strict", reason: "reset" }), 1)
      assert.equal(value(m, f, { listener: "strict", reason: "no_shared_version" }), 1)
      assert.equal(sum(m, f, { listener: "strict" }), 3)
    } finally {
      await run.close()
    }
  })
})

function refusedAt(host: string, port: number, options: tls.ConnectionOptions): Promise<void> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port, rejectUnauthorized: false, ...options })
    socket.on("error", () => resolve())
    socket.on("close", () => resolve())
  })
}

describe("process memory and draining generations", () => {
  test("the scrape has the process's memory and heap spaces under prom-client's names, and counts the generations still draining", async () => {
    const site = await pki.issue({ names: ["localhost"] })
    const yaml = (prefix: string) => `
listeners:
  - name: draining
    address: "${loopback(4)}:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ path_prefix: /${prefix}, upstream: echo }, { upstream: echo }]
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
`
    const run = await startPortcullis(yaml("a"))
    // A keep-alive connection of the first generation, idle after one response: the retiring generation waits for it.
    const socket = tls.connect({ host: run.host(), port: run.port(), ca: pki.ca.cert, servername: "localhost" })
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("secureConnect", () => socket.write("GET / HTTP/1.1\r\nhost: localhost\r\n\r\n"))
        socket.once("data", () => resolve())
        socket.once("error", reject)
      })
      const before = parsePrometheus(scrape(run.runtime))
      const rss = value(before, "process_resident_memory_bytes", {})
      const heap = value(before, "nodejs_heap_size_used_bytes", {})
      assert.ok(rss > 10 * 2 ** 20 && rss < 16 * 2 ** 30, `rss ${rss}`)
      assert.ok(heap > 2 ** 20 && heap < rss, `heap ${heap}`)
      assert.ok(value(before, "nodejs_heap_size_total_bytes", {}) >= heap)
      assert.ok(value(before, "nodejs_external_memory_bytes", {}) >= value(before, "nodejs_array_buffers_bytes", {}))
      // The young generation (what moves RSS most, see docs/observability.md) and the old space, by space.
      for (const space of ["new", "old"]) {
        const total = value(before, "nodejs_heap_space_size_total_bytes", { space })
        assert.ok(total > 0 && total >= value(before, "nodejs_heap_space_size_used_bytes", { space }), space)
      }
      assert.equal(value(before, "portcullis_config_generations_draining", {}), 0)
      await run.reload(yaml("b"))
      assert.equal(value(parsePrometheus(scrape(run.runtime)), "portcullis_config_generations_draining", {}), 1)
      socket.destroy()
      await waitUntil(() => run.runtime.drainingGenerations === 0, "the old generation finished")
      assert.equal(value(parsePrometheus(scrape(run.runtime)), "portcullis_config_generations_draining", {}), 0)
    } finally {
      socket.destroy()
      await run.close()
    }
  })
})
