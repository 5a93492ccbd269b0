/**
 * The access log (core/access-log.ts) as an operator runs it: a child Portcullis, real clients (h2load, raw TLS),
 * lines to stdout or a file, none lost on SIGTERM, a new file after logrotate's rename + SIGUSR1, and nothing a client
 * sends can forge a field, end a line, or bring a credential into it.
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { existsSync, readFileSync, renameSync } from "node:fs"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { AccessLog, quote } from "../../src/core/access-log.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { type ChildPortcullis, runningPorts, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

let pki: Pki
let backend: TestBackend
let site: CertFiles

before(async () => {
  pki = await createPki()
  backend = await startEchoBackend("app")
  site = await pki.issue({ names: ["localhost"] })
})

after(async () => {
  await backend?.close()
  await pki?.close()
})

function configFile(name: string, accessLog: string): string {
  return writeTemp(
    pki.dir,
    name,
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
access_log: ${accessLog}
`,
  )
}

/** start runs a child Portcullis on a config file and resolves with it and its listener's port. */
async function start(file: string): Promise<{ pc: ChildPortcullis; port: number }> {
  const pc = spawnPortcullis(["--config", file])
  const { ports } = await runningPorts(pc)
  return { pc, port: ports["web"]! }
}

/** h2load sends n HTTP/1.1 requests over c keep-alive connections and resolves with how many succeeded. */
function h2load(port: number, n: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile(
      "h2load",
      ["--h1", "-c", "4", "-n", String(n), `https://127.0.0.1:${port}${path}`],
      { timeout: 60_000 },
      (err, stdout) => {
        if (err) return reject(err)
        const m = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded/.exec(stdout)
        if (!m) return reject(new Error(`h2load output: ${stdout}`))
        resolve(Number(m[1]))
      },
    )
  })
}

