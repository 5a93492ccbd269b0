/** @module h2load: runs h2load (HTTP/1.1 or HTTP/2 over TLS) for W2/W3/W4, with the proxy's CPU read at the window edges. */
import { spawn } from "node:child_process"
import { setTimeout as sleep } from "node:timers/promises"
import { EXPECTED_CIPHER } from "../clients/tls-worker.ts"
import { clientSockets, cpuSeconds } from "./proc.ts"

/** H2loadResult is one h2load measurement with its checks. */
export interface H2loadResult {
  done: number
  seconds: number
  dataBytes: number
  proxyCpu: number
  connections: number
  tls: { protocol?: string; cipher?: string; alpn?: string }
  problems: string[]
  raw: string
}

/** H2loadOptions are the load's shape: protocol, path, clients, streams per client, durations. */
export interface H2loadOptions {
  port: number
  proxyPid: number
  path: string
  expectedBody: number
  h1: boolean
  clients: number
  streams: number
  seconds: number
}

function args(o: H2loadOptions, seconds: number): string[] {
  return [
    ...(o.h1 ? ["--h1"] : []),
    "-c",
    String(o.clients),
    "-m",
    String(o.streams),
    "-t",
    "1",
    "-D",
    String(seconds),
    `--tls13-ciphers=${EXPECTED_CIPHER}`,
    "--groups=X25519",
    `https://127.0.0.1:${o.port}${o.path}`,
  ]
}

const num = (re: RegExp, text: string) => {
  const m = re.exec(text)
  return m ? Number(m[1]) : Number.NaN
}

/**
 * runH2load runs one h2load for o.seconds, under `stdbuf -oL` so that its progress lines arrive as they happen, not
 * at exit. The proxy's CPU is read when h2load says its main duration started and when it says it is over; the set of client sockets is read 1 s in and 0.3 s before the end and must be the same o.clients
 * connections (no reconnects).
 */
export async function runH2load(o: H2loadOptions): Promise<H2loadResult> {
  const child = spawn("stdbuf", ["-oL", "h2load", ...args(o, o.seconds)], { stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  let cpuStart = Number.NaN
  let cpuEnd = Number.NaN
  let tStart = 0
  let tEnd = 0
  let socketsMid: Set<number> | undefined
  let socketsEnd: Set<number> | undefined
  let midTimer: NodeJS.Timeout | undefined
  let lateTimer: NodeJS.Timeout | undefined
  const lines = (chunk: string) => {
    out += chunk
    if (Number.isNaN(cpuStart) && out.includes("Main benchmark duration is started")) {
      cpuStart = cpuSeconds(o.proxyPid)
      tStart = performance.now()
      midTimer = setTimeout(() => (socketsMid = clientSockets(o.port)), Math.min(1000, o.seconds * 250))
      lateTimer = setTimeout(() => (socketsEnd = clientSockets(o.port)), o.seconds * 1000 - 300)
    }
    if (Number.isNaN(cpuEnd) && out.includes("Main benchmark duration is over")) {
      cpuEnd = cpuSeconds(o.proxyPid)
      tEnd = performance.now()
    }
  }
  child.stdout.setEncoding("utf8").on("data", lines)
  let err = ""
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d))
  const deadline = (o.seconds + 30) * 1000
  const code = await Promise.race([
    new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c))),
    sleep(deadline).then(() => "timeout" as const),
  ])
  clearTimeout(midTimer)
  clearTimeout(lateTimer)
  const problems: string[] = []
  if (code === "timeout") {
    child.kill("SIGKILL")
    problems.push(`h2load did not finish within ${deadline / 1000} s`)
  } else if (code !== 0) problems.push(`h2load exited with ${code}: ${err.trim().split("\n").slice(-2).join(" | ")}`)
  const done = num(/requests: \d+ total, \d+ started, (\d+) done/, out)
  const started = num(/requests: \d+ total, (\d+) started/, out)
  const succeeded = num(/(\d+) succeeded/, out)
  const failed = num(/(\d+) failed, (\d+) errored, (\d+) timeout/, out)
  const errored = num(/\d+ failed, (\d+) errored/, out)
  const timeouts = num(/errored, (\d+) timeout/, out)
  const ok2xx = num(/status codes: (\d+) 2xx/, out)
  const dataBytes = num(/headers \(space savings [^)]*\), [^(]*\((\d+)\) data/, out)
  const tls = {
    protocol: /TLS Protocol: (\S+)/.exec(out)?.[1],
    cipher: /Cipher: (\S+)/.exec(out)?.[1],
    alpn: /Application protocol: (\S+)/.exec(out)?.[1],
  }
  if (!(done > 0)) problems.push("no request completed")
  if (succeeded !== done) problems.push(`${done - succeeded} requests did not succeed`)
  if (failed > 0 || errored > 0 || timeouts > 0)
    problems.push(`${failed} failed, ${errored} errored, ${timeouts} timed out`)
  // in-flight requests at the end have their status counted but are not "done": 2xx lies in [done, started]
  const not2xx = num(/2xx, (\d+) 3xx/, out) + num(/3xx, (\d+) 4xx/, out) + num(/4xx, (\d+) 5xx/, out)
  if (!(ok2xx >= done && ok2xx <= started)) problems.push(`${ok2xx} 2xx responses for ${done} requests done`)
  if (not2xx !== 0) problems.push(`${not2xx} responses not 2xx`)
  if (!(dataBytes >= done * o.expectedBody && dataBytes <= started * o.expectedBody)) {
    problems.push(`body bytes ${dataBytes} outside [${done} done, ${started} started] x ${o.expectedBody}`)
  }
  if (tls.protocol !== "TLSv1.3") problems.push(`TLS protocol ${tls.protocol ?? "none"}, expected TLSv1.3`)
  if (tls.cipher !== EXPECTED_CIPHER) problems.push(`cipher ${tls.cipher ?? "none"}, expected ${EXPECTED_CIPHER}`)
  const wantAlpn = o.h1 ? undefined : "h2"
  if (wantAlpn && tls.alpn !== wantAlpn) problems.push(`ALPN ${tls.alpn ?? "none"}, expected ${wantAlpn}`)
  if (Number.isNaN(cpuStart) || Number.isNaN(cpuEnd)) problems.push("h2load did not report its main duration")
  if (!socketsMid || !socketsEnd) problems.push("client connections were not sampled")
  else {
    if (socketsMid.size !== o.clients)
      problems.push(`${socketsMid.size} client connections early in the window, expected ${o.clients}`)
    const changed = [...socketsEnd].filter((p) => !socketsMid!.has(p)).length
    if (socketsEnd.size !== o.clients || changed > 0) {
      problems.push(
        `connections changed during the window (${changed} new, ${socketsEnd.size} near the end): reconnects`,
      )
    }
  }
  return {
    done,
    seconds: (tEnd - tStart) / 1000,
    dataBytes,
    proxyCpu: cpuEnd - cpuStart,
    connections: socketsEnd?.size ?? 0,
    tls,
    problems,
    raw: out,
  }
}
