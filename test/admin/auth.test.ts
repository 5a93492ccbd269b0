/**
 * The admin API you can expose (issue 13, item 3): the loader refuses a non-loopback admin address without a token
 * or mTLS; with admin.token_file every request needs the bearer token (401 without it or with a wrong one, on any
 * address, so it is tested on 127.0.0.1); with admin.tls a client without a certificate fails the handshake.
 * GET /certificates and GET /tls/failures answer without key material.
 */
import assert from "node:assert/strict"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import { parseConfig } from "../../src/config/load.ts"
import { ConfigError } from "../../src/core/errors.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { curl } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { type ChildPortcullis, runningPorts, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { parsePrometheus, value } from "../helpers/prometheus.ts"

let pki: Pki
let echo: TestBackend
let site: CertFiles
let dir: string

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  site = await pki.issue({ names: ["localhost", "127.0.0.1"] })
  dir = mkdtempSync(join(tmpdir(), "pc-admin-"))
})

after(async () => {
  await echo?.close()
  await pki?.close()
})

function yaml(admin: string): string {
  return `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
admin: ${admin}
`
}

describe("the config loader's admin rule", () => {
  test("a non-loopback admin address with neither token_file nor tls is refused, with a clear message", () => {
    assert.throws(
      () => parseConfig(yaml('{ address: "0.0.0.0:9901" }'), "admin.yaml", dir),
      (err: unknown) =>
        err instanceof ConfigError &&
        /admin\.address.*not loopback: set admin\.token_file .* or admin\.tls/s.test(err.message),
    )
    assert.throws(() => parseConfig(yaml('{ address: "[::]:9901" }'), "admin.yaml", dir), ConfigError)
  })

  test("a token_file or tls makes a non-loopback address acceptable; loopback needs neither", () => {
    const withToken = parseConfig(yaml('{ address: "0.0.0.0:9901", token_file: token.txt }'), "admin.yaml", dir)
    assert.equal(withToken.admin?.token_file, join(dir, "token.txt"))
    const withTls = parseConfig(
      yaml(`{ address: "0.0.0.0:9901", tls: { cert: a.pem, key: a.key, client_ca: ca.pem } }`),
      "admin.yaml",
      dir,
    )
    assert.equal(withTls.admin?.tls?.client_ca, join(dir, "ca.pem"))
    for (const host of ["127.0.0.1", "127.0.0.2", "[::1]", "localhost"]) {
      assert.ok(parseConfig(yaml(`{ address: "${host}:9901" }`), "admin.yaml", dir).admin)
    }
  })
})

async function spawn(admin: string): Promise<{ pc: ChildPortcullis; admin: number; web: number; file: string }> {
  const file = writeTemp(dir, `config-${Math.random().toString(36).slice(2)}.yaml`, yaml(admin))
  const pc = spawnPortcullis(["--config", file])
  const ports = await runningPorts(pc)
  return { pc, admin: ports.admin!, web: ports.ports["web"]!, file }
}

