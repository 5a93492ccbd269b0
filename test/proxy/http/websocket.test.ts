/** WebSocket upgrades (HTTP/1.1) are proxied both ways. */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { tlsConnect, wsFrame, wsParse } from "../../helpers/clients.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type HeldPort, type RunningPortcullis, refusingPort, startPortcullis } from "../../helpers/portcullis.ts"

let pki: Pki
let backend: TestBackend
let pc: RunningPortcullis
let port: number
let refusing: HeldPort

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  backend = await startEchoBackend("ws")
  refusing = await refusingPort()
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ path_prefix: /split, upstream: split }, { upstream: ws }]
upstreams:
  ws: { backends: ["127.0.0.1:${backend.port}"] }
  split: { backends: ["127.0.0.1:${refusing.port}", "127.0.0.1:${backend.port}"], passive: { enabled: false } }
access_log: { enabled: false }
`)
  port = pc.port()
})

after(async () => {
  await pc?.close()
  await backend?.close()
  refusing?.close()
  await pki?.close()
})

test("a WebSocket client and backend exchange frames both ways through the proxy", async () => {
  const socket = await tlsConnect({ port, servername: "localhost", ca: pki.ca.cert, ALPNProtocols: ["http/1.1"] })
  socket.write(
    "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  )
  let buffered = Buffer.alloc(0)
  const next = (pattern?: RegExp) =>
    new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout; have ${JSON.stringify(buffered.toString())}`)), 5000)
      const check = () => {
        if (pattern) {
          const text = buffered.toString("latin1")
          const end = text.indexOf("\r\n\r\n")
          if (end < 0) return
          const head = buffered.subarray(0, end + 4)
          buffered = buffered.subarray(end + 4)
          done(head)
        } else {
          const frame = wsParse(buffered)
          if (!frame) return
          buffered = Buffer.from(frame.rest)
          done(frame.payload)
        }
      }
      const onData = (d: Buffer) => {
        buffered = Buffer.concat([buffered, d])
        check()
      }
      const done = (b: Buffer) => {
        clearTimeout(timer)
        socket.off("data", onData)
        resolve(b)
      }
      socket.on("data", onData)
      check()
    })
  const head = (await next(/\r\n\r\n/)).toString()
  assert.match(head, /^HTTP\/1\.1 101 /)
  assert.match(head, /sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i)
  assert.match(head, /x-seen-forwarded-for: 127\.0\.0\.1/i)
  socket.write(wsFrame("hello through the proxy"))
  assert.equal((await next()).toString(), "hello through the proxy")
  const big = "x".repeat(10_000)
  socket.write(wsFrame(big))
  assert.equal((await next()).toString(), big)
  socket.destroy()
})

test("an upgrade to a backend that refuses connections is tried on the other backend: every one gets 101", async () => {
  // Round robin over a refusing backend and a live one: without the retry, every other upgrade was a 502.
  for (let i = 0; i < 4; i++) {
    const socket = await tlsConnect({ port, servername: "localhost", ca: pki.ca.cert, ALPNProtocols: ["http/1.1"] })
    socket.write(
      `GET /split/${i} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    const head = await new Promise<string>((resolve, reject) => {
      let text = ""
      const timer = setTimeout(() => reject(new Error(`no answer; have ${JSON.stringify(text)}`)), 5000)
      socket.on("data", (d: Buffer) => {
        text += d.toString("latin1")
        if (text.includes("\r\n\r\n")) {
          clearTimeout(timer)
          resolve(text.slice(0, text.indexOf("\r\n")))
        }
      })
    })
    assert.match(head, /^HTTP\/1\.1 101 /, `upgrade ${i}`)
    socket.destroy()
  }
})
