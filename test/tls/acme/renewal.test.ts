/**
 * ACME renewal against a real Pebble issuing 8-second certificates (certificateValidityPeriod): the renewed
 * certificate is swapped in place at two thirds of the lifetime, a keep-alive connection opened before keeps
 * working, and a session from before resumes after.
 */
import assert from "node:assert/strict"
import https from "node:https"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { scrape } from "../../../src/admin/metrics-endpoint.ts"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { parsePrometheus, value } from "../../helpers/prometheus.ts"
import { type Pebble, served, startAcmePortcullis, startPebble, until } from "./harness.ts"

describe("acme renewal (Pebble, 8 s certificates)", () => {
  let pebble: Pebble
  let root: string
  let backend: TestBackend
  const cleanups: (() => unknown)[] = []
  before(async () => {
    pebble = await startPebble({ after: (fn: () => unknown) => cleanups.push(fn) }, { validitySeconds: 8 })
    root = await pebble.root()
    backend = await startEchoBackend("app")
    cleanups.push(() => backend.close())
  })
  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
  })

  test("a renewal swaps the certificate in place: a keep-alive connection keeps working and a session resumes", async (t) => {
    const pc = await startAcmePortcullis(
      t,
      pebble,
      `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ acme: [r.example.test] }] }
    upstream: app
  - name: plain
    address: 127.0.0.2:0
    redirect_https: 443
upstreams: { app: { backends: [127.0.0.1:${backend.port}] } }
ACME_BLOCK
`,
      ["challenges: [http-01]"],
    )
    await until(() => pc.log.with("acme certificate issued").length === 1, "the first certificate")
    const port = pc.port("web")
    const first = await served(port, "r.example.test", root)
    first.socket.destroy()

    // A keep-alive HTTPS connection and a TLS session, both made under the first certificate.
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: root })
    t.after(() => agent.destroy())
    const get = () =>
      new Promise<{ status: number; reused: boolean; serial: string }>((resolve, reject) => {
        const req = https.get(
          {
            host: "127.0.0.1",
            port,
            servername: "r.example.test",
            headers: { host: "r.example.test" },
            path: "/",
            agent,
          },
          (res) => {
            const serial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber
            res.resume()
            res.on("end", () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, serial }))
          },
        )
        req.on("error", reject)
      })
    const before = await get()
    assert.equal(before.status, 200)
    assert.equal(before.serial, first.serial)
    const session = await new Promise<Buffer>((resolve, reject) => {
      const s = tls.connect({ host: "127.0.0.1", port, servername: "r.example.test", ca: root })
      s.once("session", (data: Buffer) => {
        resolve(data)
        s.destroy()
      })
      s.once("error", reject)
    })

    await until(() => pc.log.with("acme certificate renewed").length >= 1, "the renewal", 15_000)
    const renewed = await served(port, "r.example.test", root)
    renewed.socket.destroy()
    assert.notEqual(renewed.serial, first.serial, "new handshakes get the renewed certificate")

    const kept = await get()
    assert.equal(kept.status, 200)
    assert.equal(kept.reused, true, "the keep-alive connection from before the renewal still carries requests")
    assert.equal(kept.serial, first.serial)

    const resumed = await new Promise<boolean>((resolve, reject) => {
      const s = tls.connect({ host: "127.0.0.1", port, servername: "r.example.test", ca: root, session }, () => {
        resolve(s.isSessionReused())
        s.destroy()
      })
      s.once("error", reject)
    })
    assert.equal(resumed, true, "a session from before the renewal resumes")
    assert.equal(pc.log.with("reloaded").length, 0, "no reload")
    const metrics = parsePrometheus(scrape(pc.runtime))
    assert.ok(value(metrics, "portcullis_acme_certificates_total", { event: "renewed" }) >= 1)
    const status = pc.runtime.acme!.managed(["r.example.test"], "ecdsa")
    assert.ok(status.nextRenewalAt! > Date.now(), "the next renewal is scheduled")
  })
})
