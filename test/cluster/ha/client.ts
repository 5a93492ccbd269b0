/**
 * The HA test's client, run in its own namespace: `node client.ts HOST PORT SERVERNAME CA_FILE`. Each stdin line
 * is a JSON command {version, resume, deadlineMs}: make TLS connections to HOST:PORT (one GET each) until one
 * answers 200 or the deadline passes, offering the last session this client got for that version when `resume`;
 * one JSON line on stdout says whether the session was reused, what the backend answered, and the attempts.
 */
import { readFileSync } from "node:fs"
import { createInterface } from "node:readline"
import tls from "node:tls"

const [host = "", port = "443", servername = "", caFile = ""] = process.argv.slice(2)
const ca = readFileSync(caFile)
const sessions = new Map<string, Buffer>()

interface Command {
  version: "TLSv1.2" | "TLSv1.3"
  resume: boolean
  deadlineMs: number
}

interface Attempt {
  reused: boolean
  protocol: string | null
  status: string
  body: string
}

function attempt(version: Command["version"], session: Buffer | undefined): Promise<Attempt> {
  return new Promise((resolve, reject) => {
    let reused = false
    let protocol: string | null = null
    const socket = tls.connect({
      host,
      port: Number(port),
      servername,
      ca,
      minVersion: version,
      maxVersion: version,
      ...(session && { session }),
    })
    // A SYN to an address nobody holds (the VIP between two owners) gets no answer: give up after 1 s and retry.
    const timer = setTimeout(() => socket.destroy(new Error("no answer within 1 s")), 1000)
    socket.on("session", (s: Buffer) => sessions.set(version, s))
    socket.once("secureConnect", () => {
      reused = socket.isSessionReused()
      protocol = socket.getProtocol()
      socket.write(`GET / HTTP/1.1\r\nhost: ${servername}\r\nconnection: close\r\n\r\n`)
    })
    let text = ""
    socket.on("data", (d: Buffer) => {
      text += d.toString()
    })
    socket.once("error", (err) => {
      clearTimeout(timer)
      reject(err)
    })
    socket.once("close", () => {
      clearTimeout(timer)
      resolve({ reused, protocol, status: text.slice(0, 12), body: text.slice(text.indexOf("\r\n\r\n") + 4) })
    })
  })
}

async function serve(command: Command): Promise<object> {
  const started = Date.now()
  const errors: string[] = []
  for (let attempts = 1; ; attempts++) {
    try {
      const result = await attempt(command.version, command.resume ? sessions.get(command.version) : undefined)
      if (result.status === "HTTP/1.1 200") return { ok: true, ...result, attempts, errors, ms: Date.now() - started }
      errors.push(`status ${result.status}`)
    } catch (err) {
      errors.push((err as Error).message)
    }
    if (Date.now() - started > command.deadlineMs) return { ok: false, attempts, errors, ms: Date.now() - started }
    await new Promise((r) => setTimeout(r, 100))
  }
}

console.log(JSON.stringify({ ready: true }))
const lines = createInterface({ input: process.stdin })
for await (const line of lines) console.log(JSON.stringify(await serve(JSON.parse(line) as Command)))
