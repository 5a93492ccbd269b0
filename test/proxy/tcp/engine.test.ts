/** The tcp engine end to end: redis-cli and curl through Portcullis to a real redis-server and nginx, SNI routing, half-close, idle timeout, failover. */
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import type tls from "node:tls"
import { curl, tlsConnect } from "../../helpers/clients.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import {
  type HeldPort,
  loopback,
  type RunningPortcullis,
  refusingPort,
  startPortcullis,
} from "../../helpers/portcullis.ts"
import { type ExternalServer, type NginxServer, startNginx, startRedis } from "../../helpers/servers.ts"
import { waitUntil } from "../../helpers/wait.ts"

interface RawBackend {
  port: number
  accepted: () => number
  close: () => Promise<void>
}

/** startRawBackend runs a half-open capable TCP server calling handler for each connection. */
async function startRawBackend(handler: (socket: net.Socket) => void): Promise<RawBackend> {
  const sockets = new Set<net.Socket>()
  let accepted = 0
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    accepted++
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    socket.on("error", () => {})
    handler(socket)
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise((r) => server.close(() => r()))
    },
  }
}

/** readAll collects what a socket sends until it ends (or closes), within a deadline. */
function readAll(socket: net.Socket | tls.TLSSocket, timeoutMs = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const timer = setTimeout(() => reject(new Error("readAll: no end within the deadline")), timeoutMs)
    socket.on("data", (c: Buffer) => chunks.push(c))
    const done = () => {
      clearTimeout(timer)
      resolve(Buffer.concat(chunks))
    }
    socket.once("end", done)
    socket.once("close", done)
    socket.once("error", (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

/** run executes a command with optional stdin, within a deadline. */
function run(
  command: string,
  args: string[],
  input?: Buffer,
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] })
    const out: Buffer[] = []
    let stderr = ""
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
    child.stdout.on("data", (c: Buffer) => out.push(c))
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString()
    })
    child.on("error", reject)
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout: Buffer.concat(out), stderr })
    })
    child.stdin.end(input)
  })
}

