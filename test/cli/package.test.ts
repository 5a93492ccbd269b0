/**
 * Installable like a server (issue 12, item 6): `npm pack` yields a package whose `npx portcullis` works on a machine
 * with Node 24, installed into an empty folder; and in a clone, `npx portcullis` works with no build step.
 */
import assert from "node:assert/strict"
import { execFile, spawn } from "node:child_process"
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { ROOT } from "../helpers/portcullis.ts"

interface Run {
  code: number
  stdout: string
  stderr: string
}

function run(cmd: string, args: string[], cwd: string, timeout = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout, env: process.env }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr })
    })
  })
}

let dir: string
let backend: TestBackend
let installed: string

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "pc-pack-"))
  backend = await startEchoBackend("packaged")
  // prepack builds dist/ (tsc -p tsconfig.build.json) into the package.
  const pack = await run("npm", ["pack", "--pack-destination", dir, "--silent"], ROOT)
  assert.equal(pack.code, 0, pack.stderr)
  const tarball = readdirSync(dir).find((f) => f.endsWith(".tgz"))
  assert.ok(tarball, `npm pack wrote no tarball: ${pack.stdout}${pack.stderr}`)
  installed = join(dir, "app")
  await run("mkdir", ["-p", installed], dir)
  writeFileSync(join(installed, "package.json"), JSON.stringify({ name: "app", private: true }))
  const install = await run(
    "npm",
    ["install", "--prefer-offline", "--no-audit", "--no-fund", "--omit=dev", join(dir, tarball)],
    installed,
    300_000,
  )
  assert.equal(install.code, 0, install.stderr)
})

after(async () => {
  await backend?.close()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

test("the package ships the built CLI and no tests, benches or sources", async () => {
  const list = await run(
    "tar",
    [
      "tzf",
      readdirSync(dir)
        .map((f) => join(dir, f))
        .find((f) => f.endsWith(".tgz"))!,
    ],
    dir,
  )
  const files = list.stdout.split("\n").filter(Boolean)
  assert.ok(files.includes("package/dist/main.js"), "dist/main.js is in the package")
  assert.ok(files.includes("package/bin/portcullis.js"))
  for (const f of files) assert.doesNotMatch(f, /^package\/(test|bench|src)\//, f)
})

test("npx portcullis check validates a sample config in the installed package", async () => {
  const config = join(installed, "portcullis.yaml")
  writeFileSync(
    config,
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
data_dir: ${join(installed, "data")}
`,
  )
  const out = await run("npx", ["--no-install", "portcullis", "check", "--config", config], installed)
  assert.equal(out.code, 0, out.stderr)
  assert.match(out.stdout, /portcullis\.yaml: ok/)
})

test("npx portcullis starts from the installed package and proxies a request", async () => {
  const config = join(installed, "portcullis.yaml")
  const child = spawn("npx", ["--no-install", "portcullis", "--config", config], {
    cwd: installed,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  })
  try {
    let out = ""
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no start line in 30 s:\n${out}`)), 30_000)
      const onData = (d: Buffer) => {
        out += d.toString()
        const m = /"ports":\{"web":(\d+)\}/.exec(out)
        if (m) {
          clearTimeout(timer)
          resolve(Number(m[1]))
        }
      }
      child.stdout!.on("data", onData)
      child.stderr!.on("data", onData)
      child.once("exit", (code) => reject(new Error(`exited ${code}:\n${out}`)))
    })
    const res = await fetch(`https://127.0.0.1:${port}/hello`, {
      // @ts-expect-error Node's fetch takes an undici dispatcher; a self-signed certificate needs no verification here
      dispatcher: new (await import("undici")).Agent({ connect: { rejectUnauthorized: false } }),
    })
    assert.equal(res.status, 200)
    assert.equal(await res.text(), "hello from packaged")
  } finally {
    // npx runs portcullis in a child: signal the whole group
    if (child.pid) process.kill(-child.pid, "SIGTERM")
  }
})

test("in a clone, npx portcullis runs the sources with no build step", async () => {
  const out = await run("npx", ["--no-install", "portcullis", "--help"], ROOT)
  assert.equal(out.code, 0, out.stderr)
  assert.match(out.stdout, /portcullis check --config FILE/)
})

test("the systemd unit in contrib/ passes systemd-analyze verify", async (t) => {
  const which = await run("sh", ["-c", "command -v systemd-analyze"], ROOT)
  if (which.code !== 0) {
    t.skip("systemd-analyze is not installed on this machine")
    return
  }
  const out = await run("systemd-analyze", ["verify", join(ROOT, "contrib", "portcullis.service")], ROOT)
  assert.equal(out.code, 0, out.stderr)
  assert.equal(out.stderr.trim(), "", out.stderr)
})
