/**
 * The HTTP/1.1 connection layer (src/proxy/http/h1/) on real TLS sockets: keep-alive and its end (HTTP/1.0,
 * Connection: close, the idle timeout), pipelining with openssl s_client, HEAD/204 framing, head and small body in
 * one TLS record, a chunked upload with trailers, 431 for a head too large, a half-closed client, and the bytes sent
 * right behind a WebSocket upgrade.
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { after, before, test } from "node:test"
import type { TLSSocket } from "node:tls"
import { startEchoBackend, type TestBackend } from "../../../helpers/backends.ts"
import { tlsConnect, wsFrame, wsParse } from "../../../helpers/clients.ts"
import { createPki, type Pki } from "../../../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../../../helpers/portcullis.ts"

let pki: Pki
let backend: TestBackend
let pc: RunningPortcullis

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  backend = await startEchoBackend("b1")
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }], alpn: [http/1.1] }
    limits: { max_header_size: 4KiB, idle_timeout: 1s }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${new URL(backend.url).port}"] }
`)
})

after(async () => {
  await pc?.close()
  await backend?.close()
  await pki?.close()
})

/** Client: a TLS connection that collects what it reads, and counts the reads (one per TLS record here). */
interface Client {
  socket: TLSSocket
  reads: number
  text: () => string
  /** until resolves once the bytes read match re (or rejects after ms). */
  until: (re: RegExp, ms?: number) => Promise<string>
  closed: Promise<void>
}

async function connect(): Promise<Client> {
  const socket = await tlsConnect({ port: pc.port(), host: "127.0.0.1", servername: "localhost", ca: pki.ca.cert })
  const chunks: Buffer[] = []
  let waiter: (() => void) | undefined
  const client: Client = {
    socket,
    reads: 0,
    text: () => Buffer.concat(chunks).toString("latin1"),
    until: (re, ms = 5_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (re.test(client.text())) {
            clearTimeout(timer)
            waiter = undefined
            resolve(client.text())
          }
        }
        const timer = setTimeout(() => reject(new Error(`no ${re} within ${ms} ms: ${client.text()}`)), ms)
        waiter = check
        check()
      }),
    closed: new Promise((resolve) => socket.once("close", () => resolve())),
  }
  socket.on("data", (c: Buffer) => {
    client.reads++
    chunks.push(c)
    waiter?.()
  })
  socket.on("error", () => {})
  return client
}

