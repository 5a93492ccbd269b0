/**
 * @module soak: `npm run soak [-- --minutes N]` (30 by default): one Portcullis process with the defaults, an http
 * listener and a tcp listener, under mixed HTTP/1.1, HTTP/2, WebSocket and tcp traffic, with a reload every minute
 * (two valid configs in turn, a bad one every third time, which must be refused), one of the two backends killed and
 * restarted every few minutes, and the h1 and h2 fuzzers in the background (issue 14). Prints crashes, the RSS curve
 * (every 30 s), its slope after warm-up, requests done and failed per protocol (failures that were safe to retry
 * counted apart: no backend had begun to answer them) and reloads ok/refused; exits 1 when a criterion fails.
 *
 * The memory criterion is RSS outside V8's young generation. V8 sizes the young generation (new space, two
 * semi-spaces) by itself: under steady allocation it doubles it up to its cap, which Node derives from the machine's
 * memory, and its memory reducer gives it back when allocation slows; RSS follows in steps of tens of MiB whatever
 * leaks or not (issue 14's 135 → 266 MiB was this), so the judged slope is RSS minus the new space V8 has committed
 * at each sample. Portcullis runs with the flags it starts with itself (none): a figure under tuned flags says
 * nothing about what users get. `--semi-space N` fixes the young generation at N MiB semi-spaces instead (to take
 * its sizing out of the curve when looking for a leak). Each sample also shows malloc's main arena (the [heap]
 * mapping's resident size, from /proc/PID/smaps): glibc keeps memory freed inside it (fragmentation) and returns
 * it only with malloc_trim, which Node does not expose, so native growth there need not be a leak.
 */

import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import http from "node:http"
import http2 from "node:http2"
import https from "node:https"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import tls from "node:tls"
import { parseArgs } from "node:util"
import { addWebSocketEcho } from "../test/helpers/backends.ts"
import { wsFrame, wsParse } from "../test/helpers/clients.ts"
import { runningPorts, spawnPortcullis } from "../test/helpers/portcullis.ts"
import { Rng } from "../test/hostile/fuzz.ts"
import { h1Case } from "../test/hostile/fuzz-h1-cases.ts"
import { h2Case } from "../test/hostile/fuzz-h2-cases.ts"

const ACTIVITIES = ["h1", "h2", "ws", "tcp", "fuzz-h1", "fuzz-h2", "reload", "kill"] as const
const { values: args } = parseArgs({
  options: {
    minutes: { type: "string", default: "30" },
    // --semi-space 16: run Portcullis with the young generation fixed at 16 MiB semi-spaces (see the module comment);
    // by default it runs with V8's own sizing, as `portcullis` starts.
    "semi-space": { type: "string" },
    // --only reload,h1: run only these activities (to find which one grows memory); all of them by default.
    only: { type: "string", default: ACTIVITIES.join(",") },
    // --node-arg --inspect=127.0.0.1:0: more flags for Portcullis's node (repeatable; e.g. to take heap snapshots).
    "node-arg": { type: "string", multiple: true, default: [] },
  },
})
const MINUTES = Number(args.minutes)
const only = new Set(args.only.split(","))
for (const a of only)
  if (!(ACTIVITIES as readonly string[]).includes(a))
    throw new Error(`--only: ${a} is none of ${ACTIVITIES.join(", ")}`)
const on = (a: (typeof ACTIVITIES)[number]) => only.has(a)
const RUN_MS = MINUTES * 60_000
const RELOAD_EVERY_MS = 60_000
const SAMPLE_EVERY_MS = 30_000
/** One backend (of two) is killed this often, and restarted DOWN_MS later. */
const KILL_EVERY_MS = Math.min(180_000, Math.max(45_000, RUN_MS / 4))
const DOWN_MS = 5_000
const WARMUP_MS = Math.min(5 * 60_000, RUN_MS / 3)
/** RSS may rise by at most this much an hour after warm-up (a leak of a few KiB a request is far past it). */
const MAX_SLOPE_MIB_PER_HOUR = 40
/** Pause between one client's requests: the machine is shared, the soak is about time, not load. */
const PACE_MS = 10

