/** @module probe: wait until a port accepts connections, and one checked TLS GET through a target. */
import net from "node:net"
import { setTimeout as sleep } from "node:timers/promises"
import tls from "node:tls"
import { failureSummary, type Spawned } from "./proc.ts"

/** waitForPort polls 127.0.0.1:port until a TCP connect succeeds; it fails at the deadline or if proc exits. */
export async function waitForPort(port: number, deadlineMs: number, proc?: Spawned): Promise<void> {
  let exited: number | null | undefined
  void proc?.exited.then((code) => {
    exited = code
  })
  const end = Date.now() + deadlineMs
  for (;;) {
    if (exited !== undefined)
      throw new Error(`exited with ${exited} before listening: ${failureSummary(proc!.logFile)}`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => {
        s.destroy()
        resolve(true)
      })
      s.on("error", () => resolve(false))
      s.setTimeout(1000, () => {
        s.destroy()
        resolve(false)
      })
    })
    if (ok) return
    if (Date.now() > end) {
      throw new Error(
        `nothing listens on 127.0.0.1:${port} after ${deadlineMs} ms${proc ? `: ${failureSummary(proc.logFile)}` : ""}`,
      )
    }
    await sleep(50)
  }
}

/** ProbeResult is what one TLS GET saw. */
export interface ProbeResult {
  status: number
  bodyLength: number
  protocol: string | null
  fingerprint256: string | undefined
}

/** probeGet makes one TLS connection, sends GET path with Connection: close, and reads the whole response. */
export function probeGet(port: number, path: string, deadlineMs = 5000): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const sock = tls.connect({ host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false })
    const timer = setTimeout(() => {
      sock.destroy()
      reject(new Error(`probe GET ${path} on port ${port}: no complete response in ${deadlineMs} ms`))
    }, deadlineMs)
    let protocol: string | null = null
    let fingerprint256: string | undefined
    sock.on("secureConnect", () => {
      protocol = sock.getProtocol()
      fingerprint256 = sock.getPeerCertificate().fingerprint256
      sock.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`)
    })
    sock.on("data", (d: Buffer) => chunks.push(d))
    sock.on("error", (err) => {
      clearTimeout(timer)
      reject(new Error(`probe GET ${path} on port ${port}: ${err.message}`))
    })
    sock.on("close", () => {
      clearTimeout(timer)
      const raw = Buffer.concat(chunks)
      const end = raw.indexOf("\r\n\r\n")
      const head = raw.subarray(0, end < 0 ? raw.length : end).toString("latin1")
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0)
      const bodyLength = end < 0 ? 0 : decodedLength(head, raw.subarray(end + 4))
      resolve({ status, bodyLength, protocol, fingerprint256 })
    })
  })
}

/** decodedLength is the body length, decoding a chunked body when the head says so. */
function decodedLength(head: string, body: Buffer): number {
  if (!/\r\ntransfer-encoding:\s*chunked/i.test(head)) return body.length
  let total = 0
  let pos = 0
  for (;;) {
    const eol = body.indexOf("\r\n", pos)
    if (eol < 0) return total
    const size = Number.parseInt(body.subarray(pos, eol).toString("latin1"), 16)
    if (!Number.isFinite(size) || size === 0) return total
    total += size
    pos = eol + 2 + size + 2
  }
}
