/** Re-encryption to backends (upstream tls:): verification, names, expiry, upstream mTLS, insecure_skip_verify, session reuse, tcp engine too. */
import assert from "node:assert/strict"
import https from "node:https"
import type net from "node:net"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { request, tlsConnect } from "../../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../../helpers/pki.ts"
import { loopback } from "../../helpers/portcullis.ts"
import { type LoggedPortcullis, startLoggedPortcullis } from "../../helpers/servers.ts"
import { waitUntil } from "../../helpers/wait.ts"

/** Handshake is what an https backend saw of one incoming TLS connection. */
interface Handshake {
  resumed: boolean
  alpn: string | false | null
  servername: string | false | null
}

interface HttpsBackend {
  port: number
  handshakes: Handshake[]
  close: () => Promise<void>
}

/** startHttpsBackend serves /slow?ms=N and anything else with JSON of the client certificate CN it saw. */
async function startHttpsBackend(options: { cert: CertFiles; clientCa?: string }): Promise<HttpsBackend> {
  const handshakes: Handshake[] = []
  const sockets = new Set<net.Socket>()
  const server = https.createServer(
    {
      cert: options.cert.cert,
      key: options.cert.key,
      ...(options.clientCa && { requestCert: true, rejectUnauthorized: true, ca: options.clientCa }),
    },
    (req, res) => {
      const socket = req.socket as tls.TLSSocket
      const url = new URL(req.url ?? "/", "https://x")
      const answer = () =>
        res.end(JSON.stringify({ clientCN: socket.getPeerCertificate()?.subject?.CN ?? null, url: req.url }))
      if (url.pathname === "/slow") setTimeout(answer, Number(url.searchParams.get("ms") ?? 0))
      else answer()
    },
  )
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    handshakes.push({ resumed: socket.isSessionReused(), alpn: socket.alpnProtocol, servername: socket.servername })
  })
  server.on("connection", (s: net.Socket) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })
  server.on("tlsClientError", () => {})
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return {
    port: (server.address() as net.AddressInfo).port,
    handshakes,
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise((r) => server.close(() => r()))
    },
  }
}

/** startTlsEcho runs a TLS server that echoes bytes (for the tcp engine). */
async function startTlsEcho(cert: CertFiles): Promise<HttpsBackend> {
  const handshakes: Handshake[] = []
  const server = tls.createServer({ cert: cert.cert, key: cert.key }, (socket) => {
    handshakes.push({ resumed: socket.isSessionReused(), alpn: socket.alpnProtocol, servername: socket.servername })
    socket.on("error", () => {})
    socket.pipe(socket)
  })
  server.on("tlsClientError", () => {})
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return {
    port: (server.address() as net.AddressInfo).port,
    handshakes,
    close: () => new Promise((r) => server.close(() => r())),
  }
}

let pki: Pki
let otherPki: Pki
let good: HttpsBackend
let stranger: HttpsBackend
let expired: HttpsBackend
let mutual: HttpsBackend
let tlsEcho: HttpsBackend
let pc: LoggedPortcullis
let port: number
let tcpPort: number
let tcpWrongPort: number

const HOSTS = ["good", "wrongname", "unknownca", "expired", "mtls", "mtlsmissing", "insecure", "ipnoname"]

