/**
 * The self-check after every swap (issue 11 item 4): at start, on reload and after CertStore.replace, Portcullis
 * handshakes with its own listener for each name and compares the served leaf with the intended one.
 */
import assert from "node:assert/strict"
import { X509Certificate } from "node:crypto"
import { tmpdir } from "node:os"
import { after, before, test } from "node:test"
import { pino } from "pino"
import { scrape } from "../../src/admin/metrics-endpoint.ts"
import { parseConfig } from "../../src/config/load.ts"
import type { TlsListener } from "../../src/listeners/tls-listener.ts"
import { Runtime } from "../../src/runtime.ts"
import { loadFileCertificate } from "../../src/tls/sources/file.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { parsePrometheus } from "../helpers/prometheus.ts"
import { waitUntil } from "../helpers/wait.ts"

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

const yaml = (certs: CertFiles[]) => `listeners:
  - name: web
    address: 127.0.0.1:0
    tls:
      certificates: [${certs.map((c) => `{ cert: ${c.certPath}, key: ${c.keyPath} }`).join(", ")}]
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"] }
`

async function start(certs: CertFiles[]) {
  const logs: Record<string, unknown>[] = []
  const log = pino({ level: "debug" }, { write: (line: string) => void logs.push(JSON.parse(line)) })
  const runtime = new Runtime(log, undefined, { selfCheck: { timeoutMs: 2000 } })
  await runtime.start(parseConfig(yaml(certs), "test.yaml", tmpdir()))
  const count = (event: string, name?: string) =>
    [...parsePrometheus(scrape(runtime)).values()]
      .flatMap((f) => f.samples)
      .filter(
        (s) =>
          s.name === "portcullis_tls_certificate_events_total" &&
          s.labels["event"] === event &&
          (name === undefined || s.labels["name"] === name),
      )
      .reduce((n, s) => n + s.value, 0)
  const store = () => ([...runtime.generation!.listeners.values()][0] as TlsListener).certs
  return { runtime, logs, count, store, close: () => runtime.close(200) }
}

const fingerprint = (f: CertFiles) => new X509Certificate(f.cert).fingerprint256

test("at start, each name of each certificate is checked against what the listener serves: ok, at debug", async (t) => {
  const cert = await pki.issue({ names: ["a.test", "www.a.test"] })
  const wild = await pki.issue({ names: ["*.b.test"] })
  const running = await start([cert, wild])
  t.after(() => running.close())
  await waitUntil(() => running.count("self_check_ok") >= 3, "three names checked")
  assert.equal(running.count("self_check_ok", "a.test"), 2)
  assert.equal(running.count("self_check_ok", "*.b.test"), 1)
  assert.equal(running.count("self_check_mismatch"), 0)
  // Each check is a whole handshake for the listener, not a failed one (the client's Finished gets there).
  const metric = (name: string) =>
    [...parsePrometheus(scrape(running.runtime)).values()]
      .flatMap((f) => f.samples)
      .filter((x) => x.name === name)
      .reduce((n, x) => n + x.value, 0)
  await waitUntil(() => metric("portcullis_tls_handshakes_total") >= 3, "three handshakes counted by the listener")
  assert.equal(metric("portcullis_tls_handshake_failures_total"), 0)
  const ok = running.logs.filter((l) => l["msg"] === "self-check: the intended certificate is served")
  assert.deepEqual(ok.map((l) => [l["level"], l["sni"]]).sort(), [
    [20, "a.test"],
    [20, "portcullis-self-check.b.test"],
    [20, "www.a.test"],
  ])
})

test("a certificate shadowed by another entry's exact name is a mismatch: an error log and a counter", async (t) => {
  const first = await pki.issue({ names: ["a.test"] })
  // Same name, same key type, listed second: the store serves the first for a.test, never this one.
  const shadowed = await pki.issue({ names: ["a.test"] })
  const running = await start([first, shadowed])
  t.after(() => running.close())
  await waitUntil(() => running.count("self_check_ok") + running.count("self_check_mismatch") >= 2, "both checked")
  assert.equal(running.count("self_check_ok", "a.test"), 1)
  assert.equal(running.count("self_check_mismatch", "a.test"), 1)
  const errors = running.logs.filter((l) => l["level"] === 50 && String(l["msg"]).startsWith("self-check"))
  assert.equal(errors.length, 1)
  assert.equal(errors[0]!["entry"], 1)
  assert.equal(errors[0]!["expected"], fingerprint(shadowed))
  assert.equal(errors[0]!["served"], fingerprint(first))
})

test("a name with an ECDSA and an RSA certificate: each is checked with signature algorithms that pick it", async (t) => {
  const ec = await pki.issue({ names: ["a.test"] })
  const rsa = await pki.issue({ names: ["a.test"], keyType: "rsa" })
  const running = await start([ec, rsa])
  t.after(() => running.close())
  await waitUntil(() => running.count("self_check_ok") + running.count("self_check_mismatch") >= 2, "both checked")
  assert.equal(running.count("self_check_ok", "a.test"), 2)
  assert.equal(running.count("self_check_mismatch"), 0)
})

test("a certificate swapped in place (CertStore.replace, as a renewal does) is checked after the swap", async (t) => {
  const old = await pki.issue({ names: ["a.test"] })
  const running = await start([old])
  t.after(() => running.close())
  await waitUntil(() => running.count("self_check_ok") >= 1, "the start check")
  const renewed = await pki.issue({ names: ["a.test"] })
  running.store().replace(0, [loadFileCertificate(renewed.certPath, renewed.keyPath)])
  await waitUntil(() => running.count("self_check_ok") >= 2, "the check after the swap")
  const ok = running.logs.filter((l) => l["msg"] === "self-check: the intended certificate is served")
  assert.equal(ok.length, 2)
  assert.equal(running.count("self_check_mismatch"), 0)
})

test("a reload checks the new generation's certificates", async (t) => {
  const a = await pki.issue({ names: ["a.test"] })
  const running = await start([a])
  t.after(() => running.close())
  await waitUntil(() => running.count("self_check_ok") >= 1, "the start check")
  const b = await pki.issue({ names: ["b.test"] })
  await running.runtime.reload(parseConfig(yaml([a, b]), "test.yaml", tmpdir()))
  await waitUntil(() => running.count("self_check_ok", "b.test") >= 1, "b.test checked after the reload")
})
