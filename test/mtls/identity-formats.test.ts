/**
 * Client identity formats (client_auth.forward_format): RFC 9440 Client-Cert/Client-Cert-Chain and Envoy's
 * X-Forwarded-Client-Cert beside X-Client-*, with real client certificates (curl and Node), and a client's own copies
 * of every format's headers removed over HTTP/1.1 and HTTP/2.
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { createHash, X509Certificate } from "node:crypto"
import https from "node:https"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { h2request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { loopback, type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"

let pki: Pki
let echo: TestBackend
let pc: RunningPortcullis
let alice: CertFiles
let leaf: X509Certificate
const hosts: Record<string, string> = {}

/** A client's forged copies of every identity header of every format. */
const SPOOFED: Record<string, string> = {
  "x-client-verify": "SUCCESS",
  "x-client-cert-subject": "CN=admin",
  "x-client-cert-fingerprint": "AA:BB",
  "x-client-cert": "-----BEGIN%20CERTIFICATE-----",
  "client-cert": ":c3Bvb2Y=:",
  "client-cert-chain": ":c3Bvb2Y=:",
  "x-forwarded-client-cert": 'Hash=00;Subject="CN=admin"',
}
const ALL = Object.keys(SPOOFED)

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  // Issued by the intermediate: the client sends leaf + intermediate, the listener trusts the root.
  alice = await pki.issue({ names: ["alice.example"], commonName: "alice", client: true, issuer: "intermediate" })
  leaf = new X509Certificate(alice.cert)
  echo = await startEchoBackend("echo")
  for (const [i, name] of ["rfc", "xfcc", "bare", "xclient", "optional"].entries()) hosts[name] = loopback(i + 1)
  const cert = `certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]`
  const ca = pki.ca.certPath
  pc = await startPortcullis(`
listeners:
  - name: rfc
    address: "${hosts.rfc}:0"
    tls: { ${cert}, client_auth: { mode: require, ca: ${ca}, forward_format: rfc9440 } }
    upstream: echo
  - name: xfcc
    address: "${hosts.xfcc}:0"
    tls: { ${cert}, client_auth: { mode: require, ca: ${ca}, forward_format: xfcc, forward_cert: true } }
    upstream: echo
  - name: bare
    address: "${hosts.bare}:0"
    tls: { ${cert}, client_auth: { mode: require, ca: ${ca}, forward_format: xfcc } }
    upstream: echo
  - name: xclient
    address: "${hosts.xclient}:0"
    tls: { ${cert}, client_auth: { mode: require, ca: ${ca}, forward_cert: true } }
    upstream: echo
  - name: optional
    address: "${hosts.optional}:0"
    tls: { ${cert}, client_auth: { mode: request, ca: ${ca}, forward_format: rfc9440 } }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await echo?.close()
  await pki?.close()
})

type Headers = Record<string, string | undefined>

/** viaNode sends GET /echo over HTTP/1.1 (Node https) with alice's certificate and the spoofed headers. */
function viaNode(listener: string, client: CertFiles | null = alice): Promise<Headers> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: hosts[listener],
        port: pc.port(listener),
        path: "/echo",
        servername: "localhost",
        ca: pki.ca.cert,
        cert: client?.cert,
        key: client?.key,
        agent: false,
        headers: { host: "localhost", ...SPOOFED },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => resolve((JSON.parse(Buffer.concat(chunks).toString()) as { headers: Headers }).headers))
      },
    )
    req.on("error", reject)
    req.end()
  })
}

/** viaH2 sends GET /echo over HTTP/2 (Node http2) with alice's certificate and the spoofed headers. */
async function viaH2(listener: string): Promise<Headers> {
  const reply = await h2request({
    address: hosts[listener],
    port: pc.port(listener),
    path: "/echo",
    ca: pki.ca.cert,
    headers: SPOOFED,
    tlsOptions: { cert: alice.cert, key: alice.key },
  })
  assert.equal(reply.alpn, "h2")
  return (JSON.parse(reply.text) as { headers: Headers }).headers
}

/** viaCurl sends GET /echo with curl (--http1.1 or --http2), alice's certificate and key files, spoofed headers. */
function viaCurl(listener: string, version: "--http1.1" | "--http2"): Promise<Headers> {
  const port = pc.port(listener)
  const args = [
    "-sS",
    "--fail",
    version,
    "--cacert",
    pki.ca.certPath,
    "--cert",
    alice.certPath,
    "--key",
    alice.keyPath,
    "--resolve",
    `localhost:${port}:${hosts[listener]}`,
    ...Object.entries(SPOOFED).flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
    `https://localhost:${port}/echo`,
  ]
  return new Promise((resolve, reject) => {
    execFile("curl", args, { timeout: 15_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`curl: ${err.message} ${stderr}`))
      else resolve((JSON.parse(stdout) as { headers: Headers }).headers)
    })
  })
}

