/** PROXY protocol out, end to end: tcp listeners and http upstreams send v1/v2 headers that nginx and our v2 decoder read. */
import assert from "node:assert/strict"
import http from "node:http"
import https from "node:https"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import type tls from "node:tls"
import { PP2_CLIENT_CERT_CONN, PP2_CLIENT_SSL } from "../../../src/protocols/proxy-protocol/parse.ts"
import { tlsConnect } from "../../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../../helpers/pki.ts"
import { loopback } from "../../helpers/portcullis.ts"
import { type DecodedProxyV2, decodeProxyV2 } from "../../helpers/proxy-v2-decoder.ts"
import { type LoggedPortcullis, type NginxServer, startLoggedPortcullis, startNginx } from "../../helpers/servers.ts"
import { waitUntil } from "../../helpers/wait.ts"

/** HeaderBackend decodes the v2 header on each connection, then serves HTTP: /header answers the decoded header. */
interface HeaderBackend {
  port: number
  headers: DecodedProxyV2["header"][]
  connections: () => number
  close: () => Promise<void>
}

async function startHeaderBackend(): Promise<HeaderBackend> {
  const headers: DecodedProxyV2["header"][] = []
  const sockets = new Set<net.Socket>()
  const kHeader = Symbol("header")
  const server = http.createServer((req, res) => {
    const header = (req.socket as net.Socket & { [kHeader]?: unknown })[kHeader]
    res.setHeader("content-type", "application/json")
    res.end(JSON.stringify({ header, url: req.url, xff: req.headers["x-forwarded-for"] }))
  })
  const raw = net.createServer((socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    socket.on("error", () => {})
    let buffered = Buffer.alloc(0)
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      if (buffered.length < 16 || buffered.length < 16 + buffered.readUInt16BE(14)) return
      socket.off("data", onData)
      let decoded: DecodedProxyV2
      try {
        decoded = decodeProxyV2(buffered)
      } catch {
        socket.destroy()
        return
      }
      headers.push(decoded.header)
      ;(socket as net.Socket & { [kHeader]?: unknown })[kHeader] = decoded.header
      socket.pause()
      if (decoded.rest.length > 0) socket.unshift(decoded.rest)
      server.emit("connection", socket)
      socket.resume()
    }
    socket.on("data", onData)
  })
  await new Promise<void>((r) => raw.listen(0, "127.0.0.1", r))
  return {
    port: (raw.address() as net.AddressInfo).port,
    headers,
    connections: () => sockets.size,
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
      return new Promise((r) => raw.close(() => r()))
    },
  }
}

let pki: Pki
let clientCert: CertFiles
let nginxPlain: NginxServer
let nginxTls: NginxServer
let decoder: HeaderBackend
let pc: LoggedPortcullis
const LISTENERS = ["tcp_v1", "tcp_v2", "tcp_tlv", "http_v1", "http_v2", "http_v2_tls", "http_v2_decoder"] as const
type Listener = (typeof LISTENERS)[number]
/** Each listener binds port 0 on its own loopback address (see loopback). */
const hosts = Object.fromEntries(LISTENERS.map((l, i) => [l, loopback(i + 1)])) as Record<Listener, string>
const ports = {} as Record<Listener, number>

