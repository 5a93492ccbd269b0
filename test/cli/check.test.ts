/** `portcullis check --config FILE` validates config and certificates without binding. */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { after, before, test } from "node:test"
import { createPki, type Pki } from "../helpers/pki.ts"
import { MAIN, writeTemp } from "../helpers/portcullis.ts"

let pki: Pki

before(async () => {
  pki = await createPki()
})
after(async () => {
  await pki?.close()
})

function check(file: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, "check", "--config", file], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

const config = (cert: string, key: string, hosts = "[www.example.com]") => `listeners:
  - name: web
    address: 127.0.0.1:1
    tls: { certificates: [{ cert: ${cert}, key: ${key} }] }
    routes: [{ hosts: ${hosts}, upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:2"] }
`

test("a good config passes with exit code 0 and binds nothing", async () => {
  const site = await pki.issue({ names: ["www.example.com"] })
  const out = await check(writeTemp(pki.dir, "good.yaml", config(site.certPath, site.keyPath)))
  assert.equal(out.code, 0, out.stderr)
  assert.match(out.stdout, /good\.yaml: ok \(1 listener\(s\), 1 upstream\(s\), 1 certificate\(s\)/)
})

test("a config error exits 1 with file:line:col, path and message", async () => {
  const site = await pki.issue({ names: ["www.example.com"] })
  const file = writeTemp(pki.dir, "bad.yaml", config(site.certPath, site.keyPath).replace("127.0.0.1:2", "10.0.0.7"))
  const out = await check(file)
  assert.equal(out.code, 1)
  assert.match(
    out.stderr,
    /bad\.yaml:7:21 upstreams\.app\.backends\[0\]: expected "host:port", got "10\.0\.0\.7"; add a port/,
  )
})

test("an expired certificate exits 1 naming it", async () => {
  const old = await pki.issue({
    names: ["www.example.com"],
    notBefore: new Date(Date.now() - 10 * 86_400_000),
    notAfter: new Date(Date.now() - 86_400_000),
  })
  const out = await check(writeTemp(pki.dir, "expired.yaml", config(old.certPath, old.keyPath)))
  assert.equal(out.code, 1)
  assert.match(out.stderr, /expired/)
})

test("a key that does not match the certificate exits 1", async () => {
  const a = await pki.issue({ names: ["www.example.com"] })
  const b = await pki.issue({ names: ["www.example.com"] })
  const out = await check(writeTemp(pki.dir, "mismatch.yaml", config(a.certPath, b.keyPath)))
  assert.equal(out.code, 1)
  assert.match(out.stderr, /does not match/)
})

test("a route host no certificate covers is reported", async () => {
  const site = await pki.issue({ names: ["www.example.com"] })
  const out = await check(writeTemp(pki.dir, "uncovered.yaml", config(site.certPath, site.keyPath, "[api.other.test]")))
  assert.match(out.stderr, /api\.other\.test/)
})
