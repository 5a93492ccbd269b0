/** RFC 8441 WebSocket over HTTP/2: Node's http2 client sends extended CONNECT; the backend gets an HTTP/1.1 upgrade. */
import assert from "node:assert/strict"
import { createHash, randomBytes } from "node:crypto"
import http from "node:http"
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from "node:http2"
import type net from "node:net"
import { after, before, test } from "node:test"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type HeldPort, type RunningPortcullis, refusingPort, startPortcullis } from "../../helpers/portcullis.ts"

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

let pki: Pki
let pc: RunningPortcullis
let backend: http.Server
let backendPort = 0
let refusing: HeldPort
/** Upgrade requests the backend saw, newest last. */
const seen: { url: string; headers: http.IncomingHttpHeaders }[] = []
/** Backend sockets of accepted upgrades, to see them close. */
const upgraded: net.Socket[] = []

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  backend = http.createServer((_req, res) => res.end("plain"))
  backend.on("upgrade", (req: http.IncomingMessage, socket: net.Socket) => {
    seen.push({ url: req.url ?? "", headers: req.headers })
    const key = String(req.headers["sec-websocket-key"])
    const accept = createHash("sha1")
      .update(key + GUID)
      .digest("base64")
    if (req.url === "/refuse") {
      socket.end(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nno\n",
      )
      return
    }
    const offered = String(req.headers["sec-websocket-protocol"] ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean)
    let head = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    head += `sec-websocket-accept: ${req.url === "/bad-accept" ? "AAAAAAAAAAAAAAAAAAAAAAAAAAA=" : accept}\r\n`
    if (offered.length > 0) head += `sec-websocket-protocol: ${offered.at(-1)}\r\n`
    if (req.headers["sec-websocket-extensions"]) head += "sec-websocket-extensions: permessage-deflate\r\n"
    socket.write(`${head}\r\n`)
    upgraded.push(socket)
    if (req.url === "/drop") {
      socket.write("bye")
      // A reset, not a FIN: the client must see RST_STREAM CANCEL.
      socket.once("data", () => socket.resetAndDestroy())
      return
    }
    // Echo bytes back as they come (the proxy is byte-transparent after the handshake).
    socket.pipe(socket)
  })
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve))
  backendPort = (backend.address() as net.AddressInfo).port
  refusing = await refusingPort()
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { path_prefix: /nowhere, upstream: dead }
      - { path_prefix: /split, upstream: split }
      - { upstream: ws }
upstreams:
  ws: { backends: ["127.0.0.1:${backendPort}"] }
  split: { backends: ["127.0.0.1:${refusing.port}", "127.0.0.1:${backendPort}"], passive: { enabled: false } }
  dead: { backends: ["127.0.0.1:1"], timeouts: { connect: 1s } }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await new Promise((resolve) => backend?.close(resolve))
  backend?.closeAllConnections()
  refusing?.close()
  await pki?.close()
})

/** connect opens an HTTP/2 session and resolves once the server's SETTINGS arrived. */
async function connect(): Promise<{ session: ClientHttp2Session; settings: http2.Settings }> {
  const session = http2.connect(`https://localhost:${pc.port()}`, { ca: pki.ca.cert })
  session.on("error", () => {})
  const settings = await new Promise<http2.Settings>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no SETTINGS from the proxy")), 5000)
    session.once("remoteSettings", (s) => {
      clearTimeout(timer)
      resolve(s)
    })
  })
  return { session, settings }
}

/** open sends an RFC 8441 extended CONNECT and resolves with the response headers. */
function open(
  session: ClientHttp2Session,
  path: string,
  extra: Record<string, string> = {},
): Promise<{ stream: ClientHttp2Stream; headers: IncomingHttpHeaders }> {
  const stream = session.request({
    ":method": "CONNECT",
    ":protocol": "websocket",
    ":scheme": "https",
    ":path": path,
    ":authority": "localhost",
    "sec-websocket-version": "13",
    ...extra,
  })
  stream.on("error", () => {})
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no response to the extended CONNECT")), 5000)
    stream.once("response", (headers) => {
      clearTimeout(timer)
      resolve({ stream, headers })
    })
    stream.once("close", () => reject(new Error(`stream closed before a response (rst ${stream.rstCode})`)))
  })
}

/** readN collects exactly n bytes from the stream. */
function readN(stream: ClientHttp2Stream, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let got = 0
    const timer = setTimeout(() => reject(new Error(`read ${got} of ${n} bytes`)), 10_000)
    const onData = (d: Buffer) => {
      chunks.push(d)
      got += d.length
      if (got >= n) {
        clearTimeout(timer)
        stream.off("data", onData)
        resolve(Buffer.concat(chunks))
      }
    }
    stream.on("data", onData)
  })
}

