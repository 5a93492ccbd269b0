/**
 * Issue 14, finding 4: TLS 1.2 client renegotiation is refused at the first attempt (SSL_OP_NO_RENEGOTIATION), and
 * what a resumed TLS 1.3 handshake hands the client (RFC 8446 §4.6.1, C.4: a client should use each ticket once).
 */
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import { after, before, test } from "node:test"
import tls from "node:tls"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"

let backend: TestBackend
let pki: Pki
let leaf: CertFiles
let pc: RunningPortcullis

before(async () => {
  backend = await startEchoBackend("echo")
  pki = await createPki()
  leaf = await pki.issue({ names: ["localhost"] })
  pc = await startPortcullis(`listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${leaf.certPath}, key: ${leaf.keyPath} }] }
    routes: [{ upstream: echo }]
upstreams:
  echo: { backends: ["127.0.0.1:${backend.port}"] }
`)
})

after(async () => {
  await pc?.close()
  await backend?.close()
  await pki?.close()
})

/** sClientRenegotiate runs openssl s_client over TLS 1.2, sends "R" (renegotiate) once connected, and collects output. */
function sClientRenegotiate(port: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${port}`, "-tls1_2", "-servername", "localhost", "-CAfile", pki.ca.certPath],
      { stdio: ["pipe", "pipe", "pipe"] },
    )
    let output = ""
    let asked = false
    const timer = setTimeout(() => child.kill(), 10_000)
    const onData = (d: Buffer) => {
      output += d.toString()
      if (!asked && output.includes("Verify return code")) {
        asked = true
        child.stdin.write("R\n")
        // s_client ends when stdin does: give the renegotiation a moment to fail or finish, then end.
        setTimeout(() => child.stdin.end(), 1_000)
      }
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    child.on("error", reject)
    child.on("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })
}

test("TLS 1.2 client renegotiation is refused at the first attempt", async () => {
  const { code, output } = await sClientRenegotiate(pc.port())
  assert.match(output, /Protocol\s*: TLSv1\.2/, output)
  assert.match(output, /RENEGOTIATING/, output)
  // OpenSSL's server answers the ClientHello with a no_renegotiation alert; s_client stops with this error.
  assert.match(output, /no renegotiation/, output)
  assert.notEqual(code, 0)
})

interface Visit {
  reused: boolean
  tickets: Buffer[]
}

/** visit makes one TLS 1.3 connection (optionally resuming), reads the server's greeting and collects tickets. */
function visit(port: number, session?: Buffer): Promise<Visit> {
  return new Promise((resolve, reject) => {
    const tickets: Buffer[] = []
    let reused = false
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: pki.ca.cert,
      minVersion: "TLSv1.3",
      ALPNProtocols: ["http/1.1"],
      session,
    })
    socket.on("session", (t: Buffer) => tickets.push(t))
    socket.once("secureConnect", () => {
      reused = socket.isSessionReused()
      socket.write("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    })
    socket.on("data", () => {})
    socket.on("error", reject)
    socket.on("close", () => resolve({ reused, tickets }))
  })
}

test("a TLS 1.3 resumption with a ticket is resumed", async () => {
  const full = await visit(pc.port())
  assert.equal(full.reused, false)
  assert.ok(full.tickets.length >= 1, `tickets after a full handshake: ${full.tickets.length}`)
  const resumed = await visit(pc.port(), full.tickets[0])
  assert.equal(resumed.reused, true)
})

// After a resumed TLS 1.3 handshake OpenSSL sends a NewSessionTicket only when the ticket callback answers 2
// ("valid, renew"); Node's own TicketCompatibilityCallback answers 1, so a plain tls.createServer sends none (issue
// 14, finding 4). Portcullis opens tickets through Node's internal ticket-key callback and answers 2
// (src/tls/ticket-callback.ts): a client that uses each ticket once (RFC 8446 §C.4) never runs out.
test("a resumed TLS 1.3 handshake hands the client a fresh ticket, which resumes in turn", async () => {
  const full = await visit(pc.port())
  let session = full.tickets[0]
  for (let i = 0; i < 3; i++) {
    const resumed = await visit(pc.port(), session)
    assert.equal(resumed.reused, true, `resumption ${i}`)
    assert.ok(resumed.tickets.length >= 1, `tickets after resumed handshake ${i}: ${resumed.tickets.length}`)
    session = resumed.tickets[0]
  }
})
