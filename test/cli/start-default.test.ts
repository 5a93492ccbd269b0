/** `npm start` runs the embedded default: a self-signed localhost certificate and the demo backend on :8443. */
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import { test } from "node:test"
import { curl } from "../helpers/clients.ts"
import { ROOT } from "../helpers/portcullis.ts"

test("npm start answers curl -k https://localhost:8443/ with the demo backend", async (t) => {
  const child = spawn("npm", ["start"], { cwd: ROOT, detached: true, stdio: ["ignore", "pipe", "pipe"] })
  let output = ""
  child.stdout.on("data", (d: Buffer) => {
    output += d.toString()
  })
  child.stderr.on("data", (d: Buffer) => {
    output += d.toString()
  })
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)))
  t.after(async () => {
    if (child.exitCode === null) process.kill(-child.pid!, "SIGTERM")
    await exited
  })
  const deadline = Date.now() + 20_000
  while (!/portcullis is running/.test(output)) {
    assert.ok(Date.now() < deadline, `npm start did not come up:\n${output}`)
    assert.equal(child.exitCode, null, `npm start exited:\n${output}`)
    await new Promise((r) => setTimeout(r, 100))
  }
  const out = await curl(["-k", "https://localhost:8443/"])
  assert.equal(out.code, 0, out.stderr)
  assert.match(out.stdout, /built-in demo backend/)
  const cert = await curl(["-k", "-v", "-o", "/dev/null", "https://localhost:8443/"])
  assert.match(cert.stderr, /subject: CN=localhost/)
  process.kill(-child.pid!, "SIGTERM")
  const code = await exited
  assert.ok(code === 0 || code === null, `exit code ${code}`)
})