before(async () => {
  pki = await createPki()
  otherPki = await createPki()
  const site = await pki.issue({ names: ["localhost", ...HOSTS.map((h) => `${h}.test`)] })
  const backendCert = await pki.issue({ names: ["backend.test"] })
  const strangerCert = await otherPki.issue({ names: ["backend.test"] })
  const day = 86_400_000
  const expiredCert = await pki.issue({
    names: ["backend.test"],
    notBefore: new Date(Date.now() - 10 * day),
    notAfter: new Date(Date.now() - day),
  })
  const proxyClient = await pki.issue({ names: [], commonName: "portcullis-proxy", client: true })
  good = await startHttpsBackend({ cert: backendCert })
  stranger = await startHttpsBackend({ cert: strangerCert })
  expired = await startHttpsBackend({ cert: expiredCert })
  mutual = await startHttpsBackend({ cert: backendCert, clientCa: pki.ca.cert })
  tlsEcho = await startTlsEcho(backendCert)
  const ca = pki.ca.certPath
  const cert = `certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]`
  pc = await startLoggedPortcullis(`
listeners:
  - name: web
    address: "${loopback(1)}:0"
    tls: { ${cert} }
    routes:
${HOSTS.map((h) => `      - { hosts: [${h}.test], upstream: ${h} }`).join("\n")}
  - { name: tcp, address: "${loopback(2)}:0", engine: tcp, tls: { ${cert} }, upstream: tcp_good }
  - { name: tcp_wrong, address: "${loopback(3)}:0", engine: tcp, tls: { ${cert} }, upstream: tcp_wrong }
upstreams:
  good: { backends: ["127.0.0.1:${good.port}"], tls: { ca: ${ca}, servername: backend.test } }
  wrongname: { backends: ["127.0.0.1:${good.port}"], tls: { ca: ${ca}, servername: other.test }, retries: 0 }
  unknownca: { backends: ["127.0.0.1:${stranger.port}"], tls: { ca: ${ca}, servername: backend.test }, retries: 0 }
  expired: { backends: ["127.0.0.1:${expired.port}"], tls: { ca: ${ca}, servername: backend.test }, retries: 0 }
  mtls:
    backends: ["127.0.0.1:${mutual.port}"]
    tls: { ca: ${ca}, servername: backend.test, cert: ${proxyClient.certPath}, key: ${proxyClient.keyPath} }
  mtlsmissing: { backends: ["127.0.0.1:${mutual.port}"], tls: { ca: ${ca}, servername: backend.test }, retries: 0 }
  insecure: { backends: ["127.0.0.1:${stranger.port}"], tls: { insecure_skip_verify: true } }
  ipnoname: { backends: ["127.0.0.1:${good.port}"], tls: { ca: ${ca} }, retries: 0 }
  tcp_good: { backends: ["127.0.0.1:${tlsEcho.port}"], tls: { ca: ${ca}, servername: backend.test } }
  tcp_wrong: { backends: ["127.0.0.1:${tlsEcho.port}"], tls: { ca: ${ca}, servername: other.test }, retries: 0 }
`)
  port = pc.port("web")
  tcpPort = pc.port("tcp")
  tcpWrongPort = pc.port("tcp_wrong")
})

after(async () => {
  await pc?.close()
  await Promise.all([good?.close(), stranger?.close(), expired?.close(), mutual?.close(), tlsEcho?.close()])
  await Promise.all([pki?.close(), otherPki?.close()])
})

function get(host: string, path = "/") {
  return request({ port, servername: `${host}.test`, ca: pki.ca.cert, path })
}

/** warningFor finds the warning logged for a failed request to an upstream. */
async function warningFor(upstream: string): Promise<Record<string, unknown>> {
  let line: Record<string, unknown> | undefined
  await waitUntil(() => {
    line = pc.logs.find((l) => l.upstream === upstream && Number(l.level) >= 40)
    return line !== undefined
  }, `a warning for upstream ${upstream}`)
  return line!
}

