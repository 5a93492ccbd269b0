/**
 * Issue 14, finding 1: a POST whose body ends short of its content-length, then RST_STREAM NO_ERROR, crashed the
 * process (respond() on a closed stream threw out of the backend client's error callback). Run as an operator
 * runs it, in its own process, so a crash is an exit and not a test-runner error.
 */
import assert from "node:assert/strict"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { h2request } from "../helpers/clients.ts"
import { connectRawH2, FLAG, FRAME, frame, headerBlock, requestHeaders, u32 } from "../helpers/h2-frames.ts"
import { type ChildPortcullis, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"

let backend: TestBackend
let pc: ChildPortcullis
let port: number

before(async () => {
  backend = await startEchoBackend("echo")
  const dir = mkdtempSync(join(tmpdir(), "pc-crash-"))
  // The embedded default's shape (self-signed, defaults everywhere) on ports from the OS.
  const config = writeTemp(
    dir,
    "portcullis.yaml",
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    routes: [{ upstream: echo }]
upstreams:
  echo: { backends: ["127.0.0.1:${backend.port}"] }
data_dir: ${dir}/data
`,
  )
  pc = spawnPortcullis(["--config", config])
  const line = await pc.waitFor(/"ports":\{"web":\d+\}/)
  port = Number(/(\d+)\}$/.exec(line)![1])
})

after(async () => {
  await pc?.stop()
  await backend?.close()
})

for (const [name, code] of [
  ["NO_ERROR", 0x0],
  ["CANCEL", 0x8],
] as const) {
  test(`a short POST body followed by RST_STREAM ${name}, twice, leaves the process serving`, async () => {
    for (let i = 0; i < 2; i++) {
      const h2 = await connectRawH2(port)
      const headers = requestHeaders("POST", "/upload", "localhost", [["content-length", "5"]])
      h2.send(
        frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, headerBlock(headers)),
        frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from("abc")),
        frame(FRAME.RST_STREAM, 0, 1, u32(code)),
      )
      // The server answers the malformed stream (RST_STREAM) or the connection; either way it must not die.
      await h2.waitFor((f) => f.type === FRAME.RST_STREAM || f.type === FRAME.GOAWAY, 1_000)
      h2.close()
    }
    assert.equal(pc.child.exitCode, null, `portcullis exited:\n${pc.output()}`)
    const reply = await h2request({ port, path: "/after", tlsOptions: { rejectUnauthorized: false } })
    assert.equal(reply.status, 200)
    assert.equal(pc.child.exitCode, null)
    assert.doesNotMatch(pc.output(), /ERR_HTTP2_INVALID_STREAM/)
  })
}

test("a short POST body that the client does not reset is refused, and the backend never sees it", async () => {
  const before = backend.seen.length
  const h2 = await connectRawH2(port)
  const headers = requestHeaders("POST", "/short", "localhost", [["content-length", "5"]])
  h2.send(
    frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, headerBlock(headers)),
    frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from("abc")),
  )
  const reset = await h2.waitFor((f) => f.type === FRAME.RST_STREAM && f.streamId === 1, 2_000)
  h2.close()
  assert.ok(reset, "the stream is reset")
  assert.equal(reset.payload.readUInt32BE(0), 0x1, "PROTOCOL_ERROR (RFC 9113 §8.1.1)")
  assert.equal(backend.seen.slice(before).filter((r) => r.url === "/short").length, 0)
})
