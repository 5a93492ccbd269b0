/** Steady load for the zero-downtime tests: wrk (HTTP/1.1 keep-alive), h2load (HTTP/2) and raw WebSockets over TLS. */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import http2 from "node:http2"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { TestContext } from "node:test"
import tls from "node:tls"
import { wsFrame, wsParse } from "../helpers/clients.ts"

/** LoadResult: what the tool counted; `failed` is every request that did not get a 2xx (errors included). */
export interface LoadResult {
  tool: string
  requests: number
  failed: number
  output: string
  /** h2client: GOAWAYs its sessions received */
  goaways?: number
  /** A one-line account for the test's diagnostics (h2client's counts, h2load's unsent requests). */
  detail?: string
}

/**
 * assertNoFailures: every tool sent requests and none failed; Node's HTTP/2 client saw a GOAWAY on both its first
 * sessions (the drain was met: each session it started on an old process got that process's GOAWAY).
 */
export function assertNoFailures(t: TestContext, results: LoadResult[]): void {
  for (const r of results) {
    t.diagnostic(`${r.tool}: ${r.requests} requests, ${r.failed} failed${r.detail ? ` (${r.detail})` : ""}`)
    assert.ok(r.requests > 0, `${r.tool} sent requests:\n${r.output}`)
    assert.equal(r.failed, 0, `${r.tool}: 0 failed requests:\n${r.output}`)
    if (r.goaways !== undefined) assert.ok(r.goaways >= 2, `node http2: both first sessions drained:\n${r.output}`)
  }
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err && !stdout) reject(new Error(`${cmd}: ${err.message}\n${stderr}`))
      else resolve(`${stdout}${stderr}`)
    })
  })
}

/**
 * wrk runs HTTP/1.1 keep-alive load for `seconds` over `connections` connections. Socket errors (connect, read,
 * write, timeout) and non-2xx/3xx responses are failures.
 */
export async function wrk(port: number, seconds: number, connections = 4): Promise<LoadResult> {
  const out = await run(
    "wrk",
    ["-t1", `-c${connections}`, `-d${seconds}s`, "--timeout", "5s", `https://127.0.0.1:${port}/`],
    (seconds + 20) * 1000,
  )
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? Number.NaN)
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  const socketErrors = errors ? errors.slice(1).reduce((n, x) => n + Number(x), 0) : 0
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0)
  return { tool: "wrk", requests, failed: socketErrors + non2xx, output: out }
}

/** h2load runs HTTP/2 load for `seconds` (`clients` connections, `streams` concurrent streams each). */
export async function h2load(port: number, seconds: number, clients = 2, streams = 4): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), "pc-h2load-"))
  const logFile = join(dir, "requests.tsv")
  try {
    const out = await run(
      "h2load",
      [
        "-D",
        String(seconds),
        "-c",
        String(clients),
        "-m",
        String(streams),
        "--log-file",
        logFile,
        `https://127.0.0.1:${port}/`,
      ],
      (seconds + 20) * 1000,
    )
    const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(out)
    if (!m) return { tool: "h2load", requests: 0, failed: Number.NaN, output: out }
    const { sentFailed, unsent } = h2loadFailures(existsSync(logFile) ? readFileSync(logFile, "latin1") : "")
    // Failures h2load counted but did not log (a request it could not even submit: Client::process_request_failure)
    // were never sent either; they are shown, not counted.
    const unlogged = Math.max(0, Number(m[5]) - sentFailed - unsent)
    const detail = `${unsent + unlogged} failed never sent (h2load's own GOAWAY race: ${unsent} logged, ${unlogged} not), ${sentFailed} failed after they were sent`
    // A 4xx/5xx h2load counted after its log stopped (the end of -D) still counts.
    const status = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out)
    const failed = Math.max(sentFailed, status ? Number(status[3]) + Number(status[4]) : 0)
    return { tool: "h2load", requests: Number(m[4]), failed, output: `${out}\n${detail}`, detail }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * h2loadFailures reads h2load's --log-file (start µs since the epoch, status, µs to the end; status -1 for a stream
 * that did not complete) and splits the failed requests into those that were sent and those that never left h2load.
 * h2load takes a request's start time when nghttp2 is about to send its HEADERS (before_frame_send_callback ->
 * record_request_time): a failed request with start 0 was never sent. That is the client's race with a graceful
 * GOAWAY: a response that ends in the same read as the GOAWAY, ahead of it, makes h2load submit its next request
 * before nghttp2 has seen the GOAWAY, and nghttp2 then closes that stream unsent, REFUSED_STREAM, "so that the
 * application can send the request again" (RFC 9113 §6.8: no new stream after a GOAWAY); h2load does not, and
 * counts it failed. No server sees such a request, so none can answer it. Every failure with a start time counts,
 * and so does every 4xx/5xx.
 */
export function h2loadFailures(log: string): { sentFailed: number; unsent: number } {
  let sentFailed = 0
  let unsent = 0
  for (const line of log.split("\n")) {
    if (line === "") continue
    const [start, status] = line.split("\t")
    const code = Number(status)
    if (code >= 200 && code < 400) continue
    if (start === "0") unsent++
    else sentFailed++
  }
  return { sentFailed, unsent }
}

