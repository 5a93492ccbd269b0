/**
 * ACME through tls-alpn-01 (RFC 8737) against a real Pebble: the TLS listener answers a ClientHello offering
 * acme-tls/1 with the challenge certificate; with while_pending: refuse a name without its certificate yet gets an
 * unrecognized_name alert.
 */
import assert from "node:assert/strict"
import { after, before, describe, test } from "node:test"
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

describe("acme tls-alpn-01 (Pebble)", () => {
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

  test("issues a certificate through tls-alpn-01 answered on the TLS listener", async (t) => {
    const pc = await startAcmePortcullis(t, pebble, yaml("t.example.test"), ["challenges: [tls-alpn-01]"])
    await until(() => pc.log.with("acme certificate issued").length === 1, "the certificate to be issued")
    const seen = await served(pc.port("web"), "t.example.test", root)
    seen.socket.destroy()
    assert.equal(seen.subjectaltname, "DNS:t.example.test")
    assert.ok(pebble.tls.connections >= 1, "Pebble validated on the TLS listener")
  })

  test("while_pending: refuse answers a name without its certificate yet with unrecognized_name, then serves it", async (t) => {
    const tlsPort = pebble.tls
    const point = tlsPort.point
    let release: (() => void) | undefined
    tlsPort.point = (port, host) => {
      release = () => point(port, host)
    }
    t.after(() => {
      tlsPort.point = point
    })
    const pc = await startAcmePortcullis(t, pebble, yaml("p.example.test"), [
      "challenges: [tls-alpn-01]",
      "while_pending: refuse",
    ])
    const err = await served(pc.port("web"), "p.example.test", root).then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    )
    assert.equal(err?.code, "ERR_SSL_TLSV1_UNRECOGNIZED_NAME")
    release!()
    await until(() => pc.log.with("acme certificate issued").length === 1, "the certificate to be issued")
    const seen = await served(pc.port("web"), "p.example.test", root)
    seen.socket.destroy()
    assert.equal(seen.subjectaltname, "DNS:p.example.test")
  })
})