// --- backends: two HTTP (with WebSocket echo) and two tcp echo servers, killable, recording request ids ------------

/** Request ids a backend has received, and those it has begun to answer (then a failure was not safe to retry). */
const seen = new Set<string>()
const answered = new Set<string>()

interface Killable {
  port: number
  /** Connections a kill destroyed before they had sent the backend a byte. */
  killedUnread: number
  kill: () => void
  start: () => Promise<void>
}

function killable(make: () => net.Server): Killable {
  let server: net.Server | undefined
  const sockets = new Set<net.Socket>()
  const self: Killable = {
    port: 0,
    killedUnread: 0,
    kill: () => {
      server?.close()
      for (const s of sockets) {
        if (s.bytesRead === 0) self.killedUnread++
        s.destroy()
      }
      sockets.clear()
      server = undefined
    },
    start: async () => {
      server = make()
      server.on("connection", (s: net.Socket) => {
        sockets.add(s)
        s.on("close", () => sockets.delete(s))
      })
      await new Promise<void>((resolve, reject) => {
        server!.once("error", reject)
        server!.listen(self.port, "127.0.0.1", () => resolve())
      })
      self.port = (server.address() as net.AddressInfo).port
    },
  }
  return self
}

function httpBackend(): net.Server {
  const server = http.createServer((req, res) => {
    const id = req.headers["x-soak-id"] as string | undefined
    if (id) seen.add(id)
    const chunks: Buffer[] = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      if (id) answered.add(id)
      const body = req.method === "POST" ? Buffer.concat(chunks) : Buffer.from("hello from soak\n")
      res.writeHead(200, { "content-type": "text/plain", "content-length": body.length })
      res.end(body)
    })
  })
  server.on("upgrade", (req: http.IncomingMessage) => {
    const id = req.headers["x-soak-id"] as string | undefined
    if (id) {
      seen.add(id)
      answered.add(id)
    }
  })
  addWebSocketEcho(server)
  return server
}

function tcpBackend(): net.Server {
  return net.createServer((socket) => {
    socket.on("error", () => {})
    let first = true
    socket.on("data", (d: Buffer) => {
      if (first) {
        first = false
        const line = d.toString("latin1", 0, Math.min(d.length, 40))
        const m = /^id:(\S+)\n/.exec(line)
        if (m) {
          seen.add(m[1]!)
          answered.add(m[1]!)
        }
      }
      socket.write(d)
    })
    socket.on("end", () => socket.end())
  })
}

const httpBackends = [killable(httpBackend), killable(httpBackend)]
const tcpBackends = [killable(tcpBackend), killable(tcpBackend)]
for (const b of [...httpBackends, ...tcpBackends]) await b.start()

// --- Portcullis -----------------------------------------------------------------------------------------------------

const dir = mkdtempSync(join(tmpdir(), "pc-soak-"))
const configPath = join(dir, "portcullis.yaml")
function config(variant: "a" | "b" | "bad"): string {
  const hb = httpBackends.map((b) => `"127.0.0.1:${b.port}"`).join(", ")
  const tb = tcpBackends.map((b) => `"127.0.0.1:${b.port}"`).join(", ")
  return `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    routes:
      - { path_prefix: /${variant === "a" ? "a" : "b"}, upstream: ${variant === "bad" ? "nowhere" : "app"} }
      - { upstream: app }
  - name: tcp
    engine: tcp
    address: 127.0.0.2:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    upstream: echo
upstreams:
  app: { backends: [${hb}], retries: ${variant === "a" ? 2 : 3} }
  echo: { backends: [${tb}] }
admin: { address: "127.0.0.3:0" }
access_log: { enabled: false }
data_dir: ${dir}/data
`
}
writeFileSync(configPath, config("a"))
const semiSpace = args["semi-space"]
const nodeArgs = [
  ...(semiSpace === undefined ? [] : [`--min-semi-space-size=${semiSpace}`, `--max-semi-space-size=${semiSpace}`]),
  ...args["node-arg"],
]
const pc = spawnPortcullis(["--config", configPath], { nodeArgs })
const ports = await runningPorts(pc, 30_000)
const webPort = ports.ports.web!
const tcpPort = ports.ports.tcp!
const adminPort = ports.admin!
const pid = pc.child.pid!
let crashes = 0
let stopping = false
pc.child.on("exit", (code, signal) => {
  if (!stopping) {
    crashes++
    console.error(`Portcullis exited during the soak: code ${code} signal ${signal}\n${pc.output().slice(-4000)}`)
  }
})
console.log(
  `soak: ${MINUTES} min, pid ${pid}, web ${webPort}, tcp ${tcpPort}, admin ${adminPort}; reload every 60 s, a backend killed every ${KILL_EVERY_MS / 1000} s for ${DOWN_MS / 1000} s, warm-up ${WARMUP_MS / 1000} s`,
)

