/**
 * Logs for people (issue 13, item 4): `--log-format pretty` (or PORTCULLIS_LOG_FORMAT=pretty) prints lines for a
 * terminal, JSON stays the default, and the start-up banner names the live listeners, certificates (days left) and
 * upstreams.
 */
import assert from "node:assert/strict"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import { formatPretty } from "../../src/core/pretty-log.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { runningPorts, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"

let pki: Pki
let echo: TestBackend
let site: CertFiles
let file: string

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  site = await pki.issue({ names: ["localhost"], notAfter: new Date(Date.now() + 10.5 * 86_400_000) })
  const dir = mkdtempSync(join(tmpdir(), "pc-banner-"))
  file = writeTemp(
    dir,
    "config.yaml",
    `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
`,
  )
})

after(async () => {
  await echo?.close()
  await pki?.close()
})

describe("--log-format pretty", () => {
  for (const [how, args, env] of [
    ["the flag", ["--log-format", "pretty"], {}],
    ["PORTCULLIS_LOG_FORMAT", [], { PORTCULLIS_LOG_FORMAT: "pretty" }],
  ] as const) {
    test(`${how}: the banner and the running line are plain text, not JSON`, async () => {
      const pc = spawnPortcullis(["--config", file, ...args], { env })
      try {
        const running = await pc.waitFor(/^.*portcullis is running.*$/m)
        assert.throws(() => JSON.parse(running), "not JSON")
        assert.match(running, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}portcullis is running ports=\{"web":\d+\}/)
        const out = pc.output()
        assert.match(out, /INFO {2}listener live listener=web address=127\.0\.0\.1:\d+ engine=http/)
        assert.match(out, /INFO {2}certificate live listener=web names=localhost key_type=ecdsa days_left=10\b/)
        assert.match(out, new RegExp(`INFO  upstream live upstream=echo backends=127\\.0\\.0\\.1:${echo.port} up=1`))
        for (const line of out.trim().split("\n")) assert.doesNotMatch(line, /^\{/, "no JSON line")
      } finally {
        await pc.stop()
      }
    })
  }

  test("JSON stays the default, banner included", async () => {
    const pc = spawnPortcullis(["--config", file])
    try {
      const { ports } = await runningPorts(pc)
      const lines = pc
        .output()
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Record<string, unknown>)
      const listener = lines.find((l) => l["msg"] === "listener live")
      assert.equal(listener?.["address"], `127.0.0.1:${ports["web"]}`)
      const cert = lines.find((l) => l["msg"] === "certificate live")
      assert.equal(cert?.["days_left"], 10)
      assert.equal(lines.find((l) => l["msg"] === "upstream live")?.["upstream"], "echo")
    } finally {
      await pc.stop()
    }
  })

  test("an unknown format is refused", async () => {
    const pc = spawnPortcullis(["--config", file, "--log-format", "fancy"])
    const code = await new Promise<number | null>((r) => pc.child.on("exit", (c) => r(c)))
    assert.equal(code, 2)
    assert.match(pc.output(), /--log-format takes json or pretty/)
  })

  test("formatPretty: time, level, message, then key=value (strings with spaces quoted)", () => {
    const line = JSON.stringify({
      level: 40,
      time: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
      pid: 1,
      msg: "hi",
      a: "b c",
      n: 2,
    })
    assert.equal(formatPretty(line), '03:04:05.006 WARN  hi a="b c" n=2')
    assert.equal(formatPretty("not json"), "not json")
  })
})