/** only asserts that every identity header but `kept` is absent (the client's copies removed; kept ones are checked by value). */
function only(headers: Headers, kept: string[]): void {
  for (const name of ALL) if (!kept.includes(name)) assert.equal(headers[name], undefined, `${name} should be absent`)
}

const sfBytes = (c: X509Certificate) => `:${c.raw.toString("base64")}:`

for (const [client, send] of [
  ["Node https (HTTP/1.1)", (l: string) => viaNode(l)],
  ["curl --http2", (l: string) => viaCurl(l, "--http2")],
] as const) {
  test(`rfc9440 via ${client}: Client-Cert is the DER leaf as a byte sequence; spoofs removed`, async () => {
    const headers = await send("rfc")
    assert.equal(headers["client-cert"], sfBytes(leaf))
    // Client-Cert-Chain is not sent (Node gives no client chain on the server side): the spoofed copy is gone.
    only(headers, ["client-cert"])
  })
}

/** The XFCC value alice's certificate gives (Envoy's element order: By, Hash, Cert, Subject, URI, DNS). */
function expectedXfcc(withCert: boolean): string {
  const hash = createHash("sha256").update(leaf.raw).digest("hex")
  const cert = withCert ? `;Cert="${encodeURIComponent(leaf.toString())}"` : ""
  return `Hash=${hash}${cert};Subject="CN=alice";DNS=alice.example`
}

for (const [client, send] of [
  ["curl --http1.1", (l: string) => viaCurl(l, "--http1.1")],
  ["Node http2", (l: string) => viaH2(l)],
] as const) {
  test(`xfcc via ${client}: X-Forwarded-Client-Cert with Hash, Cert, Subject, DNS; spoofs removed`, async () => {
    const headers = await send("xfcc")
    assert.equal(headers["x-forwarded-client-cert"], expectedXfcc(true))
    only(headers, ["x-forwarded-client-cert"])
    // The Cert element decodes to the PEM the client presented.
    const cert = /Cert="([^"]*)"/.exec(headers["x-forwarded-client-cert"]!)![1]!
    assert.equal(new X509Certificate(decodeURIComponent(cert)).fingerprint256, leaf.fingerprint256)
  })
}

test("xfcc without forward_cert: Hash, Subject and DNS, no Cert", async () => {
  const headers = await viaNode("bare")
  assert.equal(headers["x-forwarded-client-cert"], expectedXfcc(false))
  only(headers, ["x-forwarded-client-cert"])
})

test("x-client (the default) over HTTP/1.1 and HTTP/2: X-Client-* as before; RFC 9440 and XFCC spoofs removed", async () => {
  for (const headers of [await viaNode("xclient"), await viaH2("xclient"), await viaCurl("xclient", "--http2")]) {
    assert.equal(headers["x-client-verify"], "SUCCESS")
    assert.equal(headers["x-client-cert-subject"], "CN=alice")
    assert.equal(headers["x-client-cert-fingerprint"], leaf.fingerprint256)
    assert.equal(new X509Certificate(decodeURIComponent(headers["x-client-cert"]!)).fingerprint256, leaf.fingerprint256)
    only(headers, ["x-client-verify", "x-client-cert-subject", "x-client-cert-fingerprint", "x-client-cert"])
  }
})

test("rfc9440, mode request, no client certificate: no identity header at all, spoofs removed", async () => {
  const headers = await viaNode("optional", null)
  only(headers, [])
})
