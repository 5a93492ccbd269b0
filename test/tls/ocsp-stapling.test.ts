/**
 * OCSP stapling (issue 11 item 3) against a real `openssl ocsp` responder: good and revoked answers, a responder
 * that is down or never answers (handshakes as fast as without OCSP, no staple, one log line per failure streak),
 * a refresh at half the validity, and the cached response reused across a restart.
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { X509Certificate } from "node:crypto"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, type TestContext, test } from "node:test"
import tls from "node:tls"
import { pino } from "pino"
import { certificateList } from "../../src/admin/certificates.ts"
import { scrape } from "../../src/admin/metrics-endpoint.ts"
import { parseConfig } from "../../src/config/load.ts"
import { TlsListener } from "../../src/listeners/tls-listener.ts"
import { Runtime, type RuntimeOptions } from "../../src/runtime.ts"
import type { LoadedCertificate } from "../../src/tls/certificate.ts"
import { loadFileCertificate } from "../../src/tls/sources/file.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { startOcspResponder } from "../helpers/ocsp-responder.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { refusingPort } from "../helpers/portcullis.ts"
import { parsePrometheus } from "../helpers/prometheus.ts"
import { waitUntil } from "../helpers/wait.ts"

let pki: Pki
let issuer: CertFiles
let backend: TestBackend

before(async () => {
  pki = await createPki()
  // The leaf's file holds leaf + intermediate: the issuer the OCSP request is built from.
  issuer = await pki.intermediate()
  backend = await startEchoBackend("app")
})
after(async () => {
  await backend?.close()
  await pki?.close()
})

interface Running {
  runtime: Runtime
  port: (listener?: string) => number
  logs: Record<string, unknown>[]
  cert: (listener?: string) => LoadedCertificate
  close: () => Promise<void>
}

const yaml = (
  dataDir: string,
  listeners: { name: string; leaf: CertFiles; stapling?: boolean }[],
) => `data_dir: ${dataDir}
listeners:
${listeners
  .map(
    (l, i) => `  - name: ${l.name}
    address: 127.0.0.${i + 1}:0
    tls:
      certificates: [{ cert: ${l.leaf.certPath}, key: ${l.leaf.keyPath} }]
      ocsp_stapling: ${l.stapling ?? true}
    routes: [{ upstream: app }]`,
  )
  .join("\n")}
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
`

async function start(text: string, options: RuntimeOptions = {}): Promise<Running> {
  const logs: Record<string, unknown>[] = []
  const log = pino({ level: "debug" }, { write: (line: string) => void logs.push(JSON.parse(line)) })
  const runtime = new Runtime(log, undefined, options)
  await runtime.start(parseConfig(text, "test.yaml", tmpdir()))
  const listener = (name?: string) =>
    [...runtime.generation!.listeners.values()].find(
      (l) => l instanceof TlsListener && (name === undefined || l.config.name === name),
    ) as TlsListener
  return {
    runtime,
    logs,
    port: (name) => runtime.ports()[name ?? "web"]!,
    cert: (name) => listener(name).certs.certificates()[0]!,
    close: () => runtime.close(200),
  }
}

/** sClient runs `openssl s_client -status` against the listener and returns its output. */
function sClient(host: string, port: number, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      "openssl",
      ["s_client", "-connect", `${host}:${port}`, "-servername", servername, "-status", "-CAfile", pki.ca.certPath],
      { timeout: 10_000 },
      (err, stdout, stderr) => (err && !stdout ? reject(err) : resolve(stdout + stderr)),
    )
    child.stdin?.end()
  })
}

/** handshakeMs times one handshake by Node's client asking for a staple; resolves with the time and the staple. */
function handshakeMs(host: string, port: number): Promise<{ ms: number; staple: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    let staple: Buffer | undefined
    const socket = tls.connect({ host, port, servername: "a.test", ca: pki.ca.cert, requestOCSP: true })
    // Node emits null when the server sent no staple.
    socket.on("OCSPResponse", (der: Buffer | null) => {
      staple = der ?? undefined
    })
    socket.once("secureConnect", () => {
      const ms = performance.now() - t0
      socket.destroy()
      resolve({ ms, staple })
    })
    socket.once("error", reject)
  })
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const samples = (running: Running) => [...parsePrometheus(scrape(running.runtime)).values()].flatMap((f) => f.samples)
const events = (running: Running, event: string) =>
  samples(running)
    .filter((s) => s.name === "portcullis_tls_certificate_events_total" && s.labels["event"] === event)
    .reduce((n, s) => n + s.value, 0)

