/**
 * What the flood tests share (issue 14): a bystander client doing ordinary requests (HTTP/1.1 and HTTP/2 in turn)
 * whose latency is compared with its own baseline from the same test, an RSS watcher on the Portcullis process, and a
 * raw HTTP/2 attacker that writes frame batches as fast as the connection takes them.
 */
import http2 from "node:http2"
import https from "node:https"
import { connectRawH2, FRAME, goawayOf } from "../helpers/h2-frames.ts"
import { rssMiB } from "./harness.ts"

/** p99 of a list of milliseconds (the largest value for fewer than 100). */
export function p99(values: readonly number[]): number {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))]!
}

/**
 * latencyBound: the p99 a bystander may reach during a flood. The machine is shared and noisy (load averages of 10
 * on 2 cores while other suites run), so the bound is generous: ten times the p99 measured just before, and never
 * under 500 ms (a rapid-reset flood, which nghttp2 ends after 1,000 streams, measured p99s of 70-350 ms against
 * baselines of 20-30 ms under such load). A flood that blocks the event loop or queues the bystander behind the
 * attacker goes past it by orders of magnitude: an unbounded one runs for the attacker's whole 10 s.
 */
export function latencyBound(baselineP99: number): number {
  return Math.max(10 * baselineP99, 500)
}

export interface BystanderResult {
  latencies: number[]
  failures: string[]
}

export interface Bystander {
  /** stop ends the loop after the request in flight and returns what it measured. */
  stop: () => Promise<BystanderResult>
}

/**
 * startBystander makes one request at a time, alternating HTTP/1.1 (a keep-alive connection) and HTTP/2 (one
 * session), and records each one's latency; an error or a status other than 200 is a failure.
 */
export function startBystander(port: number): Bystander {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false })
  const session = http2.connect(`https://127.0.0.1:${port}`, { servername: "localhost", rejectUnauthorized: false })
  session.on("error", () => {})
  const result: BystanderResult = { latencies: [], failures: [] }
  let running = true
  const h1 = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = https.get(
        { host: "127.0.0.1", port, servername: "localhost", path: "/", agent, headers: { host: "localhost" } },
        (res) => {
          res.resume()
          res.on("end", () => resolve(res.statusCode ?? 0))
          res.on("error", reject)
        },
      )
      req.setTimeout(10_000, () => req.destroy(new Error("bystander HTTP/1.1 request timed out")))
      req.on("error", reject)
    })
  const h2 = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const stream = session.request({ ":path": "/", ":authority": "localhost" })
      let status = 0
      stream.on("response", (headers) => {
        status = Number(headers[":status"])
      })
      stream.setTimeout(10_000, () => stream.destroy(new Error("bystander HTTP/2 request timed out")))
      stream.resume()
      stream.on("end", () => resolve(status))
      stream.on("error", reject)
      stream.end()
    })
  const loop = (async () => {
    for (let i = 0; running; i++) {
      const kind = i % 2 === 0 ? "HTTP/1.1" : "HTTP/2"
      const started = performance.now()
      try {
        const status = await (i % 2 === 0 ? h1() : h2())
        result.latencies.push(performance.now() - started)
        if (status !== 200) result.failures.push(`${kind}: status ${status}`)
      } catch (err) {
        result.failures.push(`${kind}: ${(err as Error).message}`)
      }
    }
  })()
  return {
    stop: async () => {
      running = false
      await loop
      agent.destroy()
      session.destroy()
      return result
    },
  }
}

/** measureBaseline runs the bystander alone for ms and returns its p99 (it must not fail either). */
export async function measureBaseline(port: number, ms = 1_500): Promise<{ p99: number; count: number }> {
  const bystander = startBystander(port)
  await new Promise((r) => setTimeout(r, ms))
  const { latencies, failures } = await bystander.stop()
  if (failures.length > 0) throw new Error(`baseline requests failed: ${failures.slice(0, 5).join("; ")}`)
  return { p99: p99(latencies), count: latencies.length }
}

export interface RssWatch {
  /** stop ends the sampling and returns the highest RSS seen, in MiB. */
  stop: () => number
}

/** watchRss samples a process's RSS every 50 ms. */
export function watchRss(pid: number): RssWatch {
  let max = rssMiB(pid)
  const timer = setInterval(() => {
    try {
      max = Math.max(max, rssMiB(pid))
    } catch {
      // the process is gone: the test's liveness check reports that
    }
  }, 50)
  return {
    stop: () => {
      clearInterval(timer)
      return max
    },
  }
}

export interface H2FloodResult {
  /** ms from the first frame to the server closing the connection, or undefined when it never did. */
  closedAfter: number | undefined
  /** The GOAWAY error code the server sent, if it sent one. */
  goaway: number | undefined
  /** Frames written before the connection closed or the flood gave up. */
  sent: number
}

/**
 * floodH2 opens a raw HTTP/2 connection and writes batch(n) (the frames numbered n.., `size` of them) as fast as the
 * socket drains, until the server closes the connection or maxMs passes. The attacker reads what the server sends
 * (so the server's replies do not back up and stop it reading, which would hide the flood).
 */
export async function floodH2(
  port: number,
  batch: (first: number, size: number) => Buffer,
  maxMs: number,
  size = 100,
): Promise<H2FloodResult> {
  const h2 = await connectRawH2(port)
  let closed = false
  const started = Date.now()
  let closedAfter: number | undefined
  void h2.closed.then(() => {
    closed = true
    closedAfter = Date.now() - started
  })
  let sent = 0
  while (!closed && Date.now() - started < maxMs) {
    const ok = h2.socket.write(batch(sent, size))
    sent += size
    if (!ok) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          h2.socket.off("drain", done)
          h2.socket.off("close", done)
          resolve()
        }
        const timer = setTimeout(done, 100)
        h2.socket.once("drain", done)
        h2.socket.once("close", done)
      })
    } else await new Promise((r) => setImmediate(r))
  }
  const goawayFrame = h2.frames.find((f) => f.type === FRAME.GOAWAY)
  h2.close()
  return { closedAfter, goaway: goawayFrame && goawayOf(goawayFrame.payload).code, sent }
}