// --- the clients ----------------------------------------------------------------------------------------------------

interface Counts {
  done: number
  failed: number
  failedSafe: number
  clientRetries: number
  examples: string[]
}
const counts: Record<string, Counts> = {}
for (const p of ["http1", "http2", "websocket", "tcp", "fuzz-h1", "fuzz-h2"]) {
  counts[p] = { done: 0, failed: 0, failedSafe: 0, clientRetries: 0, examples: [] }
}
let nextId = 0
const deadline = Date.now() + RUN_MS
const running = () => Date.now() < deadline && crashes === 0
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * fail records a failed request. It was safe to retry (RFC 9110 §9.2.2) when it is idempotent (GET, and a WebSocket
 * upgrade is a GET) and no backend had begun to answer it, or when no backend received it at all: Portcullis retries
 * those on the other backend, so such a failure counts apart and must not happen. A POST that reached a backend
 * which then died is not retried (it may have acted on it): an ordinary failure.
 */
function fail(protocol: string, id: string, why: string, idempotent = true): void {
  const c = counts[protocol]!
  if (answered.has(id) || (!idempotent && seen.has(id))) c.failed++
  else if (protocol === "tcp" && takeKilledUnread()) {
    // The backend had accepted the connection (so the tcp engine's connect succeeded, and what the client sent was
    // on its way) and was killed before reading it: an established L4 connection is not retried, by us or HAProxy.
    c.failed++
    if (c.examples.length < 10)
      c.examples.push(`${new Date().toISOString()} ${why.trim()} (backend killed before reading it)`)
  } else if (!idempotent) {
    // Not seen by a backend: it may still have been written to one that died before reading it; Portcullis cannot
    // tell, so does not retry a POST it has sent. Counted as an ordinary failure, shown with the examples.
    c.failed++
    if (c.examples.length < 10) c.examples.push(`${new Date().toISOString()} POST ${why.trim()} (no backend read it)`)
  } else {
    c.failedSafe++
    if (c.examples.length < 10)
      c.examples.push(`${new Date().toISOString()} ${why.trim()} (a backend saw it: ${seen.has(id)})`)
  }
}
/**
 * takeKilledUnread: one tcp connection a kill destroyed before the backend read from it, if any is unaccounted; or
 * a failure within 2 s of a kill (a connection still in the backend's accept queue is reset by the kernel when the
 * listener closes: the engine's connect had succeeded, the server never saw a socket).
 */
function takeKilledUnread(): boolean {
  if (Date.now() - lastKillAt < 2_000) return true
  for (const b of tcpBackends) {
    if (b.killedUnread > 0) {
      b.killedUnread--
      return true
    }
  }
  return false
}

function forget(id: string): void {
  seen.delete(id)
  answered.delete(id)
}

/**
 * clientRetryable: the proxy closed a reused keep-alive connection (or sent GOAWAY) before any response: as browsers,
 * curl and undici do, the client tries once more on a new connection (RFC 9112 §9.3.1, RFC 9113 §6.8).
 */
function clientRetryable(err: NodeJS.ErrnoException, reused: boolean): boolean {
  const code = err.code ?? ""
  if (code === "ERR_HTTP2_GOAWAY_SESSION" || code === "ERR_HTTP2_STREAM_CANCEL" || /REFUSED_STREAM/.test(err.message))
    return true
  return reused && (code === "ECONNRESET" || code === "EPIPE" || err.message === "socket hang up")
}