const LOG_FORMAT = "$proxy_protocol_addr $proxy_protocol_port $request_uri"
const ANSWER = 'location / { return 200 "$proxy_protocol_addr $proxy_protocol_port\\n"; }'

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "pp.test"] })
  const backendCert = await pki.issue({ names: ["backend.test"] })
  clientCert = await pki.issue({ names: [], commonName: "client-one", client: true })
  nginxPlain = await startNginx(`listen LISTEN proxy_protocol; ${ANSWER}`, LOG_FORMAT)
  nginxTls = await startNginx(
    `listen LISTEN ssl proxy_protocol; ssl_certificate ${backendCert.certPath}; ssl_certificate_key ${backendCert.keyPath}; ${ANSWER}`,
    LOG_FORMAT,
  )
  decoder = await startHeaderBackend()
  const cert = `certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]`
  pc = await startLoggedPortcullis(`
listeners:
  - { name: tcp_v1, address: "${hosts.tcp_v1}:0", engine: tcp, tls: { ${cert} }, upstream: nginx, send_proxy_protocol: v1 }
  - { name: tcp_v2, address: "${hosts.tcp_v2}:0", engine: tcp, tls: { ${cert} }, upstream: nginx, send_proxy_protocol: v2 }
  - name: tcp_tlv
    address: "${hosts.tcp_tlv}:0"
    engine: tcp
    tls:
      ${cert}
      alpn: [http/1.1]
      client_auth: { mode: request, ca: ${pki.ca.certPath} }
    upstream: decoder
    send_proxy_protocol: v2
  - { name: http_v1, address: "${hosts.http_v1}:0", tls: { ${cert} }, upstream: nginx_v1 }
  - { name: http_v2, address: "${hosts.http_v2}:0", tls: { ${cert} }, upstream: nginx_v2 }
  - { name: http_v2_tls, address: "${hosts.http_v2_tls}:0", tls: { ${cert} }, upstream: nginx_tls }
  - { name: http_v2_decoder, address: "${hosts.http_v2_decoder}:0", tls: { ${cert} }, upstream: decoder_http }
upstreams:
  nginx: { backends: ["127.0.0.1:${nginxPlain.port}"] }
  decoder: { backends: ["127.0.0.1:${decoder.port}"] }
  nginx_v1: { backends: ["127.0.0.1:${nginxPlain.port}"], send_proxy_protocol: v1 }
  nginx_v2: { backends: ["127.0.0.1:${nginxPlain.port}"], send_proxy_protocol: v2 }
  nginx_tls:
    backends: ["127.0.0.1:${nginxTls.port}"]
    send_proxy_protocol: v2
    tls: { ca: ${pki.ca.certPath}, servername: backend.test }
  decoder_http: { backends: ["127.0.0.1:${decoder.port}"], send_proxy_protocol: v2 }
access_log: { enabled: false }
`)
  for (const name of LISTENERS) ports[name] = pc.port(name)
})

after(async () => {
  await pc?.close()
  await Promise.all([nginxPlain?.close(), nginxTls?.close(), decoder?.close()])
  await pki?.close()
})

/** rawHttp sends one HTTP/1.0 request over a TLS connection to a tcp listener; returns the reply and the client port. */
async function rawHttp(listener: Listener, path: string): Promise<{ reply: string; clientPort: number }> {
  const socket = await tlsConnect({
    host: hosts[listener],
    port: ports[listener],
    servername: "localhost",
    ca: pki.ca.cert,
  })
  const clientPort = socket.localPort!
  const reply = await new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = []
    socket.on("data", (c: Buffer) => chunks.push(c))
    socket.once("close", () => resolve(Buffer.concat(chunks).toString()))
    socket.once("error", reject)
    socket.write(`GET ${path} HTTP/1.0\r\nHost: localhost\r\n\r\n`)
  })
  return { reply, clientPort }
}

async function loggedLine(nginx: NginxServer, path: string): Promise<string> {
  let line = ""
  await waitUntil(() => {
    line = nginx.logLines().find((l) => l.endsWith(` ${path}`)) ?? ""
    return line !== ""
  }, `nginx logged ${path}`)
  return line
}

describe("PROXY out from a tcp listener, read by nginx", () => {
  for (const version of ["v1", "v2"] as const) {
    test(`nginx logs the client's address and port from a ${version} header`, async () => {
      const path = `/tcp-${version}`
      const { reply, clientPort } = await rawHttp(`tcp_${version}`, path)
      assert.match(reply, /^HTTP\/1\.1 200 /)
      assert.match(reply, new RegExp(`\\r\\n\\r\\n127\\.0\\.0\\.1 ${clientPort}\\n$`))
      assert.equal(await loggedLine(nginxPlain, path), `127.0.0.1 ${clientPort} ${path}`)
    })
  }
})

