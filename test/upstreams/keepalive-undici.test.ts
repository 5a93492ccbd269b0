/**
 * `keepalive` on the pools undici carries (re-encrypting upstreams here; also send_proxy_protocol and the lean
 * client's fallback): connections in use are kept, idle ones above the cap are purged gradually (connector.ts
 * CappedPool), as on the lean pool (keepalive.test.ts).
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import https from "node:https"
import type net from "node:net"
import { after, before, describe, test } from "node:test"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

interface CountingBackend {
  port: number
  accepted: () => number
  open: () => number
  close: () => Promise<void>
}

/** An HTTPS backend that keeps idle connections a minute and counts them; /delay?ms=N and /hold?n=N as in keepalive.test.ts. */
async function startCountingHttpsBackend(cert: string, key: string): Promise<CountingBackend> {
  const sockets = new Set<net.Socket>()
  let accepted = 0
  let held: import("node:http").ServerResponse[] = []
  const server = https.createServer({ cert, key }, (req, res) => {
    const url = new URL(req.url ?? "/", "https://x")
    if (url.pathname === "/delay") {
      setTimeout(() => res.end("ok"), Number(url.searchParams.get("ms")))
      return
    }
    if (url.pathname !== "/hold") {
      res.end("ok")
      return
    }
    held.push(res)
    if (held.length >= Number(url.searchParams.get("n"))) {
      for (const r of held) r.end("held")
      held = []
    }
  })
  server.keepAliveTimeout = 60_000
  server.on("connection", (socket: net.Socket) => {
    accepted++
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    open: () => sockets.size,
    close: () => {
      server.closeAllConnections()
      return new Promise((r) => server.close(() => r()))
    },
  }
}

let pki: Pki
let pc: RunningPortcullis
let busy: CountingBackend
let one: CountingBackend

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "one.test"] })
  const backendCert = await pki.issue({ names: ["backend.test"] })
  busy = await startCountingHttpsBackend(backendCert.cert, backendCert.key)
  one = await startCountingHttpsBackend(backendCert.cert, backendCert.key)
  const reencrypt = `tls: { ca: ${pki.ca.certPath}, servername: backend.test }`
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [one.test], upstream: one }
      - { upstream: busy }
upstreams:
  # A long connect timeout: 100 TLS handshakes at once on a loaded test machine can take seconds.
  busy: { backends: ["127.0.0.1:${busy.port}"], timeouts: { connect: 60s }, ${reencrypt} }
  one: { backends: ["127.0.0.1:${one.port}"], keepalive: 1, ${reencrypt} }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await Promise.all([busy?.close(), one?.close()])
  await pki?.close()
})

describe("upstream keepalive on an undici pool (re-encryption)", () => {
  test("keepalive 1: 3 concurrent requests, then the idle ones above 1 are closed and the one left is reused", async () => {
    const get = (path: string) => request({ port: pc.port("web"), host: "one.test", path, ca: pki.ca.cert })
    for (const r of await Promise.all([1, 2, 3].map(() => get("/hold?n=3")))) assert.equal(r.status, 200)
    assert.equal(one.accepted(), 3)
    await waitUntil(() => one.open() === 1, `one idle connection kept (open: ${one.open()})`, 6_000)
    for (let i = 0; i < 3; i++) assert.equal((await get("/")).status, 200)
    assert.equal(one.accepted(), 3, "sequential requests reuse the kept connection")
  })

  test("default keepalive: 100 HTTP/2 streams in flight for 3,000 requests open about 100 backend connections", async () => {
    const done = await h2load(pc.port("web"), ["-c", "4", "-m", "25", "-n", "3000"], "/delay?ms=20")
    assert.equal(done, 3000)
    const accepted = busy.accepted()
    assert.ok(accepted > 64, `the load needed more connections than keepalive (${accepted})`)
    assert.ok(accepted <= 110, `${accepted} backend connections opened for 3,000 requests at most 100 in flight`)
    await waitUntil(() => busy.open() <= 64, `idle connections purged to the cap (open: ${busy.open()})`, 10_000)
  })
})

function total(args: string[]): number {
  return Number(args[args.indexOf("-n") + 1])
}

/** h2load runs real HTTP/2 load and resolves with the count of succeeded requests; it rejects (with its report) on any other. */
function h2load(port: number, args: string[], path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile("h2load", [...args, `https://127.0.0.1:${port}${path}`], { timeout: 60_000 }, (err, stdout) => {
      if (err) return reject(err)
      const m = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded/.exec(stdout)
      if (!m || Number(m[1]) !== total(args)) return reject(new Error(`h2load output: ${stdout}`))
      resolve(Number(m[1]))
    })
  })
}