const agent = new https.Agent({ keepAlive: true, maxSockets: 8, rejectUnauthorized: false })

function h1Once(id: string, post: boolean): Promise<{ status: number; body: string; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const body = post ? `payload ${id} `.repeat(20) : undefined
    const req = https.request(
      {
        host: "127.0.0.1",
        port: webPort,
        servername: "localhost",
        agent,
        method: post ? "POST" : "GET",
        path: nextId % 3 === 0 ? "/a/x" : "/",
        headers: { host: "localhost", "x-soak-id": id, ...(body ? { "content-length": body.length } : {}) },
      },
      (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (d: string) => {
          text += d
        })
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text, reused: req.reusedSocket }))
        res.on("error", reject)
      },
    )
    req.setTimeout(20_000, () => req.destroy(new Error("timed out")))
    req.on("error", (err: NodeJS.ErrnoException) => {
      ;(err as NodeJS.ErrnoException & { reused?: boolean }).reused = req.reusedSocket
      reject(err)
    })
    req.end(body)
  })
}

/**
 * requestLoop sends requests one after another (every fifth a POST, which is not safe to retry) and checks each
 * echoed body; a request the client may resend (retryable: it never reached a backend) is resent once.
 */
async function requestLoop(
  protocol: "http1" | "http2",
  once: (id: string, post: boolean) => Promise<{ status: number; body: string }>,
  retryable: (id: string, err: NodeJS.ErrnoException & { reused?: boolean }) => boolean,
): Promise<void> {
  const prefix = protocol === "http1" ? "h1" : "h2"
  while (running()) {
    const id = `${prefix}-${nextId++}`
    const post = nextId % 5 === 0
    const expect = post ? `payload ${id} `.repeat(20) : "hello from soak\n"
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await once(id, post)
        if (r.status === 200 && r.body === expect) counts[protocol]!.done++
        else fail(protocol, id, `status ${r.status} ${r.body.slice(0, 80)}`, !post)
        break
      } catch (err) {
        const e = err as NodeJS.ErrnoException & { reused?: boolean }
        if (attempt === 0 && retryable(id, e)) {
          counts[protocol]!.clientRetries++
          continue
        }
        fail(protocol, id, `${e.code ?? ""} ${e.message}`, !post)
        break
      }
    }
    forget(id)
    await pause(PACE_MS)
  }
}

/** h1Loop: HTTP/1.1 keep-alive requests; resent once when no backend answered and the client may (clientRetryable). */
function h1Loop(): Promise<void> {
  return requestLoop("http1", h1Once, (id, e) => !answered.has(id) && clientRetryable(e, e.reused === true))
}

let session: http2.ClientHttp2Session | undefined
function h2Session(): http2.ClientHttp2Session {
  if (session === undefined || session.closed || session.destroyed) {
    const s = http2.connect(`https://127.0.0.1:${webPort}`, { servername: "localhost", rejectUnauthorized: false })
    s.on("error", () => {})
    s.on("goaway", () => {
      if (session === s) session = undefined
    })
    s.on("close", () => {
      if (session === s) session = undefined
    })
    session = s
  }
  return session
}

function h2Once(id: string, post: boolean): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const body = post ? `payload ${id} `.repeat(20) : undefined
    let stream: http2.ClientHttp2Stream
    try {
      stream = h2Session().request({
        ":method": post ? "POST" : "GET",
        ":path": "/",
        ":authority": "localhost",
        "x-soak-id": id,
      })
    } catch (err) {
      reject(err)
      return
    }
    let status = 0
    let text = ""
    stream.setEncoding("utf8")
    stream.on("response", (h) => {
      status = Number(h[":status"])
    })
    stream.on("data", (d: string) => {
      text += d
    })
    stream.on("end", () => resolve({ status, body: text }))
    stream.on("error", reject)
    stream.on("close", () => {
      if (stream.rstCode !== undefined && stream.rstCode !== 0 && status === 0) {
        const err = new Error(`stream reset ${stream.rstCode}`) as NodeJS.ErrnoException
        if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) err.code = "ERR_HTTP2_STREAM_CANCEL"
        reject(err)
      }
    })
    stream.setTimeout(20_000, () => stream.destroy(new Error("timed out")))
    stream.end(body)
  })
}

