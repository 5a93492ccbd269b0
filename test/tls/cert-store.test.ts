/** CertStore: SNI picks exact, wildcard, default; ECDSA and RSA for one name; names; status; session scope. */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { inspect } from "node:util"
import { MemoryTicketKeyRing, type TicketKeyRing } from "../../src/state/ticket-keys.ts"
import { CertStore } from "../../src/tls/cert-store.ts"
import { scanClientHello } from "../../src/tls/client-hello.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { handshake, startStoreServer, tlsConfig } from "./harness.ts"

let pki: Pki
let first: CertFiles
let site1: CertFiles
let wildcard: CertFiles
let dualEc: CertFiles
let dualRsa: CertFiles

before(async () => {
  pki = await createPki()
  first = await pki.issue({ names: ["first.test"] })
  site1 = await pki.issue({ names: ["site1.example.com"] })
  wildcard = await pki.issue({ names: ["*.example.com"] })
  dualEc = await pki.issue({ names: ["dual.test"], commonName: "dual-ecdsa" })
  dualRsa = await pki.issue({ names: ["dual.test"], keyType: "rsa", commonName: "dual-rsa" })
})
after(() => pki?.close())

function load(files: CertFiles[], extra: Record<string, unknown> = {}, ticketKeys?: TicketKeyRing) {
  const certificates = files.map((f) => ({ cert: f.certPath, key: f.keyPath }))
  return CertStore.load(tlsConfig({ certificates, ...extra }), { dataDir: pki.dir, engine: "http", ticketKeys })
}

const ECDSA_ONLY = { sigalgs: "ecdsa_secp256r1_sha256" }
const RSA_ONLY = { sigalgs: "rsa_pss_rsae_sha256:rsa_pkcs1_sha256" }

test("serves the site1 certificate for SNI site1.example.com", async (t) => {
  const port = await startStoreServer(t, await load([first, site1, wildcard]))
  assert.equal((await handshake(port, { servername: "site1.example.com" })).cn, "site1.example.com")
})

test("serves the wildcard certificate one level below it, and the default two levels below or at the apex", async (t) => {
  const port = await startStoreServer(t, await load([first, site1, wildcard]))
  assert.equal((await handshake(port, { servername: "other.example.com" })).cn, "*.example.com")
  assert.equal((await handshake(port, { servername: "a.b.example.com" })).cn, "first.test")
  assert.equal((await handshake(port, { servername: "example.com" })).cn, "first.test")
})

test("serves the first certificate without SNI and for an unknown name", async (t) => {
  const port = await startStoreServer(t, await load([first, site1, wildcard]))
  assert.equal((await handshake(port, {})).cn, "first.test")
  assert.equal((await handshake(port, { servername: "nobody.test" })).cn, "first.test")
})

test("matches names case-insensitively and ignores a trailing dot", async (t) => {
  const store = await load([first, site1, wildcard])
  const port = await startStoreServer(t, store)
  assert.equal((await handshake(port, { servername: "SITE1.Example.COM" })).cn, "site1.example.com")
  assert.equal(store.contextFor("site1.example.com."), store.contextFor("site1.example.com"))
  assert.equal(store.contextFor("X.EXAMPLE.com."), store.contextFor("y.example.com"))
  assert.notEqual(store.contextFor("site1.example.com"), store.contextFor(undefined))
})

test("an ECDSA-only and an RSA-only client each get their certificate for the same name", async (t) => {
  const store = await load([first, dualEc, dualRsa])
  const port = await startStoreServer(t, store)
  const ec = await handshake(port, { servername: "dual.test", ...ECDSA_ONLY })
  assert.deepEqual([ec.cn, ec.keyType], ["dual-ecdsa", "ec"])
  const rsa = await handshake(port, { servername: "dual.test", ...RSA_ONLY })
  assert.deepEqual([rsa.cn, rsa.keyType], ["dual-rsa", "rsa"])
  const ec12 = await handshake(port, {
    servername: "dual.test",
    maxVersion: "TLSv1.2",
    ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256",
  })
  assert.deepEqual([ec12.cn, ec12.protocol], ["dual-ecdsa", "TLSv1.2"])
  const rsa12 = await handshake(port, {
    servername: "dual.test",
    maxVersion: "TLSv1.2",
    ciphers: "ECDHE-RSA-AES128-GCM-SHA256",
  })
  assert.deepEqual([rsa12.cn, rsa12.protocol], ["dual-rsa", "TLSv1.2"])
})

test("without SNI the default name serves ECDSA or RSA by what the client accepts", async (t) => {
  const port = await startStoreServer(t, await load([dualEc, dualRsa, first]))
  assert.equal((await handshake(port, ECDSA_ONLY)).cn, "dual-ecdsa")
  assert.equal((await handshake(port, RSA_ONLY)).cn, "dual-rsa")
})

test("a client that accepts both key types gets ECDSA for a name with ECDSA and RSA (its sigalgs list ECDSA first)", async (t) => {
  const port = await startStoreServer(t, await load([first, dualRsa, dualEc]))
  assert.equal((await handshake(port, { servername: "dual.test" })).cn, "dual-ecdsa")
})