describe("PROXY v2 out from a tcp listener, read by our decoder", () => {
  async function connectAndDecode(options: tls.ConnectionOptions) {
    const seen = decoder.headers.length
    const socket = await tlsConnect({
      host: hosts.tcp_tlv,
      port: ports.tcp_tlv!,
      servername: "pp.test",
      ca: pki.ca.cert,
      ALPNProtocols: ["http/1.1"],
      ...options,
    })
    socket.write("GET /x HTTP/1.0\r\nHost: pp.test\r\n\r\n")
    await waitUntil(() => decoder.headers.length > seen, "the backend decoded a header")
    const client = { port: socket.localPort!, cipher: socket.getCipher().name, version: socket.getProtocol() }
    socket.destroy()
    return { header: decoder.headers[seen]!, client }
  }

  test("carries the addresses and the SSL (version, cipher), ALPN and AUTHORITY TLVs", async () => {
    const { header, client } = await connectAndDecode({})
    assert.equal(header.version, 2)
    assert.equal(header.command, "proxy")
    assert.equal(header.family, "inet")
    assert.deepEqual(header.source, { address: "127.0.0.1", port: client.port })
    assert.deepEqual(header.destination, { address: hosts.tcp_tlv, port: ports.tcp_tlv })
    assert.equal(header.tlvs.alpn, "http/1.1")
    assert.equal(header.tlvs.authority, "pp.test")
    assert.equal(header.tlvs.ssl?.client, PP2_CLIENT_SSL)
    assert.equal(header.tlvs.ssl?.verify, 0)
    assert.equal(header.tlvs.ssl?.version, client.version)
    assert.equal(header.tlvs.ssl?.cipher, client.cipher)
    assert.equal(header.tlvs.ssl?.cn, undefined)
  })

  test("carries the client certificate CN when the certificate was verified", async () => {
    const { header } = await connectAndDecode({ cert: clientCert.cert, key: clientCert.key })
    assert.equal(header.tlvs.ssl?.cn, "client-one")
    assert.equal(header.tlvs.ssl?.verify, 0)
    assert.ok((header.tlvs.ssl!.client & PP2_CLIENT_CERT_CONN) !== 0, "CERT_CONN is set")
  })

  test("carries no CN and a failed verify for a certificate from an unknown CA (mode request)", async () => {
    const other = await createPki()
    try {
      const stranger = await other.issue({ names: [], commonName: "stranger", client: true })
      const { header } = await connectAndDecode({ cert: stranger.cert, key: stranger.key })
      assert.equal(header.tlvs.ssl?.cn, undefined)
      assert.notEqual(header.tlvs.ssl?.verify, 0)
    } finally {
      await other.close()
    }
  })
})

/** getVia sends GET path over a keep-alive agent; returns body and the client's local port. */
function getVia(
  agent: https.Agent,
  listener: Listener,
  path: string,
): Promise<{ status: number; body: string; port: number }> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      {
        host: hosts[listener],
        port: ports[listener],
        path,
        servername: "localhost",
        ca: pki.ca.cert,
        agent,
        headers: { host: "localhost" },
      },
      (res) => {
        const clientPort = res.socket.localPort!
        const chunks: Buffer[] = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), port: clientPort }),
        )
        res.on("error", reject)
      },
    )
    req.setTimeout(10_000, () => req.destroy(new Error("client timeout")))
    req.on("error", reject)
  })
}

describe("PROXY out from an http upstream (send_proxy_protocol)", () => {
  for (const [name, listener] of [
    ["v1 to nginx", "http_v1"],
    ["v2 to nginx", "http_v2"],
    ["v2 to nginx over TLS (header before the ClientHello)", "http_v2_tls"],
  ] as const) {
    test(`${name}: the backend sees the client's address and port`, async () => {
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1 })
      try {
        const r = await getVia(agent, listener, `/${listener}`)
        const warnings = pc.logs.filter((l) => Number(l.level) >= 40)
        assert.equal(r.status, 200, `${r.body} ${JSON.stringify(warnings)}`)
        assert.equal(r.body, `127.0.0.1 ${r.port}\n`)
        const nginx = listener === "http_v2_tls" ? nginxTls : nginxPlain
        assert.equal(await loggedLine(nginx, `/${listener}`), `127.0.0.1 ${r.port} /${listener}`)
      } finally {
        agent.destroy()
      }
    })
  }

  test("two clients never share a backend connection; one client's requests reuse its own", async () => {
    const a = new https.Agent({ keepAlive: true, maxSockets: 1 })
    const b = new https.Agent({ keepAlive: true, maxSockets: 1 })
    try {
      const seen = decoder.headers.length
      const replies = []
      for (const agent of [a, b, a, b, a]) {
        const r = await getVia(agent, "http_v2_decoder", "/header")
        assert.equal(r.status, 200)
        const body = JSON.parse(r.body) as { header: DecodedProxyV2["header"] }
        replies.push({ clientPort: r.port, proxied: body.header.source?.port })
      }
      // Each reply came over a backend connection whose PROXY header names exactly the client that asked.
      for (const r of replies) assert.equal(r.proxied, r.clientPort)
      assert.equal(new Set(replies.map((r) => r.clientPort)).size, 2)
      // Two client connections: two backend connections, each reused for that client's later requests.
      assert.equal(decoder.headers.length - seen, 2)
      const header = decoder.headers[seen]!
      assert.equal(header.tlvs.authority, "localhost")
      assert.ok(header.tlvs.ssl?.version?.startsWith("TLSv1."))
    } finally {
      a.destroy()
      b.destroy()
    }
  })

  test("a client's backend connection closes when the client's connection closes", async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 })
    const r = await getVia(agent, "http_v2_decoder", "/header")
    assert.equal(r.status, 200)
    const open = decoder.connections()
    assert.ok(open >= 1)
    agent.destroy()
    await waitUntil(() => decoder.connections() === open - 1, "the backend connection of that client closed")
  })
})
