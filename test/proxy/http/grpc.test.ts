/**
 * gRPC through the http engine (issue 15): a @grpc/grpc-js client over TLS to Portcullis, routed by path to a
 * grpc-js server behind it over h2c (protocol: h2c) and over TLS (protocol: h2, re-encryption). All four method
 * kinds, metadata both ways, trailers, a 10 MiB message, deadlines, cancellation reaching the backend, and the
 * backend's own error statuses (trailers-only responses).
 */
import assert from "node:assert/strict"
import { randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import http2 from "node:http2"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import { type EchoServer, echoClient, grpc, type Msg, startEchoServer, unary } from "../../helpers/grpc.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type HeldPort, type RunningPortcullis, refusingPort, startPortcullis } from "../../helpers/portcullis.ts"
import { waitUntil } from "../../helpers/wait.ts"
import { upstreamStatus } from "../../upstreams/harness.ts"

let pki: Pki
let plain: EchoServer
let secure: EchoServer
let pc: RunningPortcullis
let resetter: net.Server
let dead: HeldPort

/** established counts ESTABLISHED TCP connections to 127.0.0.1:port (/proc/net/tcp, remote side = port). */
function established(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, "0")
  return readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .slice(1)
    .filter((line) => {
      const f = line.trim().split(/\s+/)
      return f[2] === `0100007F:${hex}` && f[3] === "01"
    }).length
}

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "secure.test", "dead.test", "slow.test", "reset.test"] })
  const backendCert = await pki.issue({ names: ["grpc.internal"] })
  plain = await startEchoServer()
  secure = await startEchoServer(
    grpc.ServerCredentials.createSsl(null, [
      { cert_chain: Buffer.from(backendCert.cert), private_key: Buffer.from(backendCert.key) },
    ]),
  )
  // A backend that accepts and resets every connection, and a port where nothing listens.
  resetter = net.createServer((socket) => socket.resetAndDestroy())
  await new Promise<void>((resolve) => resetter.listen(0, "127.0.0.1", () => resolve()))
  dead = await refusingPort()
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [secure.test], path_prefix: /echo.Echo/, upstream: grpc_tls }
      - { hosts: [dead.test], upstream: grpc_dead }
      - { hosts: [slow.test], upstream: grpc_slow }
      - { hosts: [reset.test], upstream: grpc_reset }
      - { path_prefix: /echo.Echo/, upstream: grpc }
upstreams:
  grpc_dead: { backends: ["127.0.0.1:${dead.port}"], protocol: h2c, retries: 0 }
  grpc_slow: { backends: ["127.0.0.1:${plain.port}"], protocol: h2c, timeouts: { response: 200ms } }
  grpc_checked:
    backends: ["127.0.0.1:${plain.port}"]
    protocol: h2c
    health: { type: grpc, interval: 100ms, timeout: 1s, rise: 1, fall: 1 }
  grpc_reset: { backends: ["127.0.0.1:${(resetter.address() as net.AddressInfo).port}"], protocol: h2c, retries: 0 }
  grpc:
    backends: ["127.0.0.1:${plain.port}"]
    protocol: h2c
  grpc_tls:
    backends: ["127.0.0.1:${secure.port}"]
    protocol: h2
    tls: { ca: ${pki.ca.certPath}, servername: grpc.internal }
