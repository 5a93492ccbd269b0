/**
 * @module ticket-callback bench: server CPU per TLS handshake, full and resumed, with a fixed `ticketKeys` (Node's
 * TicketCompatibilityCallback) vs tickets from the ring through the ticket-key callback (tls/ticket-callback.ts).
 * Standalone (not part of `npm run bench`): `node bench/ticket-callback.ts [handshakes] [rounds]`. The server runs
 * in a child process and reports its own process.cpuUsage(); the client connects sequentially on loopback; the two
 * modes alternate for `rounds` rounds and the medians are printed.
 */
import { execFileSync, fork } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import tls from "node:tls"

/** callback-1: the callback answering 1 instead of 2 when opening (no renewal): the cost of the JS call alone. */
type Mode = "ticketKeys" | "callback" | "callback-1"

if (process.argv[2] === "--server") {
  const [mode, dir] = [process.argv[3] as Mode, process.argv[4]!]
  const options = { cert: readFileSync(join(dir, "c.pem")), key: readFileSync(join(dir, "k.pem")) }
  let context: tls.SecureContext
  if (mode === "ticketKeys") {
    context = tls.createSecureContext({ ...options, ticketKeys: randomBytes(48) })
    // Before: a rotation gave the contexts a new key (a reload, or setTicketKeys in place); older tickets fail.
    const native = (context as unknown as { context: { setTicketKeys(keys: Buffer): void } }).context
    process.on("message", (m) => m === "rotate" && native.setTicketKeys(randomBytes(48)))
  } else {
    const { MemoryTicketKeyRing } = await import("../src/state/ticket-keys.ts")
    const { ListenerTicketKeys } = await import("../src/tls/ticket-callback.ts")
    context = tls.createSecureContext(options)
    const ring = new MemoryTicketKeyRing()
    const keys = new ListenerTicketKeys(ring, "bench")
    keys.install(context)
    if (mode === "callback-1") {
      const native = (context as unknown as { context: { onticketkeycallback: typeof keys.callback } }).context
      native.onticketkeycallback = (name, iv, encrypt) => {
        const answer = keys.callback(name, iv, encrypt)
        return encrypt || answer[0] !== 2 ? answer : [1, answer[1], answer[2]]
      }
    }
    process.on("message", (m) => m === "rotate" && ring.rotate())
  }
  const server = net.createServer((raw) => {
    const socket = new tls.TLSSocket(raw, { isServer: true, secureContext: context })
    socket.on("error", () => {})
    socket.on("secure", () => socket.end("hi"))
  })
  server.listen(0, "127.0.0.1", () => process.send!({ port: (server.address() as net.AddressInfo).port }))
  process.on("message", (m) => m === "cpu" && process.send!({ cpu: process.cpuUsage() }))
} else {
  const n = Number(process.argv[2] ?? 300)
  const rounds = Number(process.argv[3] ?? 3)
  const results = new Map<string, { rate: number[]; cpu: number[]; full: number[] }>()
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const dir = mkdtempSync(join(tmpdir(), "pc-bench-tickets-"))
  execFileSync(
    "openssl",
    [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
      ...["-keyout", join(dir, "k.pem"), "-out", join(dir, "c.pem"), "-subj", "/CN=localhost", "-days", "1"],
    ],
    { stdio: "ignore" },
  )
  const one = (port: number, version: "TLSv1.2" | "TLSv1.3", session?: Buffer) =>
    new Promise<{ reused: boolean; session: Buffer | undefined }>((resolve, reject) => {
      let last: Buffer | undefined
      let reused = false
      const s = tls.connect({
        host: "127.0.0.1",
        port,
        rejectUnauthorized: false,
        minVersion: version,
        maxVersion: version,
        ...(session && { session }),
      })
      s.on("session", (t: Buffer) => {
        last = t
      })
      s.on("secureConnect", () => {
        reused = s.isSessionReused()
      })
      s.on("data", () => {})
      s.on("end", () => {
        last ??= s.getSession()
      })
      s.on("error", reject)
      s.on("close", () => resolve({ reused, session: last }))
    })
  for (let round = 0; round < rounds; round++)
    for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
      for (const mode of ["ticketKeys", "callback", "callback-1"] as const) {
        const child = fork(import.meta.filename, ["--server", mode, dir])
        const ask = <T>(m: string | undefined): Promise<T> =>
          new Promise((resolve) => {
            child.once("message", (reply) => resolve(reply as T))
            if (m) child.send(m)
          })
        const { port } = await ask<{ port: number }>(undefined)
        const cpu = async () => (await ask<{ cpu: NodeJS.CpuUsage }>("cpu")).cpu
        for (const kind of ["full", "resumed"] as const) {
          let session = kind === "resumed" ? (await one(port, version)).session : undefined
          const before = await cpu()
          const t0 = performance.now()
          let full = 0
          for (let i = 0; i < n; i++) {
            const r = await one(port, version, session)
            if (!r.reused) full++
            // Resumed: offer the newest ticket (with ticketKeys a resumed TLS 1.3 handshake hands over none).
            if (kind === "resumed") session = r.session ?? session
          }
          const ms = performance.now() - t0
          const used = await cpu()
          const cpuUs = used.user + used.system - before.user - before.system
          const key = `${version} ${mode.padEnd(10)} ${kind.padEnd(7)}`
          const r = results.get(key) ?? { rate: [], cpu: [], full: [] }
          r.rate.push(n / (ms / 1000))
          r.cpu.push(cpuUs / n)
          r.full.push(full)
          results.set(key, r)
        }
        child.kill()
      }
    }
  // A client resuming continuously (always the newest ticket) while the keys rotate every 25 handshakes.
  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    for (const mode of ["ticketKeys", "callback"] as const) {
      const child = fork(import.meta.filename, ["--server", mode, dir])
      const { port } = await new Promise<{ port: number }>((resolve) =>
        child.once("message", (m) => resolve(m as { port: number })),
      )
      let { session } = await one(port, version)
      let full = 0
      let rotations = 0
      for (let i = 1; i <= 400; i++) {
        if (i % 25 === 0) {
          child.send("rotate")
          rotations++
        }
        const r = await one(port, version, session)
        if (!r.reused) full++
        session = r.session ?? session
      }
      child.kill()
      console.log(
        `${version} ${mode.padEnd(10)} continuous: 400 handshakes across ${rotations} rotations, ${full} full, ${400 - full} resumed`,
      )
    }
  }
  for (const [key, r] of [...results].sort()) {
    const rate = median(r.rate).toFixed(0).padStart(5)
    const cpu = median(r.cpu).toFixed(0).padStart(5)
    console.log(
      `${key} ${rate} handshakes/s  server CPU ${cpu} µs/handshake  full ${Math.max(...r.full)}/${n} (median of ${rounds})`,
    )
  }
  rmSync(dir, { recursive: true, force: true })
}
