/** The CertificateSource contract, run against each implementation (as test/upstreams/balancer.contract.ts is for balancers). */
import assert from "node:assert/strict"
import { createPrivateKey } from "node:crypto"
import { test } from "node:test"
import tls from "node:tls"
import { inspect } from "node:util"
import type { CertificateSource } from "../../src/tls/sources/source.ts"

/** Failing is a source that must fail: the file its error must name, and text that must not appear in it. */
export interface Failing {
  what: string
  source: CertificateSource
  names: string
  secret: string
}

/** SourceCase makes the sources one implementation is tested with. */
export interface SourceCase {
  name: string
  /** a source that loads, with the names its certificate must serve */
  good(): Promise<{ source: CertificateSource; names: string[] }>
  /** sources that must fail, each for its own reason */
  failing(): Promise<Failing[]>
}

/** runSourceContract registers the contract's tests for one implementation. */
export function runSourceContract(c: SourceCase): void {
  test(`${c.name}: loads at least one certificate serving the configured names`, async () => {
    const { source, names } = await c.good()
    const certs = await source.load()
    assert.ok(certs.length >= 1)
    assert.deepEqual([...certs[0]!.names].sort(), [...names].sort())
    assert.ok(certs[0]!.notAfter.getTime() > Date.now())
  })

  test(`${c.name}: every certificate's key matches its leaf and builds a SecureContext`, async () => {
    const { source } = await c.good()
    for (const cert of await source.load()) {
      assert.ok(cert.leaf.checkPrivateKey(createPrivateKey(cert.key.reveal())))
      assert.equal(cert.chain[0]!.fingerprint256, cert.fingerprint256)
      assert.equal(cert.leaf.fingerprint256, cert.fingerprint256)
      tls.createSecureContext({ cert: cert.chainPem, key: cert.key.reveal() })
    }
  })

  test(`${c.name}: the private key stays a Secret (inspect and JSON show no key)`, async () => {
    const { source } = await c.good()
    const certs = await source.load()
    const text = inspect(certs, { depth: 5 }) + JSON.stringify(certs.map((cert) => ({ ...cert, leaf: undefined })))
    assert.doesNotMatch(text, /PRIVATE KEY/)
  })

  test(`${c.name}: loading again serves the same names`, async () => {
    const { source } = await c.good()
    const one = await source.load()
    const two = await source.load()
    assert.deepEqual(
      two.map((cert) => cert.names),
      one.map((cert) => cert.names),
    )
  })

  test(`${c.name}: a failure is PC_TLS_CERT_LOAD naming the file, never its contents`, async () => {
    const cases = await c.failing()
    assert.ok(cases.length >= 1)
    for (const failing of cases) {
      await assert.rejects(failing.source.load(), (err: Error & { code?: string }) => {
        assert.equal(err.code, "PC_TLS_CERT_LOAD", failing.what)
        assert.ok(err.message.includes(failing.names), `${failing.what}: ${err.message} names ${failing.names}`)
        assert.ok(!err.message.includes(failing.secret), `${failing.what}: ${err.message} shows the file's contents`)
        assert.doesNotMatch(err.message, /BEGIN/, failing.what)
        return true
      })
    }
  })
}