/** h2Loop: HTTP/2 requests on one session; a resend (no backend saw the request) goes on a new session. */
function h2Loop(): Promise<void> {
  return requestLoop("http2", h2Once, (id, e) => {
    if (seen.has(id) || !clientRetryable(e, true)) return false
    session = undefined
    return true
  })
}

/** wsOnce: upgrade on a new TLS connection, five echoed messages, close. */
function wsOnce(id: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port: webPort,
      servername: "localhost",
      ALPNProtocols: ["http/1.1"],
      rejectUnauthorized: false,
    })
    let buf: Buffer = Buffer.alloc(0)
    let upgraded = false
    let echoed = 0
    const timer = setTimeout(() => socket.destroy(new Error("timed out")), 20_000)
    const finish = (err?: Error) => {
      clearTimeout(timer)
      socket.destroy()
      if (err) reject(err)
      else resolve()
    }
    socket.on("error", (err) => finish(err))
    socket.on("close", () => finish(new Error(upgraded ? `closed after ${echoed} echoes` : "closed before 101")))
    socket.on("secureConnect", () => {
      socket.write(
        `GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-soak-id: ${id}\r\n\r\n`,
      )
    })
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n")
        if (end === -1) return
        const head = buf.subarray(0, end).toString("latin1")
        if (!/^HTTP\/1\.1 101 /.test(head)) {
          finish(new Error(head.split("\r\n")[0]))
          return
        }
        upgraded = true
        buf = buf.subarray(end + 4)
        socket.write(wsFrame(`message ${id} 0`))
      }
      for (;;) {
        const f = wsParse(buf)
        if (f === undefined) break
        buf = f.rest
        if (f.payload.toString() !== `message ${id} ${echoed}`) {
          finish(new Error(`echo mismatch: ${f.payload.toString().slice(0, 40)}`))
          return
        }
        echoed++
        if (echoed === 5) {
          finish()
          return
        }
        socket.write(wsFrame(`message ${id} ${echoed}`))
      }
    })
  })
}

async function wsLoop(): Promise<void> {
  while (running()) {
    const id = `ws-${nextId++}`
    try {
      await wsOnce(id)
      counts.websocket!.done++
    } catch (err) {
      fail("websocket", id, (err as Error).message)
    }
    forget(id)
    await pause(PACE_MS * 5)
  }
}

/** tcpOnce: the tcp listener, 4 KiB echoed through it by a tcp backend. */
function tcpOnce(id: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.concat([Buffer.from(`id:${id}\n`), Buffer.alloc(4096, 0x61)])
    const socket = tls.connect({ host: "127.0.0.2", port: tcpPort, servername: "localhost", rejectUnauthorized: false })
    let got = 0
    const parts: Buffer[] = []
    const timer = setTimeout(() => socket.destroy(new Error("timed out")), 20_000)
    const finish = (err?: Error) => {
      clearTimeout(timer)
      socket.destroy()
      if (err) reject(err)
      else resolve()
    }
    socket.on("secureConnect", () => socket.write(payload))
    socket.on("data", (d: Buffer) => {
      parts.push(d)
      got += d.length
      if (got >= payload.length) {
        if (Buffer.concat(parts).equals(payload)) finish()
        else finish(new Error("tcp echo mismatch"))
      }
    })
    socket.on("error", (err) => finish(err))
    socket.on("close", () => finish(new Error(`closed after ${got} of ${payload.length} bytes`)))
  })
}

async function tcpLoop(): Promise<void> {
  while (running()) {
    const id = `tcp-${nextId++}`
    try {
      await tcpOnce(id)
      counts.tcp!.done++
    } catch (err) {
      fail("tcp", id, (err as Error).message)
    }
    forget(id)
    await pause(PACE_MS * 2)
  }
}

