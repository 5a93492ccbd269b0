/**
 * Issue 14, finding 3: one rule for a request's authority. The route is chosen on the same host the backend
 * receives as Host, and on the same path it receives: absolute-form targets become origin form with their
 * authority, several Host fields or an HTTP/2 :authority/host disagreement are refused with 400. Each case is sent
 * raw (HTTP/1.1 bytes, HTTP/2 frames) and checked against the bytes a raw backend received.
 */
import assert from "node:assert/strict"
import { after, before, describe, test } from "node:test"
import { connectRawH2, FLAG, FRAME, frame, headerBlock, responseStatus } from "../helpers/h2-frames.ts"
import {
  hostLines,
  type ProxyProcess,
  type RawBackend,
  sendRaw,
  spawnProxy,
  startRawBackend,
  statusOf,
} from "./harness.ts"

let app: RawBackend
let admin: RawBackend
let other: RawBackend
let proxy: ProxyProcess

before(async () => {
  ;[app, admin, other] = await Promise.all([startRawBackend(), startRawBackend(), startRawBackend()])
  proxy = await spawnProxy(
    "[{ path_prefix: /admin, upstream: admin }, { hosts: [other.example], upstream: other }, { upstream: app }]",
    { app: app.port, admin: admin.port, other: other.port },
  )
})

after(async () => {
  await proxy?.stop()
  await Promise.all([app?.close(), admin?.close(), other?.close()])
})

/** seenSince returns what each backend framed since the marks were taken. */
function marks(): () => { app: string[]; admin: string[]; other: string[] } {
  const a = app.requests.length
  const b = admin.requests.length
  const c = other.requests.length
  return () => ({
    app: app.requests.slice(a).map((r) => r.head),
    admin: admin.requests.slice(b).map((r) => r.head),
    other: other.requests.slice(c).map((r) => r.head),
  })
}

function requestLine(head: string): string {
  return head.slice(0, head.indexOf("\r\n"))
}

describe("HTTP/1.1", () => {
  test("an absolute-form target is routed on its path and reaches the backend in origin form", async () => {
    const seen = marks()
    const text = await sendRaw(
      proxy.port,
      "GET https://localhost/admin/x?q=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    assert.equal(statusOf(text), 200)
    const got = seen()
    assert.equal(got.app.length, 0, "not the default route")
    assert.equal(got.admin.length, 1)
    assert.equal(requestLine(got.admin[0]!), "GET /admin/x?q=1 HTTP/1.1")
    assert.deepEqual(hostLines(got.admin[0]!), ["localhost"])
  })

  test("an absolute-form target's authority wins over Host, for routing and for the backend's Host", async () => {
    const seen = marks()
    const text = await sendRaw(
      proxy.port,
      "GET https://other.example HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    assert.equal(statusOf(text), 200)
    const got = seen()
    assert.equal(got.app.length, 0)
    assert.equal(got.other.length, 1)
    assert.equal(requestLine(got.other[0]!), "GET / HTTP/1.1")
    assert.deepEqual(hostLines(got.other[0]!), ["other.example"])
  })

  for (const [name, wire] of [
    ["two different Host fields", "GET / HTTP/1.1\r\nHost: localhost\r\nHost: other.example\r\n\r\n"],
    ["two identical Host fields", "GET / HTTP/1.1\r\nHost: localhost\r\nhost: localhost\r\n\r\n"],
    ["an invalid Host (a path in it)", "GET / HTTP/1.1\r\nHost: other.example/admin\r\n\r\n"],
    ["an invalid Host (userinfo)", "GET / HTTP/1.1\r\nHost: user@other.example\r\n\r\n"],
    ["an absolute-form target with userinfo", "GET https://user@other.example/ HTTP/1.1\r\nHost: localhost\r\n\r\n"],
    ["an absolute-form target of another scheme", "GET ftp://other.example/ HTTP/1.1\r\nHost: localhost\r\n\r\n"],
    ["a target that is neither origin nor absolute form", "GET admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n"],
    [
      "a WebSocket upgrade with two Host fields",
      "GET /ws HTTP/1.1\r\nHost: localhost\r\nHost: other.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ],
  ] as const) {
    test(`${name}: 400, the connection closes, no backend sees it`, async () => {
      const seen = marks()
      const text = await sendRaw(proxy.port, wire)
      assert.equal(statusOf(text), 400, text)
      assert.match(text, /\r\nconnection: close\r\n/i)
      const got = seen()
      assert.deepEqual([got.app.length, got.admin.length, got.other.length], [0, 0, 0])
    })
  }
})

/** h2Get sends one GET as raw frames and returns the response status, or "RST_STREAM <code>" (0: neither). */
async function h2Get(fields: Array<readonly [string, string]>): Promise<number | string> {
  const h2 = await connectRawH2(proxy.port)
  h2.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, headerBlock(fields)))
  const reply = await h2.waitFor(
    (f) => ((f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM) && f.streamId === 1) || f.type === FRAME.GOAWAY,
  )
  h2.close()
  if (reply?.type === FRAME.RST_STREAM) return `RST_STREAM ${reply.payload.readUInt32BE(0)}`
  return reply?.type === FRAME.HEADERS ? (responseStatus(reply.payload) ?? -1) : 0
}

const pseudo = (authority?: string) => [
  [":method", "GET"] as const,
  [":scheme", "https"] as const,
  [":path", "/h2"] as const,
  ...(authority === undefined ? [] : [[":authority", authority] as const]),
]

describe("HTTP/2", () => {
  test(":authority and a host that disagrees: 400, no backend sees it", async () => {
    const seen = marks()
    assert.equal(await h2Get([...pseudo("localhost"), ["host", "other.example"]]), 400)
    const got = seen()
    assert.deepEqual([got.app.length, got.admin.length, got.other.length], [0, 0, 0])
  })

  test("two host fields: the stream is reset (PROTOCOL_ERROR, by nghttp2), no backend sees it", async () => {
    const seen = marks()
    assert.equal(await h2Get([...pseudo(), ["host", "other.example"], ["host", "other.example"]]), "RST_STREAM 1")
    const got = seen()
    assert.deepEqual([got.app.length, got.admin.length, got.other.length], [0, 0, 0])
  })

  test(":authority and host that agree (but for case): routed on it, the backend gets one Host", async () => {
    const seen = marks()
    assert.equal(await h2Get([...pseudo("other.example"), ["host", "Other.Example"]]), 200)
    const got = seen()
    assert.equal(got.other.length, 1)
    assert.deepEqual(hostLines(got.other[0]!), ["other.example"])
  })

  test("host without :authority: routed on host, and the backend gets that Host", async () => {
    const seen = marks()
    assert.equal(await h2Get([...pseudo(), ["host", "other.example"]]), 200)
    const got = seen()
    assert.equal(got.other.length, 1)
    assert.deepEqual(hostLines(got.other[0]!), ["other.example"])
  })

  test(":authority alone: routed on it, and the backend gets it as Host", async () => {
    const seen = marks()
    assert.equal(await h2Get(pseudo("other.example")), 200)
    const got = seen()
    assert.equal(got.other.length, 1)
    assert.equal(requestLine(got.other[0]!), "GET /h2 HTTP/1.1")
    assert.deepEqual(hostLines(got.other[0]!), ["other.example"])
  })
})
