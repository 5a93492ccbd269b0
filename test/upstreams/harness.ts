/** Backends for the upstream end-to-end tests: ones that flip health, fail on purpose, die abruptly and come back. */
import http from "node:http"
import type net from "node:net"
import { AdminApi } from "../../src/admin/api.ts"
import { silentLogger } from "../../src/core/log.ts"
import type { RunningPortcullis } from "../helpers/portcullis.ts"

/** Mode: how a FlakyBackend answers requests other than /healthz. */
export type Mode = "ok" | "500" | "reset" | "half"

export interface FlakyBackend {
  name: string
  port: number
  /** Requests seen (not counting /healthz), by path without the query. */
  hits: Map<string, number>
  /** Total requests seen (not counting /healthz). */
  total: () => number
  /** /healthz answers 200 when true, 503 when false. */
  healthy: boolean
  mode: Mode
  /** kill closes the server and destroys every open connection at once, like a crashed process. */
  kill: () => Promise<void>
  /** revive listens again on the same port. */
  revive: () => Promise<void>
}

/**
 * startFlakyBackend serves on 127.0.0.1:
 *   /healthz          200 "ok" or 503 by `healthy`
 *   /slow?ms=N        answers "slow NAME" after N ms
 *   /echo             JSON { name, method, bodyLength }
 *   anything else     "NAME"
 * and, by `mode`: "500" answers every request 500; "reset" destroys the connection once the request is read; "half"
 * sends headers and part of the body, then destroys the connection.
 */
export async function startFlakyBackend(name: string): Promise<FlakyBackend> {
  const sockets = new Set<net.Socket>()
  let server: http.Server | undefined
  const backend: FlakyBackend = {
    name,
    port: 0,
    hits: new Map(),
    total: () => [...backend.hits.values()].reduce((a, b) => a + b, 0),
    healthy: true,
    mode: "ok",
    kill: async () => {
      const s = server
      server = undefined
      if (!s) return
      const closed = new Promise<void>((r) => s.close(() => r()))
      for (const socket of sockets) socket.destroy()
      await closed
    },
    revive: async () => {
      server = make()
      await listen(server, backend.port)
    },
  }
  const make = () => {
    const s = http.createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x")
      if (url.pathname === "/healthz") {
        res.statusCode = backend.healthy ? 200 : 503
        res.end(backend.healthy ? "ok" : "unhealthy")
        return
      }
      backend.hits.set(url.pathname, (backend.hits.get(url.pathname) ?? 0) + 1)
      let length = 0
      req.on("data", (c: Buffer) => {
        length += c.length
      })
      req.on("end", () => {
        if (backend.mode === "reset") {
          req.socket.destroy()
          return
        }
        if (backend.mode === "half") {
          res.writeHead(200, { "content-length": 2000 })
          res.write(Buffer.alloc(1000, "y"), () => req.socket.destroy())
          return
        }
        if (backend.mode === "500") {
          res.statusCode = 500
          res.end(`${name} failed`)
          return
        }
        if (url.pathname === "/slow") {
          const t = setTimeout(() => res.end(`slow ${name}`), Number(url.searchParams.get("ms") ?? 0))
          res.on("close", () => clearTimeout(t))
          return
        }
        if (url.pathname === "/echo") {
          res.setHeader("content-type", "application/json")
          res.end(JSON.stringify({ name, method: req.method, bodyLength: length }))
          return
        }
        res.end(name)
      })
    })
    s.on("connection", (socket: net.Socket) => {
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
    })
    return s
  }
  server = make()
  backend.port = await listen(server, 0)
  return backend
}

function listen(server: http.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, "127.0.0.1", () => {
      const a = server.address()
      resolve(typeof a === "object" && a ? a.port : 0)
    })
  })
}

/** startAdmin serves the admin API for an in-process Portcullis on a free loopback port. */
export async function startAdmin(pc: RunningPortcullis): Promise<AdminApi> {
  const admin = new AdminApi(
    { host: "127.0.0.1", port: 0 },
    {
      status: () => pc.runtime.status(),
      reload: async () => {},
      drain: (upstream, backend, on) => pc.runtime.drain(upstream, backend, on),
    },
    silentLogger(),
  )
  await admin.start()
  return admin
}

/** adminCall sends one request to the admin API and parses its JSON answer. */
export async function adminCall(
  admin: AdminApi,
  method: string,
  path: string,
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`http://127.0.0.1:${admin.port}${path}`, { method })
  return { status: res.status, body: await res.json() }
}

/** upstreamStatus reads one upstream's admin status. */
export function upstreamStatus(pc: RunningPortcullis, name: string) {
  const status = pc.runtime.status()
  return status.upstreams.find((u) => u.name === name)!
}

/** sleep waits ms. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
