/** A plain HTTP listener with redirect_https answers 308 to the https URL. */
import assert from "node:assert/strict"
import http from "node:http"
import { after, before, test } from "node:test"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { loopback, type RunningPortcullis, startPortcullis } from "../../helpers/portcullis.ts"

let pki: Pki
let pc: RunningPortcullis
let port: number

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  pc = await startPortcullis(`
listeners:
  - name: redirect
    address: ${loopback(1)}:0
    redirect_https: 8443
  - name: web
    address: ${loopback(2)}:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:9"] }
`)
  port = pc.port("redirect")
})

after(async () => {
  await pc?.close()
  await pki?.close()
})

function get(path: string, host: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path, headers: { host }, agent: false }, (res) => {
        res.resume()
        resolve(res)
      })
      .on("error", reject)
  })
}

const cases = [
  { host: "example.com", path: "/a/b?c=d", location: "https://example.com:8443/a/b?c=d" },
  { host: "example.com:8080", path: "/", location: "https://example.com:8443/" },
  { host: "[::1]:8080", path: "/x", location: "https://[::1]:8443/x" },
]
for (const c of cases) {
  test(`redirects http://${c.host}${c.path} to ${c.location} with 308`, async () => {
    const res = await get(c.path, c.host)
    assert.equal(res.statusCode, 308)
    assert.equal(res.headers.location, c.location)
  })
}
