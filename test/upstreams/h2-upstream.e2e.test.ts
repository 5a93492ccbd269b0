/**
 * HTTP/2 to backends (issue 15, items 2-3): HTTP/1.1 and HTTP/2 clients to an h2c backend, trailers both client
 * protocols, 100 concurrent streams over a few backend connections, and a backend that sends GOAWAY mid-run.
 */
import assert from "node:assert/strict"
import http2 from "node:http2"
import https from "node:https"
import { after, before, describe, test } from "node:test"
import { curl } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"
import { upstreamStatus } from "./harness.ts"

interface H2Backend {
  port: number
  server: http2.Http2Server
  /** Sessions (connections) the backend accepted so far. */
  sessions: () => number
  /** Requests answered. */
  answered: () => number
  /** What /healthz answers (200 or 503), and how often it was asked. */
  setHealthy: (value: boolean) => void
  healthChecks: () => number
  /** After this many more requests, send GOAWAY on the session that carried the last one. */
  goawayAfter: (n: number) => void
  close: () => Promise<void>
}

/** startH2cBackend: HTTP/2 without TLS; answers JSON about the request and ends with a trailer x-checksum. */
async function startH2cBackend(): Promise<H2Backend> {
  const server = http2.createServer()
  let sessions = 0
  let answered = 0
  let goawayIn = -1
  let healthy = true
  let healthChecks = 0
  const open = new Set<http2.ServerHttp2Session>()
  server.on("session", (s) => {
    sessions++
    open.add(s)
    s.on("close", () => open.delete(s))
  })
  server.on("stream", (stream, headers) => {
    if (headers[":path"] === "/healthz") {
      healthChecks++
      stream.respond({ ":status": healthy ? 200 : 503 })
      stream.end()
      return
    }
    let bytes = 0
    stream.on("data", (c: Buffer) => (bytes += c.length))
    stream.on("end", () => {
      answered++
      const body = JSON.stringify({ path: headers[":path"], te: headers.te ?? null, bytes, version: "2" })
      stream.respond({ ":status": 200, "content-type": "application/json" }, { waitForTrailers: true })
      stream.on("wantTrailers", () => stream.sendTrailers({ "x-checksum": `len-${body.length}` }))
      stream.end(body)
      if (goawayIn > 0 && --goawayIn === 0) {
        goawayIn = -1
        // Graceful: streams up to the last one are served, later ones are refused (RFC 9113 §6.8).
        stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id)
        setTimeout(() => stream.session?.close(), 50)
      }
    })
    stream.on("error", () => {})
  })
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
  )
  return {
    port,
    server,
    sessions: () => sessions,
    answered: () => answered,
    setHealthy: (value) => {
      healthy = value
    },
    healthChecks: () => healthChecks,
    goawayAfter: (n) => {
      goawayIn = n
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy()
        server.close(() => resolve())
      }),
  }
}

let pki: Pki
let backend: H2Backend
/** A second backend for the health-checked upstream, so that its check connections do not count as the pool's. */
let checked: H2Backend
let pc: RunningPortcullis

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  backend = await startH2cBackend()
  checked = await startH2cBackend()
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: h2 }]
upstreams:
  h2: { backends: ["127.0.0.1:${backend.port}"], protocol: h2c }
  h2_checked:
    backends: ["127.0.0.1:${checked.port}"]
    protocol: h2c
    health: { path: /healthz, interval: 100ms, timeout: 1s, rise: 1, fall: 1 }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await backend?.close()
  await checked?.close()
  await pki?.close()
})

function h2Get(
  session: http2.ClientHttp2Session,
  path: string,
  headers: http2.OutgoingHttpHeaders = {},
): Promise<{ status: number; body: string; trailers: http2.IncomingHttpHeaders | undefined }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":path": path, ...headers })
    let status = 0
    let body = ""
    let trailers: http2.IncomingHttpHeaders | undefined
    stream.on("response", (h) => (status = Number(h[":status"])))
    stream.on("trailers", (t) => (trailers = t))
    stream.setEncoding("utf8")
    stream.on("data", (d: string) => (body += d))
    stream.on("end", () => resolve({ status, body, trailers }))
    stream.on("error", reject)
    stream.end()
  })
}

