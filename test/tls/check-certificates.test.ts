/** checkCertificates: what `portcullis check` reports, message by message. */
import assert from "node:assert/strict"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { parseConfig } from "../../src/config/load.ts"
import { checkCertificates } from "../../src/tls/check-certificates.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"

const DAY = 86_400_000
let pki: Pki

before(async () => {
  pki = await createPki()
})
after(() => pki?.close())

function config(certs: { cert: string; key: string }[], hosts: string[], extraTls = "") {
  const list = certs.map((c) => `{ cert: ${c.cert}, key: ${c.key} }`).join(", ")
  const text = `listeners:
  - name: web
    address: 127.0.0.1:1
    tls: { certificates: [${list}]${extraTls} }
    routes: [{ hosts: [${hosts.map((h) => JSON.stringify(h)).join(", ")}], upstream: app }, { upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:2"] }
data_dir: ${pki.dir}
`
  return parseConfig(text, "test.yaml", pki.dir)
}
const pair = (f: CertFiles) => ({ cert: f.certPath, key: f.keyPath })
const day = (ms: number) => new Date(ms).toISOString().slice(0, 10)

test("a good certificate covering every host: no errors, no warnings, its status listed", async () => {
  const site = await pki.issue({ names: ["www.example.com", "*.api.example.com"] })
  const report = await checkCertificates(
    config([pair(site)], ["www.example.com", "v1.api.example.com", "*.api.example.com"]),
  )
  assert.deepEqual(report.errors, [])
  assert.deepEqual(report.warnings, [])
  assert.deepEqual(
    report.certificates.map((c) => c.names),
    [["www.example.com", "*.api.example.com"]],
  )
})

test("an expired certificate is an error with its date", async () => {
  const notAfter = Date.now() - 2 * DAY
  const old = await pki.issue({
    names: ["www.example.com"],
    notBefore: new Date(notAfter - 30 * DAY),
    notAfter: new Date(notAfter),
  })
  const report = await checkCertificates(config([pair(old)], ["www.example.com"]))
  assert.deepEqual(report.errors, [
    `listeners[0] (web): ${old.certPath}: certificate for www.example.com expired on ${day(notAfter)}`,
  ])
})

test("a certificate with fewer than 21 days left is a warning with the days left", async () => {
  const soon = await pki.issue({ names: ["www.example.com"], notAfter: new Date(Date.now() + 10 * DAY + 3_600_000) })
  const report = await checkCertificates(config([pair(soon)], ["www.example.com"]))
  assert.deepEqual(report.errors, [])
  assert.deepEqual(report.warnings, [
    `listeners[0] (web): ${soon.certPath}: certificate for www.example.com expires on ${day(Date.now() + 10 * DAY + 3_600_000)} (10 days left); renew it`,
  ])
})

test("a chain out of order is an error naming both certificates", async () => {
  const leaf = await pki.issue({ names: ["www.example.com"], issuer: "intermediate" })
  const intermediate = await pki.intermediate()
  const path = join(pki.dir, "out-of-order.pem")
  // leaf, then the root, then the intermediate: the root did not issue the leaf.
  writeFileSync(path, leaf.cert.split(intermediate.cert)[0]! + pki.ca.cert + intermediate.cert)
  const report = await checkCertificates(config([{ cert: path, key: leaf.keyPath }], ["www.example.com"]))
  assert.equal(report.errors.length, 1, report.errors.join("\n"))
  assert.match(
    report.errors[0]!,
    /^listeners\[0\] \(web\): .*out-of-order\.pem: chain out of order: certificate 2 \(CN=Portcullis Test Root \w+\) did not issue certificate 1 \(CN=www\.example\.com\); put the leaf first, then each issuer in turn$/,
  )
  // The same files in the right order pass.
  assert.deepEqual((await checkCertificates(config([pair(leaf)], ["www.example.com"]))).errors, [])
})

test("an exact route host no certificate covers is an error; a wildcard host is a warning", async () => {
  const site = await pki.issue({ names: ["www.example.com"] })
  const report = await checkCertificates(config([pair(site)], ["www.example.com", "api.other.test", "*.other.test"]))
  assert.deepEqual(report.errors, [
    "listeners[0] (web): routes[0] host api.other.test is not covered by any certificate of this listener (names: www.example.com); add a certificate for api.other.test or fix the host",
  ])
  assert.deepEqual(report.warnings, [
    "listeners[0] (web): routes[0] host *.other.test is not covered by any certificate of this listener (names: www.example.com); clients of names no certificate has get a mismatch",
  ])
})

test("a missing file and a key mismatch are errors, and hosts are not checked against a half-loaded listener", async () => {
  const a = await pki.issue({ names: ["www.example.com"] })
  const b = await pki.issue({ names: ["www.example.com"] })
  const missing = join(pki.dir, "missing.pem")
  const report = await checkCertificates(
    config(
      [
        { cert: missing, key: a.keyPath },
        { cert: a.certPath, key: b.keyPath },
      ],
      ["www.example.com", "x.test"],
    ),
  )
  assert.deepEqual(report.errors, [
    `listeners[0] (web): loading certificate ${missing}: reading ${missing}: ENOENT`,
    `listeners[0] (web): loading certificate ${a.certPath}: private key ${b.keyPath} does not match the certificate`,
  ])
  assert.deepEqual(report.certificates, [])
})

test("a missing client_auth ca is a tls policy error", async () => {
  const site = await pki.issue({ names: ["www.example.com"] })
  const ca = join(pki.dir, "no-ca.pem")
  const report = await checkCertificates(
    config([pair(site)], ["www.example.com"], `, client_auth: { mode: require, ca: ${ca} }`),
  )
  assert.deepEqual(report.errors, [
    `listeners[0] (web): tls policy: loading client_auth ca ${ca}: reading ${ca}: ENOENT`,
  ])
})
