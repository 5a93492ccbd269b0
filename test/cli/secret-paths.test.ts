/**
 * Issue 14, finding 6: a private key pasted where its path belongs is refused at validation, and no command, log
 * line or admin answer repeats it (check, certs, the start error, the reload log, the POST /reload response).
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { freePort, MAIN, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"

let pki: Pki
let site: CertFiles
let backend: TestBackend
/** A line of the key's base64 body: no output may contain it. */
let keyBytes: string

before(async () => {
  pki = await createPki()
  site = await pki.issue({ names: ["localhost"] })
  backend = await startEchoBackend("echo")
  keyBytes = site.key.split("\n")[1]!.slice(0, 24)
})
after(async () => {
  await backend?.close()
  await pki?.close()
})

/** Ways to paste the key: a YAML double-quoted string with \n escapes, and a block scalar. */
const PASTED = {
  quoted: () => JSON.stringify(site.key),
  block: () => `|\n${site.key.trimEnd().replace(/^/gm, "              ")}`,
} as const

const config = (key: string, port = 1, adminPort?: number) => `listeners:
  - name: web
    address: 127.0.0.1:${port}
    tls:
      certificates:
        - cert: ${site.certPath}
          key: ${key}
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
${adminPort ? `admin: { address: "127.0.0.1:${adminPort}" }\n` : ""}`

function run(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, output: stdout + stderr })
    })
  })
}

function assertNoKey(text: string): void {
  assert.doesNotMatch(text, /BEGIN/, text)
  assert.ok(!text.includes(keyBytes), `the key's bytes are in:\n${text}`)
}

for (const [how, pasted] of Object.entries(PASTED)) {
  for (const command of ["check", "certs", "run"] as const) {
    test(`${command}: a key pasted inline (${how}) is refused without being shown`, async () => {
      const file = writeTemp(pki.dir, `pasted-${how}-${command}.yaml`, config(pasted()))
      const out = await run(command === "run" ? ["--config", file] : [command, "--config", file])
      assert.equal(out.code, 1, out.output)
      assert.match(out.output, /key: expected a file path, got PEM text \(not shown\)/)
      assertNoKey(out.output)
    })
  }
}

test("a reload to a config with a pasted key is refused: the log and the POST /reload answer do not show it", async (t) => {
  const [port, adminPort] = [await freePort(), await freePort()]
  const file = writeTemp(pki.dir, "reload.yaml", config(site.keyPath, port, adminPort))
  const pc = spawnPortcullis(["--config", file])
  t.after(() => pc.stop())
  await pc.waitFor(/portcullis is running/)
  writeTemp(pki.dir, "reload.yaml", config(PASTED.quoted(), port, adminPort))
  const res = await fetch(`http://127.0.0.1:${adminPort}/reload`, { method: "POST" })
  const body = await res.text()
  assert.equal(res.status, 422, body)
  assert.match(body, /PEM text \(not shown\)/)
  assertNoKey(body)
  await pc.waitFor(/reload refused; the running config stays/)
  // SIGHUP takes the other path to the same log line.
  pc.child.kill("SIGHUP")
  await pc.waitFor(/reload refused; the running config stays/)
  assertNoKey(pc.output())
  // The running config still serves.
  const status = await fetch(`http://127.0.0.1:${adminPort}/status`)
  assert.equal(status.status, 200)
})

test("check and the start error do not print a key file given as the config file", async () => {
  for (const args of [
    ["check", "--config", site.keyPath],
    ["--config", site.keyPath],
  ]) {
    const out = await run(args)
    assert.equal(out.code, 1, out.output)
    assert.match(out.output, /expected a mapping of sections .*, got PEM text \(not shown\)/)
    assertNoKey(out.output)
  }
})
