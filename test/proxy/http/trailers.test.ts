/**
 * Trailers end to end (issue 15, item 3): request trailers from the client reach the backend and response trailers
 * from the backend reach the client, for HTTP/1.1 (chunked) and HTTP/2 on each side: all four combinations.
 */
import assert from "node:assert/strict"
import http from "node:http"
import http2 from "node:http2"
import https from "node:https"
import { after, before, describe, test } from "node:test"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../../helpers/portcullis.ts"

let pki: Pki
let h1: http.Server
let h2: http2.Http2Server
let pc: RunningPortcullis

const listen = (server: http.Server | http2.Http2Server) =>
  new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
  )

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["h1.test", "h2.test"] })
  // HTTP/1.1 backend: reads the body and its trailers, answers chunked with a trailer of its own.
  h1 = http.createServer((req, res) => {
    let bytes = 0
    req.on("data", (c: Buffer) => (bytes += c.length))
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json", trailer: "x-resp" })
      res.write(JSON.stringify({ bytes, trailers: req.trailers }))
      res.addTrailers({ "x-resp": "h1-done" })
      res.end()
    })
  })
  // HTTP/2 (h2c) backend: the same over HTTP/2.
  h2 = http2.createServer()
  h2.on("stream", (stream) => {
    let bytes = 0
    let trailers: http2.IncomingHttpHeaders = {}
    stream.on("trailers", (t) => (trailers = t))
    stream.on("data", (c: Buffer) => (bytes += c.length))
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/json" }, { waitForTrailers: true })
      stream.on("wantTrailers", () => stream.sendTrailers({ "x-resp": "h2-done" }))
      const own: Record<string, unknown> = {}
      for (const k in trailers) if (!k.startsWith(":")) own[k] = trailers[k]
      stream.end(JSON.stringify({ bytes, trailers: own }))
    })
    stream.on("error", () => {})
  })
  const h1Port = await listen(h1)
  const h2Port = await listen(h2)
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [h1.test], upstream: h1 }
      - { hosts: [h2.test], upstream: h2 }
upstreams:
  h1: { backends: ["127.0.0.1:${h1Port}"] }
  h2: { backends: ["127.0.0.1:${h2Port}"], protocol: h2c }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  h1?.close()
  h2?.close()
  await pki?.close()
})

interface Seen {
  bytes: number
  trailers: Record<string, string>
  responseTrailers: Record<string, string | string[] | undefined>
}

/** fromH1Client: an HTTP/1.1 chunked upload with a request trailer; resolves with what both sides saw. */
function fromH1Client(host: string): Promise<Seen> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: pc.port(),
        method: "POST",
        path: "/up",
        servername: host,
        ca: pki.ca.cert,
        agent: false,
        headers: { host, te: "trailers", trailer: "x-req", "transfer-encoding": "chunked" },
      },
      (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (d: string) => (text += d))
        res.on("end", () => resolve({ ...JSON.parse(text), responseTrailers: res.trailers }))
      },
    )
    req.on("error", reject)
    req.write("hello ")
    req.write("world")
    req.addTrailers({ "x-req": "from-h1" })
    req.end()
  })
}

/** fromH2Client: an HTTP/2 upload with a request trailer. */
function fromH2Client(host: string): Promise<Seen> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${pc.port()}`, { ca: pki.ca.cert, servername: host })
    session.on("error", reject)
    const stream = session.request(
      { ":method": "POST", ":path": "/up", ":authority": host, te: "trailers", trailer: "x-req" },
      { waitForTrailers: true },
    )
    stream.on("wantTrailers", () => stream.sendTrailers({ "x-req": "from-h2" }))
    let text = ""
    let responseTrailers: http2.IncomingHttpHeaders = {}
    stream.setEncoding("utf8")
    stream.on("data", (d: string) => (text += d))
    stream.on("trailers", (t) => (responseTrailers = t))
    stream.on("end", () => {
      session.close()
      resolve({ ...JSON.parse(text), responseTrailers })
    })
    stream.on("error", reject)
    stream.write("hello ")
    stream.end("world")
  })
}

describe("trailers both ways", () => {
  for (const [client, send] of [
    ["HTTP/1.1", fromH1Client],
    ["HTTP/2", fromH2Client],
  ] as const) {
    for (const [backend, host, mark] of [
      ["HTTP/1.1", "h1.test", "h1-done"],
      ["HTTP/2 (h2c)", "h2.test", "h2-done"],
    ] as const) {
      test(`${client} client, ${backend} backend: the request trailer arrives, the response trailer comes back`, async () => {
        const seen = await send(host)
        assert.equal(seen.bytes, 11)
        assert.equal(seen.trailers["x-req"], client === "HTTP/1.1" ? "from-h1" : "from-h2")
        assert.equal(seen.responseTrailers["x-resp"], mark)
      })
    }
  }
})