let pki: Pki
let redis: ExternalServer
let nginx: NginxServer
let alpha: RawBackend
let beta: RawBackend
let halfClose: RawBackend
let silent: RawBackend
let silentReceived = ""
let pc: RunningPortcullis
let dead: HeldPort

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "a.test", "b.test", "half.test", "idle.test", "fail.test"] })
  redis = await startRedis()
  nginx = await startNginx(`listen LISTEN; location / { return 200 "hello from nginx $request_uri\\n"; }`)
  // Each greets, and closes its side once the client has closed its own.
  alpha = await startRawBackend((s) => s.on("end", () => s.end()).write("alpha\n"))
  beta = await startRawBackend((s) => s.on("end", () => s.end()).write("beta\n"))
  // Reads until the client's FIN, then answers with the byte count and digest, then ends.
  halfClose = await startRawBackend((s) => {
    const hash = createHash("sha256")
    let n = 0
    s.on("data", (c: Buffer) => {
      n += c.length
      hash.update(c)
    })
    s.on("end", () => s.end(`${n} ${hash.digest("hex")}\n`))
  })
  // Greets, then keeps what it reads and never writes again: traffic moves once each way, then the line goes quiet.
  silent = await startRawBackend((s) => {
    s.write("idle\n")
    s.on("data", (c: Buffer) => {
      silentReceived += c.toString()
    })
  })
  dead = await refusingPort()
  const cert = `certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]`
  pc = await startPortcullis(`
listeners:
  - { name: redis, address: "${loopback(1)}:0", engine: tcp, tls: { ${cert} }, upstream: redis }
  - { name: nginx, address: "${loopback(2)}:0", engine: tcp, tls: { ${cert} }, upstream: nginx }
  - name: sni
    address: "${loopback(3)}:0"
    engine: tcp
    tls: { ${cert} }
    routes:
      - { hosts: [a.test], upstream: alpha }
      - { hosts: [b.test], upstream: beta }
      - { hosts: [half.test], upstream: half }
      - { hosts: [idle.test], upstream: silent }
      - { hosts: [fail.test], upstream: failover }
upstreams:
  redis: { backends: ["127.0.0.1:${redis.port}"] }
  nginx: { backends: ["127.0.0.1:${nginx.port}"] }
  alpha: { backends: ["127.0.0.1:${alpha.port}"] }
  beta: { backends: ["127.0.0.1:${beta.port}"] }
  half: { backends: ["127.0.0.1:${halfClose.port}"] }
  silent: { backends: ["127.0.0.1:${silent.port}"], timeouts: { idle: 300ms } }
  failover:
    backends: ["127.0.0.1:${dead.port}", "127.0.0.1:${alpha.port}"]
    balance: round_robin
    retries: 1
    passive: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await Promise.all([
    redis?.close(),
    nginx?.close(),
    alpha?.close(),
    beta?.close(),
    halfClose?.close(),
    silent?.close(),
  ])
  dead?.close()
  await pki?.close()
})

function redisCli(args: string[], input?: Buffer) {
  const base = ["--tls", "--cacert", pki.ca.certPath, "--sni", "localhost", "-h", pc.host("redis"), "-p"]
  return run("redis-cli", [...base, String(pc.port("redis")), ...args], input)
}

describe("redis-cli --tls through a tcp listener to a plain redis-server", () => {
  test("PING answers PONG", async () => {
    const r = await redisCli(["PING"])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout.toString().trim(), "PONG")
  })

  test("SET then GET of a 1 MiB value comes back byte for byte", async () => {
    const value = randomBytes(512 * 1024).toString("hex") // 1 MiB of text
    const set = await redisCli(["-x", "SET", "big"], Buffer.from(value))
    assert.equal(set.code, 0, set.stderr)
    assert.equal(set.stdout.toString().trim(), "OK")
    const get = await redisCli(["--no-raw", "STRLEN", "big"])
    assert.equal(get.stdout.toString().trim(), "(integer) 1048576")
    const back = await redisCli(["--raw", "GET", "big"])
    assert.equal(back.code, 0, back.stderr)
    // redis-cli --raw prints the value and a newline
    assert.equal(back.stdout.length, value.length + 1)
    assert.ok(back.stdout.subarray(0, value.length).equals(Buffer.from(value)), "the value came back unchanged")
  })
})

describe("curl (HTTP/1.1) through a tcp listener to a plain nginx", () => {
  test("nginx answers the request curl sent through the TLS tunnel", async () => {
    const port = pc.port("nginx")
    const r = await curl([
      "--http1.1",
      "--cacert",
      pki.ca.certPath,
      "--resolve",
      `localhost:${port}:${pc.host("nginx")}`,
      `https://localhost:${port}/through-portcullis`,
    ])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, "hello from nginx /through-portcullis\n")
    await waitUntil(() => nginx.logLines().some((l) => l.endsWith(" /through-portcullis")), "nginx logged it")
  })

  test("keep-alive: two requests on one connection both reach nginx", async () => {
    const port = pc.port("nginx")
    const url = `https://localhost:${port}`
    const r = await curl([
      "--http1.1",
      "--cacert",
      pki.ca.certPath,
      "--resolve",
      `localhost:${port}:${pc.host("nginx")}`,
      `${url}/one`,
      `${url}/two`,
    ])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, "hello from nginx /one\nhello from nginx /two\n")
  })
})

describe("SNI routing on one tcp listener", () => {
  for (const [name, banner] of [
    ["a.test", "alpha\n"],
    ["b.test", "beta\n"],
  ] as const) {
    test(`SNI ${name} reaches its own upstream`, async () => {
      const socket = await tlsConnect({ host: pc.host("sni"), port: pc.port("sni"), servername: name, ca: pki.ca.cert })
      const got = await new Promise<string>((resolve) => socket.once("data", (c: Buffer) => resolve(c.toString())))
      socket.destroy()
      assert.equal(got, banner)
    })
  }

  test("an SNI no route takes is closed after the handshake", async () => {
    const socket = await tlsConnect({
      host: pc.host("sni"),
      port: pc.port("sni"),
      servername: "localhost",
      ca: pki.ca.cert,
    })
    const got = await readAll(socket)
    assert.equal(got.length, 0)
  })
})

