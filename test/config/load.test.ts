/** Config conformance: every bad-*.yaml fixture fails with exactly its expected text; good configs load with defaults. */
import assert from "node:assert/strict"
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { describe, test } from "node:test"
import { fileURLToPath } from "node:url"
import { loadConfigFile, parseConfig } from "../../src/config/load.ts"
import { ConfigError } from "../../src/core/errors.ts"

// Fixture names in messages are relative to the repository root, so run from there whatever the caller's folder.
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
process.chdir(ROOT)
const FIXTURES = "test/config/fixtures"

/** loadError loads a config file that must fail and returns the ConfigError. */
function loadError(file: string): ConfigError {
  try {
    loadConfigFile(file)
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`)
    return err
  }
  assert.fail(`${file} loaded, but it should have failed`)
}

/** parseError parses config text that must fail and returns the ConfigError. */
function parseError(text: string): ConfigError {
  try {
    parseConfig(text, "inline.yaml", "/srv/portcullis")
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`)
    return err
  }
  assert.fail("the config parsed, but it should have failed")
}

describe("bad config fixtures", () => {
  const expected = readdirSync(FIXTURES)
    .filter((name) => name.startsWith("bad-") && name.endsWith(".expected.txt"))
    .sort()
  const yamls = readdirSync(FIXTURES).filter((name) => name.startsWith("bad-") && name.endsWith(".yaml"))

  test("every bad-*.yaml has its bad-*.expected.txt, and there are enough of them", () => {
    for (const yaml of yamls) {
      assert.ok(expected.includes(yaml.replace(/\.yaml$/, ".expected.txt")), `${yaml} has no .expected.txt`)
    }
    assert.ok(expected.length >= 22, `only ${expected.length} fixtures`)
  })

  for (const name of expected) {
    const file = `${FIXTURES}/${name.replace(/\.expected\.txt$/, ".yaml")}`
    test(`${name.replace(/\.expected\.txt$/, "")} fails with the expected message`, () => {
      const want = readFileSync(`${FIXTURES}/${name}`, "utf8").replace(/\n$/, "")
      const err = loadError(file)
      assert.equal(err.code, "PC_CONFIG_INVALID")
      assert.equal(err.message, want)
      assert.equal(err.problems.length, want.split("\n").length)
      for (const problem of err.problems) assert.equal(problem.file, file)
    })
  }

  test("the missing-file fixture really is missing, and the cause is the ENOENT", () => {
    assert.ok(!yamls.includes("bad-missing-file.yaml"))
    const err = loadError(`${FIXTURES}/bad-missing-file.yaml`)
    assert.equal((err.cause as NodeJS.ErrnoException).code, "ENOENT")
  })

  test("several problems are all reported, sorted by line", () => {
    const err = loadError(`${FIXTURES}/bad-several.yaml`)
    assert.equal(err.problems.length, 6)
    const lines = err.problems.map((p) => p.line)
    assert.deepEqual(
      lines,
      [...lines].sort((a, b) => a - b),
    )
  })

  test("every problem names a line and column, except a file that cannot be read", () => {
    for (const name of expected) {
      const err = loadError(`${FIXTURES}/${name.replace(/\.expected\.txt$/, ".yaml")}`)
      for (const p of err.problems) {
        if (name === "bad-missing-file.expected.txt") assert.equal(p.line, 0)
        else assert.ok(p.line >= 1 && p.column >= 1, `${name}: ${p.line}:${p.column}`)
      }
    }
  })

  test("no message uses zod's generic wording", () => {
    for (const name of expected) {
      const text = readFileSync(`${FIXTURES}/${name}`, "utf8")
      assert.doesNotMatch(text, /Invalid input|Invalid option|Too small|Too big|received/, name)
    }
  })
})

