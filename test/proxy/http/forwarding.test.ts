/** The http engine forwards decrypted requests: headers a backend sees, hop-by-hop removal, routing, HTTP/2. */
import assert from "node:assert/strict"
import http2 from "node:http2"
import { after, before, describe, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { curl, h2request, request } from "../../helpers/clients.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../../helpers/portcullis.ts"

let pki: Pki
let web: TestBackend
let api: TestBackend
let wild: TestBackend
let pc: RunningPortcullis
let port: number

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "api.example.com", "*.example.com", "www.example.com"] })
  ;[web, api, wild] = await Promise.all([startEchoBackend("web"), startEchoBackend("api"), startEchoBackend("wild")])
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    trusted_proxies: [10.9.9.9/32]
    tls:
      certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]
      hsts: { max_age: 1d, include_subdomains: true }
    routes:
      - { hosts: [api.example.com], path_prefix: /v1, upstream: api }
      - { hosts: ["*.example.com"], upstream: wild }
      - { hosts: [localhost], upstream: web }
upstreams:
  web: { backends: ["127.0.0.1:${web.port}"] }
  api: { backends: ["127.0.0.1:${api.port}"] }
  wild: { backends: ["127.0.0.1:${wild.port}"] }
access_log: { enabled: false }
`)
  port = pc.port()
})

after(async () => {
  await pc?.close()
  await Promise.all([web?.close(), api?.close(), wild?.close()])
  await pki?.close()
})

describe("headers a backend sees", () => {
  test("adds X-Forwarded-For/-Proto/-Host and Forwarded, keeps Host", async () => {
    const reply = await request({ port, path: "/echo", ca: pki.ca.cert })
    assert.equal(reply.status, 200)
    const seen = JSON.parse(reply.text)
    assert.equal(seen.name, "web")
    assert.equal(seen.headers.host, "localhost")
    assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1")
    assert.equal(seen.headers["x-forwarded-proto"], "https")
    assert.equal(seen.headers["x-forwarded-host"], "localhost")
    assert.equal(seen.headers.forwarded, "for=127.0.0.1;host=localhost;proto=https")
  })

  test("replaces X-Forwarded-* and Forwarded sent by an untrusted client", async () => {
    const reply = await request({
      port,
      path: "/echo",
      ca: pki.ca.cert,
      headers: {
        "x-forwarded-for": "6.6.6.6",
        "x-forwarded-proto": "http",
        "x-forwarded-host": "evil.example",
        forwarded: "for=6.6.6.6",
        "x-client-verify": "SUCCESS",
      },
    })
    const seen = JSON.parse(reply.text)
    assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1")
    assert.equal(seen.headers["x-forwarded-proto"], "https")
    assert.equal(seen.headers["x-forwarded-host"], "localhost")
    assert.equal(seen.headers.forwarded, "for=127.0.0.1;host=localhost;proto=https")
    assert.equal(seen.headers["x-client-verify"], undefined)
  })

  test("removes hop-by-hop headers both ways, including those named by Connection", async () => {
    const reply = await request({
      port,
      path: "/echo",
      ca: pki.ca.cert,
      headers: {
        connection: "keep-alive, x-secret-hop",
        "x-secret-hop": "1",
        te: "trailers",
        "keep-alive": "timeout=5",
        "x-end": "kept",
      },
    })
    const seen = JSON.parse(reply.text)
    assert.equal(seen.headers["x-secret-hop"], undefined)
    assert.equal(seen.headers.te, undefined)
    assert.equal(seen.headers["keep-alive"], undefined)
    assert.equal(seen.headers["x-end"], "kept")
    // The backend's Connection names x-hop: it must not reach the client.
    assert.equal(reply.headers["x-hop"], undefined)
    assert.equal(reply.headers["strict-transport-security"], "max-age=86400; includeSubDomains")
  })
})

describe("routing", () => {
  const cases = [
    { host: "api.example.com", path: "/v1/users", backend: "api" },
    { host: "api.example.com", path: "/v10", backend: "wild" },
    { host: "www.example.com", path: "/", backend: "wild" },
    { host: "localhost", path: "/anything", backend: "web" },
  ]
  for (const c of cases) {
    test(`sends ${c.host}${c.path} to ${c.backend}`, async () => {
      const reply = await request({
        port,
        path: c.path,
        host: c.host,
        servername: c.host,
        ca: pki.ca.cert,
      })
      assert.equal(reply.status, 200)
      assert.equal(reply.text, `hello from ${c.backend}`)
    })
  }

  test("answers 404 with a plain body when no route matches", async () => {
    const reply = await request({ port, path: "/", host: "nothing.test", servername: "localhost", ca: pki.ca.cert })
    assert.equal(reply.status, 404)
    assert.equal(reply.text, "Not Found\n")
  })
})

describe("HTTP/2", () => {
  test("negotiates h2 with Node's http2 client and forwards as HTTP/1.1", async () => {
    const reply = await h2request({ port, path: "/echo", ca: pki.ca.cert, headers: { cookie: "a=1" } })
    assert.equal(reply.alpn, "h2")
    assert.equal(reply.status, 200)
    const seen = JSON.parse(reply.text)
    assert.equal(seen.headers.host, "localhost")
    assert.equal(seen.headers.cookie, "a=1")
    assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1")
  })

  test("an HTTP/2 request body reaches the backend (POST over the stream)", async () => {
    const reply = await h2request({ port, path: "/echo", method: "POST", body: "x".repeat(100_000), ca: pki.ca.cert })
    assert.equal(reply.status, 200)
    const seen = JSON.parse(reply.text)
    assert.equal(seen.method, "POST")
    assert.equal(seen.bodyLength, 100_000)
  })

  test("HTTP/2 HEAD gets the headers and no body", async () => {
    const reply = await h2request({ port, path: "/hello", method: "HEAD", ca: pki.ca.cert })
    assert.equal(reply.status, 200)
    assert.equal(reply.body.length, 0)
    assert.equal(reply.headers["strict-transport-security"], "max-age=86400; includeSubDomains")
  })

  test("HTTP/2 gets the plain 404 when no route matches, and 502 when the backend resets", async () => {
    const none = await h2request({ port, path: "/", host: "nothing.test", ca: pki.ca.cert })
    assert.equal(none.status, 404)
    assert.equal(none.text, "Not Found\n")
    const reset = await h2request({ port, path: "/reset", ca: pki.ca.cert })
    assert.equal(reset.status, 502)
    assert.equal(reset.text, "Bad Gateway\n")
  })

  test("HTTP/2: 8 MiB on each of 4 streams at once arrive whole; a stream reset mid-body leaves the session usable", async () => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { servername: "localhost", ca: pki.ca.cert })
    after(() => session.close())
    const get = (path: string) => session.request({ ":path": path, ":authority": "localhost" })
    const size = 8 * 1024 * 1024
    const lengths = await Promise.all(
      [0, 1, 2, 3].map(
        () =>
          new Promise<number>((resolve, reject) => {
            const stream = get(`/bytes?n=${size}`)
            let n = 0
            stream.on("data", (c: Buffer) => {
              n += c.length
            })
            stream.on("end", () => resolve(n))
            stream.on("error", reject)
          }),
      ),
    )
    assert.deepEqual(lengths, [size, size, size, size])
    await new Promise<void>((resolve) => {
      const stream = get(`/bytes?n=${size}`)
      stream.once("data", () => stream.close(0x8 /* CANCEL */))
      stream.on("close", () => resolve())
    })
    const again = await new Promise<string>((resolve, reject) => {
      const stream = get("/hello")
      let text = ""
      stream.on("data", (c: Buffer) => {
        text += c
      })
      stream.on("end", () => resolve(text))
      stream.on("error", reject)
    })
    assert.equal(again, "hello from web")
  })

  test("curl --http2 gets HTTP/2 and the backend's body", async () => {
    const out = await curl([
      "--http2",
      "--cacert",
      pki.ca.certPath,
      "--resolve",
      `localhost:${port}:127.0.0.1`,
      "-w",
      "\n%{http_version} %{http_code}",
      `https://localhost:${port}/hello`,
    ])
    assert.equal(out.code, 0, out.stderr)
    assert.match(out.stdout, /hello from web\n2 200$/)
  })

  test("curl --http1.1 gets HTTP/1.1", async () => {
    const out = await curl([
      "--http1.1",
      "--cacert",
      pki.ca.certPath,
      "--resolve",
      `localhost:${port}:127.0.0.1`,
      "-w",
      "\n%{http_version}",
      `https://localhost:${port}/`,
    ])
    assert.equal(out.code, 0, out.stderr)
    assert.match(out.stdout, /1\.1$/)
  })
})