test("the HTTP/2 server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3)", async () => {
  const { session, settings } = await connect()
  assert.equal(settings.enableConnectProtocol, true)
  session.close()
})

test("an extended CONNECT becomes an HTTP/1.1 upgrade with our own key; 200 with the chosen subprotocol; bytes both ways", async () => {
  const { session } = await connect()
  const { stream, headers } = await open(session, "/chat?room=1", {
    "sec-websocket-protocol": "chat, superchat",
    "sec-websocket-extensions": "permessage-deflate; client_max_window_bits",
    "sec-websocket-key": "c3Bvb2ZlZCBrZXkgMTIzNA==",
    origin: "https://localhost",
  })
  assert.equal(headers[":status"], 200)
  assert.equal(headers["sec-websocket-protocol"], "superchat")
  assert.equal(headers["sec-websocket-extensions"], "permessage-deflate")
  assert.equal(headers["sec-websocket-accept"], undefined)
  const got = seen.at(-1)!
  assert.equal(got.url, "/chat?room=1")
  assert.equal(got.headers.upgrade, "websocket")
  assert.match(String(got.headers.connection), /upgrade/i)
  assert.equal(got.headers["sec-websocket-version"], "13")
  // Our key, 16 random bytes (RFC 6455 §4.1), not the client's spoofed copy.
  assert.notEqual(got.headers["sec-websocket-key"], "c3Bvb2ZlZCBrZXkgMTIzNA==")
  assert.equal(Buffer.from(String(got.headers["sec-websocket-key"]), "base64").length, 16)
  assert.equal(got.headers["sec-websocket-protocol"], "chat, superchat")
  assert.equal(got.headers["sec-websocket-extensions"], "permessage-deflate; client_max_window_bits")
  assert.equal(got.headers.origin, "https://localhost")
  assert.equal(got.headers.host, "localhost")
  assert.equal(got.headers["x-forwarded-for"], "127.0.0.1")
  stream.write("hello over h2")
  assert.equal((await readN(stream, 13)).toString(), "hello over h2")
  // 4 MiB each way: more than the HTTP/2 windows (64 KiB stream, 32 MiB session cap), so flow control must work.
  const big = randomBytes(4 * 1024 * 1024)
  stream.write(big)
  const back = await readN(stream, big.length)
  assert.ok(back.equals(big), "the echoed 4 MiB differ")
  // The client closing its stream closes the backend socket.
  const backendSocket = upgraded.at(-1)!
  const closed = new Promise<void>((resolve) => backendSocket.once("close", () => resolve()))
  stream.close(http2.constants.NGHTTP2_CANCEL)
  await closed
  session.close()
})

test("a backend refusal before 101 reaches the stream as its status", async () => {
  const { session } = await connect()
  const { stream, headers } = await open(session, "/refuse")
  assert.equal(headers[":status"], 403)
  const body = await readN(stream, 3)
  assert.equal(body.toString(), "no\n")
  session.close()
})

test("a 101 with the wrong Sec-WebSocket-Accept is a 502, not a WebSocket", async () => {
  const { session } = await connect()
  const { headers } = await open(session, "/bad-accept")
  assert.equal(headers[":status"], 502)
  session.close()
})

test("a backend that cannot be reached is a 502 on the stream", async () => {
  const { session } = await connect()
  const { headers } = await open(session, "/nowhere")
  assert.equal(headers[":status"], 502)
  session.close()
})

test("a handshake to a backend that refuses connections is tried on the other backend: every one gets 200", async () => {
  const { session } = await connect()
  // Round robin over a refusing backend and a live one: without the retry, every other handshake was a 502.
  for (let i = 0; i < 4; i++) {
    const { stream, headers } = await open(session, `/split/${i}`)
    assert.equal(headers[":status"], 200, `handshake ${i}`)
    stream.close()
  }
  session.close()
})

test("a backend reset after 101 is RST_STREAM CANCEL toward the client", async () => {
  const { session } = await connect()
  const { stream, headers } = await open(session, "/drop")
  assert.equal(headers[":status"], 200)
  assert.equal((await readN(stream, 3)).toString(), "bye")
  const closed = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1)))
  stream.write("x")
  assert.equal(await closed, http2.constants.NGHTTP2_CANCEL)
  session.close()
})

test("a :protocol other than websocket is refused with 501", async () => {
  const { session } = await connect()
  const { headers } = await open(session, "/chat", { ":protocol": "connect-udp" })
  assert.equal(headers[":status"], 501)
  session.close()
})
