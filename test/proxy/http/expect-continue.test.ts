/**
 * Expect: 100-continue as real clients send it (issue 15, item 1): curl adds it by itself to large HTTP/1.1 uploads
 * and waits for the 100 before it sends the body. Portcullis answers 100 when it is ready to take the body and
 * never forwards the expectation, so the backend gets an ordinary request.
 */
import assert from "node:assert/strict"
import { createHash, randomBytes } from "node:crypto"
import { writeFileSync } from "node:fs"
import http from "node:http"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import { curl, tlsConnect } from "../../helpers/clients.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type HeldPort, type RunningPortcullis, refusingPort, startPortcullis } from "../../helpers/portcullis.ts"

let pki: Pki
let pc: RunningPortcullis
let backend: http.Server
let backendPort: number
let dead: HeldPort
let bigFile: string
let bigHash: string
const BIG = 100 * 1024 * 1024
/** What the backend saw per request: the expect header (must never arrive) and the body's length and hash. */
const seen: { expect: string | undefined; bytes: number; sha256: string }[] = []

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "dead.test"] })
  const data = randomBytes(BIG)
  bigHash = createHash("sha256").update(data).digest("hex")
  bigFile = join(pki.dir, "big.bin")
  writeFileSync(bigFile, data)
  backend = http.createServer((req, res) => {
    const hash = createHash("sha256")
    let bytes = 0
    req.on("data", (c: Buffer) => {
      bytes += c.length
      hash.update(c)
    })
    req.on("end", () => {
      const entry = { expect: req.headers.expect, bytes, sha256: hash.digest("hex") }
      seen.push(entry)
      res.setHeader("content-type", "application/json")
      res.end(JSON.stringify(entry))
    })
  })
  // A backend that gets the request without Expect never sends 100 itself.
  backendPort = await new Promise<number>((resolve) =>
    backend.listen(0, "127.0.0.1", () => resolve((backend.address() as { port: number }).port)),
  )
  // A port where nothing listens, held for the test (refused at once; the test only needs "no backend").
  dead = await refusingPort()
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [dead.test], upstream: dead }
      - { upstream: app }
upstreams:
  app: { backends: ["127.0.0.1:${backendPort}"] }
  dead: { backends: ["127.0.0.1:${dead.port}"], retries: 0 }
access_log: { enabled: false }
`)
})

after(async () => {
  dead?.close()
  await pc?.close()
  await new Promise<void>((resolve) => (backend ? backend.close(() => resolve()) : resolve()))
  await pki?.close()
})

function curlUpload(extra: string[], host = "localhost") {
  return curl(
    [
      "-v",
      "--cacert",
      pki.ca.certPath,
      "--resolve",
      `${host}:${pc.port()}:127.0.0.1`,
      "--data-binary",
      `@${bigFile}`,
      ...extra,
      `https://${host}:${pc.port()}/upload`,
    ],
    120_000,
  )
}

describe("Expect: 100-continue", () => {
  test("curl --http1.1 uploads 100 MiB with the Expect it adds by itself; the backend gets every byte", async () => {
    const out = await curlUpload(["--http1.1"])
    assert.equal(out.code, 0, out.stderr)
    assert.match(out.stderr, /> Expect: 100-continue/i, "curl sent Expect by itself")
    assert.match(out.stderr, /< HTTP\/1\.1 100 Continue/, "Portcullis answered 100")
    const reply = JSON.parse(out.stdout) as (typeof seen)[number]
    assert.equal(reply.bytes, BIG)
    assert.equal(reply.sha256, bigHash)
    assert.equal(reply.expect, undefined, "the expectation is met by the proxy, not forwarded")
  })

  test("curl --http2 uploads 100 MiB with Expect: 100-continue", async () => {
    const out = await curlUpload(["--http2", "-H", "Expect: 100-continue"])
    assert.equal(out.code, 0, out.stderr)
    assert.match(out.stderr, /< HTTP\/2 100/, "Portcullis answered 100 on the stream")
    const reply = JSON.parse(out.stdout) as (typeof seen)[number]
    assert.equal(reply.bytes, BIG)
    assert.equal(reply.sha256, bigHash)
    assert.equal(reply.expect, undefined)
  })

  test("a small body (held for retries) with Expect: 100-continue gets 100, then the backend's answer", async () => {
    const out = await curl([
      "-v",
      "--http1.1",
      "--cacert",
      pki.ca.certPath,
      "--resolve",
      `localhost:${pc.port()}:127.0.0.1`,
      "-H",
      "Expect: 100-continue",
      "--data-binary",
      "hello",
      `https://localhost:${pc.port()}/small`,
    ])
    assert.equal(out.code, 0, out.stderr)
    assert.match(out.stderr, /< HTTP\/1\.1 100 Continue/)
    const reply = JSON.parse(out.stdout) as (typeof seen)[number]
    assert.equal(reply.bytes, 5)
    assert.equal(reply.expect, undefined)
  })

  test("with no backend to take it, the client gets the final status and no 100, and never has to send the body", async () => {
    const socket = await tlsConnect({
      host: "127.0.0.1",
      port: pc.port(),
      servername: "dead.test",
      ca: pki.ca.cert,
    })
    let text = ""
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")))
    const closedOrAnswered = new Promise<void>((resolve) => {
      socket.on("data", () => text.includes("\r\n\r\n") && !text.startsWith("HTTP/1.1 100") && resolve())
      socket.on("close", () => resolve())
    })
    socket.write("POST /upload HTTP/1.1\r\nHost: dead.test\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
    await Promise.race([closedOrAnswered, new Promise((r) => setTimeout(r, 10_000))])
    socket.destroy()
    assert.match(text, /^HTTP\/1\.1 50[23] /, `got: ${text.slice(0, 80)}`)
    assert.doesNotMatch(text, /100 Continue/)
  })

  test("an expectation other than 100-continue is refused with 417 (RFC 9110 §10.1.1)", async () => {
    const out = await curl([
      "--http1.1",
      "--cacert",
      pki.ca.certPath,
      "--resolve",
      `localhost:${pc.port()}:127.0.0.1`,
      "-H",
      "Expect: teapot",
      "--data-binary",
      "x",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `https://localhost:${pc.port()}/`,
    ])
    assert.equal(out.stdout, "417")
  })
})