describe("messages for inline configs", () => {
  const head = "listeners:\n  - name: web\n    address: 127.0.0.1:8443\n"
  const tls = "    tls: { certificates: [{ cert: a.pem, key: a.key }] }\n"
  const table: [string, string, string][] = [
    [
      "a whole number where a fraction was given",
      `${head}${tls}    upstream: app\nupstreams:\n  app:\n    backends: [127.0.0.1:1]\n    retries: 1.5\n`,
      "inline.yaml:9:14 upstreams.app.retries: expected a whole number, got 1.5",
    ],
    [
      "a number above the maximum",
      `${head}${tls}    upstream: app\nupstreams:\n  app:\n    backends: [127.0.0.1:1]\n    retries: 11\n`,
      "inline.yaml:9:14 upstreams.app.retries: expected at most 10, got 11",
    ],
    [
      "an empty certificate list",
      `${head}    tls: { certificates: [] }\n    upstream: app\nupstreams: { app: { backends: [127.0.0.1:1] } }\n`,
      "inline.yaml:4:26 listeners[0].tls.certificates: expected at least 1 item, got none",
    ],
    [
      "a certificate without its key names the missing key",
      `${head}    tls: { certificates: [{ cert: a.pem }] }\n    upstream: app\nupstreams: { app: { backends: [127.0.0.1:1] } }\n`,
      'inline.yaml:4:27 listeners[0].tls.certificates[0].key: missing required key "key" (PEM file with the private key)',
    ],
    [
      "a duration of the wrong type",
      `${head}${tls}    upstream: app\nupstreams:\n  app:\n    backends: [127.0.0.1:1]\n    timeouts: { idle: true }\n`,
      "inline.yaml:9:23 upstreams.app.timeouts.idle: expected a string or a number, got true",
    ],
    [
      "a mapping where a list belongs",
      "listeners: { name: web }\n",
      "inline.yaml:1:12 listeners: expected a list, got a mapping",
    ],
    [
      "a path prefix without its slash",
      `${head}${tls}    routes: [{ path_prefix: v1, upstream: app }]\nupstreams: { app: { backends: [127.0.0.1:1] } }\n`,
      'inline.yaml:5:29 listeners[0].routes[0].path_prefix: expected a value starting with "/", got "v1"',
    ],
    [
      "a typo in a nested key gets a suggestion from the schema",
      `${head}${tls}    upstream: app\nupstreams:\n  app:\n    backends: [127.0.0.1:1]\n    health: { intervall: 5s }\n`,
      'inline.yaml:9:15 upstreams.app.health.intervall: unknown key "intervall"; did you mean "interval"?',
    ],
    [
      "an acme certificate entry without the top-level acme section says what it needs",
      `${head}    tls: { certificates: [{ acme: [example.com] }] }\n    upstream: app\nupstreams: { app: { backends: [127.0.0.1:1] } }\n`,
      "inline.yaml:4:35 listeners[0].tls.certificates[0].acme: an acme certificate needs the top-level acme section (directory, email)",
    ],
    [
      "a duplicate key in a flow mapping names its path",
      "listeners:\n  - { name: a, name: b }\n",
      'inline.yaml:2:16 listeners[0].name: duplicate key "name"; a key may appear only once in a mapping',
    ],
    [
      "a YAML scalar at the top",
      "just text\n",
      'inline.yaml:1:1: expected a mapping of sections (listeners, upstreams, ...), got "just text"',
    ],
    [
      "a file with only comments counts as empty",
      "# nothing yet\n",
      "inline.yaml:1:1: the config file is empty; it needs at least a listeners section (see docs/config-reference.md)",
    ],
  ]
  test("an unknown key with no near match lists the keys the schema allows there", () => {
    const err = parseError(
      `${head}${tls}    upstream: app\nupstreams: { app: { backends: [127.0.0.1:1] } }\nlogging: {}\n`,
    )
    assert.equal(err.problems.length, 1)
    // The list grows as the schema does; the sections every config has are always in it.
    assert.match(
      err.message,
      /^inline\.yaml:7:1 logging: unknown key "logging"; known keys: listeners, upstreams, admin, /,
    )
  })

  for (const [what, text, want] of table) {
    test(what, () => {
      const err = parseError(text)
      assert.equal(err.code, "PC_CONFIG_INVALID")
      assert.equal(err.message, want)
    })
  }
})