describe("re-encryption to an https backend", () => {
  test("a backend with a good certificate for the servername answers 200 over TLS with ALPN http/1.1", async () => {
    const before = good.handshakes.length
    const reply = await get("good")
    assert.equal(reply.status, 200)
    assert.equal(JSON.parse(reply.text).clientCN, null)
    const hs = good.handshakes[before]!
    assert.equal(hs.servername, "backend.test")
    assert.equal(hs.alpn, "http/1.1")
  })

  const failures: [string, RegExp][] = [
    ["wrongname", /ERR_TLS_CERT_ALTNAME_INVALID/],
    ["unknownca", /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/],
    ["expired", /CERT_HAS_EXPIRED/],
    ["ipnoname", /ERR_TLS_CERT_ALTNAME_INVALID/],
  ]
  for (const [host, reason] of failures) {
    test(`${host}: 502, and the warning names the reason (${reason.source})`, async () => {
      const reply = await get(host)
      assert.equal(reply.status, 502)
      const line = await warningFor(host)
      assert.match(`${line.code} ${line.err}`, reason)
    })
  }

  test("a backend that requires a client certificate gets the upstream's cert (200, the backend sees its CN)", async () => {
    const reply = await get("mtls")
    assert.equal(reply.status, 200)
    assert.equal(JSON.parse(reply.text).clientCN, "portcullis-proxy")
  })

  test("without the upstream's client certificate that backend refuses: 502", async () => {
    const reply = await get("mtlsmissing")
    assert.equal(reply.status, 502)
    await warningFor("mtlsmissing")
  })

  test("insecure_skip_verify reaches an unverifiable backend and warned at start", async () => {
    const reply = await get("insecure")
    assert.equal(reply.status, 200)
    const warning = pc.logs.find((l) => Number(l.level) === 40 && /insecure_skip_verify/.test(String(l.msg)))
    assert.ok(warning, "a warning about insecure_skip_verify was logged at start")
    assert.equal(warning.upstream, "insecure")
  })

  test("TLS sessions to the backend are resumed on later pooled connections", async () => {
    const before = good.handshakes.length
    // One connection first, so a session ticket is in the cache; then concurrent slow requests open more connections.
    assert.equal((await get("good", "/first")).status, 200)
    const replies = await Promise.all([1, 2, 3, 4].map((i) => get("good", `/slow?ms=200&i=${i}`)))
    for (const r of replies) assert.equal(r.status, 200)
    const later = good.handshakes.slice(before + 1)
    assert.ok(later.length >= 1, "the concurrent requests opened new backend connections")
    assert.ok(
      later.every((h) => h.resumed),
      `every later connection resumed its TLS session: ${JSON.stringify(good.handshakes.slice(before))}`,
    )
  })
})

describe("re-encryption from a tcp listener", () => {
  test("bytes go through a verified TLS connection to the backend", async () => {
    const socket = await tlsConnect({ host: pc.host("tcp"), port: tcpPort, servername: "localhost", ca: pki.ca.cert })
    const echoed = await new Promise<string>((resolve) => {
      socket.once("data", (c: Buffer) => resolve(c.toString()))
      socket.write("ping over tls\n")
    })
    socket.destroy()
    assert.equal(echoed, "ping over tls\n")
    assert.equal(tlsEcho.handshakes.at(-1)?.servername, "backend.test")
  })

  test("later tcp connections resume the TLS session to the backend", async () => {
    const before = tlsEcho.handshakes.length
    for (let i = 0; i < 3; i++) {
      const socket = await tlsConnect({ host: pc.host("tcp"), port: tcpPort, servername: "localhost", ca: pki.ca.cert })
      await new Promise<void>((resolve) => {
        socket.once("data", () => resolve())
        socket.write("x")
      })
      socket.destroy()
    }
    const seen = tlsEcho.handshakes.slice(before)
    assert.equal(seen.length, 3)
    assert.ok(
      seen.every((h) => h.resumed),
      JSON.stringify(seen),
    )
  })

  test("a backend certificate that does not match closes the client connection, never falls back to plain", async () => {
    const socket = await tlsConnect({
      host: pc.host("tcp_wrong"),
      port: tcpWrongPort,
      servername: "localhost",
      ca: pki.ca.cert,
    })
    const got = await new Promise<number>((resolve) => {
      let n = 0
      socket.on("data", (c: Buffer) => {
        n += c.length
      })
      socket.on("error", () => {})
      socket.once("close", () => resolve(n))
      socket.write("must not arrive\n")
    })
    assert.equal(got, 0)
    const line = await warningFor("tcp_wrong")
    assert.match(`${line.code} ${line.err}`, /ERR_TLS_CERT_ALTNAME_INVALID/)
  })
})
