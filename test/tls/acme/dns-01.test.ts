/**
 * ACME through dns-01 against a real Pebble: the dns_hook writes the TXT record to pebble-challtestsrv's management
 * API; a wildcard is issued; a hook that writes a wrong TXT fails the renewal, the old certificate keeps serving
 * and the order is retried with a doubling backoff until the hook is right again.
 */
import assert from "node:assert/strict"
import { existsSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import { scrape } from "../../../src/admin/metrics-endpoint.ts"
import { certificateSource } from "../../../src/tls/sources/index.ts"
import { parsePrometheus, value } from "../../helpers/prometheus.ts"
import { type Pebble, served, startAcmePortcullis, startPebble, until } from "./harness.ts"

const yaml = (names: string) => `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ acme: [${names}] }] }
    upstream: app
upstreams: { app: { backends: [127.0.0.1:9] } }
ACME_BLOCK
`

describe("acme dns-01 (Pebble, challtestsrv DNS)", () => {
  let pebble: Pebble
  let root: string
  let hook: string
  let wrong: string
  const cleanups: (() => unknown)[] = []
  before(async () => {
    pebble = await startPebble({ after: (fn: () => unknown) => cleanups.push(fn) })
    root = await pebble.root()
    // The hook an operator would write for their DNS API, here challtestsrv's; WRONG makes it publish a bad value.
    wrong = join(pebble.dir, "wrong")
    hook = join(pebble.dir, "hook.sh")
    writeFileSync(
      hook,
      `#!/bin/sh
set -e
api=http://127.0.0.1:${pebble.challtestPort}
value="$ACME_TXT_VALUE"
if [ -e "${wrong}" ]; then value="not-the-key-authorization"; fi
case "$ACME_ACTION" in
  set) curl -sf -X POST -d "{\\"host\\":\\"$ACME_TXT_NAME\\",\\"value\\":\\"$value\\"}" "$api/set-txt" ;;
  clear) curl -sf -X POST -d "{\\"host\\":\\"$ACME_TXT_NAME\\"}" "$api/clear-txt" ;;
esac
`,
      { mode: 0o755 },
    )
  })
  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
  })

  test("issues a wildcard certificate through dns-01 with the hook setting the TXT record", async (t) => {
    const pc = await startAcmePortcullis(t, pebble, yaml('d.example.test, "*.d.example.test"'), [`dns_hook: ${hook}`])
    await until(() => pc.log.with("acme certificate issued").length === 1, "the certificate to be issued")
    for (const name of ["d.example.test", "any.d.example.test"]) {
      const seen = await served(pc.port("web"), name, root)
      seen.socket.destroy()
      assert.match(seen.subjectaltname, /DNS:\*\.d\.example\.test/)
    }
  })

  test("a failing renewal keeps the old certificate serving and retries with a growing backoff", async (t) => {
    rmSync(wrong, { force: true })
    t.after(() => rmSync(wrong, { force: true }))
    // Due 5 s after issuance (of 3600 s); retries after 800 ms, 1.6 s, 3.2 s, ... (each try itself takes a moment
    // more, a few hundred ms under load: the steps are large enough that the growth shows through it).
    const pc = await startAcmePortcullis(t, pebble, yaml("f.example.test"), [
      `dns_hook: ${hook}`,
      "renew_before: 3595s",
      "retry: { initial: 800ms, max: 10s }",
    ])
    await until(() => pc.log.with("acme certificate issued").length === 1, "the first certificate")
    const first = await served(pc.port("web"), "f.example.test", root)
    first.socket.destroy()
    // Only what happens from here on is the renewal's. And Pebble reuses a valid authorization about 1 time in 100
    // even with PEBBLE_AUTHZREUSE=0 (it makes a new one only when rand.Intn(100) > the percentage): such a renewal
    // needs no challenge and succeeds with the wrong hook. CI saw attempts [1, 2, 1] and a run here [1, 1, 2], each
    // with a renewal between. So the three failures looked at are the first three after the last success.
    const from = pc.log.lines.length
    writeFileSync(wrong, "")
    // The failures since the last renewal, and the serial that renewal logged (the first certificate's if none).
    const sinceLastSuccess = () => {
      let failed: Record<string, unknown>[] = []
      let serving = first.serial
      for (const line of pc.log.lines.slice(from)) {
        const msg = String(line["msg"])
        if (msg.startsWith("acme certificate renewed")) {
          failed = []
          serving = String(line["serial"])
        } else if (msg.startsWith("acme order failed")) failed.push(line)
      }
      return { failed, serving }
    }
    await until(() => sinceLastSuccess().failed.length >= 3, "three failed renewals in a row", 40_000)
    const { failed: failures, serving: held } = sinceLastSuccess()
    assert.deepEqual(
      failures.slice(0, 3).map((f) => f["attempt"]),
      [1, 2, 3],
    )
    assert.deepEqual(
      failures.slice(0, 3).map((f) => f["retry_in_ms"]),
      [800, 1600, 3200],
    )
    const at = failures.map((f) => Number(f["at"]))
    assert.ok(at[1]! - at[0]! >= 800, `second try ${at[1]! - at[0]!} ms after the first`)
    assert.ok(at[2]! - at[1]! > at[1]! - at[0]!, `the delay grows: ${at[1]! - at[0]!} ms, then ${at[2]! - at[1]!} ms`)
    // The CA's problem document is in the log line.
    const problems = failures[0]!["problems"] as { type: string; detail: string }[]
    assert.equal(problems[0]!.type, "urn:ietf:params:acme:error:unauthorized")
    assert.equal(failures[0]!["serving"], "the previous certificate")
    const during = await served(pc.port("web"), "f.example.test", root)
    during.socket.destroy()
    // The certificate held when the failures began: the first one, or the one a reused authorization renewed.
    assert.equal(during.serial, held, "the old certificate keeps serving")
    const source = pc.runtime.acme!.managed(["f.example.test"], "ecdsa")
    assert.match(source.lastError ?? "", /validating f\.example\.test/)
    // What `portcullis certs` and the admin API read of the entry's source.
    const entry = pc.runtime.generation!.config.listeners[0]!.tls!.certificates[0]!
    const entrySource = certificateSource(entry, pc.dataDir, { manager: pc.runtime.acme })
    // The retry is scheduled once the failed order has released its lock, which may come a moment after its log line.
    await until(
      () => (entrySource.status!().nextRenewalAt ?? 0) >= at[2]!,
      "the next try is scheduled after the third failure",
      5_000,
    )
    const status = entrySource.status!()
    assert.equal(status.kind, "acme")
    assert.match(status.lastError ?? "", /validating f\.example\.test/)
    const metrics = parsePrometheus(scrape(pc.runtime))
    assert.ok(value(metrics, "portcullis_acme_certificates_total", { event: "failed" }) >= 3)

    const renewedBefore = pc.log.with("acme certificate renewed").length
    rmSync(wrong)
    assert.equal(existsSync(wrong), false)
    await until(
      () => pc.log.with("acme certificate renewed").length > renewedBefore,
      "the renewal once the hook is right",
      20_000,
    )
    const renewed = await served(pc.port("web"), "f.example.test", root)
    renewed.socket.destroy()
    assert.notEqual(renewed.serial, held)
    assert.equal(source.lastError, undefined)
  })
})
