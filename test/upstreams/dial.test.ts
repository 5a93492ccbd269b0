/** The one dialer: one SNI rule and one TLS session cache for the http pools, the tcp engine and health checks; the PROXY header before the ClientHello; the connect timeout. */
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import http from "node:http"
import https from "node:https"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { Dialer } from "../../src/upstreams/dial.ts"
import { request, tlsConnect } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

/** Who made a backend request: a health check, a request through the http engine, or bytes through a tcp listener. */
type Who = "health" | "http" | "tcp"

/** Seen is what a TLS backend saw of one request: who sent it, the SNI of its connection, and whether it resumed. */
interface Seen {
  who: Who
  servername: string | null
  resumed: boolean
}

interface Recorder {
  seen: Seen[]
  /** proxy headers seen, each with the byte that followed it on the wire (0x16: a TLS handshake record). */
  headers: { header: Buffer; next: number }[]
  port: number
  close: () => Promise<void>
}

function whoOf(req: http.IncomingMessage): Who {
  if (req.headers["user-agent"] === "portcullis-health-check") return "health"
  return req.url?.startsWith("/tcp") ? "tcp" : "http"
}

/** recordRequests answers every request "ok" and records who sent it on which TLS connection. */
function recordRequests(seen: Seen[]): http.RequestListener {
  return (req, res) => {
    const socket = req.socket as tls.TLSSocket
    seen.push({ who: whoOf(req), servername: socket.servername || null, resumed: socket.isSessionReused() })
    res.end("ok")
  }
}

/** startTlsBackend is an HTTPS backend that records the SNI and resumption of each request's connection. */
async function startTlsBackend(cert: CertFiles): Promise<Recorder> {
  const seen: Seen[] = []
  const sockets = new Set<net.Socket>()
  const server = https.createServer({ cert: cert.cert, key: cert.key }, recordRequests(seen))
  server.on("connection", (s: net.Socket) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })
  server.on("tlsClientError", () => {})
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return {
    seen,
    headers: [],
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise((r) => server.close(() => r()))
    },
  }
}

const V2_SIGNATURE = Buffer.from("0d0a0d0a000d0a515549540a", "hex")

/** proxyHeaderLength is the length of the PROXY header at the start of buf, or undefined while incomplete. */
function proxyHeaderLength(buf: Buffer): number | undefined {
  if (buf.length >= 16 && buf.subarray(0, 12).equals(V2_SIGNATURE)) return 16 + buf.readUInt16BE(14)
  if (buf.length >= 6 && buf.toString("latin1", 0, 6) === "PROXY ") {
    const end = buf.indexOf("\r\n")
    return end === -1 ? undefined : end + 2
  }
  if (buf.length >= 16) return 0 // no header
  return undefined
}

/**
 * startProxiedTlsBackend reads the bytes on the wire first: the PROXY header and the byte after it are recorded,
 * then the rest is served as HTTPS (as a backend behind haproxy's accept-proxy would).
 */
async function startProxiedTlsBackend(cert: CertFiles): Promise<Recorder> {
  const seen: Seen[] = []
  const headers: Recorder["headers"] = []
  const context = tls.createSecureContext({ cert: cert.cert, key: cert.key })
  // The TLS sockets made after the header are handed to a plain HTTP server (HTTP over them).
  const app = http.createServer(recordRequests(seen))
  const sockets = new Set<net.Socket>()
  const server = net.createServer((raw) => {
    sockets.add(raw)
    raw.on("close", () => sockets.delete(raw))
    raw.on("error", () => {})
    let buf = Buffer.alloc(0)
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      const length = proxyHeaderLength(buf)
      if (length === undefined || buf.length <= length) return
      raw.off("data", onData)
      raw.pause()
      headers.push({ header: Buffer.from(buf.subarray(0, length)), next: buf[length]! })
      raw.unshift(buf.subarray(length))
      const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: context })
      secure.on("error", () => {})
      app.emit("connection", secure)
    }
    raw.on("data", onData)
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return {
    seen,
    headers,
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise((r) => server.close(() => r()))
    },
  }
}

