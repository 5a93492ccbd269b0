/**
 * Shared pieces of the hostile-input suite: Portcullis in its own process (a crash is an exit, RSS is its own), a raw
 * backend that records the bytes it receives, a raw TLS client, and the RSS of a process.
 */
import { mkdtempSync, readFileSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import tls from "node:tls"
import { type ChildPortcullis, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"

export interface ProxyProcess {
  pc: ChildPortcullis
  port: number
  pid: number
  stop: () => Promise<void>
}

/**
 * spawnProxy runs Portcullis with a self-signed localhost listener ("web") whose routes are `routes` (YAML flow
 * list) and whose upstreams are `upstreams` (name -> backend port), each with `upstreamExtra` (YAML flow keys).
 */
export async function spawnProxy(
  routes: string,
  upstreams: Record<string, number>,
  upstreamExtra = "",
): Promise<ProxyProcess> {
  const dir = mkdtempSync(join(tmpdir(), "pc-hostile-"))
  const ups = Object.entries(upstreams)
    .map(([name, port]) => `  ${name}: { backends: ["127.0.0.1:${port}"]${upstreamExtra ? `, ${upstreamExtra}` : ""} }`)
    .join("\n")
  const config = writeTemp(
    dir,
    "portcullis.yaml",
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    routes: ${routes}
upstreams:
${ups}
data_dir: ${dir}/data
`,
  )
  const pc = spawnPortcullis(["--config", config])
  let line: string
  try {
    line = await pc.waitFor(/"ports":\{"web":\d+\}/)
  } catch (err) {
    // The caller gets no handle to stop a child that did not start in time: its pipes would keep the test file's
    // process (and with it `npm test`) waiting for good.
    await pc.stop("SIGKILL")
    throw err
  }
  return {
    pc,
    port: Number(/(\d+)\}$/.exec(line)![1]),
    pid: pc.child.pid!,
    stop: async () => {
      await pc.stop()
    },
  }
}

/** rssMiB reads a process's resident set size from /proc. */
export function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0)
  return kb / 1024
}

/** A request as a raw backend saw it: the head as sent (latin1) and the body bytes it framed. */
export interface SeenRequest {
  head: string
  body: Buffer
}

export interface RawBackend {
  port: number
  /** Every byte received, per connection, in arrival order. */
  received: Buffer[]
  /** Requests framed from those bytes (Content-Length or chunked, strictly). */
  requests: SeenRequest[]
  /** Per connection: still open. */
  open: boolean[]
  /** Bytes received that do not (yet) make up a whole request, over all open connections. */
  unframed: () => number
  connections: () => number
  /** What to answer to each request; the default is a 200 with body "ok". */
  respond: (req: SeenRequest) => string | Buffer
  close: () => Promise<void>
}

/**
 * startRawBackend listens on a plain TCP port and frames requests itself (not with Node's parser, which would
 * normalise what it receives): it keeps the exact bytes, so a test can assert the backend saw exactly one
 * unambiguous request.
 */
export async function startRawBackend(): Promise<RawBackend> {
  const sockets = new Set<net.Socket>()
  const pendings = new Map<net.Socket, Buffer>()
  const backend: RawBackend = {
    port: 0,
    received: [],
    requests: [],
    open: [],
    unframed: () => {
      let n = 0
      for (const p of pendings.values()) n += p.length
      return n
    },
    connections: () => sockets.size,
    respond: () => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
  const server = net.createServer((socket) => {
    sockets.add(socket)
    const index = backend.received.length
    backend.received.push(Buffer.alloc(0))
    backend.open.push(true)
    let pending = Buffer.alloc(0)
    socket.on("close", () => {
      sockets.delete(socket)
      pendings.delete(socket)
      backend.open[index] = false
    })
    socket.on("error", () => {})
    socket.on("data", (chunk: Buffer) => {
      backend.received[index] = Buffer.concat([backend.received[index]!, chunk])
      pending = Buffer.concat([pending, chunk])
      for (;;) {
        const framed = frameRequest(pending)
        if (framed === undefined) break
        pending = pending.subarray(framed.used)
        backend.requests.push(framed.request)
        if (!socket.destroyed) socket.write(backend.respond(framed.request))
      }
      pendings.set(socket, pending)
    })
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))
  backend.port = (server.address() as net.AddressInfo).port
  return backend
}

/** frameRequest frames one request from the front of buf, or undefined when more bytes are needed. */
function frameRequest(buf: Buffer): { request: SeenRequest; used: number } | undefined {
  const end = buf.indexOf("\r\n\r\n")
  if (end === -1) return undefined
  const head = buf.subarray(0, end).toString("latin1")
  const bodyStart = end + 4
  const length = /\r\ncontent-length:\s*(\d+)/i.exec(head)
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    let at = bodyStart
    const parts: Buffer[] = []
    for (;;) {
      const lineEnd = buf.indexOf("\r\n", at)
      if (lineEnd === -1) return undefined
      const size = Number.parseInt(buf.subarray(at, lineEnd).toString("latin1"), 16)
      if (size === 0) {
        const trailerEnd = buf.indexOf("\r\n\r\n", lineEnd)
        if (trailerEnd === -1) return undefined
        return { request: { head, body: Buffer.concat(parts) }, used: trailerEnd + 4 }
      }
      if (buf.length < lineEnd + 2 + size + 2) return undefined
      parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size))
      at = lineEnd + 2 + size + 2
    }
  }
  const n = length ? Number(length[1]) : 0
  if (buf.length < bodyStart + n) return undefined
  return { request: { head, body: buf.subarray(bodyStart, bodyStart + n) }, used: bodyStart + n }
}

/** rawTls opens a TLS connection (ALPN http/1.1) to the proxy and collects what it answers. */
export function rawTls(
  port: number,
): Promise<{ socket: tls.TLSSocket; text: () => string; closed: Promise<void>; ended: () => boolean }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ALPNProtocols: ["http/1.1"],
      rejectUnauthorized: false,
    })
    let text = ""
    let ended = false
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1")
    })
    const closed = new Promise<void>((r) =>
      socket.once("close", () => {
        ended = true
        r()
      }),
    )
    socket.on("error", () => {})
    socket.once("secureConnect", () => resolve({ socket, text: () => text, closed, ended: () => ended }))
    socket.once("error", reject)
  })
}

/** settle waits until value() has not changed for quietMs (bounded by timeoutMs), and returns it. */
export async function settle(value: () => number, quietMs: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs
  let last = value()
  let since = Date.now()
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50))
    const now = value()
    if (now !== last) {
      last = now
      since = Date.now()
    } else if (Date.now() - since >= quietMs) break
  }
  return last
}

/**
 * sendRaw writes `wire` on a new TLS connection and returns what came back once the server closes it (or after
 * timeoutMs, closing it then). Requests should ask for `Connection: close` when they expect to be served.
 */
export async function sendRaw(port: number, wire: string | Buffer, timeoutMs = 5_000): Promise<string> {
  const client = await rawTls(port)
  client.socket.write(wire)
  const timer = setTimeout(() => client.socket.destroy(), timeoutMs)
  await client.closed
  clearTimeout(timer)
  return client.text()
}

/** statusOf is the status code of the first response in raw HTTP/1.1 text, or 0 for none. */
export function statusOf(text: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
  return m ? Number(m[1]) : 0
}

/** hostLines lists the Host field values of a raw request head. */
export function hostLines(head: string): string[] {
  return [...head.matchAll(/\r\nhost:[ \t]*([^\r]*)/gi)].map((m) => m[1]!)
}
