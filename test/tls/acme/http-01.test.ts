/** ACME through http-01 against a real Pebble: issuance, what a pending name is served, reuse across a restart. */
import assert from "node:assert/strict"
import { X509Certificate } from "node:crypto"
import { after, before, describe, test } from "node:test"
import { scrape } from "../../../src/admin/metrics-endpoint.ts"
import { parsePrometheus, value } from "../../helpers/prometheus.ts"
import { type Pebble, served, startAcmePortcullis, startPebble, until } from "./harness.ts"

const yaml = (names: string) => `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ acme: [${names}] }] }
    upstream: app
  - name: plain
    address: 127.0.0.2:0
    redirect_https: 443
upstreams: { app: { backends: [127.0.0.1:9] } }
ACME_BLOCK
`

describe("acme http-01 (Pebble)", () => {
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

  test("issues a certificate through http-01 on the redirect listener and serves it, verified against Pebble's root", async (t) => {
    const pc = await startAcmePortcullis(t, pebble, yaml("a.example.test, www.a.example.test"), [
      "challenges: [http-01]",
    ])
    await until(() => pc.log.with("acme certificate issued").length === 1, "the certificate to be issued")
    for (const name of ["a.example.test", "www.a.example.test"]) {
      const seen = await served(pc.port("web"), name, root)
      seen.socket.destroy()
      assert.match(seen.subjectaltname, /DNS:a\.example\.test/)
      assert.match(seen.subjectaltname, /DNS:www\.a\.example\.test/)
    }
    const metrics = parsePrometheus(scrape(pc.runtime))
    assert.equal(value(metrics, "portcullis_acme_certificates_total", { event: "issued" }), 1)
    // Pebble fetched the token from the redirect listener (through its httpPort).
    assert.ok(pebble.http.connections >= 1)
  })

  test("a name waiting for its first certificate is served the self-signed stand-in, then the issued one", async (t) => {
    // Pebble's validation connections wait in the forwarder until it is pointed at the redirect listener.
    const http = pebble.http
    const point = http.point
    let release: (() => void) | undefined
    http.point = (port, host) => {
      release = () => point(port, host)
    }
    t.after(() => {
      http.point = point
    })
    const pc = await startAcmePortcullis(t, pebble, yaml("b.example.test"), ["challenges: [http-01]"])
    await until(() => pc.log.with("acme certificate pending").length === 1, "the pending name to be logged")
    await assert.rejects(served(pc.port("web"), "b.example.test", root), /self[- ]signed/i)
    const standIn = await served(pc.port("web"), "b.example.test", root, { rejectUnauthorized: false })
    standIn.socket.destroy()
    assert.equal(standIn.subjectaltname, "DNS:b.example.test")
    assert.equal(pc.log.with("acme certificate issued").length, 0)
    release!()
    await until(() => pc.log.with("acme certificate issued").length === 1, "the certificate to be issued")
    const issued = await served(pc.port("web"), "b.example.test", root)
    issued.socket.destroy()
    assert.notEqual(issued.serial, standIn.serial)
  })

  test("key_type both orders an ECDSA and an RSA certificate and serves each to the client that wants it", async (t) => {
    const pc = await startAcmePortcullis(
      t,
      pebble,
      yaml("both.example.test").replace(
        "[{ acme: [both.example.test] }]",
        "[{ acme: [both.example.test], key_type: both }]",
      ),
      ["challenges: [http-01]"],
    )
    await until(() => pc.log.with("acme certificate issued").length === 2, "both certificates to be issued")
    const ec = await served(pc.port("web"), "both.example.test", root, { sigalgs: "ecdsa_secp256r1_sha256" })
    const rsa = await served(pc.port("web"), "both.example.test", root, {
      sigalgs: "rsa_pss_rsae_sha256:rsa_pkcs1_sha256",
    })
    ec.socket.destroy()
    rsa.socket.destroy()
    assert.equal(new X509Certificate(ec.pem).publicKey.asymmetricKeyType, "ec")
    assert.equal(new X509Certificate(rsa.pem).publicKey.asymmetricKeyType, "rsa")
  })

  test("a reload keeps the certificate without a new order; one that drops an entry stops looking after it", async (t) => {
    const two = yaml("e.example.test").replace(
      "[{ acme: [e.example.test] }]",
      "[{ acme: [e.example.test] }, { acme: [e2.example.test] }]",
    )
    const pc = await startAcmePortcullis(t, pebble, two, ["challenges: [http-01]"])
    await until(() => pc.log.with("acme certificate issued").length === 2, "both certificates to be issued")
    const before = await served(pc.port("web"), "e.example.test", root)
    before.socket.destroy()
    const orders = pebble.orders()
    const manager = pc.runtime.acme!
    assert.equal(manager.managedCount, 2)
    const config = pc.runtime.generation!.config
    const one = {
      ...config,
      listeners: config.listeners.map((l) =>
        l.tls ? { ...l, tls: { ...l.tls, certificates: l.tls.certificates.slice(0, 1) } } : l,
      ),
    }
    await pc.runtime.reload(one)
    assert.equal(pc.runtime.acme, manager, "the same manager across the reload")
    assert.equal(manager.managedCount, 1, "the dropped entry's certificate is no longer renewed")
    const after = await served(pc.port("web"), "e.example.test", root)
    after.socket.destroy()
    assert.equal(after.serial, before.serial)
    assert.equal(pebble.orders(), orders)
  })

  test("a restart reuses the stored account and certificate: no new order", async (t) => {
    const first = await startAcmePortcullis(t, pebble, yaml("c.example.test"), ["challenges: [http-01]"])
    await until(() => first.log.with("acme certificate issued").length === 1, "the certificate to be issued")
    const before = await served(first.port("web"), "c.example.test", root)
    before.socket.destroy()
    await first.close()
    const orders = pebble.orders()
    const accounts = pebble
      .output()
      .split("\n")
      .filter((l) => l.includes("POST /sign-me-up")).length
    const second = await startAcmePortcullis(
      t,
      pebble,
      yaml("c.example.test"),
      ["challenges: [http-01]"],
      first.dataDir,
    )
    const after = await served(second.port("web"), "c.example.test", root)
    after.socket.destroy()
    assert.equal(after.serial, before.serial)
    // Give a wrongly scheduled order the time to show itself: the account is loaded (a directory read) first.
    await until(() => second.runtime.acme!.account.directory !== undefined, "the directory to be read")
    await new Promise((r) => setImmediate(r))
    assert.equal(pebble.orders(), orders)
    assert.equal(
      pebble
        .output()
        .split("\n")
        .filter((l) => l.includes("POST /sign-me-up")).length,
      accounts,
    )
    assert.equal(second.log.with("acme certificate issued").length, 0)
    assert.equal(second.runtime.acme!.managed(["c.example.test"], "ecdsa").orders, 0)
  })
})
