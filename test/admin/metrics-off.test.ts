/**
 * `metrics: { enabled: false }` (the bench's "metrics off" row): the hot path counts only the /status totals (no
 * labelled handshake series, no histograms, no route counters, no census) and GET /metrics answers 404.
 */
import assert from "node:assert/strict"
import { mkdtempSync } from "node:fs"
import http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { runningPorts, spawnPortcullis, startPortcullis, writeTemp } from "../helpers/portcullis.ts"

let pki: Pki
let echo: TestBackend
let cert: { certPath: string; keyPath: string }

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  cert = await pki.issue({ names: ["localhost"] })
})

after(async () => {
  await echo?.close()
  await pki?.close()
})

function config(enabled: boolean, admin = ""): string {
  return `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${cert.certPath}, key: ${cert.keyPath} }] }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
metrics: { enabled: ${enabled}, census_sample: 1 }
access_log: { enabled: false }
${admin}`
}

/** series lists the families' series that have counted something (a value or an observation). */
function counted(snapshot: { name: string; series: { value?: number; count?: number }[] }[], name: string): number {
  const family = snapshot.find((f) => f.name === name)
  return (family?.series ?? []).filter((s) => (s.value ?? s.count ?? 0) > 0).length
}

for (const enabled of [true, false]) {
  test(`metrics.enabled ${enabled}: handshake series, histograms, route counters and census are ${enabled ? "counted" : "not counted"}; /status totals are`, async (t) => {
    const pc = await startPortcullis(config(enabled))
    t.after(() => pc.close())
    const reply = await request({ port: pc.port(), path: "/x", ca: pki.ca.cert })
    assert.equal(reply.status, 200)
    const snapshot = pc.runtime.state.registry.snapshot()
    const expected = enabled ? 1 : 0
    assert.equal(counted(snapshot, "portcullis_tls_handshakes_total"), expected)
    assert.equal(counted(snapshot, "portcullis_tls_handshake_duration_seconds"), expected)
    assert.equal(counted(snapshot, "portcullis_http_requests_total"), expected)
    assert.equal(counted(snapshot, "portcullis_http_request_duration_seconds"), expected)
    assert.equal(counted(snapshot, "portcullis_backend_connect_duration_seconds"), expected)
    const census = pc.runtime.generation!.census()
    assert.deepEqual(Object.keys(census.listeners), enabled ? ["web"] : [])
    const status = pc.runtime.status() as { listeners: { handshakes: number; accepted: number }[] }
    assert.equal(status.listeners[0]!.handshakes, 1)
    assert.equal(status.listeners[0]!.accepted, 1)
  })
}

function get(port: number, path: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path }, (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (d: string) => {
          text += d
        })
        res.on("end", () => resolve({ status: res.statusCode!, text }))
      })
      .on("error", reject)
  })
}

test("metrics.enabled false: GET /metrics answers 404 and GET /tls/clients has no listener", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "metrics-off-"))
  const file = writeTemp(dir, "portcullis.yaml", config(false, 'admin: { address: "127.0.0.1:0" }\n'))
  const child = spawnPortcullis(["--config", file], { cwd: dir })
  t.after(() => child.stop())
  const { admin } = await runningPorts(child)
  const metrics = await get(admin!, "/metrics")
  assert.equal(metrics.status, 404, metrics.text)
  assert.match(metrics.text, /metrics are off/)
  const clients = await get(admin!, "/tls/clients")
  assert.equal(clients.status, 200)
  assert.deepEqual(JSON.parse(clients.text), { listeners: {} })
})
