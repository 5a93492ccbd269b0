/**
 * The lean HTTP/1.1 backend client through the running proxy, against raw backends that script their bytes: connect
 * failures, resets, the keep-alive race, limits, strict response parsing and the framings RFC 9112 allows.
 */
import assert from "node:assert/strict"
import { type ChildProcess, spawn } from "node:child_process"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { type Reply, request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type HeldPort, type RunningPortcullis, refusingPort, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

/** BackendRequest: one request as the scripted backend read it. */
interface BackendRequest {
  method: string
  path: string
  head: string
  /** Index of the backend connection it came on (0, 1, ...). */
  conn: number
  /** Requests served on that connection before this one. */
  served: number
}

type Script = (req: BackendRequest, socket: net.Socket) => void

interface ScriptedBackend {
  port: number
  requests: BackendRequest[]
  accepted: () => number
  open: () => number
  /** Most connections open at once. */
  peak: () => number
  /** Indexes of connections that are closed. */
  closed: Set<number>
  close: () => Promise<void>
}

const ok = (req: BackendRequest, body = "ok") =>
  `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nx-conn: ${req.conn}\r\n\r\n${body}`

/**
 * startScripted runs a raw HTTP/1.1 backend: it reads request heads (and Content-Length bodies) off each connection
 * and lets scripts[path] write whatever bytes it likes; other paths get a 200 naming the connection (x-conn).
 */
async function startScripted(scripts: Record<string, Script> = {}): Promise<ScriptedBackend> {
  const requests: BackendRequest[] = []
  const sockets = new Set<net.Socket>()
  const closed = new Set<number>()
  let accepted = 0
  let peak = 0
  const server = net.createServer((socket) => {
    const conn = accepted++
    sockets.add(socket)
    peak = Math.max(peak, sockets.size)
    let served = 0
    let buf = Buffer.alloc(0)
    let skip = 0
    socket.on("error", () => {})
    socket.on("close", () => {
      sockets.delete(socket)
      closed.add(conn)
    })
    socket.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      for (;;) {
        if (skip > 0) {
          const n = Math.min(skip, buf.length)
          skip -= n
          buf = buf.subarray(n)
          if (skip > 0) return
        }
        const end = buf.indexOf("\r\n\r\n")
        if (end === -1) return
        const head = buf.toString("latin1", 0, end)
        buf = buf.subarray(end + 4)
        skip = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        const [method = "", path = ""] = head.split(" ")
        const req = { method, path, head, conn, served: served++ }
        requests.push(req)
        const script = scripts[path]
        if (script) script(req, socket)
        else socket.write(ok(req))
        if (socket.destroyed) return
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return {
    port: (server.address() as net.AddressInfo).port,
    requests,
    accepted: () => accepted,
    open: () => sockets.size,
    peak: () => peak,
    closed,
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise((r) => server.close(() => r()))
    },
  }
}

/**
 * startBlackhole listens without ever accepting (python: listen(0), no accept) and fills the accept queue, so a
 * further connect gets no SYN-ACK: the connect can only time out.
 */
async function startBlackhole(): Promise<{ port: number; close: () => void }> {
  const child: ChildProcess = spawn(
    "python3",
    [
      "-c",
      "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()",
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  )
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim())))
    child.once("error", reject)
  })
  const fillers: net.Socket[] = []
  // Fill the accept queue: stop at the first connect that does not complete (bounded).
  for (let i = 0; i < 8; i++) {
    const s = net.connect(port, "127.0.0.1")
    s.on("error", () => {})
    fillers.push(s)
    const connected = await new Promise<boolean>((r) => {
      const timer = setTimeout(() => r(false), 300)
      s.once("connect", () => {
        clearTimeout(timer)
        r(true)
      })
    })
    if (!connected) break
  }
  return {
    port,
    close: () => {
      for (const s of fillers) s.destroy()
      child.kill()
    },
  }
}

let pki: Pki
let pc: RunningPortcullis
let port: number
let dead: HeldPort
let blackhole: { port: number; close: () => void }
let solo: ScriptedBackend
let bad: ScriptedBackend
let good: ScriptedBackend
let limited: ScriptedBackend
let capped: ScriptedBackend
/** Responses held by /hold on the limited and capped backends, answered by release(). */
const held: { req: BackendRequest; socket: net.Socket }[] = []

