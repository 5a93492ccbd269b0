/** mTLS from clients, end to end: client_auth require/request/none with good, missing, expired, wrong-CA and revoked certificates; the headers backends see; spoofing; resumption across policies. */
import assert from "node:assert/strict"
import { X509Certificate } from "node:crypto"
import https from "node:https"
import { after, before, describe, test } from "node:test"
import type tls from "node:tls"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { h2request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { loopback, type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"

let pki: Pki
let otherPki: Pki
let echo: TestBackend
let pc: RunningPortcullis
const ports: Record<string, number> = {}
/** Each listener binds port 0 on its own loopback address (see loopback). */
const hosts: Record<string, string> = {}
const clients: Record<string, CertFiles | undefined> = {}

const SPOOFED = {
  "x-client-cert-subject": "CN=admin",
  "x-client-cert-fingerprint": "AA:BB",
  "x-client-verify": "SUCCESS",
  "x-client-cert": "-----BEGIN%20CERTIFICATE-----",
}

before(async () => {
  pki = await createPki()
  otherPki = await createPki()
  const site = await pki.issue({ names: ["localhost", "open.test", "secure.test"] })
  const day = 86_400_000
  clients.good = await pki.issue({ names: [], commonName: "alice", client: true })
  clients.missing = undefined
  clients.expired = await pki.issue({
    names: [],
    commonName: "old-alice",
    client: true,
    notBefore: new Date(Date.now() - 10 * day),
    notAfter: new Date(Date.now() - day),
  })
  clients.wrongca = await otherPki.issue({ names: [], commonName: "mallory", client: true })
  clients.revoked = await pki.issue({ names: [], commonName: "bob", client: true })
  const crl = await pki.revoke(clients.revoked)
  echo = await startEchoBackend("echo")
  for (const [i, name] of ["require", "request", "none", "open", "secure", "mixed"].entries())
    hosts[name] = loopback(i + 1)
  const openCert = await pki.issue({ names: ["open.test"] })
  const secureCert = await pki.issue({ names: ["secure.test"] })
  const cert = `certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]`
  const ca = pki.ca.certPath
  pc = await startPortcullis(`
listeners:
  - name: require
    address: "${hosts.require}:0"
    tls: { ${cert}, client_auth: { mode: require, ca: ${ca}, crl: ${crl}, forward_cert: true } }
    upstream: echo
  - name: request
    address: "${hosts.request}:0"
    tls: { ${cert}, client_auth: { mode: request, ca: ${ca}, crl: ${crl} } }
    upstream: echo
  - name: none
    address: "${hosts.none}:0"
    tls: { ${cert} }
    upstream: echo
  - name: open
    address: "${hosts.open}:0"
    tls: { ${cert} }
    upstream: echo
  - name: secure
    address: "${hosts.secure}:0"
    tls: { ${cert}, client_auth: { mode: require, ca: ${ca} } }
    upstream: echo
  - name: mixed
    address: "${hosts.mixed}:0"
    tls:
      certificates:
        - { cert: ${openCert.certPath}, key: ${openCert.keyPath} }
        - { cert: ${secureCert.certPath}, key: ${secureCert.keyPath}, client_auth: { mode: require, ca: ${ca} } }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
access_log: { enabled: false }
`)
  for (const name of Object.keys(hosts)) ports[name] = pc.port(name)
})

after(async () => {
  await pc?.close()
  await echo?.close()
  await Promise.all([pki?.close(), otherPki?.close()])
})

interface Seen {
  status: number
  headers: Record<string, string | undefined>
  reused: boolean
  session: Buffer | undefined
}

/** get sends GET /echo with an optional client certificate and returns the headers the backend saw. */
function get(
  listener: string,
  options: {
    client?: CertFiles
    servername?: string
    headers?: Record<string, string>
    session?: Buffer
    maxVersion?: tls.SecureVersion
  } = {},
): Promise<Seen> {
  return new Promise((resolve, reject) => {
    let session: Buffer | undefined
    const req = https.request(
      {
        host: hosts[listener],
        port: ports[listener],
        path: "/echo",
        servername: options.servername ?? "localhost",
        ca: pki.ca.cert,
        cert: options.client?.cert,
        key: options.client?.key,
        agent: false,
        headers: { host: options.servername ?? "localhost", ...options.headers },
        timeout: 10_000,
        ...(options.session && { session: options.session }),
        ...(options.maxVersion && { maxVersion: options.maxVersion }),
      } as https.RequestOptions,
      (res) => {
        const socket = res.socket as tls.TLSSocket
        const chunks: Buffer[] = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => {
          const body = Buffer.concat(chunks).toString()
          try {
            const json = JSON.parse(body) as { headers: Record<string, string | undefined> }
            resolve({ status: res.statusCode ?? 0, headers: json.headers, reused: socket.isSessionReused(), session })
          } catch {
            reject(new Error(`status ${res.statusCode}: ${body}`))
          }
        })
      },
    )
    req.on("socket", (s) => {
      s.on("session", (buf: Buffer) => {
        session = buf
      })
    })
    req.on("timeout", () => req.destroy(new Error("client timeout")))
    req.on("error", reject)
    req.end()
  })
}

function fingerprint(files: CertFiles): string {
  return new X509Certificate(files.cert).fingerprint256
}

describe("client_auth mode require", () => {
  test("good certificate: 200, and the backend sees subject, fingerprint, SUCCESS and the URL-encoded PEM", async () => {
    const seen = await get("require", { client: clients.good })
    assert.equal(seen.status, 200)
    assert.equal(seen.headers["x-client-verify"], "SUCCESS")
    assert.equal(seen.headers["x-client-cert-subject"], "CN=alice")
    assert.equal(seen.headers["x-client-cert-fingerprint"], fingerprint(clients.good!))
    const pem = decodeURIComponent(seen.headers["x-client-cert"] ?? "")
    assert.equal(new X509Certificate(pem).fingerprint256, fingerprint(clients.good!))
  })

  for (const kind of ["missing", "expired", "wrongca", "revoked"]) {
    test(`${kind} certificate: refused during the handshake, no request reaches the backend`, async () => {
      const before = echo.seen.length
      await assert.rejects(get("require", { client: clients[kind] }))
      assert.equal(echo.seen.length, before)
    })
  }

  test("spoofed X-Client-* headers from a client with a good certificate are replaced by the real ones", async () => {
    const seen = await get("require", { client: clients.good, headers: SPOOFED })
    assert.equal(seen.headers["x-client-cert-subject"], "CN=alice")
    assert.equal(seen.headers["x-client-verify"], "SUCCESS")
    assert.equal(seen.headers["x-client-cert-fingerprint"], fingerprint(clients.good!))
    assert.notEqual(seen.headers["x-client-cert"], SPOOFED["x-client-cert"])
  })
})

describe("client_auth mode request", () => {
  const table: [string, RegExp][] = [
    ["good", /^SUCCESS$/],
    ["missing", /^NONE$/],
    ["expired", /^FAILED:CERT_HAS_EXPIRED$/],
    [
      "wrongca",
      /^FAILED:(UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN)$/,
    ],
    ["revoked", /^FAILED:CERT_REVOKED$/],
  ]
  for (const [kind, verify] of table) {
    test(`${kind} certificate: let in, X-Client-Verify ${verify.source}`, async () => {
      const seen = await get("request", { client: clients[kind] })
      assert.equal(seen.status, 200)
      assert.match(seen.headers["x-client-verify"] ?? "(absent)", verify)
      if (kind === "missing") {
        assert.equal(seen.headers["x-client-cert-subject"], undefined)
        assert.equal(seen.headers["x-client-cert-fingerprint"], undefined)
      } else {
        assert.equal(seen.headers["x-client-cert-fingerprint"], fingerprint(clients[kind]!))
      }
      // forward_cert is off on this listener
      assert.equal(seen.headers["x-client-cert"], undefined)
    })
  }

  test("spoofed X-Client-* headers without a certificate are dropped (Verify is NONE)", async () => {
    const seen = await get("request", { headers: SPOOFED })
    assert.equal(seen.headers["x-client-verify"], "NONE")
    assert.equal(seen.headers["x-client-cert-subject"], undefined)
    assert.equal(seen.headers["x-client-cert-fingerprint"], undefined)
    assert.equal(seen.headers["x-client-cert"], undefined)
  })
})

describe("client_auth mode none", () => {
  test("a client certificate is not asked for and no X-Client-* header reaches the backend", async () => {
    const seen = await get("none", { client: clients.good })
    assert.equal(seen.status, 200)
    for (const name of Object.keys(SPOOFED)) assert.equal(seen.headers[name], undefined, name)
  })

  test("spoofed X-Client-* headers are dropped", async () => {
    const seen = await get("none", { headers: SPOOFED })
    for (const name of Object.keys(SPOOFED)) assert.equal(seen.headers[name], undefined, name)
  })

  test("spoofed X-Client-* headers sent over HTTP/2 are dropped too", async () => {
    const reply = await h2request({
      address: hosts.none!,
      port: ports.none!,
      path: "/echo",
      ca: pki.ca.cert,
      headers: SPOOFED,
    })
    assert.equal(reply.status, 200)
    assert.equal(reply.alpn, "h2")
    const seen = JSON.parse(reply.text) as { headers: Record<string, string | undefined> }
    for (const name of Object.keys(SPOOFED)) assert.equal(seen.headers[name], undefined, name)
  })
})

describe("session resumption does not cross client-certificate policies (nginx CVE-2025-23419 pattern)", () => {
  test("a session from the open name resumes there (control)", async () => {
    const first = await get("open", { servername: "open.test" })
    assert.ok(first.session, "the client got a session")
    const again = await get("open", { servername: "open.test", session: first.session })
    assert.equal(again.reused, true)
  })

  test("a session from the open name does not get a client without a certificate into the mTLS name", async () => {
    const first = await get("open", { servername: "open.test" })
    assert.ok(first.session)
    const before = echo.seen.length
    await assert.rejects(get("secure", { servername: "secure.test", session: first.session }))
    assert.equal(echo.seen.length, before)
  })

  test("with a good certificate the mTLS name serves, and not by resuming the open name's session", async () => {
    const first = await get("open", { servername: "open.test" })
    const seen = await get("secure", { servername: "secure.test", session: first.session, client: clients.good })
    assert.equal(seen.status, 200)
    assert.equal(seen.reused, false)
    assert.equal(seen.headers["x-client-verify"], "SUCCESS")
  })
})

for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
  // TLS 1.2 tickets are not bound to the SNI name as TLS 1.3 ones are: there only the session scope keeps them apart.
  describe(`${maxVersion}: per-certificate client_auth on one listener (HAProxy crt-list style), one set of ticket keys`, () => {
    test("the open name serves without a certificate; the mTLS name refuses one without", async () => {
      assert.equal((await get("mixed", { servername: "open.test", maxVersion })).status, 200)
      await assert.rejects(get("mixed", { servername: "secure.test", maxVersion }))
      const seen = await get("mixed", { servername: "secure.test", client: clients.good, maxVersion })
      assert.equal(seen.headers["x-client-verify"], "SUCCESS")
    })

    test("a session from the open name resumes on the open name (control: the ticket is good on this listener)", async () => {
      const first = await get("mixed", { servername: "open.test", maxVersion })
      assert.ok(first.session)
      assert.equal((await get("mixed", { servername: "open.test", session: first.session, maxVersion })).reused, true)
    })

    test("a session from the open name does not get a client without a certificate into the mTLS name", async () => {
      const first = await get("mixed", { servername: "open.test", maxVersion })
      const before = echo.seen.length
      await assert.rejects(get("mixed", { servername: "secure.test", session: first.session, maxVersion }))
      assert.equal(echo.seen.length, before)
    })

    test("a client with a good certificate gets a full handshake on the mTLS name, not the open name's session", async () => {
      const first = await get("mixed", { servername: "open.test", maxVersion })
      const seen = await get("mixed", {
        servername: "secure.test",
        session: first.session,
        client: clients.good,
        maxVersion,
      })
      assert.equal(seen.reused, false)
      assert.equal(seen.headers["x-client-verify"], "SUCCESS")
    })
  })
}
