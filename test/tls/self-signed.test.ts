/** The self-signed source: made once under the data dir, reused while it has more than 7 days left. */
import assert from "node:assert/strict"
import { X509Certificate } from "node:crypto"
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { CertStore } from "../../src/tls/cert-store.ts"
import { loadSelfSigned } from "../../src/tls/sources/self-signed.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { handshake, startStoreServer, tlsConfig } from "./harness.ts"

let pki: Pki
let dataDir: string

before(async () => {
  pki = await createPki()
  dataDir = mkdtempSync(join(tmpdir(), "portcullis-data-"))
})
after(async () => {
  await pki?.close()
  rmSync(dataDir, { recursive: true, force: true })
})

function paths(source: string): { certPath: string; keyPath: string } {
  const certPath = source.replace(/^self-signed:/, "")
  return { certPath, keyPath: certPath.replace(/\.pem$/, ".key") }
}

test("makes a certificate for localhost with 127.0.0.1 and ::1, valid a year, key file 0600", async (t) => {
  const cert = await loadSelfSigned(["localhost"], "ecdsa", dataDir)
  assert.deepEqual(cert.names, ["localhost"])
  assert.equal(cert.keyType, "ecdsa")
  assert.match(
    cert.leaf.subjectAltName ?? "",
    /DNS:localhost, IP Address:127\.0\.0\.1, IP Address:(0:0:0:0:0:0:0:1|::1)/,
  )
  assert.match(cert.leaf.subject, /^CN=localhost$/m)
  const days = (cert.notAfter.getTime() - Date.now()) / 86_400_000
  assert.ok(days > 364 && days <= 366, `${days} days`)
  const { certPath, keyPath } = paths(cert.source)
  assert.equal(statSync(keyPath).mode & 0o777, 0o600)
  assert.ok(statSync(certPath).isFile())
  assert.deepEqual(
    readdirSync(join(dataDir, "self-signed"))
      .sort()
      .map((f) => f.replace(/^[0-9a-f]{16}/, "H")),
    ["H.key", "H.pem"],
  )
  // A client that trusts this certificate verifies it for localhost, served from the kept files.
  const store = await CertStore.load(tlsConfig({ certificates: [{ cert: certPath, key: keyPath }] }), {
    dataDir,
    engine: "http",
  })
  const port = await startStoreServer(t, store)
  const got = await handshake(port, { servername: "localhost", ca: cert.chainPem, rejectUnauthorized: true })
  assert.equal(got.authorized, true)
})

test("reuses the kept certificate on the next start", async () => {
  const one = await loadSelfSigned(["localhost"], "ecdsa", dataDir)
  const two = await loadSelfSigned(["LOCALHOST"], "ecdsa", dataDir)
  assert.equal(two.fingerprint256, one.fingerprint256)
  assert.equal(two.source, one.source)
})

test("other names or another key type get their own certificate", async () => {
  const ec = await loadSelfSigned(["dev.test"], "ecdsa", dataDir)
  const rsa = await loadSelfSigned(["dev.test"], "rsa", dataDir)
  assert.equal(rsa.keyType, "rsa")
  assert.notEqual(rsa.source, ec.source)
  assert.doesNotMatch(ec.leaf.subjectAltName ?? "", /127\.0\.0\.1/)
})

test("replaces a kept certificate with 7 days or fewer left", async () => {
  const kept = await loadSelfSigned(["soon.test"], "ecdsa", dataDir)
  const short = await pki.issue({ names: ["soon.test"], notAfter: new Date(Date.now() + 6 * 86_400_000) })
  const { certPath, keyPath } = paths(kept.source)
  writeFileSync(certPath, short.cert)
  writeFileSync(keyPath, short.key)
  const fresh = await loadSelfSigned(["soon.test"], "ecdsa", dataDir)
  assert.notEqual(fresh.fingerprint256, new X509Certificate(short.cert).fingerprint256)
  assert.notEqual(fresh.fingerprint256, kept.fingerprint256)
  assert.ok(fresh.notAfter.getTime() - Date.now() > 300 * 86_400_000)
  // ...but keeps one with 8 days left.
  const ok = await pki.issue({ names: ["soon.test"], notAfter: new Date(Date.now() + 8 * 86_400_000) })
  writeFileSync(certPath, ok.cert)
  writeFileSync(keyPath, ok.key)
  const reused = await loadSelfSigned(["soon.test"], "ecdsa", dataDir)
  assert.equal(reused.fingerprint256, new X509Certificate(ok.cert).fingerprint256)
})

test("replaces a damaged kept certificate", async () => {
  const kept = await loadSelfSigned(["broken.test"], "ecdsa", dataDir)
  writeFileSync(paths(kept.source).certPath, "garbage")
  const fresh = await loadSelfSigned(["broken.test"], "ecdsa", dataDir)
  assert.notEqual(fresh.fingerprint256, kept.fingerprint256)
})
