/**
 * @module latency: W7, latency at a fixed rate well below saturation. Users feel latency before throughput, so this
 * measures what a proxy adds to each request over going to the backend directly, at 5,000 keep-alive requests/s
 * (h2load --rps, per-request times from its --log-file) and at 500 new TLS connections/s (our own paced client: a
 * full handshake and one GET per connection, timed from connect() to the last response byte).
 */
import { spawn } from "node:child_process"
import { readFileSync, rmSync } from "node:fs"
import net from "node:net"
import { setTimeout as sleep } from "node:timers/promises"
import tls from "node:tls"
import { EXPECTED_CIPHER, TLS_CLIENT_OPTIONS } from "../clients/tls-worker.ts"

/** Percentiles in microseconds. */
export interface Percentiles {
  p50: number
  p99: number
  p999: number
}

/** LatencyResult is one paced run: every sample's latency (µs), the rate reached and the checks that failed. */
export interface LatencyResult {
  samples: number
  seconds: number
  rate: number
  pct: Percentiles
  problems: string[]
}

/** percentiles of a sample set (sorted in place): nearest rank. */
export function percentiles(us: number[]): Percentiles {
  us.sort((a, b) => a - b)
  const at = (q: number) => (us.length === 0 ? Number.NaN : us[Math.min(us.length - 1, Math.ceil(q * us.length) - 1)]!)
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999) }
}

/**
 * runPacedRequests: `clients` keep-alive HTTP/1.1 connections, each sending `rpsPerClient` requests a second, for
 * warm-up + seconds; latencies are the ones h2load logs after the warm-up. `url` is https (a target) or http (the
 * backend itself, the baseline).
 */
export async function runPacedRequests(o: {
  url: string
  clients: number
  rpsPerClient: number
  warmupS: number
  seconds: number
  logFile: string
}): Promise<LatencyResult> {
  const args = [
    "--h1",
    "-c",
    String(o.clients),
    "-t",
    "1",
    "--rps",
    String(o.rpsPerClient),
    "--warm-up-time",
    `${o.warmupS}s`,
    "-D",
    String(o.seconds),
    "--log-file",
    o.logFile,
    ...(o.url.startsWith("https:") ? [`--tls13-ciphers=${EXPECTED_CIPHER}`, "--groups=X25519"] : []),
    o.url,
  ]
  // h2load appends to its log file: a cell run twice (a workload listed twice in --only) would read both runs.
  rmSync(o.logFile, { force: true })
  const child = spawn("h2load", args, { stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d))
  child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d))
  const deadline = (o.warmupS + o.seconds + 30) * 1000
  const code = await Promise.race([
    new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c))),
    sleep(deadline).then(() => "timeout" as const),
  ])
  const problems: string[] = []
  if (code === "timeout") {
    child.kill("SIGKILL")
    problems.push(`h2load did not finish within ${deadline / 1000} s`)
  } else if (code !== 0) problems.push(`h2load exited with ${code}`)
  const us: number[] = []
  let bad = 0
  let first = Number.POSITIVE_INFINITY
  let last = 0
  try {
    for (const line of readFileSync(o.logFile, "utf8").split("\n")) {
      if (line === "") continue
      const [start, status, duration] = line.split("\t")
      if (status !== "200") bad++
      us.push(Number(duration))
      const t = Number(start)
      if (t < first) first = t
      if (t > last) last = t
    }
  } catch {
    problems.push("h2load wrote no log file")
  }
  const target = o.clients * o.rpsPerClient
  const seconds = us.length > 1 ? (last - first) / 1e6 : 0
  const rate = seconds > 0 ? us.length / seconds : 0
  if (us.length === 0) problems.push("no request completed")
  if (bad > 0) problems.push(`${bad} responses not 200`)
  if (
    /(\d+) failed, (\d+) errored/
      .exec(out)
      ?.slice(1)
      .some((n) => n !== "0")
  )
    problems.push("failed or errored requests")
  if (rate < target * 0.9) problems.push(`reached ${rate.toFixed(0)} req/s of the ${target} asked: saturated`)
  return { samples: us.length, seconds, rate, pct: percentiles(us), problems }
}

/**
 * runPacedConnections opens `rate` new connections a second for warm-up + seconds, each a full TLS handshake (no
 * session offered; `tls: false` for the plain backend baseline) and one GET with Connection: close, and times each
 * from connect() to the end of the response. Samples from the warm-up are dropped.
 */
export async function runPacedConnections(o: {
  port: number
  tls: boolean
  rate: number
  warmupS: number
  seconds: number
}): Promise<LatencyResult> {
  const request = Buffer.from("GET /small HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
  const secureContext = tls.createSecureContext(TLS_CLIENT_OPTIONS)
  const us: number[] = []
  let errors = 0
  let resumed = 0
  let wrong = 0
  let open = 0
  const measureFrom = performance.now() + o.warmupS * 1000
  const stopAt = measureFrom + o.seconds * 1000
  const one = () => {
    const t0 = performance.now()
    open++
    const sock = o.tls
      ? tls.connect({
          host: "127.0.0.1",
          port: o.port,
          secureContext,
          servername: "localhost",
          ALPNProtocols: ["http/1.1"],
          rejectUnauthorized: false,
        })
      : net.connect({ host: "127.0.0.1", port: o.port })
    let bytes = 0
    let status = ""
    sock.on(o.tls ? "secureConnect" : "connect", () => {
      if (o.tls && (sock as tls.TLSSocket).isSessionReused()) resumed++
      sock.write(request)
    })
    sock.on("data", (d: Buffer) => {
      if (bytes === 0) status = d.subarray(9, 12).toString("latin1")
      bytes += d.length
    })
    sock.on("error", () => errors++)
    sock.on("close", () => {
      open--
      if (bytes === 0) return
      if (status !== "200") wrong++
      if (t0 >= measureFrom) us.push((performance.now() - t0) * 1000)
    })
  }
  // Pace in 2 ms ticks, catching up on the schedule so timer lateness does not lower the rate.
  const start = performance.now()
  let sent = 0
  while (performance.now() < stopAt) {
    const due = Math.floor(((performance.now() - start) / 1000) * o.rate)
    while (sent < due) {
      one()
      sent++
    }
    await sleep(2)
  }
  const drainBy = performance.now() + 10_000
  while (open > 0 && performance.now() < drainBy) await sleep(10)
  const problems: string[] = []
  if (errors > 0) problems.push(`${errors} connection errors`)
  if (wrong > 0) problems.push(`${wrong} responses not 200`)
  if (resumed > 0) problems.push(`${resumed} handshakes resumed, expected full`)
  if (open > 0) problems.push(`${open} connections still open 10 s after the run`)
  const rate = us.length / o.seconds
  if (rate < o.rate * 0.9) problems.push(`reached ${rate.toFixed(0)} connections/s of the ${o.rate} asked: saturated`)
  return { samples: us.length, seconds: o.seconds, rate, pct: percentiles(us), problems }
}
