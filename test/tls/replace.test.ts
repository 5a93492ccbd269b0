/** CertStore.replace through the real Runtime and TlsListener: new handshakes see the new certificate, open ones keep theirs. */
import assert from "node:assert/strict"
import { X509Certificate } from "node:crypto"
import { after, before, test } from "node:test"
import type tls from "node:tls"
import type { TlsListener } from "../../src/listeners/tls-listener.ts"
import { CertStore } from "../../src/tls/cert-store.ts"
import type { LoadedCertificate } from "../../src/tls/certificate.ts"
import { FileSource } from "../../src/tls/sources/file.ts"
import { certificateSource } from "../../src/tls/sources/index.ts"
import type { CertificateSource } from "../../src/tls/sources/source.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { tlsConnect } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { startPortcullis } from "../helpers/portcullis.ts"
import { tlsConfig } from "./harness.ts"

let pki: Pki
let backend: TestBackend

before(async () => {
  pki = await createPki()
  backend = await startEchoBackend("app")
})
after(async () => {
  await backend?.close()
  await pki?.close()
})

const pair = (f: CertFiles) => `{ cert: ${f.certPath}, key: ${f.keyPath} }`
const yaml = (certs: CertFiles[]) => `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [${certs.map(pair).join(", ")}] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
`

/** served opens a TLS connection with SNI servername and returns it with the fingerprint of the certificate it saw. */
async function served(port: number, servername: string): Promise<{ socket: tls.TLSSocket; fingerprint: string }> {
  const socket = await tlsConnect({ port, servername, ca: pki.ca.cert, ALPNProtocols: ["http/1.1"] })
  const peer = socket.getPeerX509Certificate()
  assert.ok(peer, "the server sent a certificate")
  return { socket, fingerprint: peer.fingerprint256 }
}

/** get sends one keep-alive HTTP/1.1 request on an open socket and resolves with the status and body. */
function get(socket: tls.TLSSocket, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let text = ""
    const timer = setTimeout(() => done(new Error(`no whole response within 5 s: ${JSON.stringify(text)}`)), 5000)
    const onData = (chunk: Buffer) => {
      text += chunk.toString("latin1")
      const end = text.indexOf("\r\n\r\n")
      if (end < 0) return
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1] ?? Number.NaN)
      if (text.length - end - 4 < length) return
      done(undefined)
    }
    const onClose = () => done(new Error(`connection closed: ${JSON.stringify(text)}`))
    const done = (err: Error | undefined) => {
      clearTimeout(timer)
      socket.off("data", onData)
      socket.off("close", onClose)
      if (err) reject(err)
      else resolve({ status: Number(text.slice(9, 12)), body: text.slice(text.indexOf("\r\n\r\n") + 4) })
    }
    socket.on("data", onData)
    socket.once("close", onClose)
    socket.write(`GET /hello HTTP/1.1\r\nhost: ${host}\r\nconnection: keep-alive\r\n\r\n`)
  })
}

function storeOf(running: Awaited<ReturnType<typeof startPortcullis>>) {
  const listener = [...running.runtime.generation!.listeners.values()][0] as TlsListener
  return listener.certs
}

const fingerprintOf = (f: CertFiles) => new X509Certificate(f.cert).fingerprint256

test("a certificate swapped in place: new handshakes see it, an open keep-alive connection keeps working", async (t) => {
  const other = await pki.issue({ names: ["other.test"] })
  const old = await pki.issue({ names: ["site.test"] })
  const renewed = await pki.issue({ names: ["site.test"] })
  assert.notEqual(fingerprintOf(old), fingerprintOf(renewed))
  const running = await startPortcullis(yaml([other, old]))
  t.after(() => running.close())
  const port = running.port()

  const before = await served(port, "site.test")
  t.after(() => before.socket.destroy())
  assert.equal(before.fingerprint, fingerprintOf(old))
  assert.deepEqual(await get(before.socket, "site.test"), { status: 200, body: "hello from app" })

  const generation = running.runtime.generation
  storeOf(running).replace(1, await new FileSource(renewed.certPath, renewed.keyPath).load())
  assert.equal(running.runtime.generation, generation, "no reload: the same generation serves")

  const after = await served(port, "site.test")
  t.after(() => after.socket.destroy())
  assert.equal(after.fingerprint, fingerprintOf(renewed), "a handshake after the swap sees the new certificate")
  assert.deepEqual(await get(after.socket, "site.test"), { status: 200, body: "hello from app" })
  // The connection made before the swap still works.
  assert.deepEqual(await get(before.socket, "site.test"), { status: 200, body: "hello from app" })
  // The other entry's name is served as before.
  assert.equal((await served(port, "other.test")).fingerprint, fingerprintOf(other))
  assert.deepEqual(
    storeOf(running)
      .status()
      .map((c) => c.fingerprint256),
    [fingerprintOf(other), fingerprintOf(renewed)],
  )
})