function hold(req: BackendRequest, socket: net.Socket): void {
  held.push({ req, socket })
}
function releaseHeld(): void {
  for (const h of held.splice(0)) h.socket.write(ok(h.req))
}

/** Connections (of the solo backend) that already answered a race path, by path. */
const raced = new Set<string>()
function racedBefore(req: BackendRequest): boolean {
  const key = `${req.path} ${req.conn}`
  if (raced.has(key)) return true
  raced.add(key)
  return false
}

const SCRIPTS: Record<string, Script> = {
  "/reset": (_req, socket) => socket.resetAndDestroy(),
  "/reset-mid-body": (req, socket) => {
    socket.write(`HTTP/1.1 200 OK\r\ncontent-length: 100000\r\nx-conn: ${req.conn}\r\n\r\n${"x".repeat(1000)}`)
    setTimeout(() => socket.resetAndDestroy(), 50)
  },
  "/fin-mid-chunked": (_req, socket) => {
    socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    setTimeout(() => socket.end(), 50)
  },
  /** The keep-alive race: the second request for the path on a connection finds it closed. */
  "/race": (req, socket) => {
    if (racedBefore(req)) socket.destroy()
    else socket.write(ok(req, "first"))
  },
  "/race-reset": (req, socket) => {
    if (racedBefore(req)) socket.resetAndDestroy()
    else socket.write(ok(req, "first"))
  },
  "/te-and-cl": (_req, s) =>
    s.write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
  "/two-cl": (_req, s) => s.write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
  "/bare-lf": (_req, s) => s.write("HTTP/1.1 200 OK\ncontent-length: 2\n\nok"),
  "/bare-lf-mixed": (_req, s) => s.write("HTTP/1.1 200 OK\r\nx-a: 1\ncontent-length: 2\r\n\r\nok"),
  "/obs-fold": (_req, s) => s.write("HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 2\r\n\r\nok"),
  "/bad-status": (_req, s) => s.write("HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\nok"),
  "/no-status": (_req, s) => s.write("HTTP/1.1 OK\r\ncontent-length: 2\r\n\r\nok"),
  "/continue": (req, s) =>
    s.write(`HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n${ok(req, "final")}`),
  "/head": (req, s) => s.write(`HTTP/1.1 200 OK\r\ncontent-length: 1234\r\nx-conn: ${req.conn}\r\n\r\n`),
  "/204": (req, s) => s.write(`HTTP/1.1 204 No Content\r\nx-conn: ${req.conn}\r\n\r\n`),
  "/304": (req, s) =>
    s.write(`HTTP/1.1 304 Not Modified\r\netag: "a"\r\ncontent-length: 99\r\nx-conn: ${req.conn}\r\n\r\n`),
  "/close-delimited": (_req, s) => {
    s.write("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst part, ")
    setTimeout(() => s.end("second part"), 30)
  },
  "/chunked-ext": (req, s) =>
    s.write(
      `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-conn: ${req.conn}\r\n\r\n` +
        '5;name=value\r\nhello\r\n6;a;b="c d"\r\n world\r\n0;last\r\nx-trailer: t\r\nx-other: u\r\n\r\n',
    ),
  "/cookies": (req, s) =>
    s.write(
      "HTTP/1.1 200 OK\r\nset-cookie: a=1; Path=/\r\nSet-Cookie: b=2, c=3\r\nset-cookie: d=4; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\n" +
        `content-length: 2\r\nx-conn: ${req.conn}\r\n\r\nok`,
    ),
  "/hold": hold,
  // The timers (the `timed` upstream: response and idle timeouts of 400 ms).
  "/slow-head": (req, s) => {
    setTimeout(() => s.write(ok(req, "late")), 900)
  },
  "/head-in-parts": (req, s) =>
    trickle(s, ["HTTP/1.1 200 OK\r\n", `x-conn: ${req.conn}\r\n`, "content-length: 2\r\n", "\r\nok"]),
  "/stall-mid-body": (_req, s) => s.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"),
  "/body-in-parts": (req, s) =>
    trickle(s, [`HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-conn: ${req.conn}\r\n\r\n`, "h", "e", "l", "l", "o"]),
}

/** trickle writes the parts 200 ms apart: each gap is within the 400 ms timeouts, the whole is not. */
function trickle(socket: net.Socket, parts: string[]): void {
  const [first, ...rest] = parts
  if (first === undefined || socket.destroyed) return
  socket.write(first)
  if (rest.length > 0) setTimeout(() => trickle(socket, rest), 200)
}

