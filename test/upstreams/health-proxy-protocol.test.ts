/** Active health checks on an upstream with send_proxy_protocol, against nginx listening with `proxy_protocol`. */
import assert from "node:assert/strict"
import { after, before, describe, test } from "node:test"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { type NginxServer, startNginx } from "../helpers/servers.ts"
import { upstreamStatus } from "./harness.ts"

let pki: Pki
let pc: RunningPortcullis
/** nginx expecting a PROXY header, checked only by upstreams that send one. */
let nginx: NginxServer
/** The same nginx setup, re-encrypted (PROXY header, then TLS), checked only by upstreams that send one. */
let nginxTls: NginxServer
/** The same nginx setup, checked by an upstream that sends no header: the control that shows the header matters. */
let control: NginxServer

/** nginx's error for bytes that are not a PROXY header (an empty connection logs `broken header: ""`). */
const BROKEN = /broken header: "[^"]/

const SITE = `location / { return 200 "ok $proxy_protocol_addr\\n"; }`

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  nginx = await startNginx(`listen LISTEN proxy_protocol; ${SITE}`)
  control = await startNginx(`listen LISTEN proxy_protocol; ${SITE}`)
  nginxTls = await startNginx(
    `listen LISTEN ssl proxy_protocol; ssl_certificate ${site.certPath}; ssl_certificate_key ${site.keyPath}; ${SITE}`,
  )
  const check = (type: string) => `health: { type: ${type}, path: /, interval: 60s, timeout: 2s, rise: 1, fall: 1 }`
  const reencrypt = `tls: { ca: ${pki.ca.certPath}, servername: localhost }`
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [v1.test], upstream: http_v1 }
      - { hosts: [v2.test], upstream: http_v2 }
      - { hosts: [tls.test], upstream: https_v2 }
      - { upstream: none }
upstreams:
  http_v1: { backends: ["127.0.0.1:${nginx.port}"], send_proxy_protocol: v1, ${check("http")} }
  http_v2: { backends: ["127.0.0.1:${nginx.port}"], send_proxy_protocol: v2, ${check("http")} }
  tcp_v1: { backends: ["127.0.0.1:${nginx.port}"], send_proxy_protocol: v1, ${check("tcp")} }
  tcp_v2: { backends: ["127.0.0.1:${nginx.port}"], send_proxy_protocol: v2, ${check("tcp")} }
  https_v1: { backends: ["127.0.0.1:${nginxTls.port}"], send_proxy_protocol: v1, ${reencrypt}, ${check("http")} }
  https_v2: { backends: ["127.0.0.1:${nginxTls.port}"], send_proxy_protocol: v2, ${reencrypt}, ${check("http")} }
  tls_tcp_v2: { backends: ["127.0.0.1:${nginxTls.port}"], send_proxy_protocol: v2, ${reencrypt}, ${check("tcp")} }
  none: { backends: ["127.0.0.1:${control.port}"], ${check("http")} }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await Promise.all([nginx?.close(), nginxTls?.close(), control?.close()])
  await pki?.close()
})

/** health of the upstream's only backend after the first round of checks (start awaits it). */
function healthOf(name: string) {
  const status = upstreamStatus(pc, name)
  return { state: status.backends[0]!.state, check: status.health![0]! }
}

describe("active health checks send the PROXY header first", () => {
  for (const name of ["http_v1", "http_v2", "tcp_v1", "tcp_v2", "https_v1", "https_v2", "tls_tcp_v2"]) {
    test(`${name}: nginx with proxy_protocol is found up`, async () => {
      await upstreamHealth(name)
      const { state, check } = healthOf(name)
      assert.equal(check.last_error, undefined)
      assert.equal(check.healthy, true)
      assert.equal(state, "up")
    })
  }

  test("nginx logged no broken PROXY header from any of those checks", async () => {
    for (const name of ["http_v1", "http_v2", "tcp_v1", "tcp_v2"]) await upstreamHealth(name)
    // startNginx's readiness probe connects and closes without a byte: nginx logs that as `broken header: ""`.
    assert.doesNotMatch(nginx.output(), BROKEN)
    assert.doesNotMatch(nginxTls.output(), BROKEN)
  })

  test("the HTTP checks reached nginx's location, with no client address (LOCAL / UNKNOWN)", async () => {
    await upstreamHealth("http_v1")
    const checks = nginx.logLines().filter((l) => l.endsWith(" /"))
    assert.ok(checks.length >= 2, `nginx logged the checks: ${nginx.logLines().join(" | ")}`)
  })

  test("control: without the header the same nginx is found down, and it logs a broken header", async () => {
    const { state, check } = healthOf("none")
    assert.equal(check.healthy, false)
    assert.equal(state, "down")
    assert.match(control.output(), BROKEN)
  })

  test("requests through the up backends are served (the PROXY header carries the client)", async () => {
    for (const host of ["v1.test", "v2.test", "tls.test"]) {
      const reply = await request({ port: pc.port("web"), host, ca: pki.ca.cert })
      assert.equal(reply.status, 200, host)
      assert.equal(reply.text, "ok 127.0.0.1\n", host)
    }
  })
})

/** upstreamHealth runs one more round of the upstream's checks (on the current generation) and waits for it. */
async function upstreamHealth(name: string): Promise<void> {
  const upstream = pc.runtime.generation?.upstreams.get(name)
  assert.ok(upstream?.health, `upstream ${name} has health checks`)
  await upstream.health.checkNow()
}