/** tcpRequest sends one HTTP request through a tcp listener and resolves with the reply. */
async function tcpRequest(listener: string, ca: string): Promise<string> {
  const socket = await tlsConnect({ host: tcpHost(listener), port: pc.port(listener), servername: "localhost", ca })
  socket.end("GET /tcp HTTP/1.1\r\nhost: tcp.client.test\r\nconnection: close\r\n\r\n")
  let reply = ""
  socket.setEncoding("utf8")
  socket.on("data", (d: string) => {
    reply += d
  })
  await new Promise<void>((resolve, reject) => {
    socket.once("close", () => resolve())
    socket.once("error", reject)
  })
  return reply
}

/** hostOf is the client-side name routed to an upstream (a virtual host of the client's, never a backend SNI). */
const hostOf = (upstream: string) => `${upstream.replace(/_/g, "-")}.client.test`

/** One tcp listener per upstream, named after it; each on its own loopback address (one port 0 per address). */
const TCP_LISTENERS = ["sni_set", "sni_name", "sni_ip", "resume_tcp", "pp_tcp"]
const tcpHost = (listener: string) => `127.0.0.${TCP_LISTENERS.indexOf(listener) + 2}`

/** The one SNI rule, as a table: what the backend sees for each way an upstream can name it. */
const SNI_CASES = [
  { name: "servername set", upstream: "sni_set", host: "127.0.0.1", servername: "backend.test", sni: "backend.test" },
  { name: "hostname backend", upstream: "sni_name", host: "localhost", servername: undefined, sni: "localhost" },
  { name: "IP backend", upstream: "sni_ip", host: "127.0.0.1", servername: undefined, sni: null },
] as const

let pki: Pki
let pc: RunningPortcullis
const backends = new Map<string, Recorder>()

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "*.client.test"] })
  const backendCert = await pki.issue({ names: ["backend.test", "localhost", "127.0.0.1"] })
  for (const c of SNI_CASES) backends.set(c.upstream, await startTlsBackend(backendCert))
  for (const name of ["resume_health", "resume_tcp"]) backends.set(name, await startTlsBackend(backendCert))
  for (const name of ["pp_http", "pp_tcp", "pp_health"]) backends.set(name, await startProxiedTlsBackend(backendCert))
  const cert = `certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]`
  const ca = `ca: ${pki.ca.certPath}`
  // One health round runs at start (start() awaits it); the long interval keeps later rounds out of the way.
  const health = "health: { path: /healthz, host: health.client.test, interval: 1h }"
  const upstream = (name: string, host: string, extra: string) =>
    `  ${name}: { backends: ["${host}:${backends.get(name)!.port}"], retries: 0, ${extra} }`

  pc = await startPortcullis(`
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { ${cert} }
    routes:
${[...SNI_CASES.map((c) => c.upstream), "resume_health", "resume_tcp", "pp_http"].map((u) => `      - { hosts: [${hostOf(u)}], upstream: ${u} }`).join("\n")}
${TCP_LISTENERS.map((u) => `  - { name: ${u}, address: "${tcpHost(u)}:0", engine: tcp, tls: { ${cert} }, upstream: ${u}${u === "pp_tcp" ? ", send_proxy_protocol: v2" : ""} }`).join("\n")}
upstreams:
${SNI_CASES.map((c) => upstream(c.upstream, c.host, `tls: { ${ca}${c.servername ? `, servername: ${c.servername}` : ""} }, ${health}`)).join("\n")}
${upstream("resume_health", "127.0.0.1", `tls: { ${ca}, servername: backend.test }, ${health}`)}
${upstream("resume_tcp", "127.0.0.1", `tls: { ${ca}, servername: backend.test }`)}
${upstream("pp_http", "127.0.0.1", `tls: { ${ca}, servername: backend.test }, send_proxy_protocol: v1`)}
${upstream("pp_tcp", "127.0.0.1", `tls: { ${ca}, servername: backend.test }`)}
${upstream("pp_health", "127.0.0.1", `tls: { ${ca}, servername: backend.test }, send_proxy_protocol: v2, ${health}`)}
`)
})

