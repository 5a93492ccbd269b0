/**
 * Replaced generations are let go (issue 14): after reloads with HTTP/1.1 keep-alive, HTTP/2 and tcp traffic on
 * connections that span them, once the clients leave and the old generations have drained, a full garbage collection
 * leaves only the serving generation alive (counted with a FinalizationRegistry), so a reload every minute cannot
 * pile up contexts, pools and engines. A guard: no retention was found (the soak's RSS growth was V8's young
 * generation growing to its cap, see bench/soak.ts); a Generation kept by the runtime, a timer or a closure fails it.
 */
import assert from "node:assert/strict"
import http2 from "node:http2"
import https from "node:https"
import net from "node:net"
import { after, before, test } from "node:test"
import tls from "node:tls"
import v8 from "node:v8"
import vm from "node:vm"
import type { Generation } from "../../src/runtime.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { loopback, type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

const RELOADS = 20

let pki: Pki
let backend: TestBackend
let echo: net.Server
let pc: RunningPortcullis

const yaml = (cert: { certPath: string; keyPath: string }, n: number) => `
listeners:
  - name: web
    address: "${loopback(1)}:0"
    tls: { certificates: [{ cert: ${cert.certPath}, key: ${cert.keyPath} }] }
    routes: [{ path_prefix: /v${n}, upstream: app }, { upstream: app }]
  - name: raw
    engine: tcp
    address: "${loopback(2)}:0"
    tls: { certificates: [{ cert: ${cert.certPath}, key: ${cert.keyPath} }] }
    upstream: echo
upstreams:
  app: { backends: ["127.0.0.1:${backend.port}"], retries: ${1 + (n % 2)} }
  echo: { backends: ["127.0.0.1:${(echo.address() as net.AddressInfo).port}"] }
access_log: { enabled: false }
shutdown_grace: 5s
`

before(async () => {
  pki = await createPki()
  backend = await startEchoBackend("app")
  echo = net.createServer((s) => {
    s.on("error", () => {})
    s.pipe(s)
  })
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r))
})

after(async () => {
  await pc?.close()
  await backend?.close()
  echo?.close()
  await pki?.close()
})

function h1(agent: https.Agent, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    https
      .get({ host: loopback(1), port, path: "/", servername: "localhost", ca: pki.ca.cert, agent }, (res) => {
        res.resume()
        res.on("end", () => resolve(res.statusCode ?? 0))
      })
      .on("error", reject)
  })
}

function h2(session: http2.ClientHttp2Session): Promise<number> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":path": "/", ":authority": "localhost" })
    let status = 0
    stream.on("response", (h) => {
      status = Number(h[":status"])
    })
    stream.resume()
    stream.on("end", () => resolve(status))
    stream.on("error", reject)
    stream.end()
  })
}

function tcpEcho(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: loopback(2), port, servername: "localhost", ca: pki.ca.cert }, () =>
      socket.write("ping"),
    )
    socket.setEncoding("utf8")
    socket.once("data", (d: string) => {
      socket.destroy()
      resolve(d)
    })
    socket.on("error", reject)
  })
}

test(`after ${RELOADS} reloads under h1, h2 and tcp traffic, only the serving generation stays alive`, async () => {
  v8.setFlagsFromString("--expose-gc")
  const gc = vm.runInNewContext("gc") as () => void
  const cert = await pki.issue({ names: ["localhost"] })
  pc = await startPortcullis(yaml(cert, 0))
  const alive = new Set<number>()
  const registry = new FinalizationRegistry<number>((id) => alive.delete(id))
  const track = (gen: Generation | undefined) => {
    assert.ok(gen)
    alive.add(gen.id)
    registry.register(gen, gen.id)
  }
  track(pc.runtime.generation)
  const agent = new https.Agent({ keepAlive: true, maxSockets: 2 })
  let session: http2.ClientHttp2Session | undefined
  const h2Session = () => {
    if (!session || session.closed || session.destroyed) {
      session = http2.connect(`https://${loopback(1)}:${pc.port("web")}`, { servername: "localhost", ca: pki.ca.cert })
      session.on("error", () => {})
    }
    return session
  }
  try {
    for (let n = 1; n <= RELOADS; n++) {
      // The keep-alive socket and the h2 session of the generation before are used once more on the new one's watch.
      assert.equal(await h1(agent, pc.port("web")), 200)
      // A session the last reload sent GOAWAY refuses new streams: one more try on a new session, as clients do.
      const status = await h2(h2Session()).catch(() => {
        session = undefined
        return h2(h2Session())
      })
      assert.equal(status, 200)
      assert.equal(await tcpEcho(pc.port("raw")), "ping")
      await pc.reload(yaml(cert, n))
      track(pc.runtime.generation)
    }
  } finally {
    agent.destroy()
    session?.destroy()
  }
  await waitUntil(() => pc.runtime.drainingGenerations === 0, "the replaced generations finished draining")
  // Finalizers run after a collection, on a later turn: collect and yield until only one is left (bounded).
  for (let i = 0; i < 50 && alive.size > 1; i++) {
    gc()
    await new Promise((r) => setImmediate(r))
  }
  assert.deepEqual([...alive], [pc.runtime.generation!.id], `generations still alive: ${[...alive].join(", ")}`)
})
