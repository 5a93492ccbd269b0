/** `portcullis check --config FILE` validates config and certificates without binding. */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { after, before, test } from "node:test"
import { createPki, type Pki } from "../helpers/pki.ts"
import { MAIN, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"

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

test("five problems of every stage (schema, cross check, build) are all printed with file:line:col, exit 1", async () => {
  const site = await pki.issue({ names: ["www.example.com"] })
  const missing = `${pki.dir}/missing.pem`
  const noCa = `${pki.dir}/no-such-ca.pem`
  const file = writeTemp(
    pki.dir,
    "five.yaml",
    `listeners:
  - name: web
    address: 127.0.0.1:notaport
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: app
  - name: api
    address: 127.0.0.1:1
    tls:
      certificates:
        - { cert: ${missing}, key: ${site.keyPath} }
    routes: [{ hosts: [www.example.com], upstream: nope }]
upstreams:
  app:
    backends: [127.0.0.1:2]
    timeouts: { connect: 5sec }
  secure:
    backends: [127.0.0.1:3]
    tls: { ca: ${noCa} }
`,
  )
  const out = await check(file)
  assert.equal(out.code, 1, out.stderr)
  const lines = out.stderr.trim().split("\n")
  assert.deepEqual(lines, [
    `${file}:3:14 listeners[0].address: expected "host:port", got "127.0.0.1:notaport"; the port must be a number, e.g. "127.0.0.1:8080"`,
    `${file}:10:19 listeners[1].tls.certificates[0].cert: loading certificate ${missing}: reading ${missing}: ENOENT`,
    `${file}:11:52 listeners[1].routes[0].upstream: unknown upstream "nope"; known: app, secure`,
    `${file}:15:26 upstreams.app.timeouts.connect: expected a duration like "30s" or "250ms", got "5sec"`,
    `${file}:18:16 upstreams.secure.tls.ca: upstream secure: reading ca ${noCa}: ENOENT`,
    `${file}: 5 error(s), 0 warning(s)`,
  ])
})

test("build problems of a config the schema accepts: differing client_auth for one name, an unreadable client CA", async () => {
  const ec = await pki.issue({ names: ["www.example.com"] })
  const rsa = await pki.issue({ names: ["www.example.com"], keyType: "rsa" })
  const noCa = `${pki.dir}/no-client-ca.pem`
  const file = writeTemp(
    pki.dir,
    "built.yaml",
    `listeners:
  - name: web
    address: 127.0.0.1:1
    tls:
      certificates:
        - { cert: ${ec.certPath}, key: ${ec.keyPath} }
        - { cert: ${rsa.certPath}, key: ${rsa.keyPath}, client_auth: { mode: require, ca: ${pki.ca.certPath} } }
    routes: [{ upstream: app }]
  - name: admin
    address: 127.0.0.1:2
    tls:
      certificates: [{ cert: ${ec.certPath}, key: ${ec.keyPath} }]
      client_auth: { mode: require, ca: ${noCa} }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: [127.0.0.1:3] }
`,
  )
  const out = await check(file)
  assert.equal(out.code, 1, out.stderr)
  const lines = out.stderr.trim().split("\n")
  assert.equal(lines.length, 3, out.stderr)
  assert.match(
    lines[0]!,
    /built\.yaml:7:\d+ listeners\[0\]\.tls\.certificates\[1\]\.client_auth: the certificates for www\.example\.com have different client_auth; give them one$/,
  )
  assert.equal(
    lines[1],
    `${file}:13:41 listeners[1].tls.client_auth.ca: loading client_auth ca ${noCa}: reading ${noCa}: ENOENT`,
  )
  assert.equal(lines[2], `${file}: 2 error(s), 0 warning(s)`)
})

test("start reports the same complete list as check, and binds nothing", async () => {
  const site = await pki.issue({ names: ["www.example.com"] })
  const missing = `${pki.dir}/gone.pem`
  const file = writeTemp(
    pki.dir,
    "start.yaml",
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${missing}, key: ${site.keyPath} }] }
    routes: [{ upstream: nope }]
upstreams:
  app: { backends: [127.0.0.1:2], timeouts: { idle: 1 minute } }
`,
  )
  const checked = await check(file)
  const started = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(process.execPath, [MAIN, "--config", file], { timeout: 20_000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stderr })
    })
  })
  assert.equal(started.code, 1)
  const problems = checked.stderr.trim().split("\n").slice(0, -1)
  assert.equal(problems.length, 3, checked.stderr)
  assert.equal(started.stderr.trim(), `portcullis: ${problems.join("\n")}`)
})

test("a listener the schema refuses still has its certificates built: a bad address and a missing cert file", async () => {
  const site = await pki.issue({ names: ["www.example.com"] })
  const missing = `${pki.dir}/also-missing.pem`
  const file = writeTemp(
    pki.dir,
    "same-listener.yaml",
    `listeners:
  - name: web
    address: localhost
    tls: { certificates: [{ cert: ${missing}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: [127.0.0.1:2] }
`,
  )
  const out = await check(file)
  assert.equal(out.code, 1)
  assert.deepEqual(out.stderr.trim().split("\n"), [
    `${file}:3:14 listeners[0].address: expected "host:port", got "localhost"; add a port, e.g. "localhost:8080"`,
    `${file}:4:35 listeners[0].tls.certificates[0].cert: loading certificate ${missing}: reading ${missing}: ENOENT`,
    `${file}: 2 error(s), 0 warning(s)`,
  ])
})

test("a refused reload reports every build problem at file:line:col, and the running config stays", async (t) => {
  const site = await pki.issue({ names: ["localhost"] })
  const good = `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: [127.0.0.1:2] }
admin: { address: "127.0.0.1:0" }
`
  const file = writeTemp(pki.dir, "reload.yaml", good)
  const pc = spawnPortcullis(["--config", file])
  t.after(() => pc.stop())
  const running = await pc.waitFor(/"admin":"127\.0\.0\.1:\d+".*portcullis is running/)
  const admin = /"admin":"127\.0\.0\.1:(\d+)"/.exec(running)?.[1]
  assert.ok(admin, running)
  const missing = `${pki.dir}/reload-missing.pem`
  const noCa = `${pki.dir}/reload-no-ca.pem`
  writeTemp(
    pki.dir,
    "reload.yaml",
    good
      .replace(site.certPath, missing)
      .replace("app: { backends: [127.0.0.1:2] }", `app: { backends: [127.0.0.1:2], tls: { ca: ${noCa} } }`),
  )
  const res = await fetch(`http://127.0.0.1:${admin}/reload`, { method: "POST" })
  const body = (await res.json()) as { reloaded: boolean; error?: string }
  assert.equal(body.reloaded, false)
  assert.deepEqual(body.error?.split("\n"), [
    `${file}:4:35 listeners[0].tls.certificates[0].cert: loading certificate ${missing}: reading ${missing}: ENOENT`,
    `${file}:7:46 upstreams.app.tls.ca: upstream app: reading ca ${noCa}: ENOENT`,
  ])
  const status = (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as { generation: number }
  assert.equal(status.generation, 1)
})

test("acme entries: a wildcard without dns-01 exits 1 at the name's line; a pending name is a warning", async () => {
  const acme = (names: string, extra = "") => `listeners:
  - name: web
    address: 127.0.0.1:1
    tls:
      certificates:
        - { acme: [${names}] }
    upstream: app
upstreams:
  app: { backends: ["127.0.0.1:2"] }
acme: { directory: "https://acme.example/directory", email: ops@example.com${extra} }
data_dir: ${pki.dir}/data
`
  const bad = await check(writeTemp(pki.dir, "acme-wild.yaml", acme('www.example.com, "*.example.com"')))
  assert.equal(bad.code, 1)
  assert.match(
    bad.stderr,
    /acme-wild\.yaml:6:37 listeners\[0\]\.tls\.certificates\[0\]\.acme\[1\]: \*\.example\.com: a wildcard name can only be validated with dns-01; set acme\.dns_hook/,
  )
  const good = await check(writeTemp(pki.dir, "acme-dns.yaml", acme('"*.example.com"', ", dns_hook: /bin/true")))
  assert.equal(good.code, 0, good.stderr)
  assert.match(good.stderr, /warning: .*acme: no certificate stored yet for \*\.example\.com; it is ordered at start/)
})
