/** Test backends on 127.0.0.1: an HTTP echo server with slow, big, upload and status endpoints, and a WebSocket echo. */
import { createHash } from "node:crypto"
import http from "node:http"
import type net from "node:net"

export interface TestBackend {
  url: string
  port: number
  /** Requests seen, newest last: method, url, headers. */
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders; rawHeaders: string[] }[]
  /** Open connections to this backend. */
  connections: () => number
  /** Body bytes /bytes has handed to its sockets so far (what a backpressure test compares with what arrived). */
  bytesSent: () => number
  /**
   * Called at the end of each stop of a slow /upload (just before it reads on) with the body bytes it has received:
   * what an upload backpressure test compares with what the client has sent.
   */
  onUploadStop: ((received: number) => void) | undefined
  close: () => Promise<void>
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const a = server.address()
      resolve(typeof a === "object" && a ? a.port : 0)
    })
  })
}

/**
 * startEchoBackend serves:
 *   /echo (any)       JSON of method, url, headers and body length
 *   /slow?ms=N        waits N ms, then answers
 *   /bytes?n=N        streams N bytes of "x" (honours backpressure)
 *   /upload           counts the request body and answers {"received": N}; with ?stop=BYTES it stops reading for
 *                     300 ms after every BYTES (a slow reader), calling onUploadStop at the end of each stop
 *   /status/NNN       answers that status
 *   /reset            destroys the connection before answering
 *   /half?n=N         sends headers and N bytes, then destroys the connection mid-body
 *   anything else     "hello from NAME"
 */
export async function startEchoBackend(name = "backend"): Promise<TestBackend> {
  const seen: TestBackend["seen"] = []
  const sockets = new Set<net.Socket>()
  let sentBytes = 0
  const backend = { onUploadStop: undefined } as Pick<TestBackend, "onUploadStop">
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, rawHeaders: req.rawHeaders })
    // A request target like "//" is no relative URL (it reads as a host-less authority): read it as a path then.
    const url = URL.parse(req.url ?? "/", "http://x") ?? URL.parse(`http://x${req.url ?? "/"}`) ?? new URL("http://x/")
    const n = Number(url.searchParams.get("n") ?? url.searchParams.get("ms") ?? 0)
    if (url.pathname === "/upload") {
      let received = 0
      const stop = Number(url.searchParams.get("stop") ?? 0)
      req.on("data", (c: Buffer) => {
        received += c.length
        if (stop > 0 && received % stop < c.length) {
          req.pause()
          setTimeout(() => {
            backend.onUploadStop?.(received)
            req.resume()
          }, 300)
        }
      })
      req.on("end", () => res.end(JSON.stringify({ received })))
      return
    }
    let length = 0
    req.on("data", (c: Buffer) => {
      length += c.length
    })
    req.on("end", () => {
      if (url.pathname === "/echo") {
        res.setHeader("content-type", "application/json")
        res.setHeader("connection", "keep-alive, x-hop")
        res.setHeader("x-hop", "must not reach the client")
        res.end(
          JSON.stringify({
            name,
            method: req.method,
            url: req.url,
            headers: req.headers,
            rawHeaders: req.rawHeaders,
            bodyLength: length,
          }),
        )
      } else if (url.pathname === "/slow") {
        const t = setTimeout(() => res.end(`slow ${name}`), n)
        res.on("close", () => clearTimeout(t))
      } else if (url.pathname === "/bytes") {
        res.writeHead(200, { "content-length": n })
        const chunk = Buffer.alloc(64 * 1024, "x")
        let left = n
        const pump = () => {
          while (left > 0) {
            const size = Math.min(left, chunk.length)
            left -= size
            sentBytes += size
            const ok = res.write(size === chunk.length ? chunk : chunk.subarray(0, size))
            if (!ok) {
              res.once("drain", pump)
              return
            }
          }
          res.end()
        }
        pump()
      } else if (url.pathname.startsWith("/status/")) {
        res.statusCode = Number(url.pathname.slice(8))
        res.end(`status ${res.statusCode}`)
      } else if (url.pathname === "/reset") {
        req.socket.destroy()
      } else if (url.pathname === "/half") {
        res.writeHead(200, { "content-length": n * 2 })
        res.write(Buffer.alloc(n, "y"), () => req.socket.destroy())
      } else {
        res.end(`hello from ${name}`)
      }
    })
  })
  server.on("connection", (s: net.Socket) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })
  addWebSocketEcho(server)
  const port = await listen(server)
  return Object.assign(backend, {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    connections: () => sockets.size,
    bytesSent: () => sentBytes,
    close: () => {
      server.closeAllConnections()
      for (const s of sockets) s.destroy()
      return new Promise<void>((r) => server.close(() => r()))
    },
  })
}

/** addWebSocketEcho answers RFC 6455 upgrades and echoes each text or binary frame back (small frames, for tests). */
export function addWebSocketEcho(server: http.Server): void {
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const key = req.headers["sec-websocket-key"]
    if (!key || String(req.headers.upgrade).toLowerCase() !== "websocket") {
      socket.end("HTTP/1.1 400 Bad Request\r\n\r\n")
      return
    }
    const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nX-Seen-Forwarded-For: ${req.headers["x-forwarded-for"]}\r\n\r\n`,
    )
    let buffered = head
    // The http server's sockets allow half-open: end ours when the proxy ends its side, or each one stays open.
    socket.on("end", () => socket.end())
    socket.on("data", (data: Buffer) => {
      buffered = Buffer.concat([buffered, data])
      for (;;) {
        if (buffered.length < 2) return
        const opcode = buffered[0]! & 0x0f
        let len = buffered[1]! & 0x7f
        let offset = 2
        if (len === 126) {
          if (buffered.length < 4) return
          len = buffered.readUInt16BE(2)
          offset = 4
        } else if (len === 127) {
          if (buffered.length < 10) return
          len = Number(buffered.readBigUInt64BE(2))
          offset = 10
        }
        const masked = (buffered[1]! & 0x80) !== 0
        const maskOffset = offset
        if (masked) offset += 4
        if (buffered.length < offset + len) return
        const payload = Buffer.from(buffered.subarray(offset, offset + len))
        if (masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= buffered[maskOffset + (i % 4)]!
        buffered = buffered.subarray(offset + len)
        if (opcode === 0x8) {
          socket.end(Buffer.from([0x88, 0]))
          return
        }
        const header =
          payload.length < 126
            ? Buffer.from([0x80 | opcode, payload.length])
            : Buffer.from([0x80 | opcode, 126, payload.length >> 8, payload.length & 0xff])
        socket.write(Buffer.concat([header, payload]))
      }
    })
    socket.on("error", () => socket.destroy())
  })
}