/** The fuzzers' cases count as done when they end without the case's own check failing; they are not judged. */
async function fuzzLoop(name: "fuzz-h1" | "fuzz-h2", seed: number): Promise<void> {
  for (let index = 0; running(); index++) {
    const rng = new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0)
    try {
      if (name === "fuzz-h1") await h1Case(rng, webPort, index)
      else await h2Case(rng, webPort)
      counts[name]!.done++
    } catch {
      counts[name]!.failed++
    }
    await pause(PACE_MS * 2)
  }
}

// --- reloads, kills, RSS --------------------------------------------------------------------------------------------

const reloads = { ok: 0, refused: 0, unexpected: [] as string[] }
async function reload(n: number): Promise<void> {
  const bad = n % 3 === 2
  const variant = bad ? "bad" : n % 2 === 0 ? "b" : "a"
  writeFileSync(configPath, config(variant))
  const status = await new Promise<number>((resolve) => {
    const req = http.request({ host: "127.0.0.3", port: adminPort, method: "POST", path: "/reload" }, (res) => {
      res.resume()
      res.on("end", () => resolve(res.statusCode ?? 0))
    })
    req.on("error", () => resolve(0))
    req.setTimeout(30_000, () => req.destroy())
    req.end()
  })
  if (status === 200) reloads.ok++
  else if (status === 422) reloads.refused++
  if ((bad && status !== 422) || (!bad && status !== 200))
    reloads.unexpected.push(`reload ${n} (${variant}): ${status}`)
  // The file holds a good config again, as an operator's would after a refused reload.
  if (bad) writeFileSync(configPath, config(n % 2 === 0 ? "b" : "a"))
}

/** One sample: RSS from /proc, the rest from the admin API's /metrics (the process memory gauges). */
interface Sample {
  at: number
  mib: number
  heapMib?: number
  heapTotalMib?: number
  newSpaceMib?: number
  externalMib?: number
  buffersMib?: number
  draining?: number
  /** malloc's main arena: the [heap] mapping's resident size (MiB) */
  arenaMib?: number
}
const rss: Sample[] = []
async function sampleRss(): Promise<void> {
  let kb: number
  try {
    kb = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0)
  } catch {
    return // gone: counted as a crash
  }
  const sample: Sample = { at: (Date.now() - started) / 1000, mib: kb / 1024, arenaMib: mainArenaMib() }
  rss.push(sample)
  const text = await new Promise<string>((resolve) => {
    const req = http.get({ host: "127.0.0.3", port: adminPort, path: "/metrics" }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (d: string) => {
        body += d
      })
      res.on("end", () => resolve(body))
    })
    req.on("error", () => resolve(""))
    req.setTimeout(10_000, () => req.destroy())
  })
  const gauge = (name: string) => {
    const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text)
    return m ? Number(m[1]) : undefined
  }
  const mib = (v: number | undefined) => (v === undefined ? undefined : v / 1048576)
  sample.heapMib = mib(gauge("nodejs_heap_size_used_bytes"))
  sample.heapTotalMib = mib(gauge("nodejs_heap_size_total_bytes"))
  sample.newSpaceMib = mib(gauge('nodejs_heap_space_size_total_bytes\\{space="new"\\}'))
  sample.externalMib = mib(gauge("nodejs_external_memory_bytes"))
  sample.buffersMib = mib(gauge("nodejs_array_buffers_bytes"))
  sample.draining = gauge("portcullis_config_generations_draining")
}

/** mainArenaMib: the resident size of the [heap] mapping (glibc's main arena), or undefined when unreadable. */
function mainArenaMib(): number | undefined {
  try {
    const smaps = readFileSync(`/proc/${pid}/smaps`, "utf8")
    const at = smaps.indexOf(" [heap]\n")
    if (at < 0) return undefined
    const rss = /\nRss:\s+(\d+) kB/.exec(smaps.slice(at, at + 400))
    return rss ? Number(rss[1]) / 1024 : undefined
  } catch {
    return undefined
  }
}

