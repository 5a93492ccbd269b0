/**
 * `acme.profile` (draft-ietf-acme-profiles) against a real Pebble behind a wrapper (Debian's Pebble 2.4 has no
 * profiles): the wrapper lists `meta.profiles` in the directory and records each newOrder's payload. The configured
 * profile is sent; one the directory does not list, or any profile when it lists none, is an error in the log and
 * no order.
 */
import assert from "node:assert/strict"
import { after, before, describe, test } from "node:test"
import { type Pebble, served, startAcmePortcullis, startPebble, startPebbleWrapper, until } from "./harness.ts"

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

const PROFILES = { classic: "the CA's 90-day certificate", shortlived: "a 6-day certificate" }

/** withProfiles: a directory edit that lists `profiles` in meta, as a CA with the extension does. */
const withProfiles = (profiles: Record<string, string>) => (dir: Record<string, unknown>) => {
  dir["meta"] = { ...(dir["meta"] as object | undefined), profiles }
}

describe("acme profile (Pebble behind a wrapper that lists profiles)", () => {
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

  test("the configured profile is sent in the newOrder, and the certificate is issued", async (t) => {
    const wrapper = await startPebbleWrapper(t, pebble, { directory: withProfiles(PROFILES) })
    const pc = await startAcmePortcullis(t, { ...pebble, directory: wrapper.directory }, yaml("p.example.test"), [
      "challenges: [http-01]",
      "profile: shortlived",
    ])
    await until(() => pc.log.with("acme certificate issued").length === 1, "the certificate")
    assert.deepEqual(
      wrapper.newOrders.map((o) => [o["profile"], o["identifiers"]]),
      [["shortlived", [{ type: "dns", value: "p.example.test" }]]],
    )
    const seen = await served(pc.port("web"), "p.example.test", root)
    seen.socket.destroy()
    assert.match(seen.subjectaltname, /DNS:p\.example\.test/)
  })

  test("without acme.profile the newOrder carries no profile field", async (t) => {
    const wrapper = await startPebbleWrapper(t, pebble, { directory: withProfiles(PROFILES) })
    const pc = await startAcmePortcullis(t, { ...pebble, directory: wrapper.directory }, yaml("np.example.test"), [
      "challenges: [http-01]",
    ])
    await until(() => pc.log.with("acme certificate issued").length === 1, "the certificate")
    assert.equal(wrapper.newOrders.length, 1)
    assert.equal("profile" in wrapper.newOrders[0]!, false, JSON.stringify(wrapper.newOrders[0]))
  })

  for (const [what, profiles, listed] of [
    [
      "a profile the directory does not list",
      { classic: PROFILES.classic },
      /which the CA does not offer \(its directory lists "classic"\)/,
    ],
    ["any profile when the directory lists none", undefined, /the CA's directory lists no profiles/],
  ] as const) {
    test(`${what}: an error naming it in the log, no order placed, the stand-in keeps serving`, async (t) => {
      const wrapper = await startPebbleWrapper(t, pebble, profiles ? { directory: withProfiles(profiles) } : {})
      const ordersBefore = pebble.orders()
      const name = profiles ? "unlisted.example.test" : "unlisted-none.example.test"
      const pc = await startAcmePortcullis(t, { ...pebble, directory: wrapper.directory }, yaml(name), [
        "challenges: [http-01]",
        "profile: shortlived",
      ])
      await until(() => pc.log.with("acme order failed").length === 1, "the failed order")
      const line = pc.log.with("acme order failed")[0]!
      assert.equal(line["level"], 50, "logged at error")
      assert.equal(line["code"], "PC_ACME_PROFILE")
      assert.match(String(line["msg"]), /acme\.profile is "shortlived"/)
      assert.match(String(line["msg"]), listed)
      assert.equal(wrapper.newOrders.length, 0, "no newOrder was sent")
      assert.equal(pebble.orders(), ordersBefore, "Pebble saw no order")
      assert.equal(pc.log.with("acme certificate issued").length, 0)
      const standIn = await served(pc.port("web"), name, root, { rejectUnauthorized: false })
      standIn.socket.destroy()
      assert.equal(standIn.subjectaltname, `DNS:${name}`, "the self-signed stand-in")
    })
  }
})
