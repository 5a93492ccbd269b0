/**
 * Issue 14: a WebSocket upgrade whose request target is not origin form (`GET * ` with Upgrade: websocket, an
 * RFC 8441 extended CONNECT whose :path is `*`, `example.com` or empty) is refused with 400 under the same one
 * rule as an ordinary request (authority.ts), and never reaches the backend. Each case is written raw (HTTP/1.1
 * bytes on a TLS socket, HTTP/2 frames) against a backend that records every byte it receives.
 */
import assert from "node:assert/strict"
import { createHash } from "node:crypto"
import { after, before, describe, test } from "node:test"
import { h2Authority, Refusal } from "../../src/proxy/http/authority.ts"
import type { H2Request } from "../../src/proxy/http/h2-stream.ts"
import { connectRawH2, FLAG, FRAME, frame, headerBlock, responseStatus } from "../helpers/h2-frames.ts"
import {
  type ProxyProcess,
  type RawBackend,
  rawTls,
  sendRaw,
  spawnProxy,
  startRawBackend,
  statusOf,
} from "./harness.ts"

let backend: RawBackend
let proxy: ProxyProcess

before(async () => {
  backend = await startRawBackend()
  // A backend that accepts every upgrade (RFC 6455 §4.2.2 accept value): a try that reached it shows as bytes.
  backend.respond = (req) => {
    const key = /\r\nsec-websocket-key:\s*([^\r]*)/i.exec(req.head)?.[1] ?? ""
    const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64")
    return `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`
  }
  proxy = await spawnProxy("[{ upstream: app }]", { app: backend.port })
})

after(async () => {
  await proxy?.stop()
  await backend?.close()
})

const UPGRADE =
  "Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

/** received is how many bytes the backend got over all its connections. */
function received(): number {
  return backend.received.reduce((n, b) => n + b.length, 0)
}