const started = Date.now()
await sampleRss()
let reloadN = 0
const reloadTimer = setInterval(() => {
  if (on("reload")) void reload(reloadN++)
}, RELOAD_EVERY_MS)
const sampleTimer = setInterval(() => void sampleRss(), SAMPLE_EVERY_MS)
let killN = 0
let lastKillAt = 0
const kills: string[] = []
const killTimer = setInterval(() => {
  if (!on("kill")) return
  const i = killN++ % 2
  lastKillAt = Date.now()
  httpBackends[i]!.kill()
  tcpBackends[i]!.kill()
  kills.push(`${((Date.now() - started) / 1000).toFixed(0)} s: backend ${i} killed`)
  setTimeout(() => {
    void Promise.all([httpBackends[i]!.start(), tcpBackends[i]!.start()]).catch((err: Error) =>
      kills.push(`restart of backend ${i} failed: ${err.message}`),
    )
  }, DOWN_MS)
}, KILL_EVERY_MS)

const fuzzSeedH1 = Number(process.env.PC_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32))
const fuzzSeedH2 = (fuzzSeedH1 ^ 0x5bd1e995) >>> 0
console.log(`fuzzers: h1 seed ${fuzzSeedH1}, h2 seed ${fuzzSeedH2} (PC_FUZZ_SEED=${fuzzSeedH1} repeats them)`)
const progress = setInterval(() => {
  const m = rss.at(-1)
  console.log(
    `${((Date.now() - started) / 60_000).toFixed(1)} min: RSS ${m?.mib.toFixed(1)} MiB; ${Object.entries(counts)
      .map(([p, c]) => `${p} ${c.done}/${c.failed}/${c.failedSafe}`)
      .join(", ")}; reloads ${reloads.ok} ok ${reloads.refused} refused`,
  )
}, 60_000)

/** untilDeadline keeps the soak running its full time when --only leaves no client loop. */
async function untilDeadline(): Promise<void> {
  while (running()) await pause(1_000)
}
await Promise.all([
  untilDeadline(),
  ...(on("h1") ? [h1Loop(), h1Loop(), h1Loop()] : []),
  ...(on("h2") ? [h2Loop(), h2Loop()] : []),
  ...(on("ws") ? [wsLoop()] : []),
  ...(on("tcp") ? [tcpLoop()] : []),
  ...(on("fuzz-h1") ? [fuzzLoop("fuzz-h1", fuzzSeedH1)] : []),
  ...(on("fuzz-h2") ? [fuzzLoop("fuzz-h2", fuzzSeedH2)] : []),
])
clearInterval(reloadTimer)
clearInterval(sampleTimer)
clearInterval(killTimer)
clearInterval(progress)
await sampleRss()

// --- the report -----------------------------------------------------------------------------------------------------

/** slope: least-squares MiB per hour of `mib` over the samples after warm-up. */
function slope(points: readonly Sample[], mib: (p: Sample) => number): number {
  if (points.length < 2) return 0
  const n = points.length
  const mx = points.reduce((s, p) => s + p.at, 0) / n
  const my = points.reduce((s, p) => s + mib(p), 0) / n
  let num = 0
  let den = 0
  for (const p of points) {
    num += (p.at - mx) * (mib(p) - my)
    den += (p.at - mx) ** 2
  }
  return den === 0 ? 0 : (num / den) * 3600
}
/** outsideYoung: RSS less the new space V8 had committed (a sample whose scrape failed counts whole). */
const outsideYoung = (p: Sample) => p.mib - (p.newSpaceMib ?? 0)
/**
 * native: RSS less the V8 heap committed and external memory (Buffers, which wait for a major GC like the old
 * space's garbage): what OpenSSL, nghttp2, zlib, libuv and malloc hold. A native leak grows this.
 */
