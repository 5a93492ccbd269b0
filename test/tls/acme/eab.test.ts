/** External account binding (RFC 8555 §7.3.4) against a Pebble that requires it. */
import assert from "node:assert/strict"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import { type Pebble, served, startAcmePortcullis, startPebble, until } from "./harness.ts"

const KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
const yaml = (name: string) => `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ acme: [${name}] }] }
    upstream: app
upstreams: { app: { backends: [127.0.0.1:9] } }
ACME_BLOCK
`

describe("acme external account binding (Pebble requiring it)", () => {
  let pebble: Pebble
  let root: string
  const cleanups: (() => unknown)[] = []
  before(async () => {
    pebble = await startPebble({ after: (fn: () => unknown) => cleanups.push(fn) }, { eab: { "kid-1": KEY } })
    root = await pebble.root()
  })
  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
  })

  test("the account is registered with the kid and HMAC key from the file, and the certificate issued", async (t) => {
    const keyFile = join(pebble.dir, "eab.key")
    writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 })
    const pc = await startAcmePortcullis(t, pebble, yaml("eab.example.test"), [
      "challenges: [tls-alpn-01]",
      `eab: { kid: kid-1, hmac_key_file: ${keyFile} }`,
    ])
    await until(() => pc.log.with("acme certificate issued").length === 1, "the certificate to be issued")
    const seen = await served(pc.port("web"), "eab.example.test", root)
    seen.socket.destroy()
    assert.equal(seen.subjectaltname, "DNS:eab.example.test")
  })

  test("without the binding the account is refused: logged, the stand-in keeps serving", async (t) => {
    const pc = await startAcmePortcullis(t, pebble, yaml("noeab.example.test"), ["challenges: [tls-alpn-01]"])
    await until(() => pc.log.with("acme order failed").length === 1, "the refusal")
    const failure = pc.log.with("acme order failed")[0]!
    assert.equal(failure["code"], "PC_ACME_ACCOUNT")
    assert.match(String(failure["msg"]), /registering the ACME account/)
    const standIn = await served(pc.port("web"), "noeab.example.test", root, { rejectUnauthorized: false })
    standIn.socket.destroy()
    assert.equal(standIn.subjectaltname, "DNS:noeab.example.test")
    assert.equal(pc.log.with("acme certificate issued").length, 0)
  })
})
