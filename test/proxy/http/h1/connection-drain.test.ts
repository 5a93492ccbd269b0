/**
 * A drain that closes an idle HTTP/1.1 connection in the same event-loop round as its last response ended: the
 * response's bytes are still held for the end of the round (core/write-batch.ts), and closeIfIdle destroys the
 * socket, which would drop them; they must reach the client first. Real TLS on loopback; the connection layer is
 * driven by a host of the test's own that answers at once and then drains, as a generation's close does.
 */
import assert from "node:assert/strict"
import { once } from "node:events"
import { after, before, test } from "node:test"
import tls from "node:tls"
import { closeIfIdle, H1Connection, type H1Host } from "../../../../src/proxy/http/h1/connection.ts"
import { tlsConnect } from "../../../helpers/clients.ts"
import { createPki, type Pki } from "../../../helpers/pki.ts"

let pki: Pki
let server: tls.Server
/** What the host does with each connection's socket right after it answered (set per test). */
let afterAnswer: (socket: tls.TLSSocket) => void = () => {}

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  // One host per connection, so it knows the socket it answers on.
  const hostFor = (socket: tls.TLSSocket): H1Host => ({
    h1Limits: { maxHeaderSize: 16_384, headerTimeout: 5_000, requestTimeout: 5_000, idleTimeout: 5_000 },
    closing: false,
    onH1Request(_req, res) {
      res.writeHead(200, { "content-length": 5, "content-type": "text/plain" })
      res.end("hello")
      afterAnswer(socket)
    },
    onH1Upgrade(_req, s) {
      s.destroy()
    },
    onH1Error(_err, s) {
      s.destroy()
    },
  })
  server = tls.createServer({ cert: site.cert, key: site.key }, (socket) => {
    socket.on("error", () => {})
    new H1Connection(hostFor(socket), socket)
  })
  server.listen(0, "127.0.0.1")
  await once(server, "listening")
})

after(async () => {
  server?.close()
  await pki?.close()
})

/** get sends one keep-alive GET; text() is what was read so far, closed settles when the server closed. */
async function get(): Promise<{ socket: tls.TLSSocket; text: () => string; closed: Promise<unknown> }> {
  const port = (server.address() as { port: number }).port
  const socket = await tlsConnect({ port, host: "127.0.0.1", servername: "localhost", ca: pki.ca.cert })
  let text = ""
  socket.setEncoding("latin1")
  socket.on("data", (d: string) => {
    text += d
  })
  socket.on("error", () => {})
  const closed = once(socket, "close")
  socket.write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
  return { socket, text: () => text, closed }
}

test("closeIfIdle in the round a response ended: the client reads the whole response, then the close", async () => {
  let held: boolean | undefined
  afterAnswer = (socket) => {
    // The response is written but held to the end of the round, and the connection is idle: a drain closes it now.
    held = socket.writableCorked > 0
    closeIfIdle(socket)
  }
  const client = await get()
  let gaveUp = false
  const timer = setTimeout(() => {
    gaveUp = true
    client.socket.destroy()
  }, 5_000)
  await client.closed
  clearTimeout(timer)
  const text = client.text()
  assert.equal(held, true, "the response was still held when the drain came (the race this test is about)")
  assert.equal(gaveUp, false, "the server closed the connection (closeIfIdle found it idle), not the client's timer")
  assert.match(text, /^HTTP\/1\.1 200 OK\r\n/)
  assert.ok(text.endsWith("\r\n\r\nhello"), `the whole response arrived: ${JSON.stringify(text)}`)
})

test("control: without the drain the same keep-alive response leaves the connection open", async () => {
  afterAnswer = () => {}
  const client = await get()
  for (let i = 0; i < 100 && !client.text().endsWith("hello"); i++) await new Promise((r) => setTimeout(r, 20))
  assert.ok(client.text().endsWith("hello"))
  // A close would follow the response at once; give it time to arrive before calling the connection open.
  await new Promise((r) => setTimeout(r, 200))
  assert.equal(client.socket.destroyed, false, "a keep-alive connection without a drain stays open")
  client.socket.destroy()
})
