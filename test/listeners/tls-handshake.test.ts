/**
 * The TLS side of a listener through the running proxy: protocol versions per profile, SNI certificate choice
 * (exact, wildcard, default), ECDSA and RSA for one name chosen by the client's signature algorithms, session
 * resumption, handshake timeout and garbage bytes. Real sockets, certificates made per run.
 */
import assert from "node:assert/strict"
import { X509Certificate } from "node:crypto"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { loopback, type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"

let pki: Pki
let backend: TestBackend
let pc: RunningPortcullis
let certs: Record<"apiEc" | "apiRsa" | "wild" | "fallback", CertFiles>

const entry = (c: CertFiles) => `{ cert: ${c.certPath}, key: ${c.keyPath} }`

before(async () => {
  pki = await createPki()
  certs = {
    fallback: await pki.issue({ names: ["default.test"], commonName: "fallback" }),
    apiEc: await pki.issue({ names: ["api.example.com"], commonName: "api-ecdsa", keyType: "ecdsa" }),
    apiRsa: await pki.issue({ names: ["api.example.com"], commonName: "api-rsa", keyType: "rsa" }),
    wild: await pki.issue({ names: ["*.example.com"], commonName: "wildcard" }),
  }
  backend = await startEchoBackend("app")
  pc = await startPortcullis(`
listeners:
  - name: main
    address: ${loopback(1)}:0
    tls:
      certificates: [${entry(certs.fallback)}, ${entry(certs.apiEc)}, ${entry(certs.apiRsa)}, ${entry(certs.wild)}]
      handshake_timeout: 400ms
    upstream: app
  - name: modern
    address: ${loopback(2)}:0
    tls: { certificates: [${entry(certs.apiEc)}], profile: modern }
    upstream: app
  - name: old
    address: ${loopback(3)}:0
    tls: { certificates: [${entry(certs.apiRsa)}], profile: old }
    upstream: app
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await backend?.close()
  await pki?.close()
})

interface Seen {
  protocol: string | null
  cn: string
  keyType: string
  reused: boolean
  session?: Buffer
}

/** handshake connects to a listener, waits for the handshake (and a TLS 1.3 session ticket), and closes. */
function handshake(listener: "main" | "modern" | "old", options: tls.ConnectionOptions): Promise<Seen> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: pc.host(listener), port: pc.port(listener), ca: pki.ca.cert, ...options })
    const timer = setTimeout(
      () => socket.destroy(new Error("no handshake (or no TLS 1.3 session ticket) within 5 s")),
      5000,
    )
    let seen: Seen | undefined
    let ticket: Buffer | undefined
    socket.on("secureConnect", () => {
      // A resumed TLS 1.3 session shows no certificate.
      const raw = socket.getPeerCertificate().raw as Buffer | undefined
      const cert = raw ? new X509Certificate(raw) : undefined
      seen = {
        protocol: socket.getProtocol(),
        cn: cert ? (/CN=([^\n]*)/.exec(cert.subject)?.[1] ?? "") : "",
        keyType: cert?.publicKey.asymmetricKeyType ?? "",
        reused: socket.isSessionReused(),
      }
      if (ticket) seen.session = ticket
      // A full TLS 1.3 handshake's tickets arrive after it: leave on the first one (the 5 s deadline fails a
      // listener that sends none). TLS 1.2 has its ticket in the handshake; a resumed session gets no new one here.
      if (seen.protocol !== "TLSv1.3" || seen.reused || ticket) socket.end()
    })
    socket.on("session", (session: Buffer) => {
      ticket ??= session
      if (!seen) return
      seen.session ??= session
      if (seen.protocol === "TLSv1.3") socket.end()
    })
    socket.on("error", (err) => {
      clearTimeout(timer)
      reject(err)
    })
    socket.on("close", () => {
      clearTimeout(timer)
      if (seen) resolve(seen)
      else reject(new Error("closed before the handshake finished"))
    })
  })
}

describe("protocol versions", () => {
  test("intermediate (the default) completes TLS 1.3 and TLS 1.2", async () => {
    const v13 = await handshake("main", { servername: "api.example.com" })
    assert.equal(v13.protocol, "TLSv1.3")
    const v12 = await handshake("main", { servername: "api.example.com", maxVersion: "TLSv1.2" })
    assert.equal(v12.protocol, "TLSv1.2")
  })

  const tls11: tls.ConnectionOptions = {
    servername: "api.example.com",
    minVersion: "TLSv1.1",
    maxVersion: "TLSv1.1",
    ciphers: "DEFAULT:@SECLEVEL=0",
  }

  test("the TLS 1.1 client can do TLS 1.1 where it is allowed (profile old), so the refusal below is the server's", async () => {
    assert.equal((await handshake("old", tls11)).protocol, "TLSv1.1")
  })

  test("intermediate refuses TLS 1.1", async () => {
    await assert.rejects(handshake("main", tls11), /alert|protocol|version/i)
  })

  test("modern completes TLS 1.3 and refuses TLS 1.2", async () => {
    assert.equal((await handshake("modern", { servername: "api.example.com" })).protocol, "TLSv1.3")
    await assert.rejects(
      handshake("modern", { servername: "api.example.com", maxVersion: "TLSv1.2" }),
      /alert|protocol|version/i,
    )
  })
})

describe("certificate choice by SNI", () => {
  test("an exact name gets its own certificate, not the wildcard", async () => {
    assert.match((await handshake("main", { servername: "api.example.com" })).cn, /^api-/)
  })

  test("a name under the wildcard gets the wildcard certificate", async () => {
    assert.equal((await handshake("main", { servername: "www.example.com" })).cn, "wildcard")
  })

  test("an unknown name and no SNI at all get the listener's first certificate", async () => {
    const unknown = await handshake("main", { servername: "nobody.test", checkServerIdentity: () => undefined })
    assert.equal(unknown.cn, "fallback")
    const none = await handshake("main", { checkServerIdentity: () => undefined })
    assert.equal(none.cn, "fallback")
  })

  test("a wildcard covers one label only", async () => {
    const deep = await handshake("main", { servername: "a.b.example.com", checkServerIdentity: () => undefined })
    assert.equal(deep.cn, "fallback")
  })
})

describe("ECDSA and RSA certificates for one name", () => {
  const ecdsaOnly = "ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384"
  const rsaOnly = "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pkcs1_sha256"

  for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
    test(`${maxVersion}: an ECDSA-only client gets the ECDSA certificate`, async () => {
      const seen = await handshake("main", { servername: "api.example.com", sigalgs: ecdsaOnly, maxVersion })
      assert.equal(seen.keyType, "ec")
      assert.equal(seen.cn, "api-ecdsa")
    })

    test(`${maxVersion}: an RSA-only client gets the RSA certificate`, async () => {
      const seen = await handshake("main", { servername: "api.example.com", sigalgs: rsaOnly, maxVersion })
      assert.equal(seen.keyType, "rsa")
      assert.equal(seen.cn, "api-rsa")
    })
  }

  test("a client that takes both gets ECDSA (smaller and cheaper)", async () => {
    assert.equal((await handshake("main", { servername: "api.example.com" })).keyType, "ec")
  })

  test("an RSA-only client is served HTTP through the proxy", async () => {
    const reply = await request({
      port: pc.port("main"),
      path: "/",
      host: "api.example.com",
      servername: "api.example.com",
      ca: pki.ca.cert,
      tlsOptions: { sigalgs: rsaOnly },
    })
    assert.equal(reply.status, 200)
    assert.equal(reply.peerCN, "api-rsa")
  })
})

describe("sessions", () => {
  test("a TLS 1.3 session ticket resumes on the same listener", async () => {
    const first = await handshake("main", { servername: "api.example.com" })
    assert.ok(first.session, "the listener sent a session ticket")
    const second = await handshake("main", { servername: "api.example.com", session: first.session })
    assert.equal(second.reused, true)
  })

  test("a ticket from one listener does not resume on another", async () => {
    const first = await handshake("main", { servername: "api.example.com" })
    const other = await handshake("modern", { servername: "api.example.com", session: first.session })
    assert.equal(other.reused, false)
  })
})

/** sendRaw opens a plain TCP connection, writes bytes (if any), and resolves with the ms until the server closed it. */
function sendRaw(bytes: Buffer | undefined): Promise<number> {
  return new Promise((resolve) => {
    const started = Date.now()
    const socket = net.connect(pc.port("main"), pc.host("main"), () => {
      if (bytes) socket.write(bytes)
    })
    const timer = setTimeout(() => socket.destroy(), 5000)
    socket.on("error", () => {})
    socket.resume()
    socket.on("close", () => {
      clearTimeout(timer)
      resolve(Date.now() - started)
    })
  })
}

describe("bad clients", () => {
  test("a client that sends nothing is closed after handshake_timeout", async () => {
    const ms = await sendRaw(undefined)
    assert.ok(ms >= 350 && ms < 4000, `closed after ${ms} ms (handshake_timeout is 400ms)`)
  })

  test("a client that stalls mid-ClientHello is closed after handshake_timeout", async () => {
    const ms = await sendRaw(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]))
    assert.ok(ms >= 350 && ms < 4000, `closed after ${ms} ms (handshake_timeout is 400ms)`)
  })

  test("garbage bytes are closed and the listener keeps serving", async () => {
    for (const garbage of ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\x16\x03\x01\x00\x05hello", "\x00".repeat(4096)]) {
      const ms = await sendRaw(Buffer.from(garbage, "latin1"))
      assert.ok(ms < 4000, `${JSON.stringify(garbage.slice(0, 12))} was closed by the server`)
    }
    const reply = await request({
      port: pc.port("main"),
      path: "/",
      host: "api.example.com",
      servername: "api.example.com",
      ca: pki.ca.cert,
    })
    assert.equal(reply.status, 200)
    const status = pc.runtime.status().listeners.find((l) => l.name === "main")
    assert.ok(status && "handshake_errors" in status && status.handshake_errors >= 3)
  })
})