test("scanClientHello reads the SNI name of a real ClientHello, and says when it is incomplete", async (t) => {
  const { createServer } = await import("node:net")
  const { connect } = await import("node:tls")
  const hello = await new Promise<Buffer>((resolve) => {
    const server = createServer((socket) => {
      socket.once("data", (chunk: Buffer) => {
        resolve(chunk)
        socket.destroy()
        server.close()
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port
      connect({ host: "127.0.0.1", port, servername: "Peek.Example.com" }).on("error", () => {})
    })
  })
  t.diagnostic(`ClientHello of ${hello.length} bytes`)
  // The body: after the record header (5 bytes) and the handshake header (type, 3-byte length).
  const body = hello.subarray(9, 9 + hello.readUIntBE(6, 3))
  assert.deepEqual(scanClientHello(hello), { done: true, servername: "Peek.Example.com", hello: body })
  assert.deepEqual(scanClientHello(hello.subarray(0, 40)), { done: false })
  assert.deepEqual(scanClientHello(Buffer.from("GET / HTTP/1.1\r\n")), { done: true })
})

test("covers matches exact names and wildcards one level deep", async () => {
  const store = await load([first, site1, wildcard])
  const table: [string, boolean][] = [
    ["site1.example.com", true],
    ["SITE1.EXAMPLE.COM.", true],
    ["api.example.com", true],
    ["a.b.example.com", false],
    ["example.com", false],
    ["*.example.com", true],
    ["first.test", true],
    ["second.test", false],
  ]
  for (const [host, want] of table) assert.equal(store.covers(host), want, host)
})

test("status lists names, key type, expiry, fingerprint and source, and no key material", async () => {
  const store = await load([dualEc, dualRsa])
  const status = store.status()
  assert.deepEqual(
    status.map((s) => [s.names, s.keyType, s.source]),
    [
      [["dual.test"], "ecdsa", dualEc.certPath],
      [["dual.test"], "rsa", dualRsa.certPath],
    ],
  )
  assert.match(status[0]!.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
  assert.ok(Date.parse(status[0]!.notAfter) > Date.now())
  const text = JSON.stringify(status) + inspect(store.certificates(), { depth: 5 })
  assert.doesNotMatch(text, /PRIVATE KEY/)
  assert.match(inspect(store.certificates()[0]!.key), /\[redacted\]/)
})

test("contexts are built once in load: lookups return the same object", async () => {
  const store = await load([first, site1, wildcard])
  assert.equal(store.contextFor("a.example.com"), store.contextFor("b.example.com"))
  assert.equal(store.contextFor("site1.example.com"), store.contextFor("site1.example.com"))
})

test("a certificate that fails to load fails the whole store with its message", async () => {
  const config = tlsConfig({ certificates: [{ cert: `${pki.dir}/missing.pem`, key: first.keyPath }] })
  await assert.rejects(CertStore.load(config, { dataDir: pki.dir, engine: "http" }), {
    code: "PC_TLS_CERT_LOAD",
    message: `loading certificate ${pki.dir}/missing.pem: reading ${pki.dir}/missing.pem: ENOENT`,
  })
})

test("a session resumes on the same listener, also for a name served after an SNI switch", async (t) => {
  const port = await startStoreServer(t, await load([first, site1]))
  for (const servername of ["first.test", "site1.example.com"]) {
    const one = await handshake(port, { servername })
    assert.ok(one.session, "the server sent a session ticket")
    const two = await handshake(port, { servername, session: one.session })
    assert.equal(two.reused, true, servername)
  }
})

test("a session from a listener without client_auth does not resume where client_auth is required (shared ticket keys)", async (t) => {
  const keys = new MemoryTicketKeyRing()
  const client = await pki.issue({ names: [], commonName: "client", client: true })
  const open = await startStoreServer(t, await load([first, site1], {}, keys))
  const twin = await startStoreServer(t, await load([first, site1], {}, keys))
  const strict = await startStoreServer(
    t,
    await load([first, site1], { client_auth: { mode: "require", ca: pki.ca.certPath } }, keys),
  )
  const one = await handshake(open, { servername: "site1.example.com" })
  assert.ok(one.session)
  // Control: the same policy with the same keys resumes, so the keys really are shared.
  assert.equal((await handshake(twin, { servername: "site1.example.com", session: one.session })).reused, true)
  const withCert = await handshake(strict, {
    servername: "site1.example.com",
    session: one.session,
    cert: client.cert,
    key: client.key,
  })
  assert.equal(withCert.reused, false)
  assert.equal(withCert.data, "hi\n")
  const err = await handshake(strict, { servername: "site1.example.com", session: one.session }).then(
    (h) => (h.data === "" ? "closed" : `resumed=${h.reused}`),
    () => "refused",
  )
  assert.notEqual(err.startsWith("resumed"), true, err)
})

test("session_tickets: false sends no TLS 1.3 ticket at all (not a stateful one that can never resume)", async (t) => {
  // Control: the same listener with tickets on hands the client a ticket, so `session` is how this test sees one.
  const on = await startStoreServer(t, await load([first], {}))
  assert.ok((await handshake(on, { minVersion: "TLSv1.3" })).session, "tickets on: a NewSessionTicket arrives")
  const off = await startStoreServer(t, await load([first], { session_tickets: false }))
  const one = await handshake(off, { minVersion: "TLSv1.3" })
  assert.equal(one.protocol, "TLSv1.3")
  assert.equal(one.session, undefined, "no NewSessionTicket with session_tickets: false")
})

test("session_tickets: false sends no ticket", async (t) => {
  const port = await startStoreServer(t, await load([first], { session_tickets: false }))
  const one = await handshake(port, { maxVersion: "TLSv1.2" })
  const two = await handshake(port, { maxVersion: "TLSv1.2", session: one.session })
  assert.equal(two.reused, false)
})