const GET = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`

/** responses counts the status lines in text. */
function statuses(text: string): string[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]!)
}

test("100 requests in turn on one keep-alive connection are all answered on it", async () => {
  const c = await connect()
  for (let i = 0; i < 100; i++) {
    c.socket.write(GET(`/echo?i=${i}`))
    await c.until(new RegExp(`"url":"/echo\\?i=${i}"`))
  }
  assert.equal(statuses(c.text()).length, 100)
  assert.equal(c.socket.destroyed, false)
  c.socket.destroy()
})

test("the head and a small body of a response arrive in one TLS record", async () => {
  const c = await connect()
  c.socket.write(GET("/small"))
  const text = await c.until(/hello from b1$/)
  assert.match(text, /^HTTP\/1\.1 200 OK\r\n/)
  assert.equal(c.reads, 1, "one read: one record")
  c.socket.destroy()
})

test("pipelined requests from openssl s_client are answered in order, one connection", async () => {
  const wire = `${GET("/echo?n=1")}${GET("/echo?n=2")}${GET("/other", "Connection: close\r\n")}`
  const out = await new Promise<string>((resolve, reject) => {
    const child = execFile(
      "openssl",
      [
        "s_client",
        "-quiet",
        "-connect",
        `127.0.0.1:${pc.port()}`,
        "-servername",
        "localhost",
        "-CAfile",
        pki.ca.certPath,
      ],
      { timeout: 10_000 },
      (err, stdout) => (err && !stdout ? reject(err) : resolve(stdout)),
    )
    child.stdin!.end(wire)
  })
  assert.deepEqual(statuses(out), ["200", "200", "200"])
  const first = out.indexOf('"url":"/echo?n=1"')
  const second = out.indexOf('"url":"/echo?n=2"')
  const third = out.indexOf("hello from b1")
  assert.ok(first > 0 && second > first && third > second, out)
  assert.match(out, /Connection: close\r\n/i)
})

test("a request pipelined behind one the proxy answers itself (417) is served next", async () => {
  const c = await connect()
  c.socket.write(`${GET("/a", "Expect: teapot\r\n")}${GET("/echo?after=417")}`)
  await c.until(/"url":"\/echo\?after=417"/)
  assert.deepEqual(statuses(c.text()), ["417", "200"])
  c.socket.destroy()
})

test("HTTP/1.0: without keep-alive the connection closes after the response; with it, it stays", async () => {
  const a = await connect()
  a.socket.write("GET /x HTTP/1.0\r\nHost: localhost\r\n\r\n")
  await a.closed
  assert.match(a.text(), /^HTTP\/1\.1 200 .*\r\nConnection: close\r\n/s)
  const b = await connect()
  b.socket.write("GET /x HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
  await b.until(/hello from b1$/)
  assert.match(b.text(), /\r\nConnection: keep-alive\r\n/)
  b.socket.write("GET /y HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
  await b.until(/hello from b1[\s\S]*hello from b1$/)
  b.socket.destroy()
})

test("Connection: close from the client ends the connection after its response", async () => {
  const c = await connect()
  c.socket.write(GET("/x", "Connection: close\r\n"))
  await c.closed
  assert.deepEqual(statuses(c.text()), ["200"])
})

test("HEAD and 204 carry no body, and the connection serves the next request", async () => {
  const c = await connect()
  c.socket.write("HEAD /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
  await c.until(/\r\n\r\n$/)
  assert.doesNotMatch(c.text(), /hello/)
  c.socket.write(GET("/status/204"))
  await c.until(/204 No Content[\s\S]*\r\n\r\n$/)
  assert.doesNotMatch(c.text(), /status 204|transfer-encoding/i)
  c.socket.write(GET("/x"))
  await c.until(/hello from b1$/)
  assert.deepEqual(statuses(c.text()), ["200", "204", "200"])
  c.socket.destroy()
})

test("a chunked upload with a trailer reaches the backend whole, and the connection goes on", async () => {
  const c = await connect()
  c.socket.write(
    "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
  )
  await c.until(/"bodyLength":11/)
  c.socket.write(GET("/x"))
  await c.until(/hello from b1$/)
  c.socket.destroy()
})

test("a body sent with Expect: 100-continue without waiting for the 100 reaches the backend whole", async () => {
  const c = await connect()
  const body = "x".repeat(200_000)
  c.socket.write(
    `POST /upload HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  )
  await c.until(/"received":200000/)
  assert.deepEqual(statuses(c.text()), ["100", "200"])
  c.socket.destroy()
})

test("a request head over max_header_size gets 431 and the connection closes", async () => {
  const c = await connect()
  c.socket.write(GET("/x", `X-Big: ${"a".repeat(5000)}\r\n`))
  await c.closed
  assert.match(c.text(), /^HTTP\/1\.1 431 /)
})

test("a client that half-closes after its request still gets the whole response", async () => {
  const c = await connect()
  c.socket.end(GET("/bytes?n=100000"))
  await c.closed
  assert.match(c.text(), /^HTTP\/1\.1 200 /)
  assert.equal(c.text().split("\r\n\r\n")[1]!.length, 100_000)
})

test("an idle keep-alive connection is closed after idle_timeout, without a response", async () => {
  const c = await connect()
  c.socket.write(GET("/x"))
  await c.until(/hello from b1$/)
  const started = Date.now()
  await c.closed
  const waited = Date.now() - started
  assert.ok(waited >= 800 && waited < 5_000, `closed after ${waited} ms`)
  assert.deepEqual(statuses(c.text()), ["200"])
})

test("a WebSocket frame sent right behind the upgrade request reaches the backend", async () => {
  const c = await connect()
  const upgrade =
    "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
  c.socket.write(Buffer.concat([Buffer.from(upgrade), wsFrame("ping behind the head")]))
  await c.until(/^HTTP\/1\.1 101 [\s\S]*\r\n\r\n./)
  const deadline = Date.now() + 5_000
  let frame: ReturnType<typeof wsParse>
  while (Date.now() < deadline) {
    const raw = Buffer.from(c.text(), "latin1")
    frame = wsParse(raw.subarray(raw.indexOf("\r\n\r\n") + 4))
    if (frame) break
    await new Promise((r) => setTimeout(r, 20))
  }
  assert.equal(frame?.payload.toString(), "ping behind the head")
  c.socket.destroy()
})
