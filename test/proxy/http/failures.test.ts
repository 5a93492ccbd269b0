/** The http engine under failure: backend down, slow, reset; retries; bad and oversized client requests. */
import assert from "node:assert/strict"
import { after, before, describe, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { request, tlsConnect } from "../../helpers/clients.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type HeldPort, type RunningPortcullis, refusingPort, startPortcullis } from "../../helpers/portcullis.ts"

let pki: Pki
let good: TestBackend
let pc: RunningPortcullis
let port: number
let dead: HeldPort

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "down.test", "slow.test", "retry.test", "trusted.test"] })
  good = await startEchoBackend("good")
  dead = await refusingPort()
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    trusted_proxies: [127.0.0.1]
    tls:
      certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]
    limits: { max_header_size: 4KiB, max_headers: 20, header_timeout: 1s }
    routes:
      - { hosts: [down.test], upstream: down }
      - { hosts: [slow.test], upstream: slow }
      - { hosts: [retry.test], upstream: retry }
      - { upstream: good }
upstreams:
  good: { backends: ["127.0.0.1:${good.port}"] }
  down: { backends: ["127.0.0.1:${dead.port}"], retries: 0 }
  slow: { backends: ["127.0.0.1:${good.port}"], timeouts: { response: 300ms } }
  retry: { backends: ["127.0.0.1:${dead.port}", "127.0.0.1:${good.port}"], balance: round_robin, retries: 1 }
access_log: { enabled: false }
`)
  port = pc.port()
})

after(async () => {
  dead?.close()
  await pc?.close()
  await good?.close()
  await pki?.close()
})

describe("backend failures", () => {
  test("a refused backend connection is a 502 with a plain body", async () => {
    const reply = await request({ port, host: "down.test", ca: pki.ca.cert })
    assert.equal(reply.status, 502)
    assert.equal(reply.text, "Bad Gateway\n")
  })

  test("a backend slower than timeouts.response is a 504", async () => {
    const reply = await request({ port, path: "/slow?ms=3000", host: "slow.test", ca: pki.ca.cert })
    assert.equal(reply.status, 504)
    assert.equal(reply.text, "Gateway Timeout\n")
  })

  test("a GET whose first backend refuses is retried on the other backend", async () => {
    for (let i = 0; i < 4; i++) {
      const reply = await request({ port, path: "/echo", host: "retry.test", ca: pki.ca.cert })
      assert.equal(reply.status, 200, `request ${i}`)
      assert.equal(JSON.parse(reply.text).name, "good")
    }
  })

  test("a backend reset mid-body breaks the client response instead of ending it short", async () => {
    await assert.rejects(request({ port, path: "/half?n=1000", ca: pki.ca.cert }))
  })

  test("a backend reset before the response is a 502", async () => {
    const reply = await request({ port, path: "/reset", method: "POST", body: "x", ca: pki.ca.cert })
    assert.equal(reply.status, 502)
  })
})

describe("trusted proxies", () => {
  test("a trusted client's X-Forwarded-For is appended to", async () => {
    const reply = await request({ port, path: "/echo", ca: pki.ca.cert, headers: { "x-forwarded-for": "203.0.113.7" } })
    const seen = JSON.parse(reply.text)
    assert.equal(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1")
  })
})

/** raw sends bytes over TLS and resolves with everything the proxy sent before closing. */
async function raw(bytes: string, waitMs = 5000): Promise<string> {
  const socket = await tlsConnect({ port, servername: "localhost", ca: pki.ca.cert, ALPNProtocols: ["http/1.1"] })
  return new Promise((resolve, reject) => {
    let text = ""
    socket.on("data", (d: Buffer) => {
      text += d.toString()
    })
    socket.on("close", () => resolve(text))
    socket.on("error", () => resolve(text))
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no close within ${waitMs} ms; got ${JSON.stringify(text)}`))
    }, waitMs)
    socket.on("close", () => clearTimeout(timer))
    socket.write(bytes)
  })
}

describe("bad clients", () => {
  test("garbage instead of HTTP gets 400 and a closed connection", async () => {
    const text = await raw("\x16\x03garbage\r\n\r\n")
    assert.match(text, /^HTTP\/1\.1 400 /)
  })

  test("a request smuggling both Content-Length and Transfer-Encoding gets 400", async () => {
    const text = await raw(
      "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert.match(text, /^HTTP\/1\.1 400 /)
    assert.equal(good.seen.filter((s) => s.method === "POST" && s.url === "/").length, 0)
  })

  test("headers larger than max_header_size get 431", async () => {
    const text = await raw(`GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${"a".repeat(8000)}\r\n\r\n`)
    assert.match(text, /^HTTP\/1\.1 431 /)
  })

  test("more headers than max_headers get 431", async () => {
    let headers = ""
    for (let i = 0; i < 30; i++) headers += `X-H${i}: ${i}\r\n`
    const text = await raw(`GET / HTTP/1.1\r\nHost: localhost\r\n${headers}Connection: close\r\n\r\n`)
    assert.match(text, /^HTTP\/1\.1 431 /)
  })

  test("a client that sends headers too slowly gets 408 after header_timeout", async () => {
    const text = await raw("GET / HTTP/1.1\r\nHost: localhost\r\n", 5000)
    assert.match(text, /^HTTP\/1\.1 408 /)
  })

  test("a request without Host gets 400", async () => {
    const text = await raw("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert.match(text, /^HTTP\/1\.1 400 /)
  })

  test("the proxy still serves after all of the above", async () => {
    const reply = await request({ port, ca: pki.ca.cert })
    assert.equal(reply.status, 200)
  })
})
