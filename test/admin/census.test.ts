/**
 * The ClientHello census and profile what-if (issue 13, item 5): GET /tls/clients after clients with known offers
 * (openssl s_client with -groups, -ciphersuites, -cipher, -tls1_2, -sigalgs; Node tls clients; raw hellos with GREASE
 * and unknown code points) has exactly those shares, the what-if refusals the real handshakes show, and a bounded size.
 */
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import { randomInt } from "node:crypto"
import { mkdtempSync } from "node:fs"
import http from "node:http"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { AdminApi } from "../../src/admin/api.ts"
import { silentLogger } from "../../src/core/log.ts"
import { encodeProxyV1 } from "../../src/protocols/proxy-protocol/encode.ts"
import type { ListenerCensus } from "../../src/tls/client-census.ts"
import { CIPHERS, GROUPS, SIGALGS } from "../../src/tls/tls-codes.ts"
import { buildClientHello, sendHello } from "../helpers/client-hello.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { loopback, type RunningPortcullis, startPortcullis, writeTemp } from "../helpers/portcullis.ts"

let pki: Pki
let pc: RunningPortcullis
let admin: AdminApi
const TOKEN = "census-test-token-0123456789"

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"], keyType: "ecdsa" })
  const cert = `{ cert: ${site.certPath}, key: ${site.keyPath} }`
  // tcp listeners to a closed port: the census reads the ClientHello before any engine runs.
  pc = await startPortcullis(`
listeners:
  - name: shares
    address: "${loopback(1)}:0"
    engine: tcp
    tls: { certificates: [${cert}], profile: intermediate }
    upstream: none
  - name: whatif
    address: "${loopback(2)}:0"
    engine: tcp
    tls:
      certificates: [${cert}]
      profile: intermediate
      ciphers: ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305
    upstream: none
  - name: grease
    address: "${loopback(3)}:0"
    engine: tcp
    tls: { certificates: [${cert}] }
    upstream: none
  - name: proxied
    address: "${loopback(4)}:0"
    engine: tcp
    proxy_protocol: accept
    trusted_proxies: [127.0.0.0/8]
    tls: { certificates: [${cert}] }
    upstream: none
upstreams:
  none: { backends: ["127.0.0.1:1"] }
metrics: { census_sample: 1 }
`)
  const dir = mkdtempSync(join(tmpdir(), "census-"))
  admin = new AdminApi(
    { host: "127.0.0.1", port: 0 },
    {
      status: () => pc.runtime.status(),
      reload: async () => {},
      drain: () => {},
      clients: () => pc.runtime.generation!.census(),
    },
    silentLogger(),
    { token_file: writeTemp(dir, "token", `${TOKEN}\n`) },
  )
  await admin.start()
})

after(async () => {
  await admin?.close()
  await pc?.close()
  await pki?.close()
})

/** getClients reads GET /tls/clients with the bearer token (or the one given) and resolves with status and body. */
function getClients(port: number, token: string | null = TOKEN): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = token === null ? {} : { authorization: `Bearer ${token}` }
    http
      .get({ host: "127.0.0.1", port, path: "/tls/clients", headers }, (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (d: string) => {
          text += d
        })
        res.on("end", () => resolve({ status: res.statusCode!, body: JSON.parse(text) }))
      })
      .on("error", reject)
  })
}

async function census(listener: string, port = admin.port): Promise<ListenerCensus> {
  const { status, body } = await getClients(port)
  assert.equal(status, 200)
  const entry = (body as { listeners: Record<string, ListenerCensus> }).listeners[listener]
  assert.ok(entry, `no census for ${listener} in ${JSON.stringify(body)}`)
  return entry
}

/** sClient runs openssl s_client with these flags against the listener, stdin closed; resolves with its output. */
function sClient(port: number, host: string, flags: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("openssl", ["s_client", "-connect", `${host}:${port}`, "-servername", "localhost", ...flags], {
      stdio: ["ignore", "pipe", "pipe"],
    })
    let output = ""
    const timer = setTimeout(() => child.kill(), 10_000)
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString()
    })
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString()
    })
    child.on("error", reject)
    child.on("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })
}

/** nodeClient makes one TLS connection with these options and says whether the handshake completed. */
function nodeClient(port: number, host: string, options: tls.ConnectionOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port, servername: "localhost", ca: pki.ca.cert, ...options }, () => {
      socket.destroy()
      resolve(true)
    })
    socket.on("error", () => resolve(false))
    socket.on("close", () => resolve(false))
  })
}

