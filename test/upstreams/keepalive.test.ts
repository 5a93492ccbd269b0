/**
 * The upstream's `keepalive`: how many idle keep-alive connections each backend keeps beyond what the load uses
 * (nginx's upstream `keepalive N`, HAProxy's idle purge): connections in use are never closed for the cap; idle ones
 * above it are closed gradually, a purge each second.
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import http from "node:http"
import type net from "node:net"
import { after, before, describe, test } from "node:test"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { loopback, type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

interface CountingBackend {
  port: number
  /** Connections accepted so far. */
  accepted: () => number
  /** Connections open now. */
  open: () => number
  close: () => Promise<void>
}

/**
 * startCountingBackend keeps idle connections for a minute (so only the proxy closes them early) and counts them.
 * GET /hold?n=N holds each response until N such requests are in flight, then answers them all; GET /delay?ms=N
 * answers after N ms (so requests pile up to the client's concurrency); anything else is "ok".
 */
async function startCountingBackend(): Promise<CountingBackend> {
  const sockets = new Set<net.Socket>()
  let accepted = 0
  let held: http.ServerResponse[] = []
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x")
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
let none: CountingBackend
let one: CountingBackend
let plenty: CountingBackend
let busy: CountingBackend

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "none.test", "one.test", "plenty.test"] })
  none = await startCountingBackend()
  one = await startCountingBackend()
  plenty = await startCountingBackend()
  busy = await startCountingBackend()
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [none.test], upstream: none }
      - { hosts: [one.test], upstream: one }
      - { hosts: [plenty.test], upstream: plenty }
  - name: busy
    address: ${loopback(2)}:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: busy }]
upstreams:
  none: { backends: ["127.0.0.1:${none.port}"], keepalive: 0 }
  one: { backends: ["127.0.0.1:${one.port}"], keepalive: 1 }
  plenty: { backends: ["127.0.0.1:${plenty.port}"] }
  busy: { backends: ["127.0.0.1:${busy.port}"] }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await Promise.all([none?.close(), one?.close(), plenty?.close(), busy?.close()])
  await pki?.close()
})

function get(host: string, path = "/") {
  return request({ port: pc.port("web"), host, path, ca: pki.ca.cert })
}

/** concurrently sends n requests that the backend answers only once all n are in flight (n connections). */
async function concurrently(host: string, n: number): Promise<void> {
  const replies = await Promise.all(Array.from({ length: n }, () => get(host, `/hold?n=${n}`)))
  for (const r of replies) assert.equal(r.status, 200)
}

describe("upstream keepalive", () => {
  test("keepalive 0: every request opens a new backend connection, closed after its response", async () => {
    for (let i = 0; i < 3; i++) assert.equal((await get("none.test")).text, "ok")
    assert.equal(none.accepted(), 3)
    await waitUntil(() => none.open() === 0, "no idle connection kept", 3_000)
  })

  test("keepalive 1: after 3 concurrent requests the idle ones above 1 are closed, and the one left is reused", async () => {
    await concurrently("one.test", 3)
    assert.equal(one.accepted(), 3)
    // The backend would keep them all for a minute: only the proxy's purge (each second) closes the ones beyond it.
    await waitUntil(() => one.open() === 1, `one idle connection kept (open: ${one.open()})`, 6_000)
    for (let i = 0; i < 3; i++) assert.equal((await get("one.test")).text, "ok")
    assert.equal(one.accepted(), 3, "sequential requests reuse the kept connection")
    assert.equal(one.open(), 1)
  })

  test("default keepalive (64): connections under the limit are all kept and reused", async () => {
    await concurrently("plenty.test", 3)
    await concurrently("plenty.test", 3)
    assert.equal(plenty.accepted(), 3, "the second batch reused the three idle connections")
    assert.equal(plenty.open(), 3)
  })

  test("defaults: 100 HTTP/2 streams in flight for 5,000 requests open about 100 backend connections, not one per request", async () => {
    // h2load: 4 connections x 25 streams each; the backend answers after 20 ms, so about 100 are in flight at once.
    const done = await h2load(pc.host("busy"), pc.port("busy"), ["-c", "4", "-m", "25", "-n", "5000"], "/delay?ms=20")
    assert.equal(done, 5000)
    const accepted = busy.accepted()
    assert.ok(accepted > 64, `the load needed more connections than keepalive (${accepted})`)
    assert.ok(accepted <= 110, `${accepted} backend connections opened for 5,000 requests at most 100 in flight`)
  })

  test("defaults: after the load stops, idle connections above 64 are closed gradually, down to 64", async () => {
    const peak = busy.open()
    assert.ok(peak > 64, `connections open after the load: ${peak}`)
    const seen: number[] = []
    await waitUntil(
      () => {
        if (seen.at(-1) !== busy.open()) seen.push(busy.open())
        return busy.open() <= 64
      },
      `idle connections purged to the cap (open: ${busy.open()})`,
      8_000,
    )
    assert.ok(
      seen.some((n) => n > 64 && n < peak),
      `closed in steps, not all at once: ${seen.join(" -> ")}`,
    )
    assert.equal(busy.open(), 64, "the cap's worth stays open")
  })
})

/** h2load runs real HTTP/2 load against the listener and resolves with the count of succeeded requests. */
function h2load(host: string, port: number, args: string[], path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile("h2load", [...args, `https://${host}:${port}${path}`], { timeout: 60_000 }, (err, stdout) => {
      if (err) return reject(err)
      const m = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded/.exec(stdout)
      if (!m || m[1] !== args[args.indexOf("-n") + 1]) return reject(new Error(`h2load output: ${stdout}`))
      resolve(Number(m[1]))
    })
  })
}
