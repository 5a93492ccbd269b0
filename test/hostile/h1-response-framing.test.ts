/**
 * Response-side framing tricks from a raw backend (issue 14): a response whose framing is ambiguous or malformed
 * becomes a 502 for the client, never forwarded as it is (which could make the client or a cache in front of it
 * read two responses, or one response as part of the next).
 */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { type ProxyProcess, type RawBackend, sendRaw, spawnProxy, startRawBackend, statusOf } from "./harness.ts"

let backend: RawBackend
let proxy: ProxyProcess

before(async () => {
  backend = await startRawBackend()
  // Passive health off: every case fails the backend on purpose, and ejecting it would turn the rest into 503s.
  proxy = await spawnProxy("[{ upstream: app }]", { app: backend.port }, "passive: { enabled: false }")
})

after(async () => {
  await proxy?.stop()
  await backend?.close()
})

const CASES: ReadonlyArray<readonly [string, string]> = [
  ["CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nSMUGL\r\n0\r\n\r\n"],
  ["TE and CL", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nSMUGL\r\n0\r\n\r\n"],
  ["two different CL", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nSMUGL!"],
  ["a CL list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nSMUGL!"],
  ["a signed CL", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nSMUGL"],
  ["bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 5\n\nSMUGL"],
  ["a bare LF in a header line", "HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 5\r\n\r\nSMUGL"],
  ["obs-fold", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: a\r\n b\r\n\r\nSMUGL"],
  ["a space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nSMUGL"],
  ["TE: xchunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nSMUGL\r\n0\r\n\r\n"],
  ["TE: chunked, identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nSMUGL\r\n0\r\n\r\n"],
  ["NUL in a header value", "HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 5\r\n\r\nSMUGL"],
  ["an invalid status line", "HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nSMUGL"],
  [
    "chunk-size overflow",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nSMUGL\r\n0\r\n\r\n",
  ],
]

for (const [name, reply] of CASES) {
  test(`response ${name}: 502 (or a broken response), the backend's bytes are not forwarded`, async () => {
    backend.respond = () => reply
    const before = backend.requests.length
    const text = await sendRaw(proxy.port, "GET /r HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 5_000)
    assert.ok(backend.requests.length - before >= 1, "the backend was asked")
    // Before the head is forwarded: a 502. A chunked body that turns bad mid-way: the response is cut (no last chunk),
    // or the connection closes before anything was sent.
    const status = statusOf(text)
    if (status === 0) {
      assert.equal(text, "", `${name}: no response, then nothing at all`)
    } else if (status === 200) {
      assert.match(text, /\r\ntransfer-encoding: chunked\r\n/i, `${name}: ${text}`)
      assert.doesNotMatch(text, /\r\n0\r\n\r\n$/, `${name}: a cut response must not look complete`)
    } else {
      assert.equal(status, 502, `${name}: ${text.slice(0, 300)}`)
    }
    assert.doesNotMatch(text, /SMUGL/, `${name}: backend bytes forwarded`)
  })
}