const native = (p: Sample) => p.mib - (p.heapTotalMib ?? 0) - (p.externalMib ?? 0)
const afterWarmup = rss.filter((p) => p.at * 1000 >= WARMUP_MS)
const rawSlope = slope(afterWarmup, (p) => p.mib)
const rssSlope = slope(afterWarmup, outsideYoung)
const heapSlope = slope(afterWarmup, (p) => p.heapMib ?? 0)
const nativeSlope = slope(afterWarmup, native)
const arenaSlope = slope(afterWarmup, (p) => p.arenaMib ?? 0)
const lines: string[] = []
lines.push(`\nsoak: ${MINUTES} min through one Portcullis (pid ${pid})`)
lines.push(`crashes: ${crashes}`)
lines.push(`activities: ${[...only].join(", ")}`)
lines.push(
  semiSpace === undefined
    ? `V8 young generation: V8's own sizing (Portcullis's defaults)${nodeArgs.length ? `; node flags ${nodeArgs.join(" ")}` : ""}`
    : `V8 young generation: fixed, ${nodeArgs.join(" ")}`,
)
lines.push(
  "RSS (MiB) every 30 s, with the JS heap used and committed (of it new space), external memory, ArrayBuffers, native (RSS less heap committed and external; MiB), malloc's main arena of it, and draining generations:",
)
const top = Math.max(...rss.map((p) => p.mib))
const f = (v: number | undefined) => (v === undefined ? "-" : v.toFixed(1)).padStart(6)
for (const p of rss) {
  lines.push(
    `  ${p.at.toFixed(0).padStart(5)} s ${p.mib.toFixed(1).padStart(7)}  heap ${f(p.heapMib)} of ${f(p.heapTotalMib)} (new ${f(p.newSpaceMib)}) ext ${f(p.externalMib)} ab ${f(p.buffersMib)} native ${f(native(p))} arena ${f(p.arenaMib)} gens ${p.draining ?? "-"} ${"#".repeat(Math.round((p.mib / top) * 40))}`,
  )
}
lines.push(
  `RSS at each minute (MiB): ${rss
    .filter((p) => Math.round(p.at / 30) % 2 === 0)
    .map((p) => p.mib.toFixed(0))
    .join(" ")}`,
)
lines.push(`slopes after warm-up (${WARMUP_MS / 1000} s, ${afterWarmup.length} samples), MiB/hour:`)
lines.push(
  `  RSS outside the young generation ${rssSlope.toFixed(1)} (limit ${MAX_SLOPE_MIB_PER_HOUR}); RSS ${rawSlope.toFixed(1)}; JS heap used ${heapSlope.toFixed(1)}; native ${nativeSlope.toFixed(1)} (malloc main arena ${arenaSlope.toFixed(1)})`,
)
lines.push("requests: done / failed (a backend had begun to answer) / failed but safe to retry / client retries")
for (const [p, c] of Object.entries(counts)) {
  lines.push(`  ${p.padEnd(10)} ${c.done} / ${c.failed} / ${c.failedSafe} / ${c.clientRetries}`)
  for (const e of c.examples) lines.push(`      ${e}`)
}
lines.push(
  `reloads: ${reloads.ok} ok, ${reloads.refused} refused${reloads.unexpected.length ? `; unexpected: ${reloads.unexpected.join("; ")}` : ""}`,
)
lines.push(`backend kills: ${kills.length ? kills.join("; ") : "none"}`)
const judged = ["http1", "http2", "websocket", "tcp"]
const problems: string[] = []
if (crashes > 0) problems.push(`${crashes} crash(es)`)
if (rssSlope > MAX_SLOPE_MIB_PER_HOUR)
  problems.push(`RSS (outside the young generation) slope ${rssSlope.toFixed(1)} MiB/hour`)
for (const p of judged)
  if (counts[p]!.failedSafe > 0) problems.push(`${p}: ${counts[p]!.failedSafe} failed but safe to retry`)
const judgedOn: Record<string, boolean> = { http1: on("h1"), http2: on("h2"), websocket: on("ws"), tcp: on("tcp") }
for (const p of judged) if (judgedOn[p] && counts[p]!.done === 0) problems.push(`${p}: no request done`)
if (reloads.unexpected.length > 0) problems.push(`${reloads.unexpected.length} reload(s) with the wrong outcome`)
if (on("reload") && reloads.ok + reloads.refused === 0 && MINUTES >= 2) problems.push("no reload ran")
lines.push(problems.length ? `FAILED: ${problems.join("; ")}` : "PASSED")
console.log(lines.join("\n"))

stopping = true
agent.destroy()
session?.destroy()
await pc.stop()
for (const b of [...httpBackends, ...tcpBackends]) b.kill()
process.exit(problems.length ? 1 : 0)