describe("HTTP/2 (h2c) backend", () => {
  test("curl --http1.1 reaches the h2c backend", async () => {
    const out = await curl([
      "--http1.1",
      "--cacert",
      pki.ca.certPath,
      "--resolve",
      `localhost:${pc.port()}:127.0.0.1`,
      `https://localhost:${pc.port()}/from-h1`,
    ])
    assert.equal(out.code, 0, out.stderr)
    const seen = JSON.parse(out.stdout)
    assert.equal(seen.path, "/from-h1")
    assert.equal(seen.version, "2")
  })

  test("an HTTP/1.1 client gets the backend's trailers after the last chunk", async () => {
    const trailers = await new Promise<NodeJS.Dict<string>>((resolve, reject) => {
      const req = https.request(
        {
          host: "127.0.0.1",
          port: pc.port(),
          path: "/trailers-h1",
          servername: "localhost",
          ca: pki.ca.cert,
          headers: { host: "localhost", te: "trailers" },
          agent: false,
        },
        (res) => {
          assert.equal(res.headers["transfer-encoding"], "chunked")
          res.resume()
          res.on("end", () => resolve(res.trailers))
        },
      )
      req.on("error", reject)
      req.end()
    })
    assert.match(String(trailers["x-checksum"]), /^len-\d+$/)
  })

  test("an HTTP/2 client gets the trailers, and te: trailers reaches the backend", async () => {
    const session = http2.connect(`https://127.0.0.1:${pc.port()}`, { ca: pki.ca.cert, servername: "localhost" })
    try {
      const reply = await h2Get(session, "/trailers-h2", { te: "trailers" })
      assert.equal(reply.status, 200)
      assert.equal(JSON.parse(reply.body).te, "trailers")
      assert.match(String(reply.trailers?.["x-checksum"]), /^len-\d+$/)
    } finally {
      session.close()
    }
  })

  test("nghttp sees the trailer in a HEADERS frame after the DATA", async () => {
    const { execFile } = await import("node:child_process")
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        "nghttp",
        ["-nv", "--no-verify-peer", `https://127.0.0.1:${pc.port()}/nghttp`],
        { timeout: 20_000 },
        (err, stdout) => (err ? reject(err) : resolve(stdout)),
      ),
    )
    const data = out.indexOf("recv DATA frame")
    const trailer = out.indexOf("x-checksum: len-")
    assert.ok(data !== -1 && trailer > data, out)
  })

  test("100 concurrent streams go over a few backend connections, every one answered", async () => {
    const before = backend.sessions()
    const clients = Array.from({ length: 4 }, () =>
      http2.connect(`https://127.0.0.1:${pc.port()}`, { ca: pki.ca.cert, servername: "localhost" }),
    )
    try {
      for (let round = 0; round < 5; round++) {
        const replies = await Promise.all(
          Array.from({ length: 100 }, (_, i) => h2Get(clients[i % 4]!, `/load?r=${round}&i=${i}`)),
        )
        assert.ok(replies.every((r) => r.status === 200))
      }
      const opened = backend.sessions() - before
      assert.ok(opened <= 4, `${opened} new backend connections for 500 requests, 100 at a time`)
    } finally {
      for (const c of clients) c.close()
    }
  })

  test("a backend GOAWAY mid-run loses no GET: refused streams go again on a new connection", async () => {
    const session = http2.connect(`https://127.0.0.1:${pc.port()}`, { ca: pki.ca.cert, servername: "localhost" })
    const before = backend.sessions()
    try {
      backend.goawayAfter(30)
      const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => h2Get(session, `/goaway?i=${i}`)))
      const failed = replies.filter((r) => r.status !== 200)
      assert.equal(failed.length, 0, `${failed.length} failed: ${failed.map((r) => r.status).join(",")}`)
      assert.ok(backend.sessions() > before, "a new backend connection was opened after the GOAWAY")
    } finally {
      session.close()
    }
  })
})

test("active health checks of an h2c upstream speak HTTP/2: a 503 takes the backend down, a 200 brings it up", async () => {
  const state = () => upstreamStatus(pc, "h2_checked").backends[0]!.state
  assert.equal(state(), "up")
  assert.ok(checked.healthChecks() > 0, "the h2c backend answered the checks")
  checked.setHealthy(false)
  try {
    await waitUntil(() => state() === "down", "503 takes it down", 5_000)
  } finally {
    checked.setHealthy(true)
  }
  await waitUntil(() => state() === "up", "200 brings it up", 5_000)
})
