/** PROXY protocol in (proxy_protocol: accept), end to end: trusted and untrusted peers, v1 and v2, malformed and slow headers. */
import assert from "node:assert/strict"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { encodeProxyV1, encodeProxyV2 } from "../../src/protocols/proxy-protocol/encode.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { loopback } from "../helpers/portcullis.ts"
import { type LoggedPortcullis, startLoggedPortcullis } from "../helpers/servers.ts"
import { waitUntil } from "../helpers/wait.ts"

let pki: Pki
let echo: TestBackend
let lineBackend: net.Server
let firstLines: string[]
let pc: LoggedPortcullis
const ports: Record<string, number> = {}
/** Each listener binds port 0 on its own loopback address (see loopback). */
const hosts = { trusted: loopback(1), untrusted: loopback(2), tcp: loopback(3) }

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  echo = await startEchoBackend("echo")
  firstLines = []
  // Records the first line of each connection (the PROXY v1 header the tcp engine sends), then closes.
  lineBackend = net.createServer((socket) => {
    socket.on("error", () => {})
    let text = ""
    socket.on("data", (c: Buffer) => {
      text += c.toString("latin1")
      const nl = text.indexOf("\r\n")
      if (nl >= 0) {
        firstLines.push(text.slice(0, nl))
        socket.end("ok\n")
      }
    })
  })
  await new Promise<void>((r) => lineBackend.listen(0, "127.0.0.1", r))
  const linePort = (lineBackend.address() as net.AddressInfo).port
  const tlsBlock = `{ certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }], handshake_timeout: 500ms }`
  pc = await startLoggedPortcullis(`
listeners:
  - name: trusted
    address: "${hosts.trusted}:0"
    proxy_protocol: accept
    trusted_proxies: [127.0.0.1/32]
    tls: ${tlsBlock}
    upstream: echo
  - name: untrusted
    address: "${hosts.untrusted}:0"
    proxy_protocol: accept
    trusted_proxies: [10.0.0.0/8]
    tls: ${tlsBlock}
    upstream: echo
  - name: tcp
    address: "${hosts.tcp}:0"
    engine: tcp
    proxy_protocol: accept
    trusted_proxies: [127.0.0.0/8]
    send_proxy_protocol: v1
    tls: ${tlsBlock}
    upstream: lines
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
  lines: { backends: ["127.0.0.1:${linePort}"] }
`)
  for (const name of Object.keys(hosts)) ports[name] = pc.port(name)
})

after(async () => {
  await pc?.close()
  await echo?.close()
  await new Promise((r) => lineBackend?.close(r))
  await pki?.close()
})

/** connectWithHeader opens TCP, writes header bytes, then runs TLS over the same socket. */
function connectWithHeader(listener: keyof typeof hosts, header: Buffer): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ port: ports[listener]!, host: hosts[listener] }, () => {
      raw.write(header)
      const socket = tls.connect({ socket: raw, servername: "localhost", ca: pki.ca.cert }, () => resolve(socket))
      socket.once("error", reject)
      socket.once("close", () => reject(new Error("closed before the handshake finished")))
    })
    raw.once("error", reject)
    raw.setTimeout(10_000, () => raw.destroy(new Error("timeout")))
  })
}

/** echoOver sends GET /echo on an open TLS socket and returns the backend's JSON. */
function echoOver(socket: tls.TLSSocket, path = "/echo"): Promise<{ headers: Record<string, string> }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    socket.on("data", (c: Buffer) => chunks.push(c))
    socket.once("end", () => {
      const text = Buffer.concat(chunks).toString()
      const body = text.slice(text.indexOf("\r\n\r\n") + 4)
      try {
        resolve(JSON.parse(body) as { headers: Record<string, string> })
      } catch {
        reject(new Error(`not JSON: ${text}`))
      }
    })
    socket.once("error", reject)
    socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`)
  })
}

/** closedWithoutReply reports whether the socket closed before the deadline, and how many bytes the server sent. */
function closedWithoutReply(socket: net.Socket, timeoutMs = 5000): Promise<{ closed: boolean; bytes: number }> {
  return new Promise((resolve) => {
    let bytes = 0
    socket.on("data", (c: Buffer) => {
      bytes += c.length
    })
    socket.on("error", () => {})
    const timer = setTimeout(() => resolve({ closed: false, bytes }), timeoutMs)
    socket.once("close", () => {
      clearTimeout(timer)
      resolve({ closed: true, bytes })
    })
  })
}

const CLIENT = { address: "203.0.113.7", port: 40123 }

describe("PROXY in from a trusted peer", () => {
  for (const [version, header] of [
    ["v1", () => encodeProxyV1({ source: CLIENT, destination: { address: hosts.trusted, port: ports.trusted! } })],
    ["v2", () => encodeProxyV2({ source: CLIENT, destination: { address: hosts.trusted, port: ports.trusted! } })],
  ] as const) {
    test(`the ${version} header's client address is in X-Forwarded-For, Forwarded and the access log`, async () => {
      const path = `/echo?proxy-in-${version}`
      const socket = await connectWithHeader("trusted", header())
      const seen = await echoOver(socket, path)
      assert.equal(seen.headers["x-forwarded-for"], CLIENT.address)
      assert.match(seen.headers.forwarded ?? "", /for=203\.0\.113\.7/)
      await waitUntil(() => pc.logs.some((l) => l.type === "access" && l.path === path), "the access log line")
      const line = pc.logs.find((l) => l.type === "access" && l.path === path)!
      assert.equal(line.client, CLIENT.address)
    })
  }

  test("the tcp engine passes the PROXY-in client on in its own PROXY-out header", async () => {
    const header = encodeProxyV1({ source: CLIENT, destination: { address: hosts.tcp, port: ports.tcp! } })
    const socket = await connectWithHeader("tcp", header)
    socket.write("hello\r\n")
    await waitUntil(() => firstLines.length > 0, "the backend read a PROXY line")
    socket.destroy()
    assert.equal(firstLines[0], `PROXY TCP4 203.0.113.7 ${hosts.tcp} 40123 ${ports.tcp}`)
  })
})

describe("PROXY in refused or cut short", () => {
  test("a peer outside trusted_proxies is refused, not believed", async () => {
    const raw = net.connect({ port: ports.untrusted!, host: hosts.untrusted })
    raw.write(encodeProxyV1({ source: CLIENT, destination: { address: hosts.untrusted, port: ports.untrusted! } }))
    const outcome = await closedWithoutReply(raw)
    assert.deepEqual(outcome, { closed: true, bytes: 0 })
  })

  test("a malformed header is closed", async () => {
    const raw = net.connect({ port: ports.trusted!, host: hosts.trusted })
    raw.write("PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n")
    assert.deepEqual(await closedWithoutReply(raw), { closed: true, bytes: 0 })
  })

  test("a client that sends TLS without the expected header is closed", async () => {
    const raw = net.connect({ port: ports.trusted!, host: hosts.trusted })
    const socket = tls.connect({ socket: raw, servername: "localhost", ca: pki.ca.cert })
    socket.on("error", () => {})
    assert.equal((await closedWithoutReply(raw)).closed, true)
    assert.equal(socket.authorized, false)
  })

  test("a header that never completes is closed within the handshake timeout", async () => {
    const raw = net.connect({ port: ports.trusted!, host: hosts.trusted })
    raw.write("PROXY TCP4 203.0.113.7 ")
    // handshake_timeout is 500ms; the 5 s deadline only bounds the wait.
    assert.deepEqual(await closedWithoutReply(raw, 5000), { closed: true, bytes: 0 })
  })
})
