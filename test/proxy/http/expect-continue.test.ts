/**
 * Expect: 100-continue as real clients send it (issue 15, item 1): curl adds it by itself to large HTTP/1.1 uploads
 * and waits for the 100 before it sends the body. To a plain HTTP/1.1 backend the lean client asks the same and
 * relays the backend's answer: its 100 lets the body flow, its final status before the body (413, 401) reaches the
 * client and no body is sent; a backend that ignores Expect gets the body after a short wait. A small body the proxy
 * holds for retries is answered 100 by the proxy itself (it is ready to take it).
 */

import assert from "node:assert/strict"
import { createHash, randomBytes } from "node:crypto"
import { writeFileSync } from "node:fs"
import http from "node:http"
import net from "node:net"
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
let ignoring: net.Server
let ignoringSawExpect = false
let refused = 0
let refusedBytes = 0

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "dead.test", "ignoring.test"] })
  const data = randomBytes(BIG)
  bigHash = createHash("sha256").update(data).digest("hex")
  bigFile = join(pki.dir, "big.bin")
  writeFileSync(bigFile, data)
  backend = http.createServer(answer)
  // Node answers 100 by itself when there is no 'checkContinue' listener; with one, /refuse answers 413 unread.
  backend.on("checkContinue", (req, res) => {
    if (req.url?.startsWith("/refuse")) {
      refused++
      req.on("data", (c: Buffer) => (refusedBytes += c.length))
      res.writeHead(413, { "content-type": "text/plain", connection: "close" })
      res.end("too large\n")
      return
    }
    res.writeContinue()
    answer(req, res)
  })
  function answer(req: http.IncomingMessage, res: http.ServerResponse) {
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
  }
  // A backend that ignores Expect: never sends 100, reads the body by Content-Length, then answers.
  ignoring = net.createServer((socket) => {
    let head = ""
    let need = -1
    let got = 0
    socket.on("data", (d: Buffer) => {
      if (need < 0) {
        head += d.toString("latin1")
        const end = head.indexOf("\r\n\r\n")
        if (end === -1) return
        ignoringSawExpect = /\r\nexpect: 100-continue/i.test(head.slice(0, end))
        need = Number(/content-length: (\d+)/i.exec(head.slice(0, end))?.[1] ?? 0)
        got = head.length - (end + 4)
      } else got += d.length
      if (got >= need) {
        const body = `{"bytes":${got}}`
        socket.end(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`)
      }
    })
    socket.on("error", () => {})
  })
  await new Promise<void>((resolve) => ignoring.listen(0, "127.0.0.1", () => resolve()))
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
      - { hosts: [ignoring.test], upstream: ignoring }
      - { upstream: app }
upstreams:
  ignoring: { backends: ["127.0.0.1:${(ignoring.address() as net.AddressInfo).port}"] }
  app: { backends: ["127.0.0.1:${backendPort}"] }
  dead: { backends: ["127.0.0.1:${dead.port}"], retries: 0 }
access_log: { enabled: false }
`)
})

after(async () => {
  dead?.close()
  ignoring?.close()
  await pc?.close()
  await new Promise<void>((resolve) => (backend ? backend.close(() => resolve()) : resolve()))
  await pki?.close()
})

function curlUpload(extra: string[], host = "localhost", path = "/upload") {
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
      `https://${host}:${pc.port()}${path}`,
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
    assert.equal(reply.expect, "100-continue", "the lean client asked the backend, whose 100 was relayed")
  })

  test("curl --http2 uploads 100 MiB with Expect: 100-continue", async () => {
    const out = await curlUpload(["--http2", "-H", "Expect: 100-continue"])
    assert.equal(out.code, 0, out.stderr)
    assert.match(out.stderr, /< HTTP\/2 100/, "Portcullis answered 100 on the stream")
    const reply = JSON.parse(out.stdout) as (typeof seen)[number]
    assert.equal(reply.bytes, BIG)
    assert.equal(reply.sha256, bigHash)
    assert.equal(reply.expect, "100-continue")
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
    assert.equal(reply.expect, undefined, "a body held for retries is answered 100 by the proxy")
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

  test("a backend that answers 413 to the head: the client gets 413 and no body is sent", async () => {
    const before = refused
    const out = await curlUpload(["--http1.1", "-o", "/dev/null", "-w", "%{http_code}"], "localhost", "/refuse")
    assert.equal(out.stdout, "413", out.stderr)
    assert.equal(refused, before + 1)
    assert.equal(refusedBytes, 0, "not a byte of the body reached the backend")
    assert.doesNotMatch(out.stderr, /< HTTP\/1\.1 100 Continue/)
  })

  test("a backend that ignores Expect gets the body after a short wait", async () => {
    const out = await curl(
      [
        "--http1.1",
        "--cacert",
        pki.ca.certPath,
        "--resolve",
        `ignoring.test:${pc.port()}:127.0.0.1`,
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "30",
        "--data-binary",
        `@${bigFile}`,
        `https://ignoring.test:${pc.port()}/upload`,
      ],
      120_000,
    )
    assert.equal(out.code, 0, out.stderr)
    assert.equal(JSON.parse(out.stdout).bytes, BIG)
    assert.ok(ignoringSawExpect, "the backend was asked")
  })
})
