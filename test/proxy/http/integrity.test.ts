/** Bodies arrive byte for byte: random content, Content-Length and chunked, slow and fast readers, HTTP/1.1 and HTTP/2. */
import assert from "node:assert/strict"
import { createHash, randomBytes } from "node:crypto"
import http from "node:http"
import http2 from "node:http2"
import https from "node:https"
import type net from "node:net"
import { after, before, test } from "node:test"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../../helpers/portcullis.ts"

const SIZE = 24 * 1024 * 1024
/** A random body, sent in pieces of odd sizes so reads and chunks never line up with 64 KiB. */
const BODY = randomBytes(SIZE)
const DIGEST = createHash("sha256").update(BODY).digest("hex")

let pki: Pki
let server: http.Server
let pc: RunningPortcullis
let port: number

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  server = http.createServer((req, res) => {
    const chunked = req.url === "/chunked"
    res.writeHead(200, chunked ? {} : { "content-length": SIZE })
    let at = 0
    let piece = 1000
    const pump = () => {
      while (at < SIZE) {
        piece = (piece * 7 + 13) % 90_001
        const end = Math.min(SIZE, at + 1 + piece)
        const ok = res.write(BODY.subarray(at, end))
        at = end
        if (!ok) return void res.once("drain", pump)
      }
      res.end()
    }
    pump()
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  const backendPort = (server.address() as net.AddressInfo).port
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: web }]
upstreams:
  web: { backends: ["127.0.0.1:${backendPort}"] }
access_log: { enabled: false }
`)
  port = pc.port()
})

after(async () => {
  await pc?.close()
  server?.closeAllConnections()
  server?.close()
  await pki?.close()
})

/** digestOf hashes what a response stream delivers, pausing 5 ms after every 1 MiB when slow. */
function digestOf(stream: NodeJS.ReadableStream & { pause(): void; resume(): void }, slow: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256")
    let n = 0
    stream.on("data", (c: Buffer) => {
      hash.update(c)
      n += c.length
      if (slow && n % (1024 * 1024) < c.length) {
        stream.pause()
        setTimeout(() => stream.resume(), 5)
      }
    })
    stream.on("end", () => resolve(n === SIZE ? hash.digest("hex") : `short: ${n}`))
    stream.on("error", reject)
  })
}

for (const path of ["/length", "/chunked"]) {
  for (const slow of [false, true]) {
    test(`HTTP/1.1 ${path}, ${slow ? "slow" : "fast"} reader: the body arrives byte for byte`, async () => {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        https
          .get({ host: "127.0.0.1", port, path, servername: "localhost", ca: pki.ca.cert, agent: false }, resolve)
          .on("error", reject)
      })
      assert.equal(res.statusCode, 200)
      assert.equal(await digestOf(res, slow), DIGEST)
    })
  }
}

test("HTTP/2, three streams at once (one slow): every body arrives byte for byte", async () => {
  const session = http2.connect(`https://127.0.0.1:${port}`, { servername: "localhost", ca: pki.ca.cert })
  after(() => session.close())
  const digests = await Promise.all(
    ["/length", "/chunked", "/length"].map((path, i) => {
      const stream = session.request({ ":path": path, ":authority": "localhost" })
      return digestOf(stream, i === 2)
    }),
  )
  assert.deepEqual(digests, [DIGEST, DIGEST, DIGEST])
})