test("staples a good response: openssl s_client -status shows Cert Status: good", async (t) => {
  const responder = await startOcspResponder(issuer)
  t.after(() => responder.close())
  const leaf = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url })
  responder.setStatus(leaf, "good")
  const running = await start(yaml(mkdtempSync(join(tmpdir(), "pc-ocsp-data-")), [{ name: "web", leaf }]))
  t.after(() => running.close())
  await waitUntil(() => running.runtime.ocspStatus(running.cert()).stapled, "a good response is kept")
  const out = await sClient("127.0.0.1", running.port(), "a.test")
  assert.match(out, /OCSP Response Status: successful/)
  assert.match(out, /Cert Status: good/)
  assert.equal(responder.requests, 1, "one fetch, in the background")
  assert.equal(events(running, "ocsp_fetched"), 1)
  // GET /certificates (the function main.ts serves it with) and /metrics show the state.
  const [row] = certificateList(running.runtime.generation, (c) => running.runtime.ocspStatus(c)).certificates
  assert.equal(row!.ocsp.status, "good")
  assert.equal(row!.ocsp.stapled, true)
  assert.equal(row!.ocsp.url, responder.url)
  assert.ok(Date.parse(row!.ocsp.next_refresh!) > Date.now())
  const gauge = samples(running).filter((s) => s.name === "portcullis_tls_certificate_ocsp_status" && s.value === 1)
  assert.deepEqual(
    gauge.map((s) => [s.labels["name"], s.labels["status"]]),
    [["a.test", "good"]],
  )
  // A client that does not ask gets no staple (RFC 6066 §8: only on status_request).
  const plain = await new Promise<boolean>((resolve, reject) => {
    let got = false
    const s = tls.connect({ host: "127.0.0.1", port: running.port(), servername: "a.test", ca: pki.ca.cert })
    s.on("OCSPResponse", () => {
      got = true
    })
    s.once("secureConnect", () => {
      s.destroy()
      resolve(got)
    })
    s.once("error", reject)
  })
  assert.equal(plain, false)
})

test("ocsp_stapling: false staples nothing and asks no responder", async (t) => {
  const responder = await startOcspResponder(issuer)
  t.after(() => responder.close())
  const leaf = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url })
  responder.setStatus(leaf, "good")
  const running = await start(
    yaml(mkdtempSync(join(tmpdir(), "pc-ocsp-data-")), [{ name: "web", leaf, stapling: false }]),
  )
  t.after(() => running.close())
  const out = await sClient("127.0.0.1", running.port(), "a.test")
  assert.match(out, /OCSP response: no response sent/)
  assert.equal(responder.requests, 0)
  assert.equal(running.runtime.ocspStatus(running.cert()).status, "none")
})

test("a revoked answer is not stapled (as nginx), logs an error and counts ocsp_revoked", async (t) => {
  const responder = await startOcspResponder(issuer)
  t.after(() => responder.close())
  const leaf = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url })
  responder.setStatus(leaf, "revoked")
  const running = await start(yaml(mkdtempSync(join(tmpdir(), "pc-ocsp-data-")), [{ name: "web", leaf }]))
  t.after(() => running.close())
  await waitUntil(() => running.runtime.ocspStatus(running.cert()).status === "revoked", "the revoked answer is read")
  const out = await sClient("127.0.0.1", running.port(), "a.test")
  assert.match(out, /OCSP response: no response sent/)
  const errors = running.logs.filter((l) => l["level"] === 50 && String(l["msg"]).includes("revoked"))
  assert.equal(errors.length, 1, JSON.stringify(running.logs))
  assert.equal(errors[0]!["certificate"], "a.test")
  assert.equal(events(running, "ocsp_revoked"), 1)
  const status = samples(running).filter((s) => s.name === "portcullis_tls_certificate_ocsp_status" && s.value === 1)
  assert.deepEqual(
    status.map((s) => s.labels["status"]),
    ["revoked"],
  )
})