describe("HTTP/1.1 Upgrade: websocket", () => {
  test("an origin-form target is carried to the backend (the control: the backend sees the handshake)", async () => {
    const before = received()
    const client = await rawTls(proxy.port)
    client.socket.write(`GET /ws HTTP/1.1\r\n${UPGRADE}`)
    const deadline = Date.now() + 5_000
    while (!client.text().includes("\r\n\r\n") && !client.ended() && Date.now() < deadline) {
      await new Promise((r) => client.socket.once("data", r).once("close", r))
    }
    client.socket.destroy()
    assert.equal(statusOf(client.text()), 101, client.text())
    assert.ok(received() > before, "the backend got the handshake")
  })

  test("an absolute-form target is normalised first: the backend gets the handshake in origin form", async () => {
    const seen = backend.requests.length
    const client = await rawTls(proxy.port)
    client.socket.write(`GET https://localhost/ws?a=1 HTTP/1.1\r\n${UPGRADE}`)
    const deadline = Date.now() + 5_000
    while (!client.text().includes("\r\n\r\n") && !client.ended() && Date.now() < deadline) {
      await new Promise((r) => client.socket.once("data", r).once("close", r))
    }
    client.socket.destroy()
    assert.equal(statusOf(client.text()), 101, client.text())
    const head = backend.requests[seen]?.head ?? ""
    assert.equal(head.slice(0, head.indexOf("\r\n")), "GET /ws?a=1 HTTP/1.1")
  })

  for (const [name, target] of [
    ["an asterisk-form target", "*"],
    ["an asterisk-form target with a query", "*?x"],
    ["an authority-form target", "example.com"],
    ["an authority-form target with a port", "example.com:443"],
    ["a relative target", "ws"],
  ] as const) {
    test(`${name} (GET ${target}): 400, the connection closes, the backend sees nothing`, async () => {
      const before = received()
      const connections = backend.received.length
      const text = await sendRaw(proxy.port, `GET ${target} HTTP/1.1\r\n${UPGRADE}`)
      assert.equal(statusOf(text), 400, text)
      assert.match(text, /\r\nconnection: close\r\n/i)
      assert.equal(received(), before, "no byte reached the backend")
      assert.equal(backend.received.length, connections, "no backend connection was opened")
    })
  }

  test("the refused upgrade has its access line, with the reason, as a refused request has", async () => {
    const text = await sendRaw(proxy.port, `GET * HTTP/1.1\r\n${UPGRADE}`)
    assert.equal(statusOf(text), 400, text)
    const line = await proxy.pc.waitFor(/^.*"status":400.*"invalid request target".*$/m, 5_000)
    assert.match(line, /"path":"\*"/)
  })

  test("an ordinary GET * (no upgrade) is refused by the same rule: 400, the backend sees nothing", async () => {
    const before = received()
    const text = await sendRaw(proxy.port, "GET * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert.equal(statusOf(text), 400, text)
    assert.equal(received(), before)
  })
})

/** extendedConnect sends one RFC 8441 CONNECT with this :path; resolves with the status or "RST_STREAM <code>". */
async function extendedConnect(path: string | undefined): Promise<number | string> {
  const h2 = await connectRawH2(proxy.port)
  const fields: Array<readonly [string, string]> = [
    [":method", "CONNECT"],
    [":protocol", "websocket"],
    [":scheme", "https"],
    ...(path === undefined ? [] : [[":path", path] as const]),
    [":authority", "localhost"],
    ["sec-websocket-version", "13"],
  ]
  // The server's SETTINGS (with SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441 §3) comes first.
  await h2.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0)
  h2.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, headerBlock(fields)))
  const reply = await h2.waitFor(
    (f) => ((f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM) && f.streamId === 1) || f.type === FRAME.GOAWAY,
  )
  h2.close()
  if (reply?.type === FRAME.RST_STREAM) return `RST_STREAM ${reply.payload.readUInt32BE(0)}`
  if (reply?.type === FRAME.GOAWAY) return "GOAWAY"
  return reply?.type === FRAME.HEADERS ? (responseStatus(reply.payload) ?? -1) : 0
}

describe("HTTP/2 extended CONNECT (RFC 8441)", () => {
  test("an origin-form :path is carried to the backend (the control)", async () => {
    const before = received()
    assert.equal(await extendedConnect("/ws"), 200)
    assert.ok(received() > before, "the backend got the handshake")
  })

  // On the wire nghttp2 (1.70, in Node 24) resets these streams itself before any 'stream' event: a :path that is
  // not origin form is a malformed request, a stream error PROTOCOL_ERROR (RFC 9113 §8.1.1, §8.3.1). Portcullis's
  // own rule (below) is for any that a build lets through.
  for (const path of ["*", "example.com", "ws", "http://localhost/ws", ""]) {
    test(`:path ${JSON.stringify(path)}: the stream is reset (PROTOCOL_ERROR), the backend sees nothing`, async () => {
      const before = received()
      const connections = backend.received.length
      assert.equal(await extendedConnect(path), "RST_STREAM 1")
      assert.equal(received(), before, "no byte reached the backend")
      assert.equal(backend.received.length, connections, "no backend connection was opened")
    })
  }

  test("the engine's rule (h2Authority) refuses a :path that is not origin form, as for HTTP/1.1", () => {
    const of = (path: string, method = "CONNECT") =>
      h2Authority({
        rawHeaders: [":method", method, ":protocol", "websocket", ":path", path, ":authority", "localhost"],
      } as unknown as H2Request)
    for (const path of ["*", "example.com", "", "ws", "http://localhost/ws"]) {
      assert.ok(of(path) instanceof Refusal, `:path ${JSON.stringify(path)} is refused`)
    }
    assert.equal(of("/ws"), "localhost")
    assert.equal(of("*", "OPTIONS"), "localhost", "OPTIONS * is the one asterisk-form request (RFC 9112 §3.2.4)")
  })
})
