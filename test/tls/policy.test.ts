/** TLS policy profiles and overrides, seen by real clients against a bare tls.Server built from a CertStore. */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import tls from "node:tls"
import { CertStore } from "../../src/tls/cert-store.ts"
import { DEFAULT_GROUPS, SUPPORTS_MLKEM, serverTlsOptions } from "../../src/tls/policy.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { handshake, refused, startStoreServer, tlsConfig } from "./harness.ts"

let pki: Pki
let ecdsa: CertFiles
let rsa: CertFiles

before(async () => {
  pki = await createPki()
  ecdsa = await pki.issue({ names: ["site.test", "other.test"] })
  rsa = await pki.issue({ names: ["site.test", "other.test"], keyType: "rsa" })
})
after(() => pki?.close())

async function serve(
  t: import("node:test").TestContext,
  tls: Record<string, unknown>,
  engine: "http" | "tcp" = "http",
) {
  const certificates = [
    { cert: ecdsa.certPath, key: ecdsa.keyPath },
    { cert: rsa.certPath, key: rsa.keyPath },
  ]
  const store = await CertStore.load(tlsConfig({ certificates, ...tls }, engine), { dataDir: pki.dir, engine })
  return startStoreServer(t, store)
}

const OLD_CLIENT = { minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT:@SECLEVEL=0" } as const

test("intermediate negotiates TLS 1.3 with a client that offers it", async (t) => {
  const port = await serve(t, { profile: "intermediate" })
  const got = await handshake(port, { servername: "site.test" })
  assert.equal(got.protocol, "TLSv1.3")
  assert.equal(got.data, "hi\n")
})

test("intermediate negotiates TLS 1.2 with an ECDHE AEAD suite", async (t) => {
  const port = await serve(t, { profile: "intermediate" })
  const got = await handshake(port, { servername: "site.test", maxVersion: "TLSv1.2" })
  assert.equal(got.protocol, "TLSv1.2")
  assert.match(got.cipher, /^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/)
})

test("intermediate refuses TLS 1.1, which old accepts from the same client", async (t) => {
  const intermediate = await serve(t, { profile: "intermediate" })
  const err = await refused(intermediate, { servername: "site.test", ...OLD_CLIENT })
  assert.match(String(err.code ?? err.message), /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|protocol/i)
  const old = await serve(t, { profile: "old" })
  const got = await handshake(old, { servername: "site.test", ...OLD_CLIENT })
  assert.equal(got.protocol, "TLSv1.1")
})

test("old accepts TLS 1.0 (OpenSSL 3 needs security level 0 for it)", async (t) => {
  const port = await serve(t, { profile: "old" })
  const got = await handshake(port, { servername: "site.test", ...OLD_CLIENT, maxVersion: "TLSv1" })
  assert.equal(got.protocol, "TLSv1")
})

test("modern refuses TLS 1.2 and accepts TLS 1.3", async (t) => {
  const port = await serve(t, { profile: "modern" })
  await refused(port, { servername: "site.test", maxVersion: "TLSv1.2" })
  assert.equal((await handshake(port, { servername: "site.test" })).protocol, "TLSv1.3")
})

test("intermediate accepts no CBC, RSA key exchange or other non-AEAD suite in TLS 1.2", async (t) => {
  const port = await serve(t, { profile: "intermediate" })
  const old = await serve(t, { profile: "old" })
  const candidates = tls
    .getCiphers()
    .map((c) => c.toUpperCase())
    .filter((c) => !c.startsWith("TLS_"))
  const accepted: string[] = []
  const acceptedByOld: string[] = []
  for (const cipher of candidates) {
    // No SNI: the server's own context holds both the ECDSA and the RSA certificate.
    const client = { maxVersion: "TLSv1.2", ciphers: `${cipher}:@SECLEVEL=0` } as const
    const a = await handshake(port, client).catch(() => undefined)
    if (a) accepted.push(a.cipher)
    const b = await handshake(old, client).catch(() => undefined)
    if (b) acceptedByOld.push(b.cipher)
  }
  assert.ok(accepted.includes("ECDHE-ECDSA-AES128-GCM-SHA256"), accepted.join(" "))
  assert.ok(accepted.includes("ECDHE-RSA-AES256-GCM-SHA384"), accepted.join(" "))
  for (const cipher of accepted) {
    assert.match(cipher, /^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/)
  }
  // The same probe finds the CBC suites where the old profile offers them.
  assert.ok(acceptedByOld.includes("ECDHE-RSA-AES128-SHA"), acceptedByOld.join(" "))
  assert.ok(acceptedByOld.includes("ECDHE-ECDSA-AES256-SHA384"), acceptedByOld.join(" "))
})

test("an http listener negotiates h2 by ALPN, also after SNI switched the context", async (t) => {
  const port = await serve(t, { profile: "intermediate" })
  for (const servername of ["site.test", "other.test", "unknown.test"]) {
    assert.equal((await handshake(port, { servername, ALPNProtocols: ["h2", "http/1.1"] })).alpn, "h2", servername)
  }
  assert.equal((await handshake(port, { ALPNProtocols: ["h2", "http/1.1"] })).alpn, "h2", "no SNI")
  assert.equal((await handshake(port, { servername: "site.test", ALPNProtocols: ["http/1.1"] })).alpn, "http/1.1")
})

test("a tcp listener negotiates no ALPN unless configured", async (t) => {
  const plain = await serve(t, {}, "tcp")
  assert.equal((await handshake(plain, { servername: "site.test", ALPNProtocols: ["h2", "http/1.1"] })).alpn, false)
  const h1 = await serve(t, { alpn: ["http/1.1"] }, "tcp")
  assert.equal((await handshake(h1, { servername: "site.test", ALPNProtocols: ["h2", "http/1.1"] })).alpn, "http/1.1")
})

test("the default groups put X25519MLKEM768 first when this runtime offers it", async (t) => {
  assert.equal(DEFAULT_GROUPS[0], SUPPORTS_MLKEM ? "X25519MLKEM768" : "X25519")
  const options = serverTlsOptions(tlsConfig({ certificates: [{ cert: ecdsa.certPath, key: ecdsa.keyPath }] }), "http")
  assert.equal(options.ecdhCurve, DEFAULT_GROUPS.join(":"))
  const port = await serve(t, {})
  if (SUPPORTS_MLKEM) {
    const got = await handshake(port, { servername: "site.test", ecdhCurve: "X25519MLKEM768" })
    assert.equal(got.protocol, "TLSv1.3")
  }
  const x25519 = await handshake(port, { servername: "site.test", ecdhCurve: "X25519" })
  assert.equal(x25519.protocol, "TLSv1.3")
})

test("groups override: only P-256 is accepted", async (t) => {
  const port = await serve(t, { groups: ["P-256"] })
  await refused(port, { servername: "site.test", ecdhCurve: "X25519" })
  assert.equal((await handshake(port, { servername: "site.test", ecdhCurve: "P-256" })).protocol, "TLSv1.3")
})

test("min_version overrides the profile: intermediate with min TLSv1.3 refuses TLS 1.2", async (t) => {
  const port = await serve(t, { profile: "intermediate", min_version: "TLSv1.3" })
  await refused(port, { servername: "site.test", maxVersion: "TLSv1.2" })
})

test("max_version overrides the profile: max TLSv1.2 negotiates TLS 1.2 with a TLS 1.3 client", async (t) => {
  const port = await serve(t, { max_version: "TLSv1.2" })
  assert.equal((await handshake(port, { servername: "site.test" })).protocol, "TLSv1.2")
})

test("ciphersuites and ciphers override the profile", async (t) => {
  const port = await serve(t, {
    ciphersuites: "TLS_CHACHA20_POLY1305_SHA256",
    ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384",
  })
  assert.equal((await handshake(port, { servername: "site.test" })).cipher, "TLS_CHACHA20_POLY1305_SHA256")
  const tls12 = await handshake(port, { servername: "site.test", maxVersion: "TLSv1.2" })
  assert.equal(tls12.cipher, "ECDHE-ECDSA-AES256-GCM-SHA384")
})

test("min_version above max_version is a policy error", () => {
  const config = tlsConfig({
    certificates: [{ cert: ecdsa.certPath, key: ecdsa.keyPath }],
    min_version: "TLSv1.3",
    max_version: "TLSv1.2",
  })
  assert.throws(() => serverTlsOptions(config, "http"), {
    code: "PC_TLS_POLICY",
    message: "tls policy: min_version TLSv1.3 is above max_version TLSv1.2",
  })
})

test("client_auth require: a client certificate from the CA is accepted, none or another CA's or a revoked one is refused", async (t) => {
  const alice = await pki.issue({ names: [], commonName: "alice", client: true })
  const mallory = await pki.issue({ names: [], commonName: "mallory", client: true })
  const crl = await pki.revoke(mallory)
  const other = await createPki()
  t.after(() => other.close())
  const stranger = await other.issue({ names: [], commonName: "stranger", client: true })
  const port = await serve(t, { client_auth: { mode: "require", ca: pki.ca.certPath, crl } })
  const ok = await handshake(port, { servername: "other.test", cert: alice.cert, key: alice.key })
  assert.equal(ok.data, "hi\n")
  await refused(port, { servername: "other.test" })
  await refused(port, { servername: "other.test", cert: stranger.cert, key: stranger.key })
  await refused(port, { servername: "other.test", cert: mallory.cert, key: mallory.key })
})

test("client_auth request: a client without a certificate is let in", async (t) => {
  const port = await serve(t, { client_auth: { mode: "request", ca: pki.ca.certPath } })
  assert.equal((await handshake(port, { servername: "site.test" })).data, "hi\n")
})

test("a missing client_auth ca file is a policy error naming it", () => {
  const config = tlsConfig({
    certificates: [{ cert: ecdsa.certPath, key: ecdsa.keyPath }],
    client_auth: { mode: "require", ca: `${pki.dir}/nope.pem` },
  })
  assert.throws(() => serverTlsOptions(config, "http"), {
    code: "PC_TLS_POLICY",
    message: `loading client_auth ca ${pki.dir}/nope.pem: reading ${pki.dir}/nope.pem: ENOENT`,
  })
})