test("an unknown answer (a serial the responder's index lacks) is not stapled and is warned about", async (t) => {
  const responder = await startOcspResponder(issuer)
  t.after(() => responder.close())
  const leaf = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url })
  const running = await start(yaml(mkdtempSync(join(tmpdir(), "pc-ocsp-data-")), [{ name: "web", leaf }]))
  t.after(() => running.close())
  await waitUntil(() => running.runtime.ocspStatus(running.cert()).status === "unknown", "the unknown answer")
  assert.match(await sClient("127.0.0.1", running.port(), "a.test"), /OCSP response: no response sent/)
  assert.equal(running.logs.filter((l) => l["level"] === 40 && String(l["msg"]).includes("does not know")).length, 1)
})

test("a renewed certificate swapped in place (CertStore.replace) gets its own staple; the old one's is let go", async (t) => {
  const responder = await startOcspResponder(issuer)
  t.after(() => responder.close())
  const old = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url })
  const renewed = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url })
  responder.setStatus(old, "good")
  responder.setStatus(renewed, "good")
  const running = await start(yaml(mkdtempSync(join(tmpdir(), "pc-ocsp-data-")), [{ name: "web", leaf: old }]))
  t.after(() => running.close())
  const before = running.cert()
  await waitUntil(() => running.runtime.ocspStatus(before).stapled, "the old certificate's staple")
  const store = ([...running.runtime.generation!.listeners.values()][0] as TlsListener).certs
  store.replace(0, [loadFileCertificate(renewed.certPath, renewed.keyPath)])
  const after = running.cert()
  assert.notEqual(after.fingerprint256, before.fingerprint256)
  await waitUntil(() => running.runtime.ocspStatus(after).stapled, "the renewed certificate's staple")
  assert.equal(running.runtime.ocspStatus(before).status, "none", "the old certificate is no longer tracked")
  const out = await sClient("127.0.0.1", running.port(), "a.test")
  assert.match(out, /Cert Status: good/)
  assert.match(out, new RegExp(`Serial Number: ${new X509Certificate(renewed.cert).serialNumber}`, "i"))
})

/** sClientWith runs `openssl s_client -status` with more arguments; returns the served leaf's serial and the staple's. */
async function stapleOf(port: number, args: string[]): Promise<{ served?: string; stapled?: string; out: string }> {
  const out = await new Promise<string>((resolve, reject) => {
    const child = execFile(
      "openssl",
      [
        "s_client",
        "-connect",
        `127.0.0.1:${port}`,
        "-servername",
        "a.test",
        "-status",
        "-CAfile",
        pki.ca.certPath,
        ...args,
      ],
      { timeout: 10_000 },
      (err, stdout, stderr) => (err && !stdout ? reject(err) : resolve(stdout + stderr)),
    )
    child.stdin?.end()
  })
  // The leaf s_client prints after "Server certificate" (the OCSP response before it carries its signer's).
  const pem = out.match(/Server certificate\s+(-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----)/)?.[1]
  // The OCSP response's CertID (RFC 6960 §4.1.1) names the certificate it is about by serial.
  const stapled = out.match(/Certificate ID:[\s\S]*?Serial Number: ([0-9A-F]+)/i)?.[1]?.toUpperCase()
  return { served: pem ? new X509Certificate(pem).serialNumber.toUpperCase() : undefined, stapled, out }
}

/** dualListener starts one listener serving a.test with an ECDSA and an RSA certificate, both stapled "good". */
async function dualListener(t: TestContext, tlsExtra = "", more?: CertFiles) {
  const responder = await startOcspResponder(issuer)
  t.after(() => responder.close())
  const ec = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url })
  const rsa = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url, keyType: "rsa" })
  responder.setStatus(ec, "good")
  responder.setStatus(rsa, "good")
  const dataDir = mkdtempSync(join(tmpdir(), "pc-ocsp-data-"))
  const entries = [ec, rsa, ...(more ? [more] : [])].map((f) => `{ cert: ${f.certPath}, key: ${f.keyPath} }`)
  const text = yaml(dataDir, [{ name: "web", leaf: ec }]).replace(
    `certificates: [{ cert: ${ec.certPath}, key: ${ec.keyPath} }]`,
    `certificates: [${entries.join(", ")}]${tlsExtra}`,
  )
  const running = await start(text)
  t.after(() => running.close())
  const store = ([...running.runtime.generation!.listeners.values()][0] as TlsListener).certs
  await waitUntil(
    () => store.certificates().every((c) => !c.names.includes("a.test") || running.runtime.ocspStatus(c).stapled),
    "both answers fetched",
  )
  return {
    running,
    store,
    ec: new X509Certificate(ec.cert).serialNumber.toUpperCase(),
    rsa: new X509Certificate(rsa.cert).serialNumber.toUpperCase(),
  }
}