access_log: { enabled: false }
`)
})

after(async () => {
  dead?.close()
  await pc?.close()
  await plain?.close()
  await secure?.close()
  resetter?.close()
  await pki?.close()
})

for (const [label, servername, backend] of [
  ["h2c", "localhost", () => plain],
  ["h2 over TLS", "secure.test", () => secure],
] as const) {
  describe(`gRPC to a ${label} backend`, () => {
    test("unary: the reply, initial and trailing metadata, request metadata reaching the server", async () => {
      const client = echoClient(pc.port(), pki.ca.cert, servername)
      try {
        const metadata = new grpc.Metadata()
        metadata.set("x-request", "hello")
        const { reply, initial, trailing } = await unary(client, { text: "hi" }, { metadata })
        assert.equal(reply.text, "echo:hi")
        assert.deepEqual(initial?.get("x-initial"), ["yes"])
        assert.deepEqual(trailing?.get("x-trailing"), ["done"])
        assert.deepEqual(backend().lastMetadata()?.get("x-request"), ["hello"])
      } finally {
        client.close()
      }
    })

    test("server streaming: every message in order, then the status", async () => {
      const client = echoClient(pc.port(), pki.ca.cert, servername)
      try {
        const got: Msg[] = []
        await new Promise<void>((resolve, reject) => {
          const call = client.ServerStream({ text: "s", count: 50 })
          call.on("data", (m: Msg) => got.push(m))
          call.on("error", reject)
          call.on("status", (s: grpc.StatusObject) => (s.code === grpc.status.OK ? resolve() : reject(s)))
        })
        assert.equal(got.length, 50)
        assert.deepEqual(
          got.map((m) => m.text),
          Array.from({ length: 50 }, (_, i) => `s#${i}`),
        )
      } finally {
        client.close()
      }
    })

    test("client streaming: the server sees every message", async () => {
      const client = echoClient(pc.port(), pki.ca.cert, servername)
      try {
        const reply = await new Promise<Msg>((resolve, reject) => {
          const call = client.ClientStream((err: Error | null, m: Msg) => (err ? reject(err) : resolve(m)))
          for (let i = 0; i < 20; i++) call.write({ text: String(i % 10) })
          call.end()
        })
        assert.equal(reply.count, 20)
        assert.equal(reply.text, "01234567890123456789")
      } finally {
        client.close()
      }
    })

    test("bidi streaming: each message answered on the same call", async () => {
      const client = echoClient(pc.port(), pki.ca.cert, servername)
      try {
        const call = client.Bidi()
        const got: Msg[] = []
        const ended = new Promise<void>((resolve, reject) => {
          call.on("data", (m: Msg) => {
            got.push(m)
            if (got.length < 10) call.write({ text: `m${got.length}`, count: got.length })
            else call.end()
          })
          call.on("error", reject)
          call.on("status", (s: grpc.StatusObject) => (s.code === grpc.status.OK ? resolve() : reject(s)))
        })
        call.write({ text: "m0", count: 0 })
        await ended
        assert.equal(got.length, 10)
        assert.equal(got[9]!.text, "echo:m9")
      } finally {
        client.close()
      }
    })

    test("a 10 MiB message each way arrives whole", async () => {
      const client = echoClient(pc.port(), pki.ca.cert, servername)
      try {
        const data = randomBytes(10 * 1024 * 1024)
        const { reply } = await unary(client, { text: "big", data })
        assert.equal(reply.count, data.length)
        assert.ok(Buffer.from(reply.data!).equals(data))
      } finally {
        client.close()
      }
    })

    test("the backend's error status (a trailers-only response) reaches the client with its message", async () => {
      const client = echoClient(pc.port(), pki.ca.cert, servername)
      try {
        await assert.rejects(
          unary(client, { text: `fail:${grpc.status.PERMISSION_DENIED}` }),
          (err: grpc.ServiceError) => {
            assert.equal(err.code, grpc.status.PERMISSION_DENIED)
            assert.match(err.details, /failed as asked/)
            return true
          },
        )
      } finally {
        client.close()
      }
    })

    test("a deadline shorter than the backend's work ends the call with DEADLINE_EXCEEDED, and the backend sees the cancel", async () => {
      const client = echoClient(pc.port(), pki.ca.cert, servername)
      const before = backend().cancelled()
      try {
        await assert.rejects(unary(client, { text: "sleep:3000" }, { deadlineMs: 300 }), (err: grpc.ServiceError) => {
          assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED)
          return true
        })
        await waitUntil(() => backend().cancelled() > before, "the backend saw the call cancelled", 5_000)
      } finally {
        client.close()
      }
    })

    test("a call cancelled by the client is cancelled at the backend", async () => {
      const client = echoClient(pc.port(), pki.ca.cert, servername)
      const before = backend().cancelled()
      try {
        const call = client.Unary({ text: "sleep:5000" }, () => {})
        setTimeout(() => call.cancel(), 200)
        await waitUntil(() => backend().cancelled() > before, "the backend saw the call cancelled", 5_000)
      } finally {
        client.close()
      }
    })
  })
}

