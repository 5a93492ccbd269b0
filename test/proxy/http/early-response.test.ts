/**
 * A backend that answers before it reads the request body (a 413, an auth failure, or one that never reads it):
 * the HTTP/2 client gets the whole response and the rest of its body is read and dropped (RST_STREAM NO_ERROR, RFC
 * 9113 §8.1, only if it goes on past a few seconds), instead of waiting on a stream window nobody empties any more.
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { randomBytes } from "node:crypto"
import { writeFileSync } from "node:fs"
import http from "node:http"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../../helpers/portcullis.ts"

let pki: Pki
let backend: http.Server
let pc: RunningPortcullis
let file: string

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  file = join(pki.dir, "up.bin")
  writeFileSync(file, randomBytes(3_000_000))
  // Answers at once, never reading the body.
  backend = http.createServer((_req, res) => {
    res.writeHead(413, { "content-type": "text/plain" })
    res.end("too large\n")
  })
  const port = await new Promise<number>((resolve) =>
    backend.listen(0, "127.0.0.1", () => resolve((backend.address() as { port: number }).port)),
  )
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${port}"] }
`)
})

after(async () => {
  await pc?.close()
  backend?.close()
  await pki?.close()
})

test("nghttp uploading 3 MB to a backend that answers first gets the whole answer and finishes", async () => {
  const out = await new Promise<{ code: number; stdout: string }>((resolve) =>
    execFile(
      "nghttp",
      ["-nv", "--no-verify-peer", "-d", file, `https://127.0.0.1:${pc.port()}/upload`],
      { timeout: 15_000 },
      (err, stdout) => resolve({ code: err ? 1 : 0, stdout }),
    ),
  )
  assert.equal(out.code, 0, `nghttp did not finish:\n${out.stdout.slice(-2000)}`)
  assert.match(out.stdout, /recv \(stream_id=13\) :status: 413/)
  assert.match(out.stdout, /recv DATA frame <length=10, flags=0x01, stream_id=13>/)
})

test("curl --http2 uploading 3 MB to a backend that answers first gets the answer and exits", async () => {
  const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      "curl",
      [
        "-sS",
        "--http2",
        "-k",
        "--max-time",
        "15",
        "-w",
        "%{http_code}",
        "--data-binary",
        `@${file}`,
        `https://localhost:${pc.port()}/upload`,
      ],
      { timeout: 20_000 },
      (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
    )
  })
  assert.equal(out.code, 0, out.stderr)
  assert.equal(out.stdout, "too large\n413")
})
