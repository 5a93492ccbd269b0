/**
 * @module accept-modes: how two worker processes should share a listening address, measured: one socket whose
 * handle the primary sends to both (what cluster/listen-handles.ts does; the cluster module's SCHED_NONE), one
 * socket per worker with SO_REUSEPORT (Node 24 `reusePort`), and the cluster module's round robin (the primary
 * accepts and passes each connection over IPC). Each worker answers one short HTTP response per connection; wrk
 * opens a new connection per request. Prints connections/s, CPU ms per 1000 connections (primary + workers) and
 * each worker's share. `node bench/accept-modes.ts [seconds]` (default 5). Not part of `npm run bench`.
 */
import { execFile, fork } from "node:child_process"
import cluster from "node:cluster"
import net from "node:net"
import { cpuSeconds } from "./lib/proc.ts"

const RESPONSE = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
const seconds = Number(process.argv[2] ?? 5)
const role = process.env["ACCEPT_ROLE"]

function serve(server: net.Server): void {
  let count = 0
  server.on("connection", (s) => {
    count++
    s.on("error", () => {})
    s.once("data", () => s.end(RESPONSE))
  })
  process.on("message", (m: { type?: string }) => {
    if (m?.type === "count") process.send!({ type: "count", count })
  })
}

if (role === "shared") {
  process.on("message", (m: { type?: string }, handle: unknown) => {
    if (m?.type !== "listen") return
    const server = net.createServer()
    serve(server)
    server.listen(handle as object, () => process.send!({ type: "ready" }))
  })
} else if (role === "reuseport") {
  const server = net.createServer()
  serve(server)
  server.listen({ host: "127.0.0.1", port: Number(process.env["ACCEPT_PORT"]), reusePort: true }, () =>
    process.send!({ type: "ready" }),
  )
} else if (cluster.isWorker) {
  const server = net.createServer()
  serve(server)
  server.listen({ host: "127.0.0.1", port: Number(process.env["ACCEPT_PORT"]) }, () => process.send!({ type: "ready" }))
} else {
  await main()
}

interface Worker {
  pid: number
  send: (m: unknown, h?: unknown) => void
  on: (e: "message", f: (m: { type: string; count?: number }) => void) => void
  kill: () => void
}

async function main(): Promise<void> {
  const rows: string[] = []
  for (const mode of ["shared", "reuseport", "cluster-rr"] as const) rows.push(await measure(mode))
  console.log(
    `accept modes, 2 workers, ${seconds} s each, wrk -c 8 with Connection: close (a new connection per request)`,
  )
  console.log("mode        conns/s   CPU ms/1000 conns   worker shares")
  for (const r of rows) console.log(r)
  process.exit(0)
}

function once(w: Worker, type: string): Promise<{ type: string; count?: number }> {
  return new Promise((resolve) => {
    const f = (m: { type: string; count?: number }) => {
      if (m.type === type) resolve(m)
    }
    w.on("message", f)
  })
}

async function measure(mode: "shared" | "reuseport" | "cluster-rr"): Promise<string> {
  const probe = net.createServer()
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r))
  const port = (probe.address() as net.AddressInfo).port
  probe.close()
  const workers: Worker[] = []
  let handle: { close(): void } | undefined
  if (mode === "cluster-rr") {
    cluster.schedulingPolicy = cluster.SCHED_RR
    cluster.setupPrimary({ exec: process.argv[1]!, args: [] })
    for (let i = 0; i < 2; i++) {
      const w = cluster.fork({ ACCEPT_PORT: String(port) })
      workers.push({
        pid: w.process.pid!,
        send: (m) => w.send(m as never),
        on: (e, f) => w.on(e, f),
        kill: () => w.kill(),
      })
    }
  } else {
    const h =
      mode === "shared"
        ? (
            net as unknown as { _createServerHandle: (a: string, p: number, t: number) => { close(): void } }
          )._createServerHandle("127.0.0.1", port, 4)
        : undefined
    handle = h
    for (let i = 0; i < 2; i++) {
      const c = fork(process.argv[1]!, [], {
        env: { ...process.env, ACCEPT_ROLE: mode, ACCEPT_PORT: String(port) },
        serialization: "advanced",
      })
      workers.push({
        pid: c.pid!,
        send: (m, hh) => c.send(m as never, hh as never),
        on: (e, f) => c.on(e, f),
        kill: () => c.kill(),
      })
    }
  }
  const ready = workers.map((w) => once(w, "ready"))
  if (mode === "shared") for (const w of workers) w.send({ type: "listen" }, handle)
  await Promise.all(ready)
  const pids = [process.pid, ...workers.map((w) => w.pid)]
  const cpu0 = pids.reduce((n, p) => n + (p === process.pid ? ownCpu() : cpuSeconds(p)), 0)
  const out = await new Promise<string>((resolve) =>
    execFile(
      "wrk",
      ["-t1", "-c8", `-d${seconds}s`, "-H", "Connection: close", `http://127.0.0.1:${port}/`],
      (_e, stdout) => resolve(stdout),
    ),
  )
  const cpu1 = pids.reduce((n, p) => n + (p === process.pid ? ownCpu() : cpuSeconds(p)), 0)
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0)
  const counts = await Promise.all(
    workers.map((w) => {
      const c = once(w, "count")
      w.send({ type: "count" })
      return c.then((m) => m.count ?? 0)
    }),
  )
  for (const w of workers) w.kill()
  handle?.close()
  const total = counts.reduce((a, b) => a + b, 0) || 1
  const shares = counts.map((c) => `${Math.round((100 * c) / total)}%`).join(" / ")
  const cpuMs = ((cpu1 - cpu0) * 1000 * 1000) / Math.max(1, requests)
  return `${mode.padEnd(10)}  ${String(Math.round(requests / seconds)).padStart(7)}   ${cpuMs.toFixed(1).padStart(17)}   ${shares}`
}

function ownCpu(): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}