after(async () => {
  await pc?.close()
  for (const b of backends.values()) await b.close()
  await pki?.close()
})

describe("one SNI rule for every user of the dialer", () => {
  for (const c of SNI_CASES) {
    test(`${c.name}: the health check, the http pool and the tcp engine all send SNI ${c.sni ?? "none"}`, async () => {
      const backend = backends.get(c.upstream)!
      // The client's Host (and the health check's) names a virtual host: it must never become the backend SNI.
      const reply = await request({ port: pc.port("web"), servername: hostOf(c.upstream), ca: pki.ca.cert })
      assert.equal(reply.status, 200)
      assert.match(await tcpRequest(c.upstream, pki.ca.cert), /^HTTP\/1\.1 200 /)
      const byWho = (who: Who) => backend.seen.filter((s) => s.who === who).map((s) => s.servername)
      assert.deepEqual(
        { health: byWho("health"), http: byWho("http"), tcp: byWho("tcp") },
        { health: [c.sni], http: [c.sni], tcp: [c.sni] },
      )
    })
  }
})

describe("one TLS session cache per backend", () => {
  test("the http pool's first connection resumes the session a health check made", async () => {
    const backend = backends.get("resume_health")!
    assert.deepEqual(backend.seen, [{ who: "health", servername: "backend.test", resumed: false }])
    const reply = await request({ port: pc.port("web"), servername: hostOf("resume_health"), ca: pki.ca.cert })
    assert.equal(reply.status, 200)
    assert.deepEqual(backend.seen[1], { who: "http", servername: "backend.test", resumed: true })
  })

  test("the http pool's first connection resumes the session the tcp engine made", async () => {
    const backend = backends.get("resume_tcp")!
    assert.match(await tcpRequest("resume_tcp", pki.ca.cert), /^HTTP\/1\.1 200 /)
    const reply = await request({ port: pc.port("web"), servername: hostOf("resume_tcp"), ca: pki.ca.cert })
    assert.equal(reply.status, 200)
    assert.deepEqual(backend.seen, [
      { who: "tcp", servername: "backend.test", resumed: false },
      { who: "http", servername: "backend.test", resumed: true },
    ])
  })
})

describe("the PROXY header goes before the ClientHello on a TLS backend", () => {
  test("health check: v2 LOCAL, then the TLS handshake", () => {
    const backend = backends.get("pp_health")!
    assert.equal(backend.headers.length, 1)
    const { header, next } = backend.headers[0]!
    assert.deepEqual(header.subarray(0, 12), V2_SIGNATURE)
    assert.equal(header[12], 0x20, "version 2, command LOCAL")
    assert.equal(next, 0x16, "a TLS handshake record follows the header")
    assert.deepEqual(backend.seen, [{ who: "health", servername: "backend.test", resumed: false }])
  })

  test("http pool: v1 with the client's address, then the TLS handshake", async () => {
    const backend = backends.get("pp_http")!
    const reply = await request({ port: pc.port("web"), servername: hostOf("pp_http"), ca: pki.ca.cert })
    assert.equal(reply.status, 200)
    const ours = backend.headers.filter((h) => h.header.toString("latin1").startsWith("PROXY TCP4 127.0.0.1 "))
    assert.equal(ours.length, 1, backend.headers.map((h) => h.header.toString("latin1")).join(" | "))
    assert.equal(ours[0]!.next, 0x16)
    assert.equal(backend.seen.at(-1)?.who, "http")
  })

  test("tcp engine: v2 PROXY with the client's address, then the TLS handshake", async () => {
    const backend = backends.get("pp_tcp")!
    assert.match(await tcpRequest("pp_tcp", pki.ca.cert), /^HTTP\/1\.1 200 /)
    assert.equal(backend.headers.length, 1)
    const { header, next } = backend.headers[0]!
    assert.deepEqual(header.subarray(0, 12), V2_SIGNATURE)
    assert.equal(header[12], 0x21, "version 2, command PROXY")
    assert.equal(header[13], 0x11, "TCP over IPv4")
    assert.equal(next, 0x16)
    assert.deepEqual(backend.seen, [{ who: "tcp", servername: "backend.test", resumed: false }])
  })
})

