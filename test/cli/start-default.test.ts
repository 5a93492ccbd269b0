/**
 * `npm start` runs the embedded default: a self-signed localhost certificate and the demo backend on :8443. The
 * default binds the fixed ports 8443 and 9901, so the child runs in a network namespace of its own (its own
 * loopback): nothing else on the machine can hold those ports there, and it takes them from no one.
 */
import assert from "node:assert/strict"
import { execFile, spawn, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { test } from "node:test"
import { ROOT } from "../helpers/portcullis.ts"

/** curlIn runs curl inside network namespace ns. */
function curlIn(ns: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      "ip",
      ["netns", "exec", ns, "curl", "-sS", "--max-time", "20", ...args],
      { timeout: 22_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    )
  })
}

test("npm start answers curl -k https://localhost:8443/ with the demo backend", async (t) => {
  const ns = `pc-default-${process.pid}-${randomBytes(3).toString("hex")}`
  const add = spawnSync("ip", ["netns", "add", ns], { encoding: "utf8" })
  if (add.error || add.status !== 0) {
    t.skip(`cannot create a network namespace (ip netns add: ${add.error?.message ?? add.stderr.trim()})`)
    return
  }
  t.after(() => {
    spawnSync("ip", ["netns", "delete", ns])
  })
  const up = spawnSync("ip", ["-n", ns, "link", "set", "lo", "up"], { encoding: "utf8" })
  assert.equal(up.status, 0, `bringing lo up in ${ns}: ${up.stderr}`)

  const child = spawn("ip", ["netns", "exec", ns, "npm", "start"], {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  })
  let output = ""
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)))
  const running = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start did not come up within 20 s:\n${output}`)), 20_000)
    const onData = (d: Buffer) => {
      output += d.toString()
      if (/portcullis is running/.test(output)) {
        clearTimeout(timer)
        resolve()
      }
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    child.once("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`npm start exited (${code}):\n${output}`))
    })
  })
  // t.after runs in reverse order: the child is stopped before its namespace goes.
  t.after(async () => {
    if (child.exitCode === null) process.kill(-child.pid!, "SIGTERM")
    await exited
  })
  await running
  assert.match(output, /"ports":\{"default":8443\},"admin":"127\.0\.0\.1:9901"/, "the embedded default's own ports")

  const out = await curlIn(ns, ["-k", "https://localhost:8443/"])
  assert.equal(out.code, 0, out.stderr)
  assert.match(out.stdout, /built-in demo backend/)
  const cert = await curlIn(ns, ["-k", "-v", "-o", "/dev/null", "https://localhost:8443/"])
  assert.match(cert.stderr, /subject: CN=localhost/)
  // Uploads as curl sends them: over HTTP/1.1 with its own `Expect: 100-continue`, and over HTTP/2.
  const upload = join(tmpdir(), `pc-default-upload-${process.pid}.bin`)
  writeFileSync(upload, randomBytes(3_000_000))
  t.after(() => rmSync(upload, { force: true }))
  for (const version of ["--http1.1", "--http2"]) {
    const up = await curlIn(ns, ["-k", version, "--data-binary", `@${upload}`, "https://localhost:8443/upload"])
    assert.equal(up.code, 0, `${version}: ${up.stderr}`)
    assert.match(up.stdout, /"bodyBytes": 3000000/, version)
  }
  process.kill(-child.pid!, "SIGTERM")
  const code = await exited
  assert.ok(code === 0 || code === null, `exit code ${code}`)
})
