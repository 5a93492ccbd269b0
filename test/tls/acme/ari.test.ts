/**
 * ARI (RFC 9773) against a real Pebble behind a small wrapper: the wrapper serves Pebble's directory with a
 * renewalInfo resource added and answers it with a suggested window and Retry-After; the renewal lands inside the
 * window (Pebble's own 3600 s certificates would renew after 40 minutes without it).
 */
import assert from "node:assert/strict"
import { execFileSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import { type Pebble, served, startAcmePortcullis, startPebble, startPebbleWrapper, until } from "./harness.ts"

interface Wrapper {
  directory: string
  requests: { path: string; at: number }[]
  windows: { start: number; end: number }[]
}

/**
 * startAriWrapper: Pebble behind the harness's wrapper, its directory plus renewalInfo; GET /renewal-info/<id>
 * answers `answer(n)`.
 */
async function startAriWrapper(
  t: { after(fn: () => unknown): void },
  pebble: Pebble,
  answer: (n: number) => { start: number; end: number; retryAfter: number },
): Promise<Wrapper> {
  const requests: Wrapper["requests"] = []
  const windows: Wrapper["windows"] = []
  const wrapper = await startPebbleWrapper(t, pebble, {
    directory: (dir, origin) => {
      dir["renewalInfo"] = `${origin}/renewal-info/`
    },
    handle: (req, res) => {
      if (!req.url?.startsWith("/renewal-info/")) return false
      requests.push({ path: req.url.slice("/renewal-info/".length), at: Date.now() })
      const a = answer(requests.length)
      windows.push({ start: a.start, end: a.end })
      if (Number.isNaN(a.start)) {
        res.writeHead(500, { "content-type": "application/problem+json", "retry-after": String(a.retryAfter) })
        res.end(JSON.stringify({ type: "urn:ietf:params:acme:error:serverInternal", detail: "down" }))
        return true
      }
      const body = { suggestedWindow: { start: new Date(a.start).toISOString(), end: new Date(a.end).toISOString() } }
      res.writeHead(200, { "content-type": "application/json", "retry-after": String(a.retryAfter) })
      res.end(JSON.stringify(body))
      return true
    },
  })
  return { directory: wrapper.directory, requests, windows }
}

const yaml = (name: string) => `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ acme: [${name}] }] }
    upstream: app
  - name: plain
    address: 127.0.0.2:0
    redirect_https: 443
upstreams: { app: { backends: [127.0.0.1:9] } }
ACME_BLOCK
`

describe("acme ARI (Pebble behind a renewalInfo wrapper)", () => {
  let pebble: Pebble
  let root: string
  const cleanups: (() => unknown)[] = []
  before(async () => {
    pebble = await startPebble({ after: (fn: () => unknown) => cleanups.push(fn) })
    root = await pebble.root()
  })
  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
  })

  test("a renewalInfo that fails keeps the usual schedule and is not asked again in a loop", async (t) => {
    const wrapper = await startAriWrapper(t, pebble, () => ({ start: Number.NaN, end: Number.NaN, retryAfter: 1 }))
    const pc = await startAcmePortcullis(t, { ...pebble, directory: wrapper.directory }, yaml("ari-bad.example.test"), [
      "challenges: [http-01]",
    ])
    await until(() => pc.log.with("acme certificate issued").length === 1, "the certificate")
    await until(() => pc.log.with("acme renewalInfo").length >= 1, "renewalInfo to be asked")
    // An absence, observed over a bounded half second: a loop would ask hundreds of times in it.
    await new Promise((r) => setTimeout(r, 500))
    assert.equal(wrapper.requests.length, 1)
    const managed = pc.runtime.acme!.managed(["ari-bad.example.test"], "ecdsa")
    const cert = managed.current!
    const validFrom = new Date(cert.leaf.validFrom).getTime()
    // The next timer is ARI's next ask (15 minutes) or the two-thirds point, whichever is first.
    assert.ok(managed.nextRenewalAt! > Date.now() + 10 * 60_000, "nothing is due soon")
    assert.ok(managed.nextRenewalAt! <= validFrom + ((cert.notAfter.getTime() - validFrom) * 2) / 3)
  })

  test("renews inside the CA's suggested window, asking again after Retry-After", async (t) => {
    let base = 0
    // First answer: a window an hour away, ask again in 1 s; then: a window from 1.5 s to 3.5 s after that.
    const wrapper = await startAriWrapper(t, pebble, (n) => {
      const now = Date.now()
      if (n === 1) return { start: now + 3_600_000, end: now + 7_200_000, retryAfter: 1 }
      if (base === 0) base = now
      return { start: base + 1_500, end: base + 3_500, retryAfter: 3_600 }
    })
    const pc = await startAcmePortcullis(t, { ...pebble, directory: wrapper.directory }, yaml("ari.example.test"), [
      "challenges: [http-01]",
    ])
    await until(() => pc.log.with("acme certificate issued").length === 1, "the first certificate")
    const first = await served(pc.port("web"), "ari.example.test", root)
    first.socket.destroy()
    await until(() => pc.log.with("acme certificate renewed").length === 1, "the renewal in the window", 15_000)
    const renewedAt = Number(pc.log.with("acme certificate renewed")[0]!["at"])
    assert.ok(wrapper.requests.length >= 2, "renewalInfo asked again after Retry-After")
    assert.ok(wrapper.requests[1]!.at - wrapper.requests[0]!.at >= 1_000, "not before Retry-After")
    const window = wrapper.windows[1]!
    assert.ok(renewedAt >= window.start, `renewed ${window.start - renewedAt} ms before the window`)
    // The order itself takes a moment after the chosen time (under a second against Pebble, more on a loaded machine).
    assert.ok(renewedAt <= window.end + 5_000, `renewed ${renewedAt - window.end} ms after the window`)

    // The certificate id: base64url(AKI keyIdentifier) "." base64url(serial) (RFC 9773 §4.1), read by openssl.
    const pem = join(pebble.dir, "first.pem")
    writeFileSync(pem, first.pem)
    const text = execFileSync("openssl", ["x509", "-in", pem, "-noout", "-ext", "authorityKeyIdentifier", "-serial"], {
      encoding: "utf8",
    })
    const aki = /([0-9A-F]{2}(?::[0-9A-F]{2})+)/.exec(text)![1]!.replace(/:/g, "")
    let serial = /serial=([0-9A-F]+)/.exec(text)![1]!
    if (serial.length % 2) serial = `0${serial}`
    if (Number.parseInt(serial.slice(0, 2), 16) >= 0x80) serial = `00${serial}`
    const [idAki, idSerial] = wrapper.requests[0]!.path.split(".")
    assert.equal(Buffer.from(idAki!, "base64url").toString("hex").toUpperCase(), aki)
    assert.equal(Buffer.from(idSerial!, "base64url").toString("hex").toUpperCase(), serial)
  })
})