/**
 * startNeverAccepting runs a listener (python3, backlog 0) whose accept queue is then filled, so a further connect
 * never completes: the only way to see a connect timeout on loopback.
 */
async function startNeverAccepting(): Promise<{ port: number; close: () => void }> {
  const child = spawn(
    "python3",
    [
      "-c",
      "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()",
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

/** dialOnce dials and resolves with the error (or undefined) and the time it took. */
function dialOnce(dialer: Dialer, timeout?: number): Promise<{ err: Error | undefined; ms: number }> {
  const started = performance.now()
  return new Promise((resolve) => {
    dialer.dial({ timeout }, (err, socket) => {
      socket?.destroy()
      resolve({ err: err ?? undefined, ms: performance.now() - started })
    })
  })
}

describe("connect timeout", () => {
  test("a listener that never accepts: PC_BACKEND_CONNECT_TIMEOUT after the timeout, UND_ERR_CONNECT_TIMEOUT for undici", {
    timeout: 8_000,
  }, async (t) => {
    const stuck = await startNeverAccepting()
    t.after(stuck.close)
    const dialer = new Dialer({ host: "127.0.0.1", port: stuck.port, connectTimeout: 300 })
    const { err, ms } = await dialOnce(dialer)
    assert.equal((err as { code?: string } | undefined)?.code, "PC_BACKEND_CONNECT_TIMEOUT")
    assert.match(err!.message, /^connecting to 127\.0\.0\.1:\d+: timed out after 300 ms$/)
    assert.ok(ms >= 290 && ms < 3000, `took ${ms} ms`)
    // The same dial as undici's connect function: undici's error, which retries and 504s match on.
    const undiciErr = await new Promise<Error | null>((resolve) =>
      dialer.connector({})({ hostname: "127.0.0.1", host: "127.0.0.1", protocol: "http:", port: "" }, (...args) =>
        resolve(args[0]),
      ),
    )
    assert.equal((undiciErr as { code?: string } | null)?.code, "UND_ERR_CONNECT_TIMEOUT")
  })

  test("the timeout covers the TLS handshake: a backend that accepts and never answers the ClientHello", {
    timeout: 5_000,
  }, async (t) => {
    const silent = net.createServer((s) => s.on("error", () => {}))
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r))
    t.after(() => {
      silent.close()
    })
    const accepted: net.Socket[] = []
    silent.on("connection", (s) => accepted.push(s))
    t.after(() => {
      for (const s of accepted) s.destroy()
    })
    const port = (silent.address() as net.AddressInfo).port
    const dialer = new Dialer({
      host: "127.0.0.1",
      port,
      connectTimeout: 300,
      tls: { ca: pki.ca.cert, rejectUnauthorized: true },
    })
    const { err, ms } = await dialOnce(dialer)
    assert.equal((err as { code?: string } | undefined)?.code, "PC_BACKEND_CONNECT_TIMEOUT")
    assert.ok(ms >= 290 && ms < 3000, `took ${ms} ms`)
    await waitUntil(() => accepted.length === 1, "the backend saw the connection")
  })

  test("a refused connection fails at once with the socket's ECONNREFUSED", async () => {
    const closed = net.createServer()
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r))
    const port = (closed.address() as net.AddressInfo).port
    await new Promise<void>((r) => closed.close(() => r()))
    const { err } = await dialOnce(new Dialer({ host: "127.0.0.1", port, connectTimeout: 5_000 }))
    assert.equal((err as { code?: string } | undefined)?.code, "ECONNREFUSED")
  })
})