function accessLines(text: string, path: string): Record<string, unknown>[] {
  return text
    .split("\n")
    .filter((l) => l.includes('"type":"access"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.path === path)
}

describe("access log", () => {
  test("to stdout: N requests then SIGTERM right after the last response: all N lines are there", async () => {
    const { pc, port } = await start(configFile("stdout.yaml", "{ enabled: true }"))
    const n = 2000
    assert.equal(await h2load(port, n, "/sigterm-stdout"), n)
    // No wait: the last lines are still in the batch (flushed every 100 ms) when SIGTERM arrives.
    assert.equal(await pc.stop("SIGTERM"), 0)
    const lines = accessLines(pc.output(), "/sigterm-stdout")
    assert.equal(lines.length, n)
    for (const l of lines) {
      assert.equal(l.status, 200)
      assert.equal(l.level, 30)
      assert.equal(typeof l.time, "number")
      assert.equal(typeof l.pid, "number")
    }
  })

  test("to a file: N requests then SIGTERM: all N lines are in the file, none on stdout", async () => {
    const path = join(pki.dir, "access-sigterm.log")
    const { pc, port } = await start(configFile("file.yaml", `{ path: ${path} }`))
    const n = 2000
    assert.equal(await h2load(port, n, "/sigterm-file"), n)
    assert.equal(await pc.stop("SIGTERM"), 0)
    assert.equal(accessLines(readFileSync(path, "utf8"), "/sigterm-file").length, n)
    assert.doesNotMatch(pc.output(), /"type":"access"/)
  })

  test("stdout's reader goes away (EPIPE): requests are still answered and the process stays up", async () => {
    const { pc, port } = await start(configFile("epipe.yaml", "{ enabled: true }"))
    try {
      assert.equal(await h2load(port, 200, "/before-epipe"), 200)
      // The read end of stdout closes: every later write to it fails with EPIPE (Node ignores SIGPIPE).
      pc.child.stdout!.destroy()
      assert.equal(await h2load(port, 2000, "/after-epipe"), 2000)
      await new Promise((resolve) => setTimeout(resolve, 300)) // past a flush (100 ms) of the lines that fail
      assert.equal(await h2load(port, 200, "/still-up"), 200)
      assert.equal(pc.child.exitCode, null, "still running")
    } finally {
      await pc.stop()
    }
  })

  test("logrotate: rename the file, SIGUSR1: later lines go to a new file at the path, earlier ones stay", async () => {
    const path = join(pki.dir, "access-rotate.log")
    const { pc, port } = await start(configFile("rotate.yaml", `{ path: ${path} }`))
    try {
      for (let i = 0; i < 3; i++) assert.equal((await get(port, "/before-rotate")).status, 200)
      await waitUntil(
        () => existsSync(path) && accessLines(readFileSync(path, "utf8"), "/before-rotate").length === 3,
        "three lines in the file",
      )
      renameSync(path, `${path}.1`)
      pc.child.kill("SIGUSR1")
      await waitUntil(() => existsSync(path), "a new file at the path after SIGUSR1")
      for (let i = 0; i < 2; i++) assert.equal((await get(port, "/after-rotate")).status, 200)
      await waitUntil(
        () => accessLines(readFileSync(path, "utf8"), "/after-rotate").length === 2,
        "two lines in the new file",
      )
      const old = readFileSync(`${path}.1`, "utf8")
      assert.equal(accessLines(old, "/before-rotate").length, 3)
      assert.equal(accessLines(old, "/after-rotate").length, 0)
      assert.equal(accessLines(readFileSync(path, "utf8"), "/before-rotate").length, 0)
    } finally {
      await pc.stop()
    }
  })

  test("a path and Host with quotes and backslashes cannot add a field or break the line; no credential appears", async () => {
    const { pc, port } = await start(configFile("inject.yaml", "{ enabled: true }"))
    try {
      const evilPath = '/inject"},"status":999,"injected":"yes\\'
      const evilHost = 'localhost","forged":"1'
      const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: pki.ca.cert })
      socket.on("error", () => {})
      let text = ""
      socket.on("data", (d: Buffer) => {
        text += d.toString("latin1")
      })
      await new Promise((resolve) => socket.once("secureConnect", resolve))
      socket.write(
        `GET ${evilPath} HTTP/1.1\r\nHost: ${evilHost}\r\nAuthorization: Basic c2VjcmV0LXVzZXI6c2VjcmV0LXBhc3M=\r\n` +
          "Cookie: session=cookie-secret-value\r\nConnection: close\r\n\r\n",
      )
      await waitUntil(() => text.includes("\r\n\r\n"), "a response")
      socket.destroy()
      const line = await pc.waitFor(/\{"level":30[^\n]*inject[^\n]*\}\n/)
      const entry = JSON.parse(line) as Record<string, unknown>
      assert.equal(entry.path, evilPath)
      assert.equal(entry.host, evilHost)
      assert.equal(typeof entry.status, "number")
      assert.notEqual(entry.status, 999)
      assert.equal(entry.injected, undefined)
      assert.equal(entry.forged, undefined)
      assert.doesNotMatch(pc.output(), /c2VjcmV0|secret-pass|cookie-secret-value|authorization|cookie/i)
    } finally {
      await pc.stop()
    }
  })
})

