/**
 * The HTTP/1.1 request smuggling and framing matrix (issue 14): each hostile request is either refused (400, 501 or
 * the connection closed) with nothing reaching the backend, or normalised so that the backend receives exactly one
 * unambiguous request: one request line in origin form, at most one framing header, every byte it got framed.
 * The backend is raw TCP and records the bytes it receives.
 */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { type ProxyProcess, type RawBackend, sendRaw, spawnProxy, startRawBackend, statusOf } from "./harness.ts"

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

const H = "Host: localhost\r\n"
/** [name, the bytes a client sends]; every case ends the connection after its request (close or a refusal). */
const CASES: ReadonlyArray<readonly [string, string]> = [
  ["CL.TE", `POST / HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG`],
  ["TE.CL", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n`],
  ["TE: xchunked", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`],
  ["TE: chunked, identity", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`],
  ["TE: identity, chunked", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n`],
  [
    "TE value with a leading space",
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding:  chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  ],
  [
    "TE line starting with a space",
    `POST / HTTP/1.1\r\n${H} Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello`,
  ],
  [
    "TE with a tab before the value",
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\tchunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  ],
  [
    "TE with a tab before the colon",
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding\t: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  ],
  [
    "TE with a space before the colon",
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  ],
  [
    "TE: CHUNKED (case)",
    `POST / HTTP/1.1\r\n${H}TRANSFER-ENCODING: CHUNKED\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  ],
  [
    "two TE fields",
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n`,
  ],
  ["two different CL", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`],
  ["two equal CL", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`],
  ["CL list 5, 6", `POST / HTTP/1.1\r\n${H}Content-Length: 5, 6\r\n\r\nhello!`],
  ["signed CL +5", `POST / HTTP/1.1\r\n${H}Content-Length: +5\r\n\r\nhello`],
  ["signed CL -1", `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\nhello`],
  ["CL in hex", `POST / HTTP/1.1\r\n${H}Content-Length: 0x5\r\n\r\nhello`],
  ["CL huge", `POST / HTTP/1.1\r\n${H}Content-Length: 99999999999999999999\r\n\r\nhello`],
  ["obs-fold", `GET / HTTP/1.1\r\n${H}X-A: a\r\n b\r\nConnection: close\r\n\r\n`],
  ["obs-fold of Content-Length", `POST / HTTP/1.1\r\n${H}Content-Length: 0\r\n 5\r\n\r\nhello`],
  ["bare LF line ends", "GET / HTTP/1.1\nHost: localhost\nConnection: close\n\n"],
  ["a bare LF in a header line", `GET / HTTP/1.1\r\n${H}X-A: a\nContent-Length: 5\r\n\r\nhello`],
  ["a bare CR in a header line", `GET / HTTP/1.1\r\n${H}X-A: a\rContent-Length: 5\r\n\r\nhello`],
  ["a bare CR in the request line", `GET /\rX HTTP/1.1\r\n${H}\r\n`],
  ["NUL in a header value", `GET / HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`],
  ["CTL in a header value", `GET / HTTP/1.1\r\n${H}X-A: a\x01b\r\n\r\n`],
  ["NUL in a header name", `GET / HTTP/1.1\r\n${H}X\0A: b\r\n\r\n`],
  ["CTL in a header name", `GET / HTTP/1.1\r\n${H}X\x7fA: b\r\n\r\n`],
  [
    "chunk-size overflow",
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nhello\r\n0\r\n\r\n`,
  ],
  ["chunk size with a sign", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n`],
  ["chunk size with a space", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5 5\r\nhello\r\n0\r\n\r\n`],
  [
    "chunk data longer than its size",
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n`,
  ],
  ["chunk with a bare LF", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n`],
  ["HTTP/1.0 with TE", `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`],
  [
    "HTTP/1.0 with TE and CL",
    `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  ],
  ["absolute form", `GET http://localhost/x HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ["absolute form, other authority", `GET https://evil.example/x HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ["duplicate Host", `GET / HTTP/1.1\r\n${H}${H}\r\n`],
  ["Host and a second Host with another case", `GET / HTTP/1.1\r\n${H}HOST: evil.example\r\n\r\n`],
  ["no Host", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"],
  ["a space in the target", `GET /a b HTTP/1.1\r\n${H}\r\n`],
  ["HTTP/1.2", `GET / HTTP/1.2\r\n${H}Connection: close\r\n\r\n`],
  ["HTTP/2 preface on HTTP/1.1", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
  [
    "a pipelined request hidden in a body",
    `POST / HTTP/1.1\r\n${H}Content-Length: 34\r\nConnection: close\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n`,
  ],
]

const HEADER_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t ]*[\t\x20-\x7e\x80-\xff]*$/

/** backendBytes is the total number of bytes the backend has received. */
function backendBytes(): number {
  return backend.received.reduce((n, b) => n + b.length, 0)
}

/** unambiguous asserts that a head is one well-formed request in origin form with at most one framing header. */
function assertUnambiguous(name: string, head: string, body: Buffer): void {
  const [line, ...fields] = head.split("\r\n")
  assert.match(line!, /^[A-Z]+ \/[\x21-\x7e]* HTTP\/1\.1$/, `${name}: request line ${JSON.stringify(line)}`)
  for (const f of fields) assert.match(f, HEADER_LINE, `${name}: header line ${JSON.stringify(f)}`)
  const lengths = fields.filter((f) => /^content-length:/i.test(f))
  const codings = fields.filter((f) => /^transfer-encoding:/i.test(f))
  assert.ok(
    lengths.length + codings.length <= 1,
    `${name}: framing headers ${JSON.stringify([...lengths, ...codings])}`,
  )
  if (codings.length === 1) assert.match(codings[0]!, /^transfer-encoding:\s*chunked$/i, name)
  if (lengths.length === 1) assert.equal(Number(lengths[0]!.split(":")[1]), body.length, name)
  assert.equal(fields.filter((f) => /^host:/i.test(f)).length, 1, `${name}: one Host`)
}

for (const [name, wire] of CASES) {
  test(`request ${name}: refused, or exactly one unambiguous request reaches the backend`, async () => {
    const requestsBefore = backend.requests.length
    const bytesBefore = backendBytes()
    const text = await sendRaw(proxy.port, wire, 3_000)
    const status = statusOf(text)
    const requests = backend.requests.slice(requestsBefore)
    const bytes = backendBytes() - bytesBefore
    if (status !== 200) {
      assert.ok([0, 400, 501, 505].includes(status), `${name}: status ${status}: ${text.slice(0, 200)}`)
      assert.equal(requests.length, 0, `${name}: refused, yet the backend framed ${requests.length} requests`)
      if (bytes > 0) {
        // A body found malformed after its head was sent (a streamed chunked body): the backend connection that
        // carried the part must be closed, never reused with the rest of it.
        await waitUnframedGone()
      }
      return
    }
    assert.equal(requests.length, 1, `${name}: the backend framed ${requests.length} requests`)
    const { head, body } = requests[0]!
    assertUnambiguous(name, head, body)
    assert.equal(backend.unframed(), 0, `${name}: bytes the backend could not frame`)
    if (!/\r\ntransfer-encoding:/i.test(head)) assert.equal(bytes, head.length + 4 + body.length, name)
    assert.ok(!text.slice(text.indexOf("\r\n\r\n") + 4).includes("HTTP/1.1"), `${name}: one response only`)
  })
}

/** waitUnframedGone waits until no open backend connection holds part of a request (5 s at most). */
async function waitUnframedGone(): Promise<void> {
  const deadline = Date.now() + 5_000
  while (backend.unframed() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  assert.equal(backend.unframed(), 0, "the backend connection holding part of a refused request is closed")
}