before(async () => {
  pki = await createPki()
  const hosts = ["solo.test", "pair.test", "refused.test", "timeout.test", "timeout-pair.test"]
  const site = await pki.issue({ names: ["localhost", ...hosts, "limited.test", "capped.test", "timed.test"] })
  solo = await startScripted(SCRIPTS)
  bad = await startScripted(SCRIPTS)
  good = await startScripted()
  limited = await startScripted(SCRIPTS)
  capped = await startScripted(SCRIPTS)
  blackhole = await startBlackhole()
  dead = await refusingPort()
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [solo.test], upstream: solo }
      - { hosts: [pair.test], upstream: pair }
      - { hosts: [refused.test], upstream: refused }
      - { hosts: [timeout.test], upstream: timeout }
      - { hosts: [timeout-pair.test], upstream: timeout_pair }
      - { hosts: [limited.test], upstream: limited }
      - { hosts: [capped.test], upstream: capped }
      - { hosts: [timed.test], upstream: timed }
      - { upstream: solo }
upstreams:
  solo:
    backends: ["127.0.0.1:${solo.port}"]
    passive: { enabled: false }
  pair:
    backends: ["127.0.0.1:${bad.port}", "127.0.0.1:${good.port}"]
    balance: round_robin
    passive: { enabled: false }
  refused:
    backends: ["127.0.0.1:${dead.port}", "127.0.0.1:${good.port}"]
    balance: round_robin
    passive: { enabled: false }
  timeout:
    backends: ["127.0.0.1:${blackhole.port}"]
    timeouts: { connect: 300ms }
    passive: { enabled: false }
  timeout_pair:
    backends: ["127.0.0.1:${blackhole.port}", "127.0.0.1:${good.port}"]
    balance: round_robin
    timeouts: { connect: 300ms }
    passive: { enabled: false }
  limited:
    backends: [{ address: "127.0.0.1:${limited.port}", max_connections: 2 }]
    passive: { enabled: false }
  capped:
    backends: ["127.0.0.1:${capped.port}"]
    keepalive: 1
    passive: { enabled: false }
  timed:
    backends: ["127.0.0.1:${solo.port}"]
    timeouts: { response: 400ms, idle: 400ms }
    retries: 0
    passive: { enabled: false }
access_log: { enabled: false }
`)
  port = pc.port()
})

after(async () => {
  dead?.close()
  await pc?.close()
  for (const b of [solo, bad, good, limited, capped]) await b?.close()
  blackhole?.close()
  await pki?.close()
})

function send(host: string, path: string, options: { method?: string; body?: string } = {}): Promise<Reply> {
  return request({ port, host, path, ca: pki.ca.cert, ...options })
}

/** lastConn: the backend connection that carried the last request for path. */
function lastConn(backend: ScriptedBackend, path: string): number {
  const req = backend.requests.findLast((r) => r.path === path)
  assert.ok(req, `the backend saw ${path}`)
  return req.conn
}

describe("connect failures", () => {
  test("a connect that times out answers 504 when no other backend is left", async () => {
    const started = Date.now()
    const reply = await send("timeout.test", "/")
    assert.equal(reply.status, 504)
    assert.ok(Date.now() - started < 5_000, "answered within the connect timeout, not a later one")
  })

  test("a connect that times out is retried on the next backend", async () => {
    for (let i = 0; i < 2; i++) assert.equal((await send("timeout-pair.test", "/")).status, 200)
  })

  test("a refused connect is retried on the next backend: GET and POST", async () => {
    for (let i = 0; i < 2; i++) {
      assert.equal((await send("refused.test", "/")).status, 200)
      assert.equal((await send("refused.test", "/", { method: "POST", body: "x" })).status, 200)
    }
  })
})

describe("resets", () => {
  test("a backend reset before the response is retried on the next backend for a GET", async () => {
    const before = good.requests.length
    for (let i = 0; i < 2; i++) {
      const reply = await send("pair.test", "/reset")
      assert.equal(reply.status, 200)
    }
    assert.equal(good.requests.length - before, 2, "each GET ended on the good backend")
    assert.ok(
      bad.requests.some((r) => r.path === "/reset"),
      "the bad backend was tried",
    )
  })

  test("a backend reset before the response is not retried for a POST that reached it: 502", async () => {
    // round_robin: two sends so that one of them meets the bad backend first.
    const statuses = [
      (await send("pair.test", "/reset", { method: "POST", body: "x" })).status,
      (await send("pair.test", "/reset", { method: "POST", body: "x" })).status,
    ].sort()
    assert.deepEqual(statuses, [200, 502])
  })

  test("a reset mid-body gives the client a broken response, not a short one", async () => {
    await assert.rejects(send("solo.test", "/reset-mid-body"))
  })

  test("a close mid chunked body gives the client a broken response", async () => {
    await assert.rejects(send("solo.test", "/fin-mid-chunked"))
  })
})

describe("the keep-alive race", () => {
  test("a GET on a pooled connection the backend closes as it arrives is sent again and succeeds", async () => {
    const first = await send("solo.test", "/race")
    assert.equal(first.text, "first")
    const accepted = solo.accepted()
    const second = await send("solo.test", "/race")
    assert.equal(second.status, 200)
    assert.equal(second.text, "first", "answered on a new connection")
    assert.equal(solo.accepted(), accepted + 1)
  })

  test("the same with a reset instead of a close", async () => {
    assert.equal((await send("solo.test", "/race-reset")).text, "first")
    const second = await send("solo.test", "/race-reset")
    assert.equal(second.status, 200)
    assert.equal(second.text, "first")
  })

  test("a POST in the same race is not sent twice: 502", async () => {
    assert.equal((await send("solo.test", "/race", { method: "POST", body: "x" })).text, "first")
    const count = solo.requests.filter((r) => r.path === "/race").length
    const second = await send("solo.test", "/race", { method: "POST", body: "x" })
    assert.equal(second.status, 502)
    assert.equal(solo.requests.filter((r) => r.path === "/race").length, count + 1, "the backend saw it once")
  })
})

describe("limits", () => {
  test("max_connections 2 holds under 8 concurrent requests, and all of them succeed", async () => {
    const replies = Array.from({ length: 8 }, () => send("limited.test", "/hold"))
    for (let round = 0; round < 4; round++) {
      await waitUntil(() => held.length === 2, `two requests held in round ${round}`)
      assert.ok(limited.open() <= 2)
      releaseHeld()
    }
    const statuses = (await Promise.all(replies)).map((r) => r.status)
    assert.deepEqual(statuses, Array(8).fill(200))
    assert.ok(limited.peak() <= 2, `peak ${limited.peak()} backend connections`)
  })

  test("keepalive 1: 3 concurrent requests keep their connections; the idle ones above 1 are purged to one", async () => {
    const replies = Array.from({ length: 3 }, () => send("capped.test", "/hold"))
    await waitUntil(() => held.length === 3, "three requests held")
    const closing = held.filter((h) => /\r\nconnection: close/i.test(h.req.head)).length
    assert.equal(closing, 0, "no request asks for Connection: close: the cap is on idle connections only")
    releaseHeld()
    for (const r of await Promise.all(replies)) assert.equal(r.status, 200)
    // The purge closes idle connections above the cap every second, once they were idle a whole interval.
    await waitUntil(() => capped.open() === 1, "one idle connection left", 6_000)
    const accepted = capped.accepted()
    for (let i = 0; i < 3; i++) assert.equal((await send("capped.test", "/")).status, 200)
    assert.equal(capped.accepted(), accepted, "sequential requests reuse the kept connection")
  })
})

describe("strict response parsing: 502 and the connection is not reused", () => {
  const cases: [string, string][] = [
    ["/te-and-cl", "Content-Length with Transfer-Encoding"],
    ["/two-cl", "two different Content-Lengths"],
    ["/bare-lf", "a head with bare LFs only"],
    ["/bare-lf-mixed", "a bare LF among CRLFs"],
    ["/obs-fold", "an obs-fold header line"],
    ["/bad-status", "a four-digit status"],
    ["/no-status", "a status line without a status"],
  ]
  for (const [path, what] of cases) {
    test(what, async () => {
      const reply = await send("solo.test", path)
      assert.equal(reply.status, 502)
      const conn = lastConn(solo, path)
      await waitUntil(() => solo.closed.has(conn), "the proxy closed the connection")
      const next = await send("solo.test", "/")
      assert.equal(next.status, 200)
      assert.notEqual(Number(next.headers["x-conn"]), conn)
    })
  }
})

describe("requests", () => {
  test("an HTTP/1.0 request without Host reaches the backend with one (HTTP/1.1 needs it)", async () => {
    const socket = tls.connect({ port, host: "127.0.0.1", servername: "solo.test", ca: pki.ca.cert })
    socket.on("error", () => {})
    await new Promise((r) => socket.once("secureConnect", r))
    const before = solo.requests.length
    socket.write("GET /http10 HTTP/1.0\r\n\r\n")
    let text = ""
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1")
    })
    await new Promise((r) => socket.once("end", r))
    socket.destroy()
    assert.match(text, /^HTTP\/1\.[01] 200 /)
    const seen = solo.requests.slice(before).find((r) => r.path === "/http10")
    assert.ok(seen, "the backend saw the request")
    // As undici writes it: the backend's address.
    assert.match(seen.head, new RegExp(`\r\nhost: 127\\.0\\.0\\.1:${solo.port}(\r\n|$)`, "i"))
  })
})

describe("framing", () => {
  test("1xx interim responses (100 Continue, 103) are skipped", async () => {
    const reply = await send("solo.test", "/continue")
    assert.equal(reply.status, 200)
    assert.equal(reply.text, "final")
  })

  for (const [path, method, status] of [
    ["/head", "HEAD", 200],
    ["/204", "GET", 204],
    ["/304", "GET", 304],
  ] as const) {
    test(`${method} ${path.slice(1)}: no body is read, and the connection carries the next request`, async () => {
      const reply = await send("solo.test", path, { method })
      assert.equal(reply.status, status)
      assert.equal(reply.body.length, 0)
      const next = await send("solo.test", "/")
      assert.equal(next.status, 200)
      assert.equal(Number(next.headers["x-conn"]), lastConn(solo, path), "same connection")
    })
  }

  test("a body with neither Content-Length nor Transfer-Encoding is read until the backend closes", async () => {
    const reply = await send("solo.test", "/close-delimited")
    assert.equal(reply.status, 200)
    assert.equal(reply.text, "first part, second part")
  })

  test("chunked with extensions and trailers: the body is whole and the connection reused", async () => {
    const reply = await send("solo.test", "/chunked-ext")
    assert.equal(reply.status, 200)
    assert.equal(reply.text, "hello world")
    const next = await send("solo.test", "/")
    assert.equal(Number(next.headers["x-conn"]), Number(reply.headers["x-conn"]))
  })

  test("three Set-Cookie headers reach the client as three", async () => {
    const reply = await send("solo.test", "/cookies")
    assert.deepEqual(reply.headers["set-cookie"], [
      "a=1; Path=/",
      "b=2, c=3",
      "d=4; Expires=Wed, 21 Oct 2026 07:28:00 GMT",
    ])
  })
})

describe("timeouts of the backend connection (response 400 ms, idle 400 ms)", () => {
  test("a response head later than timeouts.response is a 504", async () => {
    const started = Date.now()
    const reply = await send("timed.test", "/slow-head")
    assert.equal(reply.status, 504)
    assert.ok(Date.now() - started < 850, "answered at the response timeout, before the late head")
  })

  test("a head that arrives in parts, each within the timeout, is read whole", async () => {
    const reply = await send("timed.test", "/head-in-parts")
    assert.equal(reply.status, 200)
    assert.equal(reply.text, "ok")
  })

  test("a body silent for longer than timeouts.idle gives the client a broken response", async () => {
    const started = Date.now()
    await assert.rejects(send("timed.test", "/stall-mid-body"))
    assert.ok(Date.now() - started < 3_000, "cut at the idle timeout")
  })

  test("a body that keeps coming, each piece within timeouts.idle, is whole though it takes longer", async () => {
    const started = Date.now()
    const reply = await send("timed.test", "/body-in-parts")
    assert.equal(reply.status, 200)
    assert.equal(reply.text, "hello")
    assert.ok(Date.now() - started >= 800, "the body took longer than one timeout")
  })

  test("an idle pooled connection is closed after the keep-alive timeout (at most timeouts.idle)", async () => {
    const reply = await send("timed.test", "/")
    assert.equal(reply.status, 200)
    const conn = Number(reply.headers["x-conn"])
    await waitUntil(() => solo.closed.has(conn), "the proxy closed the idle connection", 3_000)
  })
})