describe("half-close through the full proxy", () => {
  test("a client that ends its write side still gets the whole reply", async () => {
    const socket = await tlsConnect({
      host: pc.host("sni"),
      port: pc.port("sni"),
      servername: "half.test",
      ca: pki.ca.cert,
      allowHalfOpen: true,
    } as tls.ConnectionOptions)
    const data = randomBytes(3 * 1024 * 1024 + 17)
    const reply = readAll(socket)
    socket.end(data)
    const text = (await reply).toString()
    socket.destroy()
    assert.equal(text, `${data.length} ${createHash("sha256").update(data).digest("hex")}\n`)
  })
})

describe("idle timeout", () => {
  test("a connection with no traffic either way is closed after the upstream's idle timeout", async () => {
    const accepted = silent.accepted()
    const socket = await tlsConnect({
      host: pc.host("sni"),
      port: pc.port("sni"),
      servername: "idle.test",
      ca: pki.ca.cert,
    })
    const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(performance.now())))
    const greeting = await new Promise<string>((resolve, reject) => {
      socket.once("data", (c: Buffer) => resolve(c.toString()))
      socket.once("close", () => reject(new Error("closed before the backend's greeting")))
    })
    assert.equal(greeting, "idle\n", "the backend was reached and its bytes came through")
    socket.write("ping\n")
    // The last byte moves now: the idle timer restarts at the latest when the proxy reads it.
    const lastTraffic = performance.now()
    await waitUntil(() => silentReceived.endsWith("ping\n"), "the client's bytes reached the backend")
    assert.equal(silent.accepted() - accepted, 1)
    const elapsed = (await closed) - lastTraffic
    // idle is 300 ms; 20 ms of margin for timer and clock granularity (Node timers never fire early).
    assert.ok(elapsed >= 280, `closed ${elapsed.toFixed(0)} ms after the last traffic, before the 300 ms idle timeout`)
    assert.ok(elapsed < 5000, `closed only after ${elapsed.toFixed(0)} ms`)
    socket.destroy()
  })
})

describe("connect failover", () => {
  test("a refused backend is skipped: every connection reaches the live one", async () => {
    const before = alpha.accepted()
    for (let i = 0; i < 4; i++) {
      const socket = await tlsConnect({
        host: pc.host("sni"),
        port: pc.port("sni"),
        servername: "fail.test",
        ca: pki.ca.cert,
      })
      const got = await new Promise<string>((resolve, reject) => {
        socket.once("data", (c: Buffer) => resolve(c.toString()))
        socket.once("close", () => reject(new Error(`connection ${i} closed without the banner`)))
      })
      socket.destroy()
      assert.equal(got, "alpha\n")
    }
    assert.equal(alpha.accepted() - before, 4)
  })
})

describe("no connection is left behind", () => {
  test("every tcp connection above is closed on both sides once its client and backend are done", async () => {
    await waitUntil(
      () => pc.runtime.status().listeners.every((l) => l.connections === 0),
      "all tcp listeners have no open connection",
    )
  })
})

describe("shutdown", () => {
  test("close ends a half-open tcp connection after the grace time, not after the idle timeout", async () => {
    // A backend that greets and never closes: the connection stays half-open once the client has sent its FIN.
    const sticky = await startRawBackend((s) => s.write("hi\n"))
    const site = await pki.issue({ names: ["localhost"] })
    const own = await startPortcullis(`
listeners:
  - name: t
    address: "127.0.0.1:0"
    engine: tcp
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: sticky
upstreams:
  sticky: { backends: ["127.0.0.1:${sticky.port}"], timeouts: { idle: 10m } }
`)
    try {
      const socket = await tlsConnect({ port: own.port("t"), servername: "localhost", ca: pki.ca.cert })
      await new Promise((r) => socket.once("data", r))
      const closed = new Promise((r) => socket.once("close", r))
      socket.end()
      await waitUntil(() => own.runtime.status().listeners[0]!.connections === 1, "the half-open connection is open")
      let done = false
      const closing = own.close().then(() => {
        done = true
      })
      // close(200) in the helper: the grace is 200 ms; the 10 s bound only keeps a failure from hanging.
      await waitUntil(() => done, "Runtime.close returned", 10_000)
      await closing
      await closed
    } finally {
      // The backend first: with its side gone the pipe ends, so this cleanup cannot hang even when the test failed.
      await sticky.close()
      await own.close()
    }
  })
})