describe("GET /tls/clients", () => {
  test("answers 401 without the admin bearer token, like every admin endpoint", async () => {
    assert.equal((await getClients(admin.port, null)).status, 401)
    assert.equal((await getClients(admin.port, "wrong-token-0123456789xx")).status, 401)
  })

  test("clients with known offers show up in the shares exactly (openssl s_client and Node tls)", async () => {
    const port = pc.port("shares")
    const host = pc.host("shares")
    await sClient(port, host, [
      "-tls1_2",
      "-cipher",
      "ECDHE-ECDSA-AES128-GCM-SHA256",
      "-groups",
      "P-256",
      "-sigalgs",
      "ECDSA+SHA256",
    ])
    await sClient(port, host, [
      "-tls1_3",
      "-ciphersuites",
      "TLS_AES_256_GCM_SHA384",
      "-groups",
      "X25519:P-384",
      "-sigalgs",
      "ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256",
    ])
    await nodeClient(port, host, {
      minVersion: "TLSv1.3",
      ciphers: "TLS_CHACHA20_POLY1305_SHA256",
      ecdhCurve: "X25519MLKEM768:X25519",
      sigalgs: "ecdsa_secp256r1_sha256",
    })
    await nodeClient(port, host, {
      maxVersion: "TLSv1.2",
      ciphers: "ECDHE-RSA-AES256-GCM-SHA384",
      ecdhCurve: "P-384",
      sigalgs: "rsa_pss_rsae_sha256:rsa_pkcs1_sha256",
    })
    const c = await census("shares")
    assert.equal(c.clients, 4)
    assert.deepEqual(c.window, { size: 1000, seen: 4 })
    assert.deepEqual(c.versions, { "TLSv1.2": 2, "TLSv1.3": 2 })
    assert.deepEqual(c.groups, { X25519: 2, secp384r1: 2, secp256r1: 1, X25519MLKEM768: 1 })
    // openssl s_client adds the RFC 5746 signal to its suites; Node's client sends the renegotiation_info
    // extension instead.
    assert.deepEqual(c.ciphers, {
      TLS_EMPTY_RENEGOTIATION_INFO_SCSV: 2,
      TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 1,
      TLS_AES_256_GCM_SHA384: 1,
      TLS_CHACHA20_POLY1305_SHA256: 1,
      TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 1,
    })
    assert.deepEqual(c.sigalgs, { ecdsa_secp256r1_sha256: 3, rsa_pss_rsae_sha256: 2, rsa_pkcs1_sha256: 1 })
  })

  test("the what-if for modern counts exactly the TLS 1.2-only clients; the current policy's refusals match the handshakes", async () => {
    const port = pc.port("whatif")
    const host = pc.host("whatif")
    // Three TLS 1.2-only clients, two of them offering what the listener's own ciphers override allows.
    const a = await sClient(port, host, ["-tls1_2", "-CAfile", pki.ca.certPath])
    const b = await sClient(port, host, [
      "-tls1_2",
      "-cipher",
      "ECDHE-ECDSA-AES256-GCM-SHA384",
      "-CAfile",
      pki.ca.certPath,
    ])
    const c = await nodeClient(port, host, { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" })
    // Two TLS 1.3 clients.
    const d = await sClient(port, host, ["-tls1_3", "-CAfile", pki.ca.certPath])
    const e = await nodeClient(port, host, { minVersion: "TLSv1.3" })
    assert.match(a.output, /Protocol\s*: TLSv1\.2/)
    assert.match(b.output, /Protocol\s*: TLSv1\.2/)
    assert.equal(c, false, "the listener's ciphers override leaves this client nothing: its handshake fails")
    assert.match(d.output, /New, TLSv1\.3/)
    assert.equal(e, true)
    const census_ = await census("whatif")
    assert.equal(census_.clients, 5)
    assert.deepEqual(census_.whatif, {
      modern: { refused: 3, reasons: { no_shared_version: 3 } },
      intermediate: { refused: 0 },
      old: { refused: 0 },
      current: { refused: 1, reasons: { no_shared_cipher: 1 } },
    })
  })

  test("GREASE values are not counted and unknown code points fold into one `other` per client", async () => {
    const port = pc.port("grease")
    const host = pc.host("grease")
    // GREASE (RFC 8701) in every list, otherwise known code points only: nothing lands in `other`.
    await sendHello(
      port,
      buildClientHello({
        servername: "localhost",
        ciphers: [0x0a0a, 0x1301, 0xfafa, 0xc02b],
        versions: [0x4a4a, 0x0304, 0x0303],
        groups: [0x2a2a, 0x001d, 0x11ec],
        sigalgs: [0x3a3a, 0x0403],
      }),
      host,
    )
    // GREASE, a draft version, several unknown suites, groups and schemes, and known ones.
    await sendHello(
      port,
      buildClientHello({
        ciphers: [0x1a1a, 0x1301, 0x1234, 0x4321],
        versions: [0x5a5a, 0x0304, 0x7f1c],
        groups: [0x6a6a, 0x001d, 0x7777, 0x7778],
        sigalgs: [0x7a7a, 0x0403, 0x0999, 0x0888],
      }),
      host,
    )
    // Nothing but unknowns.
    await sendHello(
      port,
      buildClientHello({
        ciphers: [0x9999, 0x9998],
        versions: [0x0399],
        groups: [0x5555],
        sigalgs: [0x0aff],
      }),
      host,
    )
    const c = await census("grease")
    assert.equal(c.clients, 3)
    assert.deepEqual(c.versions, { "TLSv1.3": 2, other: 2, "TLSv1.2": 1 })
    assert.deepEqual(c.groups, { X25519: 2, other: 2, X25519MLKEM768: 1 })
    assert.deepEqual(c.ciphers, { TLS_AES_128_GCM_SHA256: 2, other: 2, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 1 })
    assert.deepEqual(c.sigalgs, { ecdsa_secp256r1_sha256: 2, other: 2 })
    // The third client offers no version any policy has.
    assert.deepEqual(c.whatif["intermediate"], { refused: 1, reasons: { no_shared_version: 1 } })
  })

  test("behind a PROXY v1 header sent apart from the ClientHello, the hello is counted and the handshake completes", async () => {
    const port = pc.port("proxied")
    const host = pc.host("proxied")
    const raw = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(port, host, () => resolve(s))
      s.once("error", reject)
    })
    const header = encodeProxyV1({
      source: { address: "203.0.113.9", port: 40000 },
      destination: { address: host, port },
    })
    // The header alone first: the server reads it, pauses the socket, and must still see the ClientHello.
    await new Promise<void>((resolve) => raw.write(header, () => resolve()))
    const secured = await new Promise<boolean>((resolve) => {
      const socket = tls.connect(
        { socket: raw, servername: "localhost", ca: pki.ca.cert, minVersion: "TLSv1.3" },
        () => {
          socket.destroy()
          resolve(true)
        },
      )
      socket.on("error", () => resolve(false))
    })
    assert.equal(secured, true)
    const c = await census("proxied")
    assert.equal(c.clients, 1)
    assert.deepEqual(c.versions, { "TLSv1.3": 1 })
  })
})