test("a listener with one certificate (no ClientHello peek) serves the swapped one at once", async (t) => {
  const old = await pki.issue({ names: ["site.test"] })
  const renewed = await pki.issue({ names: ["site.test"] })
  const running = await startPortcullis(yaml([old]))
  t.after(() => running.close())
  const first = await served(running.port(), "site.test")
  first.socket.destroy()
  assert.equal(first.fingerprint, fingerprintOf(old))
  storeOf(running).replace(0, await new FileSource(renewed.certPath, renewed.keyPath).load())
  const second = await served(running.port(), "site.test")
  t.after(() => second.socket.destroy())
  assert.equal(second.fingerprint, fingerprintOf(renewed))
})

test("a replacement that cannot be built changes nothing", async (t) => {
  const open = await pki.issue({ names: ["open.test"] })
  const guarded = await pki.issue({ names: ["guarded.test"] })
  const dir = pki.dir
  const running = await startPortcullis(
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls:
      certificates:
        - ${pair(open)}
        - { cert: ${guarded.certPath}, key: ${guarded.keyPath}, client_auth: { mode: require, ca: ${pki.ca.certPath} } }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
`,
    dir,
  )
  t.after(() => running.close())
  const store = storeOf(running)
  assert.throws(() => store.replace(0, []), { code: "PC_TLS_REPLACE" })
  assert.throws(() => store.replace(2, []), { code: "PC_TLS_REPLACE" })
  // Entry 0 taking guarded.test (an RSA certificate beside its ECDSA one) would serve one name under two client_auth
  // policies: refused, as at load.
  const clash = await pki.issue({ names: ["open.test", "guarded.test"], keyType: "rsa" })
  const certs = await new FileSource(clash.certPath, clash.keyPath).load()
  assert.throws(() => store.replace(0, certs), /the certificates for guarded\.test have different client_auth/)
  const got = await served(running.port(), "open.test")
  t.after(() => got.socket.destroy())
  assert.equal(got.fingerprint, fingerprintOf(open))
  assert.deepEqual(
    store.status().map((c) => c.fingerprint256),
    [fingerprintOf(open), fingerprintOf(guarded)],
  )
})

/** Pushing wraps a real source and lets the test push certificates through its watch, as a renewing source would. */
class Pushing implements CertificateSource {
  readonly inner: CertificateSource
  listeners = new Set<(certificates: LoadedCertificate[]) => void>()

  constructor(inner: CertificateSource) {
    this.inner = inner
  }

  load(): Promise<LoadedCertificate[]> {
    return this.inner.load()
  }

  watch(onChange: (certificates: LoadedCertificate[]) => void): () => void {
    this.listeners.add(onChange)
    return () => this.listeners.delete(onChange)
  }

  push(certificates: LoadedCertificate[]): void {
    for (const listener of this.listeners) listener(certificates)
  }
}

test("a source that pushes certificates (watch) has them swapped in until the store is closed", async () => {
  const old = await pki.issue({ names: ["site.test"] })
  const renewed = await pki.issue({ names: ["site.test"] })
  const third = await pki.issue({ names: ["site.test"] })
  const sources: Pushing[] = []
  const errors: number[] = []
  const store = await CertStore.load(tlsConfig({ certificates: [{ cert: old.certPath, key: old.keyPath }] }), {
    dataDir: pki.dir,
    engine: "http",
    sourceFor: (entry, dataDir) => {
      const source = new Pushing(certificateSource(entry, dataDir))
      sources.push(source)
      return source
    },
    onWatchError: (_err, entry) => errors.push(entry),
  })
  const before = store.contextFor("site.test")
  sources[0]!.push(await new FileSource(renewed.certPath, renewed.keyPath).load())
  assert.notEqual(store.contextFor("site.test"), before)
  assert.deepEqual(
    store.status().map((c) => c.fingerprint256),
    [fingerprintOf(renewed)],
  )
  sources[0]!.push([])
  assert.deepEqual(errors, [0], "a push that cannot be swapped in is reported, and the last good one stays")
  assert.deepEqual(
    store.status().map((c) => c.fingerprint256),
    [fingerprintOf(renewed)],
  )
  store.close()
  assert.equal(sources[0]!.listeners.size, 0)
  sources[0]!.push(await new FileSource(third.certPath, third.keyPath).load())
  assert.deepEqual(
    store.status().map((c) => c.fingerprint256),
    [fingerprintOf(renewed)],
  )
})