// Each client gets the staple of the certificate OpenSSL served it, not the other one's (which fails strict clients).
const DUAL_CASES: [string, string[], "ec" | "rsa"][] = [
  ["TLS 1.3, ECDSA signature algorithms", ["-sigalgs", "ECDSA+SHA256"], "ec"],
  ["TLS 1.3, RSA-PSS signature algorithms", ["-sigalgs", "RSA-PSS+SHA256"], "rsa"],
  ["TLS 1.2, an ECDHE-RSA suite", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], "rsa"],
  ["TLS 1.2, an ECDHE-ECDSA suite", ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], "ec"],
  ["TLS 1.3, both (the server's order: ECDSA)", ["-sigalgs", "RSA-PSS+SHA256:ECDSA+SHA256"], "ec"],
  ["TLS 1.2, both suites (the server's order: ECDSA)", ["-tls1_2"], "ec"],
]

test("a name served with both ECDSA and RSA certificates staples the served certificate's response (one context for the listener)", async (t) => {
  const { running, ec, rsa } = await dualListener(t)
  const serials = { ec, rsa }
  for (const [what, args, expected] of DUAL_CASES) {
    const got = await stapleOf(running.port(), args)
    assert.match(got.out, /Cert Status: good/, what)
    assert.deepEqual([got.served, got.stapled], [serials[expected], serials[expected]], `${what}: served, stapled`)
  }
  // Node's client asks too, and gets the ECDSA staple with the ECDSA certificate.
  const { staple } = await handshakeMs("127.0.0.1", running.port())
  assert.ok(staple, "Node's client gets a staple")
})

test("the same on a listener with more names (the ClientHello is peeked for SNI anyway)", async (t) => {
  const other = await pki.issue({ names: ["b.test"], issuer: "intermediate" })
  const { running, store, ec, rsa } = await dualListener(t, "", other)
  assert.equal(store.single, false)
  for (const [what, args, expected] of DUAL_CASES.slice(0, 4)) {
    const got = await stapleOf(running.port(), args)
    const serial = expected === "ec" ? ec : rsa
    assert.deepEqual([got.served, got.stapled], [serial, serial], what)
  }
})

test("an ECDSA+RSA name whose pick cannot be predicted (a cipher string with OpenSSL keywords, TLS 1.2) gets no staple", async (t) => {
  const { running, ec, rsa } = await dualListener(t, "\n      ciphers: ECDHE+AESGCM")
  for (const args of [
    ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
    ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
  ]) {
    const got = await stapleOf(running.port(), args)
    assert.ok(got.served === ec || got.served === rsa, "a certificate was served")
    assert.match(got.out, /OCSP response: no response sent/, args.join(" "))
  }
  // TLS 1.3 does not depend on the cipher string: still stapled.
  const tls13 = await stapleOf(running.port(), ["-sigalgs", "RSA-PSS+SHA256"])
  assert.deepEqual([tls13.served, tls13.stapled], [rsa, rsa])
})

