/**
 * `portcullis certs` (issue 11 item 5): every certificate with names, key type, issuer, not-after, days left, source,
 * next renewal and OCSP status, as a table or --json; exit 1 when one expires within the warning window.
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { certificateList } from "../../src/admin/certificates.ts"
import { parseConfig } from "../../src/config/load.ts"
import { silentLogger } from "../../src/core/log.ts"
import { Runtime } from "../../src/runtime.ts"
import { startOcspResponder } from "../helpers/ocsp-responder.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { MAIN, refusingPort } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

const DAY = 86_400_000
let pki: Pki

before(async () => {
  pki = await createPki()
})
after(() => pki?.close())

const yaml = (dataDir: string, certs: string[]) => `data_dir: ${dataDir}
listeners:
  - name: web
    address: 127.0.0.1:0
    tls:
      certificates: [${certs.join(", ")}]
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:1"] }
`
const pair = (f: CertFiles) => `{ cert: ${f.certPath}, key: ${f.keyPath} }`

function certsCommand(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, "certs", ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

/** runOnce starts the config in-process until `ready` holds, so the stapler writes its state under data_dir. */
async function runOnce(text: string, dir: string, ready: (rt: Runtime) => boolean): Promise<void> {
  const runtime = new Runtime(silentLogger(), undefined, { ocsp: { retryMs: 60_000 } })
  await runtime.start(parseConfig(text, "test.yaml", dir))
  try {
    await waitUntil(() => ready(runtime), "the stapler's first answer")
  } finally {
    await runtime.close(100)
  }
}

const firstOcsp = (rt: Runtime) => {
  const c = certificateList(rt.generation, (x) => rt.ocspStatus(x)).certificates[0]
  return c?.ocsp.status
}

test("certs: a table of every certificate with its OCSP state; --json the same fields; exit 0 when none expires soon", async (t) => {
  const responder = await startOcspResponder(await pki.intermediate())
  t.after(() => responder.close())
  const stapled = await pki.issue({ names: ["a.test", "www.a.test"], issuer: "intermediate", ocspUrl: responder.url })
  responder.setStatus(stapled, "good")
  const plain = await pki.issue({ names: ["b.test"], keyType: "rsa" })
  const dir = mkdtempSync(join(tmpdir(), "pc-certs-"))
  const text = yaml(join(dir, "data"), [pair(stapled), pair(plain), "{ self_signed: [localhost] }"])
  const file = join(dir, "portcullis.yaml")
  writeFileSync(file, text)
  await runOnce(text, dir, (rt) => firstOcsp(rt) === "good")

  const table = await certsCommand(["--config", file])
  assert.equal(table.code, 0, table.stdout + table.stderr)
  const lines = table.stdout.trimEnd().split("\n")
  assert.match(lines[0]!, /^LISTENER\s+NAMES\s+KEY\s+ISSUER\s+NOT AFTER\s+DAYS\s+SOURCE\s+NEXT RENEWAL\s+OCSP$/)
  assert.equal(lines.length, 4, table.stdout)
  assert.match(
    lines[1]!,
    /^web\s+a\.test,www\.a\.test\s+ecdsa\s+Portcullis Test Intermediate \w+\s+\d{4}-\d\d-\d\d \d\d:\d\dZ\s+89\s+file\s+-\s+good \(next refresh \d{4}-/,
  )
  assert.match(lines[2]!, /^web\s+b\.test\s+rsa\s+Portcullis Test Root \w+\s+.*\s+89\s+file\s+-\s+none$/)
  assert.match(lines[3]!, /^web\s+localhost\s+ecdsa\s+localhost\s+.*\s+36[45]\s+self-signed\s+-\s+none$/)
  assert.doesNotMatch(table.stdout + table.stderr, /BEGIN|PRIVATE/)

  const json = await certsCommand(["--config", file, "--json"])
  assert.equal(json.code, 0, json.stderr)
  const body = JSON.parse(json.stdout) as { warn_days: number; certificates: Record<string, unknown>[] }
  assert.equal(body.warn_days, 14)
  const [a, b, self] = body.certificates
  assert.deepEqual(a!["names"], ["a.test", "www.a.test"])
  assert.equal(a!["key_type"], "ecdsa")
  assert.equal(a!["source_kind"], "file")
  assert.equal(a!["days_left"], 89)
  assert.match(String(a!["issuer"]), /CN=Portcullis Test Intermediate/)
  const ocsp = a!["ocsp"] as Record<string, unknown>
  assert.equal(ocsp["status"], "good")
  assert.equal(ocsp["stapled"], true)
  assert.equal(ocsp["url"], responder.url)
  assert.ok(Date.parse(String(ocsp["next_refresh"])) > Date.now())
  assert.equal((b!["ocsp"] as Record<string, unknown>)["status"], "none")
  assert.equal(self!["source_kind"], "self_signed")
  assert.doesNotMatch(json.stdout, /BEGIN|PRIVATE/)
})

test("certs: exit 1 when a certificate expires within 14 days (a warning names it); --warn-days 5 lets it pass", async () => {
  const soon = await pki.issue({ names: ["soon.test"], notAfter: new Date(Date.now() + 10 * DAY) })
  const later = await pki.issue({ names: ["later.test"] })
  const dir = mkdtempSync(join(tmpdir(), "pc-certs-"))
  const file = join(dir, "portcullis.yaml")
  writeFileSync(file, yaml(join(dir, "data"), [pair(later), pair(soon)]))
  const out = await certsCommand(["--config", file])
  assert.equal(out.code, 1, out.stdout + out.stderr)
  assert.match(out.stdout, /soon\.test\s+ecdsa\s+.*\s+9 !\s+file/)
  assert.match(out.stderr, /^warning: soon\.test \(web\) expires in 9 days/m)
  assert.doesNotMatch(out.stderr, /later\.test/)
  const json = await certsCommand(["--config", file, "--json"])
  assert.equal(json.code, 1)
  assert.deepEqual(JSON.parse(json.stdout).expiring, [["soon.test"]])
  const relaxed = await certsCommand(["--config", file, "--warn-days", "5"])
  assert.equal(relaxed.code, 0, relaxed.stderr)
  const bad = await certsCommand(["--config", file, "--warn-days", "soon"])
  assert.equal(bad.code, 2)
})

test("certs: a responder that does not answer shows as fetch failing, with the error and the next retry", async (t) => {
  const held = await refusingPort()
  t.after(() => held.close())
  const leaf = await pki.issue({
    names: ["a.test"],
    issuer: "intermediate",
    ocspUrl: `http://127.0.0.1:${held.port}/`,
  })
  const dir = mkdtempSync(join(tmpdir(), "pc-certs-"))
  const text = yaml(join(dir, "data"), [pair(leaf)])
  const file = join(dir, "portcullis.yaml")
  writeFileSync(file, text)
  await runOnce(text, dir, (rt) => firstOcsp(rt) === "failing")
  const out = await certsCommand(["--config", file])
  assert.equal(out.code, 0, out.stderr)
  assert.match(
    out.stdout,
    /fetch failing: fetching the OCSP response from http:\/\/127\.0\.0\.1:\d+\/: ECONNREFUSED \(retry \d{4}-/,
  )
  const json = JSON.parse((await certsCommand(["--config", file, "--json"])).stdout)
  assert.equal(json.certificates[0].ocsp.status, "failing")
  assert.equal(json.certificates[0].ocsp.stapled, false)
})