describe("admin.token_file", () => {
  let pc: ChildPortcullis
  let adminPort: number
  let webPort: number
  let runningFile: string
  const token = "s3cret-admin-token-for-tests"

  before(async () => {
    const tokenFile = writeTemp(dir, "token.txt", `${token}\n`)
    ;({
      pc,
      admin: adminPort,
      web: webPort,
      file: runningFile,
    } = await spawn(`{ address: "127.0.0.1:0", token_file: ${tokenFile} }`))
  })

  after(async () => {
    await pc?.stop()
  })

  const status = async (path: string, ...headers: string[]) => {
    const args = ["-o", "/dev/null", "-w", "%{http_code}"]
    for (const h of headers) args.push("-H", h)
    return (await curl([...args, `http://127.0.0.1:${adminPort}${path}`])).stdout
  }

  test("401 without a token and with a wrong one (same length and not), 200 with it", async () => {
    for (const path of ["/status", "/metrics", "/certificates", "/tls/failures", "/healthz"]) {
      assert.equal(await status(path), "401", `${path} without a token`)
      assert.equal(await status(path, "authorization: Bearer wrong"), "401", `${path} with a wrong token`)
      const sameLength = "x".repeat(token.length)
      assert.equal(await status(path, `authorization: Bearer ${sameLength}`), "401", `${path} same-length token`)
      assert.equal(await status(path, `authorization: Basic ${token}`), "401", `${path} not a bearer`)
      assert.equal(await status(path, `authorization: Bearer ${token}`), "200", `${path} with the token`)
    }
    const post = await curl([
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-X",
      "POST",
      `http://127.0.0.1:${adminPort}/reload`,
    ])
    assert.equal(post.stdout, "401", "reload needs the token too")
  })

  test("GET /certificates: names, key type, issuer, not-after, days left, source; no key material", async () => {
    const res = await curl(["-H", `authorization: Bearer ${token}`, `http://127.0.0.1:${adminPort}/certificates`])
    assert.doesNotMatch(res.stdout, /PRIVATE KEY|BEGIN/)
    const body = JSON.parse(res.stdout) as { certificates: Record<string, unknown>[] }
    assert.equal(body.certificates.length, 1)
    const c = body.certificates[0]!
    assert.deepEqual(c["names"], ["localhost"])
    assert.equal(c["listener"], "web")
    assert.equal(c["key_type"], "ecdsa")
    assert.match(String(c["issuer"]), /CN=/)
    assert.equal(c["source"], site.certPath)
    assert.equal(c["source_kind"], "file")
    // No OCSP responder in the certificate: nothing to staple (issue 11 item 5's OCSP column).
    assert.deepEqual(c["ocsp"], { status: "none", stapled: false })
    const notAfter = new Date(String(c["not_after"])).getTime()
    assert.equal(c["days_left"], Math.floor((notAfter - Date.now()) / 86_400_000))
    assert.ok(Number(c["days_left"]) > 0)
  })

  test("GET /tls/failures lists a recent failure with its reason, listener and client; /metrics counts it", async () => {
    await new Promise<void>((resolve) => {
      const s = net.connect(webPort, "127.0.0.1", () => s.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n"))
      s.on("error", () => resolve())
      s.on("close", () => resolve())
    })
    let failures: Record<string, unknown>[] = []
    for (let i = 0; i < 100 && failures.length === 0; i++) {
      const res = await curl(["-H", `authorization: Bearer ${token}`, `http://127.0.0.1:${adminPort}/tls/failures`])
      failures = (JSON.parse(res.stdout) as { failures: Record<string, unknown>[] }).failures
    }
    assert.equal(failures.length, 1)
    assert.equal(failures[0]!["reason"], "not_tls")
    assert.equal(failures[0]!["listener"], "web")
    assert.equal(failures[0]!["client"], "127.0.0.1")
    assert.ok(!Number.isNaN(new Date(String(failures[0]!["time"])).getTime()))
    const metrics = await curl(["-H", `authorization: Bearer ${token}`, `http://127.0.0.1:${adminPort}/metrics`])
    const m = parsePrometheus(metrics.stdout)
    assert.equal(value(m, "portcullis_tls_handshake_failures_total", { listener: "web", reason: "not_tls" }), 1)
  })

  test("`portcullis reload --config FILE` sends the token from the config's token_file", async () => {
    // The config file the child runs is the newest config-*.yaml written; reload through the CLI.
    const tokenFile = join(dir, "token.txt")
    const file = writeTemp(dir, "reload.yaml", yaml(`{ address: "127.0.0.1:${adminPort}", token_file: ${tokenFile} }`))
    const cli = spawnPortcullis(["reload", "--config", file])
    const code = await new Promise<number | null>((r) => cli.child.on("exit", (c) => r(c)))
    // The running instance reloads its own file (the one it started with), which is fine to reload again.
    assert.match(cli.output(), /reloaded/)
    assert.equal(code, 0)
    // A reload that fails (the running file made invalid) is counted as failed; the generation stays 2.
    const good = readFileSync(runningFile, "utf8")
    writeFileSync(runningFile, "listeners: nope\n")
    try {
      const refused = await curl([
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        `authorization: Bearer ${token}`,
        `http://127.0.0.1:${adminPort}/reload`,
      ])
      assert.equal(refused.stdout, "422")
    } finally {
      writeFileSync(runningFile, good)
    }
    const metrics = await curl(["-H", `authorization: Bearer ${token}`, `http://127.0.0.1:${adminPort}/metrics`])
    const m = parsePrometheus(metrics.stdout)
    assert.equal(value(m, "portcullis_config_reloads_total", { result: "ok" }), 1)
    assert.equal(value(m, "portcullis_config_reloads_total", { result: "failed" }), 1)
    assert.equal(value(m, "portcullis_config_generation"), 2)
  })
})

describe("admin.tls (mTLS on the admin listener)", () => {
  let pc: ChildPortcullis
  let adminPort: number
  let client: CertFiles

  before(async () => {
    client = await pki.issue({ names: ["operator"], client: true })
    ;({ pc, admin: adminPort } = await spawn(
      `{ address: "127.0.0.1:0", tls: { cert: ${site.certPath}, key: ${site.keyPath}, client_ca: ${pki.ca.certPath} } }`,
    ))
  })

  after(async () => {
    await pc?.stop()
  })

  test("curl without a client certificate fails the handshake; with one it gets 200", async () => {
    const url = `https://127.0.0.1:${adminPort}/status`
    const without = await curl(["--cacert", pki.ca.certPath, "-o", "/dev/null", "-w", "%{http_code}", url])
    assert.notEqual(without.code, 0, "no client certificate: the request fails")
    assert.notEqual(without.stdout, "200")
    const withCert = await curl([
      "--cacert",
      pki.ca.certPath,
      "--cert",
      client.certPath,
      "--key",
      client.keyPath,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      url,
    ])
    assert.equal(withCert.code, 0, withCert.stderr)
    assert.equal(withCert.stdout, "200")
  })
})