for (const kind of ["down", "slow"] as const) {
  test(`a responder that is ${kind === "down" ? "down (refuses)" : "slow (accepts, never answers)"}: handshakes take as long as without OCSP, no staple, one warning per failure streak`, async (t) => {
    let url: string
    let hung: Awaited<ReturnType<typeof startOcspResponder>> | undefined
    if (kind === "down") {
      const held = await refusingPort()
      t.after(() => held.close())
      url = `http://127.0.0.1:${held.port}/`
    } else {
      hung = await startOcspResponder(issuer, { mode: "hang" })
      t.after(() => hung!.close())
      url = hung.url
    }
    const leaf = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: url })
    const plain = await pki.issue({ names: ["a.test"], issuer: "intermediate" })
    // A fetch that hangs is cut off after 1.5 s: a handshake that waited on it would take that long.
    const running = await start(
      yaml(mkdtempSync(join(tmpdir(), "pc-ocsp-data-")), [
        { name: "web", leaf },
        { name: "plain", leaf: plain },
      ]),
      { ocsp: { timeoutMs: 1500, retryMs: 50, maxRetryMs: 200 } },
    )
    t.after(() => running.close())
    const withOcsp: number[] = []
    const without: number[] = []
    for (let i = 0; i < 8; i++) {
      const a = await handshakeMs("127.0.0.1", running.port("web"))
      assert.equal(a.staple, undefined, "no staple without an answer")
      withOcsp.push(a.ms)
      without.push((await handshakeMs("127.0.0.2", running.port("plain"))).ms)
    }
    assert.ok(
      median(withOcsp) < median(without) + 50 && Math.max(...withOcsp) < 1000,
      `handshakes with a ${kind} responder: ${withOcsp.map(Math.round)} ms; without OCSP: ${without.map(Math.round)} ms`,
    )
    // Several failures in a row, one warning.
    await waitUntil(() => events(running, "ocsp_failed") >= 2, "two failed fetches", 15_000)
    const warnings = running.logs.filter((l) => l["level"] === 40 && String(l["msg"]).startsWith("ocsp fetch failed"))
    assert.equal(warnings.length, 1, JSON.stringify(warnings))
    assert.equal(running.runtime.ocspStatus(running.cert("web")).status, "failing")
    if (hung) assert.ok(hung.requests >= 1, "the hung responder was asked")
  })
}

test("refreshes at half the validity (openssl ocsp -nmin 1: a second fetch about 30 s after the first)", async (t) => {
  const responder = await startOcspResponder(issuer, { validMinutes: 1 })
  t.after(() => responder.close())
  const leaf = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url })
  responder.setStatus(leaf, "good")
  const running = await start(yaml(mkdtempSync(join(tmpdir(), "pc-ocsp-data-")), [{ name: "web", leaf }]))
  t.after(() => running.close())
  await waitUntil(() => running.runtime.ocspStatus(running.cert()).stapled, "the first response")
  const first = running.runtime.ocspStatus(running.cert())
  const refreshIn = Date.parse(first.nextRefreshAt!) - Date.parse(first.thisUpdate!)
  assert.ok(Math.abs(refreshIn - 30_000) < 1500, `refresh planned ${refreshIn} ms after thisUpdate`)
  await waitUntil(() => responder.requests >= 2, "the refresh", 45_000)
  const gap = responder.times[1]! - responder.times[0]!
  assert.ok(gap > 27_000 && gap < 34_000, `refetched after ${gap} ms (validity 60 s)`)
  await waitUntil(
    () => running.runtime.ocspStatus(running.cert()).thisUpdate !== first.thisUpdate,
    "the new response is kept",
  )
  const out = await sClient("127.0.0.1", running.port(), "a.test")
  assert.match(out, /Cert Status: good/)
})

test("a cached response is reused across a restart: stapled at once, the responder not asked again", async (t) => {
  const responder = await startOcspResponder(issuer)
  t.after(() => responder.close())
  const leaf = await pki.issue({ names: ["a.test"], issuer: "intermediate", ocspUrl: responder.url })
  responder.setStatus(leaf, "good")
  const dataDir = mkdtempSync(join(tmpdir(), "pc-ocsp-data-"))
  const first = await start(yaml(dataDir, [{ name: "web", leaf }]))
  await waitUntil(() => first.runtime.ocspStatus(first.cert()).stapled, "the first response")
  await first.close()
  assert.equal(responder.requests, 1)
  // From now on the responder never answers: only the cache can staple.
  responder.mode = "hang"
  const second = await start(yaml(dataDir, [{ name: "web", leaf }]))
  t.after(() => second.close())
  assert.equal(second.runtime.ocspStatus(second.cert()).stapled, true, "stapled from the cache at start")
  const out = await sClient("127.0.0.1", second.port(), "a.test")
  assert.match(out, /Cert Status: good/)
  assert.equal(responder.requests, 1, "a fresh cached response is not fetched again")
})
