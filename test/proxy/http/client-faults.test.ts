/**
 * Failures that are the client's are never counted against a backend, and every error answer (GET or WebSocket
 * upgrade) comes from the one mapping in respond-error.ts.
 */
import assert from "node:assert/strict"
import { after, before, describe, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { request, tlsConnect } from "../../helpers/clients.ts"
import { connectRawH2, FLAG, FRAME, frame, headerBlock, requestHeaders } from "../../helpers/h2-frames.ts"
import { type RunningPortcullis, startPortcullis } from "../../helpers/portcullis.ts"
import { upstreamStatus } from "../../upstreams/harness.ts"

let backend: TestBackend
let pc: RunningPortcullis
let port: number

before(async () => {
  backend = await startEchoBackend("echo")
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost, refused.test, down.test] }] }
    routes:
      - { hosts: [refused.test], upstream: refused }
      - { hosts: [down.test], upstream: down }
      - { upstream: echo }
upstreams:
  echo: { backends: ["127.0.0.1:${backend.port}"] }
  refused: { backends: ["127.0.0.1:1"], retries: 0, passive: { enabled: false } }
  down:
    backends: ["127.0.0.1:1"]
    health: { path: /healthz, interval: 1m, rise: 1, fall: 1 }
access_log: { enabled: false }
`)
  port = pc.port("web")
})

after(async () => {
  await pc?.close()
  await backend?.close()
})

const insecure = { rejectUnauthorized: false }

describe("a client body shorter than its content-length", () => {
  test("sent five times (streamed: longer than retry_body_limit) does not eject the only backend", async () => {
    // Passive health's default consecutive_errors is 5: five failures counted against the backend eject it.
    // Node's HTTP/2 layer (nghttp2) resets such a stream itself at END_STREAM, so undici's
    // UND_ERR_REQ_CONTENT_LENGTH_MISMATCH arrives after the client's stream closed; should it arrive first, it is
    // the client's (test/proxy/respond-error.test.ts) and Upstream.failed ignores it (test/upstreams/upstream.test.ts).
    for (let i = 0; i < 5; i++) {
      const h2 = await connectRawH2(port)
      const headers = requestHeaders("POST", `/short-${i}`, "localhost", [["content-length", "100000"]])
      h2.send(
        frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, headerBlock(headers)),
        frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from("abc")),
      )
      const reset = await h2.waitFor((f) => f.type === FRAME.RST_STREAM && f.streamId === 1, 5_000)
      h2.close()
      assert.ok(reset, `request ${i}: the malformed stream is reset`)
      assert.equal(reset.payload.readUInt32BE(0), 0x1, "PROTOCOL_ERROR (RFC 9113 §8.1.1)")
    }
    const status = upstreamStatus(pc, "echo")
    assert.equal(status.backends[0]!.ejected, false)
    assert.equal(status.stats.ejections, 0)
    assert.deepEqual(status.passive, [], "no failure streak was recorded against the backend")
    const reply = await request({ port, path: "/after", tlsOptions: insecure })
    assert.equal(reply.status, 200)
  })
})

/** upgrade sends a WebSocket upgrade and reads the status line and body of the answer. */
async function upgrade(host: string): Promise<{ status: number; body: string }> {
  const socket = await tlsConnect({ port, servername: host, ALPNProtocols: ["http/1.1"], ...insecure })
  socket.write(
    `GET /chat HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  )
  let text = ""
  socket.setEncoding("latin1")
  socket.on("data", (d: string) => {
    text += d
  })
  await new Promise<void>((resolve, reject) => {
    socket.once("close", () => resolve())
    socket.once("error", reject)
    socket.setTimeout(5_000, () => socket.destroy(new Error(`no answer; have ${JSON.stringify(text)}`)))
  })
  const end = text.indexOf("\r\n\r\n")
  return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1]), body: text.slice(end + 4) }
}

describe("a WebSocket upgrade gets the answer a GET gets", () => {
  for (const [host, status] of [
    ["refused.test", 502],
    ["down.test", 503],
  ] as const) {
    test(`${host}: ${status}, with the same body`, async () => {
      const get = await request({ port, host, servername: host, path: "/chat", tlsOptions: insecure })
      const ws = await upgrade(host)
      assert.equal(get.status, status)
      assert.equal(ws.status, get.status)
      assert.equal(ws.body, get.text)
    })
  }
})
