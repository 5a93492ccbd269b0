/**
 * HTTP/1.1 slowloris and TLS handshake floods (issue 14) against a Portcullis process with the defaults
 * (header_timeout and handshake_timeout 10 s). Slowloris: many connections send a request head a byte at a time and
 * never finish it; each gets 408 (as nginx's client_header_timeout and HAProxy's timeout http-request answer) or is
 * closed within the header timeout plus a margin. TLS: many half-open handshakes (a ClientHello, then silence) are
 * closed within the handshake timeout plus a margin, and a storm of complete handshakes leaves the process bounded.
 * Throughout, RSS stays bounded and a bystander doing ordinary requests has no failure and a bounded p99.
 */
import assert from "node:assert/strict"
import net from "node:net"
import { after, before, test } from "node:test"
import tls from "node:tls"
import { latencyBound, measureBaseline, p99, startBystander, watchRss } from "./flood.ts"
import { type ProxyProcess, type RawBackend, rawTls, rssMiB, spawnProxy, startRawBackend } from "./harness.ts"

const DEFAULT_TIMEOUT_MS = 10_000
/** Node checks header timeouts once a second (connectionsCheckingInterval); the rest is a loaded machine's slack. */
const CLOSE_MARGIN_MS = 5_000
const RSS_GROWTH_MIB = 96
const ATTACKERS = 200

let backend: RawBackend
let proxy: ProxyProcess

before(async () => {
  backend = await startRawBackend()
  proxy = await spawnProxy("[{ upstream: app }]", { app: backend.port })
})
after(async () => {
  await proxy?.stop()
  await backend?.close()
})

/** underFlood runs attack() with the bystander and the RSS watcher going, and checks both afterwards. */
async function underFlood(name: string, attack: () => Promise<string>): Promise<void> {
  const baseline = await measureBaseline(proxy.port)
  const rssBefore = rssMiB(proxy.pid)
  const rss = watchRss(proxy.pid)
  const bystander = startBystander(proxy.port)
  let attackFigures = ""
  try {
    attackFigures = await attack()
  } finally {
    const { latencies, failures } = await bystander.stop()
    const rssMax = rss.stop()
    const figures = `${attackFigures}; RSS ${rssBefore.toFixed(0)} -> max ${rssMax.toFixed(0)} MiB; bystander ${latencies.length} requests, p99 ${p99(latencies).toFixed(1)} ms (baseline ${baseline.p99.toFixed(1)} ms over ${baseline.count})`
    console.log(`${name}: ${figures}`)
    assert.equal(proxy.pc.child.exitCode, null, "Portcullis is still running")
    assert.ok(rssMax - rssBefore <= RSS_GROWTH_MIB, `RSS bounded: ${figures}`)
    assert.deepEqual(failures, [], figures)
    assert.ok(p99(latencies) <= latencyBound(baseline.p99), `bystander p99: ${figures}`)
  }
}

test("slowloris: 200 connections sending a request head a byte at a time each get 408 or are closed", async () => {
  await underFlood("slowloris", async () => {
    const head = "GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\nX-Padding: "
    const clients = await Promise.all(Array.from({ length: ATTACKERS }, () => rawTls(proxy.port)))
    const started = Date.now()
    const closedAt: number[] = []
    for (const c of clients) void c.closed.then(() => closedAt.push(Date.now() - started))
    // One byte every 250 ms per connection (the head, then padding forever): never a whole head.
    let at = 0
    const timer = setInterval(() => {
      const byte = at < head.length ? head[at]! : "a"
      at++
      for (const c of clients) if (!c.ended()) c.socket.write(byte)
    }, 250)
    const deadline = DEFAULT_TIMEOUT_MS + CLOSE_MARGIN_MS
    await Promise.race([Promise.all(clients.map((c) => c.closed)), new Promise((r) => setTimeout(r, deadline))])
    clearInterval(timer)
    const open = clients.filter((c) => !c.ended()).length
    const answered408 = clients.filter((c) => /^HTTP\/1\.1 408 /.test(c.text())).length
    for (const c of clients) c.socket.destroy()
    const figures = `${ATTACKERS - open} of ${ATTACKERS} closed, ${answered408} with 408, last after ${Math.max(0, ...closedAt)} ms`
    assert.equal(open, 0, `every slowloris connection closed within ${deadline} ms: ${figures}`)
    return figures
  })
})

/** clientHello captures the first flight of a TLS client (its ClientHello), to replay on raw TCP connections. */
async function clientHello(): Promise<Buffer> {
  const server = net.createServer()
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  const port = (server.address() as net.AddressInfo).port
  const hello = new Promise<Buffer>((resolve) => server.once("connection", (s) => s.once("data", resolve)))
  const client = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ALPNProtocols: ["h2", "http/1.1"] })
  client.on("error", () => {})
  const bytes = await hello
  client.destroy()
  await new Promise<void>((r) => server.close(() => r()))
  return bytes
}

test("TLS half-open flood: 200 connections that send a ClientHello and stop are closed by the handshake timeout", async () => {
  const hello = await clientHello()
  await underFlood("half-open TLS", async () => {
    const started = Date.now()
    const sockets = await Promise.all(
      Array.from(
        { length: ATTACKERS },
        () =>
          new Promise<{ socket: net.Socket; closed: Promise<number> }>((resolve, reject) => {
            const socket = net.connect(proxy.port, "127.0.0.1", () => {
              socket.write(hello)
              resolve({ socket, closed: new Promise((r) => socket.once("close", () => r(Date.now() - started))) })
            })
            socket.on("data", () => {}) // the ServerHello flight is read and never answered
            socket.on("error", () => {})
            socket.once("error", reject)
          }),
      ),
    )
    const deadline = DEFAULT_TIMEOUT_MS + CLOSE_MARGIN_MS
    let open = sockets.length
    let last = 0
    await Promise.race([
      Promise.all(
        sockets.map(async (s) => {
          last = Math.max(last, await s.closed)
          open--
        }),
      ),
      new Promise((r) => setTimeout(r, deadline)),
    ])
    for (const s of sockets) s.socket.destroy()
    const figures = `${ATTACKERS - open} of ${ATTACKERS} closed, last after ${last} ms`
    assert.equal(open, 0, `every half-open handshake closed within ${deadline} ms: ${figures}`)
    return figures
  })
})

test("TLS handshake storm: 8 clients doing full handshakes back to back for 4 s", async () => {
  await underFlood("handshake storm", async () => {
    const until = Date.now() + 4_000
    let done = 0
    let failed = 0
    const worker = async () => {
      while (Date.now() < until) {
        await new Promise<void>((resolve) => {
          const socket = tls.connect({
            host: "127.0.0.1",
            port: proxy.port,
            servername: "localhost",
            rejectUnauthorized: false,
            session: undefined,
          })
          socket.once("secureConnect", () => {
            done++
            socket.destroy()
            resolve()
          })
          socket.once("error", () => {
            failed++
            resolve()
          })
        })
      }
    }
    await Promise.all(Array.from({ length: 8 }, worker))
    assert.equal(failed, 0, "every handshake of the storm completed")
    return `${done} full handshakes, ${failed} failed`
  })
})