describe("good configs", () => {
  test("the ARCHITECTURE.md example (without acme and cluster) loads with defaults applied", () => {
    const { config, file } = loadConfigFile(`${FIXTURES}/good-full.yaml`)
    const dir = resolve(FIXTURES)
    assert.equal(file, join(dir, "good-full.yaml"))
    assert.deepEqual(
      config.listeners.map((l) => [l.name, l.address, l.engine]),
      [
        ["web", { host: "0.0.0.0", port: 8443 }, "http"],
        ["cache", { host: "0.0.0.0", port: 6380 }, "tcp"],
        ["redirect", { host: "0.0.0.0", port: 8080 }, "http"],
      ],
    )
    const [web, cache, redirect] = config.listeners
    assert.ok(web && cache && redirect)
    assert.equal(web.proxy_protocol, "accept")
    assert.deepEqual(web.tls?.certificates, [
      { cert: join(dir, "certs/example.pem"), key: join(dir, "certs/example.key") },
      { self_signed: ["localhost"], key_type: "ecdsa" },
    ])
    assert.equal(web.tls?.profile, "intermediate")
    assert.equal(web.tls?.min_version, "TLSv1.2")
    assert.deepEqual(web.tls?.alpn, ["h2", "http/1.1"])
    assert.equal(web.tls?.client_auth?.mode, "require")
    assert.equal(web.tls?.client_auth?.ca, join(dir, "certs/clients-ca.pem"))
    assert.equal(web.tls?.client_auth?.forward_cert, false)
    assert.equal(web.tls?.handshake_timeout, 10_000)
    assert.equal(web.tls?.session_tickets, true)
    assert.deepEqual(web.routes, [
      { hosts: ["api.example.com"], path_prefix: "/v1", upstream: "api" },
      { upstream: "web" },
    ])
    assert.deepEqual(web.trusted_proxies, [])
    assert.deepEqual(web.limits, {
      max_connections: 10_000,
      max_header_size: 16_384,
      max_headers: 100,
      header_timeout: 10_000,
      idle_timeout: 60_000,
      request_timeout: 300_000,
      body_buffer: 65_536,
      body_timeout: 60_000,
    })

    assert.equal(cache.upstream, "cache")
    assert.equal(cache.send_proxy_protocol, "v2")
    assert.deepEqual(cache.tls?.certificates, [
      { cert: join(dir, "certs/cache.pem"), key: join(dir, "certs/cache.key") },
    ])

    assert.equal(redirect.redirect_https, 8443)
    assert.equal(redirect.tls, undefined)
    assert.equal(redirect.routes, undefined)

    assert.deepEqual(Object.keys(config.upstreams), ["web", "api", "cache"])
    const { web: up, api, cache: redis } = config.upstreams
    assert.ok(up && api && redis)
    assert.deepEqual(up.backends, [
      { address: { host: "127.0.0.1", port: 3000 }, weight: 1, backup: false },
      { address: { host: "127.0.0.1", port: 3001 }, weight: 2, backup: false },
    ])
    assert.equal(up.balance, "least_conn")
    assert.deepEqual(up.health, {
      type: "http",
      path: "/healthz",
      expect_status: "200-399",
      interval: 5000,
      timeout: 2000,
      rise: 2,
      fall: 3,
    })
    assert.deepEqual(up.timeouts, { connect: 2000, response: 30_000, idle: 60_000, total: 0 })
    assert.equal(up.retries, 1)
    assert.equal(up.keepalive, 64)

    assert.equal(api.balance, "p2c")
    assert.equal(api.hash_key, "client_ip")
    assert.deepEqual(api.timeouts, { connect: 5000, response: 60_000, idle: 60_000, total: 0 })
    assert.equal(api.tls?.ca, join(dir, "certs/internal-ca.pem"))
    assert.equal(api.tls?.servername, "api.internal")
    assert.equal(api.tls?.insecure_skip_verify, false)
    assert.equal(api.tls?.cert, undefined)
    assert.equal(api.health, undefined)
    assert.deepEqual(redis.backends, [{ address: { host: "127.0.0.1", port: 6379 }, weight: 1, backup: false }])

    assert.deepEqual(config.admin, { address: { host: "127.0.0.1", port: 9901 } })
    assert.deepEqual(config.access_log, { enabled: true })
    assert.equal(config.data_dir, join(dir, ".data"))
    assert.equal(config.shutdown_grace, 30_000)
  })

  test("IPv6 addresses, sizes, durations and paths relative to the config's own folder", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "portcullis-config-"))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, "portcullis.yaml")
    writeFileSync(
      file,
      [
        "listeners:",
        "  - name: v6",
        '    address: "[::]:8443"',
        "    tls:",
        "      certificates: [{ cert: ../elsewhere/site.pem, key: /etc/portcullis/site.key }]",
        "      hsts: {}",
        "    upstream: app",
        "    limits: { max_header_size: 64KiB, header_timeout: 1m30s, idle_timeout: 250ms, max_connections: 5 }",
        "upstreams:",
        "  app:",
        '    backends: ["[::1]:3000", { address: "localhost:3001", backup: true, max_connections: 8 }]',
        "    tls: { cert: client.pem, key: client.key }",
        "shutdown_grace: 2500",
        "data_dir: state",
        "",
      ].join("\n"),
    )
    // Load through a relative path from somewhere else: paths still resolve against the file's folder.
    const { config } = loadConfigFile(file)
    const listener = config.listeners[0]!
    assert.deepEqual(listener.address, { host: "::", port: 8443 })
    assert.deepEqual(listener.tls?.certificates, [
      { cert: resolve(dir, "../elsewhere/site.pem"), key: "/etc/portcullis/site.key" },
    ])
    assert.deepEqual(listener.tls?.hsts, { max_age: 31_536_000_000, include_subdomains: false, preload: false })
    assert.equal(listener.limits.max_header_size, 65_536)
    assert.equal(listener.limits.header_timeout, 90_000)
    assert.equal(listener.limits.idle_timeout, 250)
    assert.equal(listener.limits.max_connections, 5)
    assert.equal(listener.limits.request_timeout, 300_000)
    const app = config.upstreams["app"]!
    assert.deepEqual(app.backends, [
      { address: { host: "::1", port: 3000 }, weight: 1, backup: false },
      { address: { host: "localhost", port: 3001 }, weight: 1, backup: true, max_connections: 8 },
    ])
    assert.equal(app.tls?.cert, join(dir, "client.pem"))
    assert.equal(app.tls?.key, join(dir, "client.key"))
    assert.equal(config.shutdown_grace, 2500)
    assert.equal(config.data_dir, join(dir, "state"))
    assert.equal(config.admin, undefined)
  })

  test("a minimal config gets every default", () => {
    const config = parseConfig(
      "listeners:\n  - { name: web, address: 127.0.0.1:8443, tls: { certificates: [{ self_signed: [localhost] }] }, upstream: app }\nupstreams: { app: { backends: [127.0.0.1:3000] } }\n",
      "inline.yaml",
      "/srv/portcullis",
    )
    const listener = config.listeners[0]!
    assert.equal(listener.engine, "http")
    assert.equal(listener.tls?.profile, "intermediate")
    assert.equal(listener.tls?.client_auth, undefined)
    assert.equal(config.upstreams["app"]?.balance, "p2c")
    assert.equal(config.upstreams["app"]?.retries, 2)
    assert.equal(config.data_dir, "/srv/portcullis/.data")
    assert.equal(config.shutdown_grace, 30_000)
  })
})