test("100 concurrent calls share a few backend connections", async () => {
  const client = echoClient(pc.port(), pki.ca.cert)
  try {
    const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => unary(client, { text: `c${i}` })))
    assert.equal(replies.length, 100)
    for (let i = 0; i < 100; i++) assert.equal(replies[i]!.reply.text, `echo:c${i}`)
    // Sessions per backend are capped at 4 (connector.ts H2_SESSIONS); the earlier tests' sessions count too.
    const open = established(plain.port)
    assert.ok(open >= 1 && open <= 4, `${open} connections to the backend for 100 concurrent calls`)
  } finally {
    client.close()
  }
})

describe("the proxy's own failures reach the gRPC client as gRPC statuses", () => {
  for (const [name, host, code] of [
    ["a backend that refuses the connection: UNAVAILABLE", "dead.test", grpc.status.UNAVAILABLE],
    ["a backend that resets the connection: UNAVAILABLE", "reset.test", grpc.status.UNAVAILABLE],
    ["a backend slower than timeouts.response: DEADLINE_EXCEEDED", "slow.test", grpc.status.DEADLINE_EXCEEDED],
  ] as const) {
    test(name, async () => {
      const client = echoClient(pc.port(), pki.ca.cert, host)
      try {
        await assert.rejects(unary(client, { text: "sleep:2000" }), (err: grpc.ServiceError) => {
          assert.equal(err.code, code, `${err.code} ${err.details}`)
          assert.match(err.details, /^50[234] /)
          return true
        })
      } finally {
        client.close()
      }
    })
  }

  test("no route for the method: UNIMPLEMENTED", async () => {
    // Only /echo.Echo/ is routed on this host; a client whose method path the router does not know gets 404 -> 12.
    const client = echoClient(pc.port(), pki.ca.cert, "localhost")
    try {
      await assert.rejects(
        new Promise((resolve, reject) =>
          client.makeUnaryRequest(
            "/other.Service/Method",
            (m: Buffer) => m,
            (b: Buffer) => b,
            Buffer.alloc(0),
            (err: Error | null, r: unknown) => (err ? reject(err) : resolve(r)),
          ),
        ),
        (err: grpc.ServiceError) => {
          assert.equal(err.code, grpc.status.UNIMPLEMENTED, `${err.code} ${err.details}`)
          return true
        },
      )
    } finally {
      client.close()
    }
  })

  test("grpc-timeout bounds the upstream wait: DEADLINE_EXCEEDED from the proxy before the backend answers", async () => {
    // A raw HTTP/2 client sends the deadline as grpc-timeout and keeps no deadline of its own, so what answers is
    // the proxy. The message is Unary{text:"sleep:3000"} in gRPC's length-prefixed framing.
    const text = Buffer.from("sleep:3000")
    const proto = Buffer.concat([Buffer.from([0x0a, text.length]), text])
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, proto.length]), proto])
    const session = http2.connect(`https://127.0.0.1:${pc.port()}`, { ca: pki.ca.cert, servername: "localhost" })
    try {
      const started = Date.now()
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": "/echo.Echo/Unary",
          "content-type": "application/grpc",
          te: "trailers",
          "grpc-timeout": "300m",
        })
        stream.on("response", resolve)
        stream.on("error", reject)
        stream.end(frame)
      })
      assert.equal(headers[":status"], 200)
      assert.equal(headers["grpc-status"], String(grpc.status.DEADLINE_EXCEEDED))
      assert.match(String(headers["grpc-message"]), /^504 /)
      const elapsed = Date.now() - started
      assert.ok(elapsed >= 250 && elapsed < 2_000, `answered after ${elapsed} ms`)
    } finally {
      session.close()
    }
  })
})

test("a gRPC health check (grpc.health.v1.Health/Check over h2c) takes a NOT_SERVING backend down and back up", async () => {
  const state = () => upstreamStatus(pc, "grpc_checked").backends[0]!.state
  assert.equal(state(), "up")
  const seen = plain.healthChecks()
  assert.ok(seen > 0, "the backend was asked")
  plain.setServing(false)
  try {
    await waitUntil(() => state() === "down", "NOT_SERVING takes the backend down", 5_000)
  } finally {
    plain.setServing(true)
  }
  await waitUntil(() => state() === "up", "SERVING brings it back", 5_000)
})