describe("census bounds", () => {
  let small: RunningPortcullis
  let smallAdmin: AdminApi

  before(async () => {
    const site = await pki.issue({ names: ["localhost"] })
    small = await startPortcullis(`
listeners:
  - name: random
    address: "127.0.0.1:0"
    engine: tcp
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: none
upstreams:
  none: { backends: ["127.0.0.1:1"] }
metrics: { census_window: 50, census_sample: 4 }
`)
    smallAdmin = new AdminApi(
      { host: "127.0.0.1", port: 0 },
      {
        status: () => small.runtime.status(),
        reload: async () => {},
        drain: () => {},
        clients: () => small.runtime.generation!.census(),
      },
      silentLogger(),
      { token_file: writeTemp(mkdtempSync(join(tmpdir(), "census-")), "token", TOKEN) },
    )
    await smallAdmin.start()
  })

  after(async () => {
    await smallAdmin?.close()
    await small?.close()
  })

  test("many distinct hellos with random code points keep the window, the names and the answer bounded (1 in 4 read)", async () => {
    const random = (n: number) => Array.from({ length: n }, () => randomInt(0, 0x10000))
    const port = small.port()
    const total = 400
    for (let i = 0; i < total; i += 4) {
      await Promise.all(
        Array.from({ length: 4 }, () =>
          sendHello(
            port,
            buildClientHello({
              legacyVersion: randomInt(0, 0x10000),
              ciphers: random(randomInt(1, 120)),
              versions: random(randomInt(1, 20)),
              groups: random(randomInt(1, 60)),
              sigalgs: random(randomInt(1, 60)),
            }),
          ),
        ),
      )
    }
    const { body } = await getClients(smallAdmin.port)
    const c = (body as { listeners: Record<string, ListenerCensus> }).listeners["random"]!
    assert.equal(c.clients, 50, "the window holds the last 50 hellos, not every one seen")
    // census_sample 4 on a one-certificate listener: every 4th ClientHello is read.
    assert.deepEqual(c.window, { size: 50, seen: total / 4 })
    const known = {
      ciphers: new Set(CIPHERS.map((x) => x.iana)),
      groups: new Set(GROUPS.map((x) => x.name)),
      sigalgs: new Set(SIGALGS.map((x) => x.name)),
      versions: new Set(["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]),
    }
    for (const [table, names] of Object.entries(known)) {
      const counts = c[table as keyof typeof known]
      for (const [name, n] of Object.entries(counts)) {
        assert.ok(name === "other" || names.has(name), `${table}: ${name} is neither a known name nor "other"`)
        assert.ok(n >= 1 && n <= 50, `${table}.${name} = ${n}`)
      }
      // Random 16-bit codes are almost all unknown: nearly every client lands in the one `other` bucket.
      assert.ok((counts["other"] ?? 0) >= 40, `${table}.other = ${counts["other"]}`)
    }
    assert.ok(JSON.stringify(body).length < 16_000, `the answer grew to ${JSON.stringify(body).length} bytes`)
  })
})