/**
 * h2client runs HTTP/2 keep-alive load from Node's client as a browser behaves: `sessions` connections with
 * `streams` requests in flight each; a session that received GOAWAY takes no new request and a new connection
 * carries on. Every stream that does not end in a 200 is a failure, a refused one (RST_STREAM REFUSED_STREAM, or
 * past the final GOAWAY's last stream id) too: the engine's graceful close serves every stream sent before the
 * client saw its first GOAWAY (engine.ts closeGracefully). One refusal is the client's own and is sent again: a
 * request submitted in the same turn of the event loop as the GOAWAY was read, before its HEADERS were written,
 * is not sent at all (RFC 9113 §6.8: no new stream after a GOAWAY; nghttp2 closes it REFUSED_STREAM "so that the
 * application can send the request again", and Node emits 'frameError' for the HEADERS); it is counted in `unsent`.
 * untilDrained: after `seconds`, go on (at most 60 s more) until each of the first `sessions` got its GOAWAY, so
 * a restart or takeover slower than the run is still met under load (the process it started on drained it).
 */
export async function h2client(
  port: number,
  ca: Buffer,
  seconds: number,
  sessions = 2,
  streams = 4,
  untilDrained = false,
): Promise<LoadResult> {
  const end = Date.now() + seconds * 1000
  const cap = end + 60_000
  let goaways = 0
  let firstGone = 0
  let requests = 0
  let failed = 0
  let connections = 0
  const errors: string[] = []
  const open = (first = false) => {
    connections++
    const s = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: "localhost" })
    s.on("error", () => {})
    s.once("goaway", () => {
      ;(s as { gone?: boolean }).gone = true
      goaways++
      if (first) firstGone++
    })
    return s
  }
  const going = () => {
    const now = Date.now()
    return now < end || (untilDrained && firstGone < sessions && now < cap)
  }
  let refused = 0
  let unsent = 0
  const one = (session: http2.ClientHttp2Session, again = true): Promise<void> =>
    new Promise<void>((resolve) => {
      const req = session.request({ ":path": "/" })
      let status = 0
      let notSent = false
      req.on("frameError", (type: number) => {
        if (type === 0x1) notSent = true // HEADERS: the stream never reached the server
      })
      req.on("response", (h) => {
        status = Number(h[":status"])
      })
      req.resume()
      req.on("end", () => {
        if (status === 200) requests++
        else {
          failed++
          errors.push(`status ${status}`)
        }
      })
      let resend = false
      req.on("error", (err) => {
        if (req.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM && notSent && again) {
          unsent++
          resend = true
          return
        }
        if (req.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) refused++
        failed++
        errors.push(err.message)
      })
      req.on("close", () => {
        if (!resend) return resolve()
        const fresh = open()
        void one(fresh, false).then(() => {
          fresh.close()
          resolve()
        })
      })
    })
  await Promise.all(
    Array.from({ length: sessions }, async () => {
      let session = open(true)
      await Promise.all(
        Array.from({ length: streams }, async () => {
          while (going()) {
            if ((session as { gone?: boolean }).gone || session.closed || session.destroyed) session = open()
            await one(session)
          }
        }),
      )
      session.close()
    }),
  )
  const detail = `${requests} ok, ${failed} failed (${refused} of them refused by the server), ${unsent} never sent (the client's GOAWAY race) and sent again, over ${connections} connections, ${goaways} GOAWAYs; ${errors.slice(0, 5).join("; ")}`
  return { tool: "node http2", requests, failed, goaways, output: detail, detail }
}

/** OpenSocket is one WebSocket through the proxy: when it closed (ms since epoch) once it has. */
export interface OpenSocket {
  closedAt: () => number | undefined
  /** echo sends a text frame and resolves with the echoed text. */
  echo: (text: string) => Promise<string>
  destroy: () => void
}

/** openWebSocket upgrades one TLS connection to a WebSocket on the echo backend (its /ws echo). */
export function openWebSocket(port: number, ca: Buffer): Promise<OpenSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca, ALPNProtocols: ["http/1.1"] })
    let closedAt: number | undefined
    let buffer: Buffer = Buffer.alloc(0)
    let upgraded = false
    let onFrame: ((text: string) => void) | undefined
    socket.on("error", (err) => {
      if (!upgraded) reject(err)
    })
    socket.on("close", () => {
      closedAt = Date.now()
    })
    socket.once("secureConnect", () => {
      socket.write(
        "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      )
    })
    socket.on("data", (d: Buffer) => {
      buffer = Buffer.concat([buffer, d])
      if (!upgraded) {
        const end = buffer.indexOf("\r\n\r\n")
        if (end < 0) return
        const head = buffer.subarray(0, end).toString()
        buffer = buffer.subarray(end + 4)
        if (!head.startsWith("HTTP/1.1 101")) {
          reject(new Error(`no upgrade: ${head.split("\r\n")[0]}`))
          socket.destroy()
          return
        }
        upgraded = true
        resolve({
          closedAt: () => closedAt,
          echo: (text) =>
            new Promise((r, rej) => {
              if (closedAt !== undefined) return rej(new Error("closed"))
              onFrame = r
              socket.write(wsFrame(text))
            }),
          destroy: () => socket.destroy(),
        })
      }
      for (;;) {
        const frame = wsParse(buffer)
        if (!frame) break
        buffer = frame.rest
        if (frame.opcode === 1) onFrame?.(frame.payload.toString())
      }
    })
  })
}
