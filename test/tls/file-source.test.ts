/** The file certificate source: chain and key from PEM files, and its errors word for word. */
import assert from "node:assert/strict"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { inspect } from "node:util"
import { loadFileCertificate } from "../../src/tls/sources/file.ts"
import { createPki, type Pki } from "../helpers/pki.ts"

let pki: Pki

before(async () => {
  pki = await createPki()
})
after(() => pki?.close())

test("loads an ECDSA leaf with its SAN names, expiry and fingerprint", async () => {
  const files = await pki.issue({ names: ["A.Example.com", "*.example.com", "127.0.0.1"] })
  const cert = loadFileCertificate(files.certPath, files.keyPath)
  assert.deepEqual(cert.names, ["a.example.com", "*.example.com"])
  assert.equal(cert.keyType, "ecdsa")
  assert.equal(cert.source, files.certPath)
  assert.equal(cert.chain.length, 1)
  assert.equal(cert.notAfter.getTime(), new Date(cert.leaf.validTo).getTime())
  assert.equal(cert.fingerprint256, cert.leaf.fingerprint256)
  assert.equal(cert.key.reveal(), files.key)
})

test("loads an RSA leaf issued by the intermediate with its chain, leaf first", async () => {
  const files = await pki.issue({ names: ["chain.test"], keyType: "rsa", issuer: "intermediate" })
  const cert = loadFileCertificate(files.certPath, files.keyPath)
  assert.equal(cert.keyType, "rsa")
  assert.equal(cert.chain.length, 2)
  assert.ok(cert.chain[0]!.checkIssued(cert.chain[1]!))
  assert.equal((cert.chainPem.match(/BEGIN CERTIFICATE/g) ?? []).length, 2)
})

test("uses the subject CN when there is no subjectAltName", async () => {
  const files = await pki.issue({ names: [], commonName: "CN-Only.test" })
  assert.deepEqual(loadFileCertificate(files.certPath, files.keyPath).names, ["cn-only.test"])
})

test("the key prints as [redacted]", async () => {
  const files = await pki.issue({ names: ["secret.test"] })
  const cert = loadFileCertificate(files.certPath, files.keyPath)
  assert.equal(inspect(cert.key), "[redacted]")
  assert.equal(JSON.stringify({ key: cert.key }), '{"key":"[redacted]"}')
  assert.doesNotMatch(inspect(cert, { depth: 3 }), /PRIVATE KEY/)
})

test("a missing certificate file: loading certificate <cert>: reading <cert>: ENOENT", () => {
  const path = join(pki.dir, "nope.pem")
  assert.throws(() => loadFileCertificate(path, join(pki.dir, "nope.key")), {
    name: "TlsError",
    code: "PC_TLS_CERT_LOAD",
    message: `loading certificate ${path}: reading ${path}: ENOENT`,
  })
})

test("a missing key file: loading certificate <cert>: reading <key>: ENOENT", async () => {
  const files = await pki.issue({ names: ["nokey.test"] })
  const key = join(pki.dir, "nope.key")
  assert.throws(() => loadFileCertificate(files.certPath, key), {
    code: "PC_TLS_CERT_LOAD",
    message: `loading certificate ${files.certPath}: reading ${key}: ENOENT`,
  })
})

test("a key of another certificate: private key <key> does not match the certificate", async () => {
  const a = await pki.issue({ names: ["a.test"] })
  const b = await pki.issue({ names: ["a.test"] })
  assert.throws(() => loadFileCertificate(a.certPath, b.keyPath), {
    code: "PC_TLS_CERT_LOAD",
    message: `loading certificate ${a.certPath}: private key ${b.keyPath} does not match the certificate`,
  })
})

test("a file without a certificate, and a key file without a key, say so", async () => {
  const files = await pki.issue({ names: ["x.test"] })
  const empty = join(pki.dir, "empty.pem")
  writeFileSync(empty, "not a certificate\n")
  assert.throws(() => loadFileCertificate(empty, files.keyPath), {
    code: "PC_TLS_CERT_LOAD",
    message: `loading certificate ${empty}: no PEM certificate found in ${empty}`,
  })
  assert.throws(
    () => loadFileCertificate(files.certPath, empty),
    (err: Error) => {
      assert.match(err.message, new RegExp(`^loading certificate ${files.certPath}: parsing private key ${empty}: `))
      return true
    },
  )
})
