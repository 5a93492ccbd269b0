/** A Secret never prints its value: not by String(), JSON, inspect, format strings, nor through the pino logger. */
import assert from "node:assert/strict"
import { Console } from "node:console"
import { Writable } from "node:stream"
import { describe, test } from "node:test"
import { format, inspect } from "node:util"
import { createLogger } from "../../src/core/log.ts"
import { Secret } from "../../src/core/secret.ts"

const KEY =
  "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSUPERSECRET\n-----END PRIVATE KEY-----\n"
const MARKER = "SUPERSECRET"

/** sink collects everything written to it as one string. */
function sink(): { stream: Writable; text: () => string } {
  const chunks: string[] = []
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      chunks.push(String(chunk))
      callback()
    },
  })
  return { stream, text: () => chunks.join("") }
}

/** logLines logs through a real pino logger into a stream and returns the parsed JSON lines. */
function logLines(write: (log: ReturnType<typeof createLogger>) => void): { raw: string; lines: unknown[] } {
  const out = sink()
  const log = createLogger({ level: "debug", destination: out.stream })
  write(log)
  log.flush()
  const raw = out.text()
  const lines = raw
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as unknown)
  return { raw, lines }
}

describe("Secret", () => {
  const secret = new Secret(KEY)

  test("reveal gives the value back unchanged", () => {
    assert.equal(secret.reveal(), KEY)
    const bytes = Buffer.from(KEY)
    assert.equal(new Secret(bytes).reveal(), bytes)
  })

  test("String() and concatenation print [redacted]", () => {
    assert.equal(String(secret), "[redacted]")
    assert.equal(`${secret}`, "[redacted]")
    assert.equal("key: " + secret, "key: [redacted]")
  })

  test("JSON.stringify prints [redacted], also nested", () => {
    assert.equal(JSON.stringify(secret), '"[redacted]"')
    const json = JSON.stringify({ tls: { cert: "c.pem", key: secret }, keys: [secret] })
    assert.equal(json, '{"tls":{"cert":"c.pem","key":"[redacted]"},"keys":["[redacted]"]}')
  })

  test("util.inspect prints [redacted], also nested and with showHidden", () => {
    assert.equal(inspect(secret), "[redacted]")
    const nested = inspect({ a: { b: { key: secret } } }, { depth: 10, showHidden: true })
    assert.ok(nested.includes("[redacted]"), nested)
    assert.ok(!nested.includes(MARKER), nested)
  })

  test("a Buffer secret prints [redacted] too", () => {
    const bytes = new Secret(Buffer.from(KEY))
    for (const text of [String(bytes), JSON.stringify(bytes), inspect(bytes), format("%s %o", bytes, bytes)]) {
      assert.ok(!text.includes(MARKER), text)
      assert.ok(text.includes("[redacted]"), text)
    }
  })

  test("console.log-style format strings print [redacted]", () => {
    for (const spec of ["%s", "%o", "%O", "%j"]) {
      const text = format(spec, secret)
      assert.ok(text.includes("[redacted]"), `${spec}: ${text}`)
      assert.ok(!text.includes(MARKER), `${spec}: ${text}`)
    }
    assert.equal(format("loaded", secret), "loaded [redacted]")
  })

  test("console.log and console.error to a stream print [redacted]", () => {
    const out = sink()
    const console = new Console({ stdout: out.stream, stderr: out.stream })
    console.log(secret)
    console.log("key %s", secret)
    console.error({ key: secret })
    // console.dir turns custom inspection off: it shows "Secret {}", and the private field stays hidden.
    console.dir(secret)
    const text = out.text()
    assert.equal((text.match(/\[redacted\]/g) ?? []).length, 3, text)
    assert.ok(text.includes("Secret {}"), text)
    assert.ok(!text.includes(MARKER), text)
  })

  test("an error message built from a secret does not carry the key", () => {
    const err = new Error(`loading key ${secret}`, { cause: { key: secret } })
    const text = inspect(err, { depth: 10 })
    assert.ok(!text.includes(MARKER), text)
    assert.equal(err.message, "loading key [redacted]")
  })
})

describe("the logger", () => {
  test("a Secret logged through pino prints [redacted]", () => {
    const secret = new Secret(KEY)
    const { raw, lines } = logLines((log) => {
      log.info({ secret }, "loaded")
      log.info({ tls: { material: secret } }, "nested")
      log.info("message %s", secret)
    })
    assert.equal(lines.length, 3, raw)
    assert.ok(!raw.includes(MARKER), raw)
    assert.deepEqual((lines[0] as { secret: unknown }).secret, "[redacted]")
    assert.deepEqual((lines[1] as { tls: unknown }).tls, { material: "[redacted]" })
    assert.equal((lines[2] as { msg: unknown }).msg, "message [redacted]")
  })

  test("plain key strings at the redacted paths are replaced", () => {
    const { raw, lines } = logLines((log) => {
      log.info({ key: KEY }, "top")
      log.info({ cert: { key: KEY, cert: "c.pem" } }, "one down")
      log.info({ upstream: { tls: { key: KEY } } }, "two down")
      log.info({ privateKey: KEY, passphrase: "hunter2" }, "other names")
    })
    assert.equal(lines.length, 4, raw)
    assert.ok(!raw.includes(MARKER), raw)
    assert.ok(!raw.includes("hunter2"), raw)
    assert.equal((lines[0] as { key: unknown }).key, "[redacted]")
    assert.deepEqual((lines[1] as { cert: unknown }).cert, { key: "[redacted]", cert: "c.pem" })
    assert.deepEqual((lines[2] as { upstream: unknown }).upstream, { tls: { key: "[redacted]" } })
  })

  test("authorization, proxy-authorization and cookie headers are redacted", () => {
    const headers = {
      host: "api.example.com",
      authorization: "Bearer tok-SUPERSECRET",
      "proxy-authorization": "Basic SUPERSECRET",
      cookie: "session=SUPERSECRET",
    }
    const redacted = {
      host: "api.example.com",
      authorization: "[redacted]",
      "proxy-authorization": "[redacted]",
      cookie: "[redacted]",
    }
    const { raw, lines } = logLines((log) => {
      log.info({ headers }, "bare headers")
      log.info({ req: { method: "GET", headers } }, "request")
      log.info({ authorization: "Bearer SUPERSECRET" }, "top-level")
    })
    assert.equal(lines.length, 3, raw)
    assert.ok(!raw.includes(MARKER), raw)
    assert.deepEqual((lines[0] as { headers: unknown }).headers, redacted)
    assert.deepEqual((lines[1] as { req: unknown }).req, { method: "GET", headers: redacted })
    assert.equal((lines[2] as { authorization: unknown }).authorization, "[redacted]")
  })

  test("redaction does not change the object that was logged", () => {
    const headers = { authorization: "Bearer x" }
    logLines((log) => log.info({ headers }, "request"))
    assert.equal(headers.authorization, "Bearer x")
  })
})