describe("AccessLog", () => {
  test("quote escapes what JSON needs and keeps lone surrogates from becoming invalid UTF-8", () => {
    for (const s of ["plain/path?q=1", 'a"b', "a\\b", "a\nb\r\u0000\u001f", "\ud800x", "é€😀", "\u2028"]) {
      assert.equal(JSON.parse(quote(s)), s)
      assert.doesNotMatch(quote(s), /[\n\r]/)
    }
  })

  test("lines reach a sink in order, in batches, and close writes what is pending", async () => {
    const batches: string[] = []
    const log = new AccessLog({ sink: (text) => batches.push(text) })
    for (let i = 0; i < 5; i++) log.line(`{"n":${i}}\n`)
    assert.equal(batches.length, 0, "nothing is written per line")
    await waitUntil(() => batches.length === 1, "the timer flushes the batch", 2_000)
    for (let i = 5; i < 8; i++) log.line(`{"n":${i}}\n`)
    await log.close()
    const ns = batches
      .join("")
      .split("\n")
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { n: number }).n)
    assert.deepEqual(ns, [0, 1, 2, 3, 4, 5, 6, 7])
  })

  test("a batch is written at 64 KiB without waiting for the timer", async () => {
    const batches: string[] = []
    const log = new AccessLog({ sink: (text) => batches.push(text) })
    const line = `{"pad":"${"x".repeat(990)}"}\n`
    for (let i = 0; i < 70; i++) log.line(line)
    assert.equal(batches.length, 1, "written synchronously once 64 KiB were pending")
    await log.close()
  })

  test("an HTTP line carries pino's fields in order; client strings escaped; one longer than a batch is whole", async () => {
    const batches: string[] = []
    const log = new AccessLog({ sink: (text) => batches.push(text) })
    const info = {
      clientAddress: "192.0.2.1",
      servername: "sni.test",
      tlsVersion: "TLSv1.3",
      cipher: "TLS_AES_128_GCM_SHA256",
      alpn: "http/1.1",
    } as Parameters<AccessLog["http"]>[0]
    log.http(info, "web", "GET", "a.test", "/p?q=1", 200, 100, "up", "127.0.0.1:80", 1, 0.43, "")
    log.http(
      info,
      "web",
      "POST",
      'h"\\x',
      "/é€😀\u0001",
      502,
      0,
      undefined,
      undefined,
      undefined,
      undefined,
      "e\n",
      "t1",
    )
    const long = `/${"x".repeat(200_000)}`
    for (let i = 0; i < 700; i++)
      log.http(info, "web", "GET", "a.test", i === 350 ? long : `/${i}`, 200, i, "up", "b", 1, 1, "")
    await log.close()
    const lines = batches.join("").split("\n").filter(Boolean)
    assert.equal(lines.length, 702)
    const first = lines[0]!.replace(/"time":\d+,"pid":\d+/, '"time":T,"pid":P')
    assert.equal(
      first,
      '{"level":30,"time":T,"pid":P,"type":"access","client":"192.0.2.1","listener":"web","sni":"sni.test","tls":"TLSv1.3","cipher":"TLS_AES_128_GCM_SHA256","alpn":"http/1.1","method":"GET","host":"a.test","path":"/p?q=1","status":200,"bytes":100,"upstream":"up","backend":"127.0.0.1:80","tries":1,"duration_ms":0.43}',
    )
    const second = JSON.parse(lines[1]!) as Record<string, unknown>
    assert.equal(second["host"], 'h"\\x')
    assert.equal(second["path"], "/é€😀\u0001")
    assert.equal(second["error"], "e\n")
    assert.equal(second["trace_id"], "t1")
    assert.equal(second["upstream"], undefined)
    const rest = lines.slice(2).map((l) => JSON.parse(l) as { path: string; bytes: number })
    assert.deepEqual(
      rest.map((r) => r.bytes),
      Array.from({ length: 700 }, (_, i) => i),
    )
    assert.equal(rest[350]!.path, long)
  })

  test("batch buffers that serve again never overwrite lines not yet written: 40 batches, every line whole, in order", async () => {
    const path = join(pki.dir, "access-reuse.log")
    const log = new AccessLog()
    log.use(path)
    const pad = "y".repeat(300)
    const n = 8_000 // ≈ 2.6 MB: 40 batches of 64 KiB, written while later ones fill
    for (let i = 0; i < n; i++) {
      log.line(`{"n":${i},"pad":"${pad}"}\n`)
      if (i % 500 === 0) await new Promise((resolve) => setImmediate(resolve)) // let writes finish and buffers return
    }
    await log.close()
    const lines = readFileSync(path, "utf8").split("\n").filter(Boolean)
    assert.equal(lines.length, n)
    for (const [i, l] of lines.entries()) assert.deepEqual(JSON.parse(l), { n: i, pad }, `line ${i}`)
    assert.equal(log.dropped, 0)
  })

  test("a path that cannot be opened throws PC_ACCESS_LOG_OPEN and the log stays where it was", () => {
    const log = new AccessLog()
    try {
      assert.throws(() => log.use(join(pki.dir, "no-such-dir", "x.log")), { code: "PC_ACCESS_LOG_OPEN" })
      assert.equal(log.path, undefined)
    } finally {
      void log.close()
    }
  })
})

function get(port: number, path: string) {
  return request({ port, path, ca: pki.ca.cert, agent: false })
}
