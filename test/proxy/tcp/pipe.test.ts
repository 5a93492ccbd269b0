/** pipeConnection on real sockets: echo, PROXY header first, 50 MiB with a slow reader, half-close, failover, idle timeout, resets. */
import assert from "node:assert/strict"
import { createHash, randomBytes } from "node:crypto"
import net from "node:net"
import { describe, type TestContext, test } from "node:test"
import tls from "node:tls"
import { encodeProxyV1 } from "../../../src/protocols/proxy-protocol/encode.ts"
import { BACKEND_ONREAD, type BackendConnection, type PipeStats, pipeConnection } from "../../../src/proxy/tcp/pipe.ts"
import { waitFor, withDeadline } from "../../listeners/proxy-protocol/harness.ts"
import { makeOpensslPki } from "../../listeners/proxy-protocol/openssl-pki.ts"

interface Backend {
  port: number
  sockets: net.Socket[]
}

/** startBackend runs a half-open capable TCP server with handler for each connection (closed in t.after). */
async function startBackend(t: TestContext, handler: (socket: net.Socket) => void): Promise<Backend> {
  const sockets: net.Socket[] = []
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.push(socket)
    socket.on("error", () => {})
    handler(socket)
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  t.after(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return { port: (server.address() as net.AddressInfo).port, sockets }
}

/** echo sends every byte back and ends when the client does. */
const echo = (socket: net.Socket) => socket.pipe(socket)

/** refusedPort is a loopback port nobody listens on. */
function refusedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo
      s.close(() => resolve(port))
    })
  })
}

interface PipeServer {
  port: number
  attempts: number[]
  /** The proxy's side of each client connection and each backend connection it opened. */
  clientSides: net.Socket[]
  backendSides: net.Socket[]
  releases: (Error | undefined)[]
  closes: PipeStats[]
  /** closed resolves with the stats of the first connection. */
  closed: () => Promise<PipeStats>
}

interface PipeServerOptions {
  ports: (attempt: number) => number
  header?: Buffer
  idleTimeoutMs?: number
  maxAttempts?: number
  tls?: { cert: string; key: string }
  /** Backend sockets read into BACKEND_ONREAD's shared buffer, as the tcp engine's plain ones do. */
  sharedReadBuffer?: boolean
  /** Hand the connected backend socket to the pipe this much later (bytes it receives meanwhile must wait). */
  connectDelayMs?: number
}

/** startPipe listens on 127.0.0.1:0 (TLS when asked) and pipes every connection to the backend ports(attempt) names. */
async function startPipe(t: TestContext, options: PipeServerOptions): Promise<PipeServer> {
  const state: PipeServer = {
    port: 0,
    attempts: [],
    clientSides: [],
    backendSides: [],
    releases: [],
    closes: [],
    closed: () => withDeadline(firstClose, 10_000, "the pipe reported its close"),
  }
  let reportClose: (s: PipeStats) => void = () => {}
  const firstClose = new Promise<PipeStats>((r) => {
    reportClose = r
  })
  const connect = (attempt: number) =>
    new Promise<BackendConnection>((resolve, reject) => {
      state.attempts.push(attempt)
      const socket = net.connect({
        port: options.ports(attempt),
        host: "127.0.0.1",
        noDelay: true,
        ...(options.sharedReadBuffer && { onread: BACKEND_ONREAD }),
      })
      socket.once("error", reject)
      socket.once("connect", () => {
        socket.removeListener("error", reject)
        state.backendSides.push(socket)
        const conn = { socket, release: (err?: Error) => state.releases.push(err) }
        if (options.connectDelayMs) setTimeout(resolve, options.connectDelayMs, conn)
        else resolve(conn)
      })
    })
  const onSocket = (socket: net.Socket) => {
    state.clientSides.push(socket)
    pipeConnection(socket, {
      connect,
      idleTimeoutMs: options.idleTimeoutMs ?? 10_000,
      maxAttempts: options.maxAttempts ?? 1,
      ...(options.header && { header: options.header }),
      onClose: (stats) => {
        state.closes.push(stats)
        reportClose(stats)
      },
    })
  }
  const server = options.tls
    ? tls.createServer({ cert: options.tls.cert, key: options.tls.key }, onSocket)
    : net.createServer(onSocket)
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  t.after(() => {
    for (const s of [...state.clientSides, ...state.backendSides]) s.destroy()
    server.close()
  })
  state.port = (server.address() as net.AddressInfo).port
  return state
}

/** dial opens a plain client connection (destroyed in t.after) and collects what it reads. */
async function dial(
  t: TestContext,
  port: number,
): Promise<{ socket: net.Socket; received: () => Buffer; ended: Promise<void>; closed: Promise<void> }> {
  const socket = net.connect({ port, host: "127.0.0.1", noDelay: true, allowHalfOpen: true })
  return track(t, socket, "connect")
}

async function track(t: TestContext, socket: net.Socket, ready: string) {
  const chunks: Buffer[] = []
  socket.on("data", (c: Buffer) => chunks.push(c))
  socket.on("error", () => {})
  t.after(() => socket.destroy())
  const ended = new Promise<void>((r) => socket.once("end", r))
  const closed = new Promise<void>((r) => socket.once("close", () => r()))
  await withDeadline(new Promise((r) => socket.once(ready, r)), 5000, `client ${ready}`)
  return { socket, received: () => Buffer.concat(chunks), ended, closed }
}

const MiB = 1024 * 1024
const TOTAL = 50 * MiB

/**
 * bulkToSlowReader: 50 MiB from the backend to a client that stops for 10 ms after every MiB, checked by hash.
 * shared: the backend socket reads into BACKEND_ONREAD's shared buffer (as the tcp engine's are); tls: the client
 * side is TLS (where the pipe hands views of that buffer to the TLS layer without a copy).
 */
async function bulkToSlowReader(t: TestContext, mode: { shared: boolean; tls: boolean }): Promise<void> {
  const block = randomBytes(64 * 1024)
  const sentHash = createHash("sha256")
  for (let i = 0; i < TOTAL / block.length; i++) sentHash.update(block)
  const backend = await startBackend(t, (socket) => {
    // The backend honours its own backpressure too, so only the pipe can hold bytes in memory.
    let sent = 0
    const pump = () => {
      while (sent < TOTAL) {
        sent += block.length
        if (!socket.write(block)) return
      }
      socket.end()
    }
    socket.on("drain", pump)
    pump()
  })
  const pki = mode.tls ? makeOpensslPki() : undefined
  if (pki) t.after(pki.close)
  const pipe = await startPipe(t, {
    ports: () => backend.port,
    sharedReadBuffer: mode.shared,
    ...(pki && { tls: { cert: pki.serverCert, key: pki.serverKey } }),
  })
  const client = pki
    ? tls.connect({ port: pipe.port, host: "127.0.0.1", servername: "localhost", ca: pki.ca })
    : net.connect({ port: pipe.port, host: "127.0.0.1" })
  client.on("error", () => {})
  t.after(() => client.destroy())
  let pauses = 0
  let maxBuffered = 0
  await waitFor(() => pipe.backendSides.length === 1 && pipe.clientSides.length === 1, "the pipe connected")
  const backendSide = pipe.backendSides[0]!
  const clientSide = pipe.clientSides[0]!
  backendSide.on("pause", () => pauses++)
  const sample = setInterval(() => {
    maxBuffered = Math.max(maxBuffered, clientSide.writableLength + backendSide.readableLength)
  }, 1)
  t.after(() => clearInterval(sample))
  const receivedHash = createHash("sha256")
  let received = 0
  let nextBreak = MiB
  const done = new Promise<void>((resolve) => {
    client.on("data", (chunk: Buffer) => {
      receivedHash.update(chunk)
      received += chunk.length
      if (received >= nextBreak) {
        // The slow reader: stop for 10 ms after every MiB.
        nextBreak += MiB
        client.pause()
        setTimeout(() => client.resume(), 10)
      }
    })
    client.on("end", resolve)
  })
  await withDeadline(done, 60_000, "the client received everything")
  clearInterval(sample)
  assert.equal(received, TOTAL)
  assert.equal(receivedHash.digest("hex"), sentHash.digest("hex"))
  assert.ok(pauses > 0, "the pipe paused the backend")
  assert.ok(maxBuffered < 4 * MiB, `the pipe buffered up to ${(maxBuffered / MiB).toFixed(1)} MiB`)
  client.end()
  const stats = await pipe.closed()
  assert.equal(stats.bytesOut, TOTAL)
}

describe("pipeConnection", () => {
  test("echoes bytes through the pipe and reports byte counts once", async (t) => {
    const backend = await startBackend(t, echo)
    const pipe = await startPipe(t, { ports: () => backend.port })
    const client = await dial(t, pipe.port)
    client.socket.write("hello")
    await waitFor(() => client.received().length >= 5, "the echo came back")
    assert.equal(client.received().toString(), "hello")
    client.socket.end()
    const stats = await pipe.closed()
    assert.deepEqual(stats, { bytesIn: 5, bytesOut: 5 })
    await withDeadline(client.closed, 5000, "the client closed")
    assert.equal(pipe.closes.length, 1)
    assert.deepEqual(pipe.releases, [undefined])
  })

  test("writes the PROXY header before the client's first byte", async (t) => {
    const backend = await startBackend(t, echo)
    const header = encodeProxyV1({
      source: { address: "203.0.113.7", port: 4242 },
      destination: { address: "127.0.0.1", port: 443 },
    })
    const pipe = await startPipe(t, { ports: () => backend.port, header })
    const client = await dial(t, pipe.port)
    client.socket.end("payload")
    await withDeadline(client.ended, 5000, "the backend's echo ended")
    assert.equal(client.received().toString(), `${header.toString()}payload`)
    const stats = await pipe.closed()
    assert.equal(stats.bytesIn, 7, "the header is not counted as client bytes")
  })

  for (const mode of [
    { shared: false, tls: false },
    { shared: true, tls: false },
    { shared: true, tls: true },
  ]) {
    const how = `${mode.tls ? "a TLS" : "a plain"} client${mode.shared ? ", shared read buffer" : ""}`
    test(`moves 50 MiB from the backend to a slow reader with bounded buffering (backpressure pauses the backend; ${how})`, (t) =>
      bulkToSlowReader(t, mode))
  }

  test("a backend reading into the shared buffer may speak first, before the pipe takes its socket", async (t) => {
    const backend = await startBackend(t, (socket) => socket.end("220 hello\r\n"))
    const pipe = await startPipe(t, { ports: () => backend.port, sharedReadBuffer: true, connectDelayMs: 50 })
    const client = await dial(t, pipe.port)
    await withDeadline(client.ended, 5000, "the greeting arrived")
    assert.equal(client.received().toString(), "220 hello\r\n")
  })

  test("moves 50 MiB from the client to a slow backend with bounded buffering (backpressure pauses the client)", async (t) => {
    const block = randomBytes(64 * 1024)
    let backendReceived = 0
    const backendHash = createHash("sha256")
    const backend = await startBackend(t, (socket) => {
      let nextBreak = MiB
      socket.on("data", (chunk: Buffer) => {
        backendHash.update(chunk)
        backendReceived += chunk.length
        if (backendReceived >= nextBreak) {
          nextBreak += MiB
          socket.pause()
          setTimeout(() => socket.resume(), 10)
        }
      })
      socket.on("end", () => socket.end("done"))
    })
    const pipe = await startPipe(t, { ports: () => backend.port })
    const client = await dial(t, pipe.port)
    await waitFor(() => pipe.backendSides.length === 1, "the pipe connected")
    const backendSide = pipe.backendSides[0]!
    const clientSide = pipe.clientSides[0]!
    let pauses = 0
    let maxBuffered = 0
    clientSide.on("pause", () => pauses++)
    const sample = setInterval(() => {
      maxBuffered = Math.max(maxBuffered, backendSide.writableLength + clientSide.readableLength)
    }, 1)
    t.after(() => clearInterval(sample))
    const sentHash = createHash("sha256")
    let sent = 0
    await withDeadline(
      new Promise<void>((resolve) => {
        const pump = () => {
          while (sent < TOTAL) {
            sent += block.length
            sentHash.update(block)
            if (!client.socket.write(block)) return
          }
          client.socket.removeListener("drain", pump)
          client.socket.end()
          resolve()
        }
        client.socket.on("drain", pump)
        pump()
      }),
      60_000,
      "the client wrote everything",
    )
    await withDeadline(client.ended, 60_000, "the backend answered after the client's end")
    clearInterval(sample)
    assert.equal(client.received().toString(), "done")
    assert.equal(backendReceived, TOTAL)
    assert.equal(backendHash.digest("hex"), sentHash.digest("hex"))
    assert.ok(pauses > 0, "the pipe paused the client")
    assert.ok(maxBuffered < 4 * MiB, `the pipe buffered up to ${(maxBuffered / MiB).toFixed(1)} MiB`)
  })

  /** A backend that reads until the client's FIN, then replies and ends: only works if half-close is carried. */
  const replyAfterEnd = (socket: net.Socket) => {
    let n = 0
    socket.on("data", (c: Buffer) => {
      n += c.length
    })
    socket.on("end", () => socket.end(`got ${n} bytes`))
  }

  test("half-close: a plain client ends its side and still receives the backend's reply", async (t) => {
    const backend = await startBackend(t, replyAfterEnd)
    const pipe = await startPipe(t, { ports: () => backend.port })
    const client = await dial(t, pipe.port)
    client.socket.end("abc")
    await withDeadline(client.ended, 5000, "the reply ended")
    assert.equal(client.received().toString(), "got 3 bytes")
    const stats = await pipe.closed()
    assert.deepEqual(stats, { bytesIn: 3, bytesOut: 11 })
  })

  test("half-close: the backend ends first and the client can still send", async (t) => {
    const backend = await startBackend(t, (socket) => {
      socket.end("bye first\n")
      let n = 0
      socket.on("data", (c: Buffer) => {
        n += c.length
      })
      socket.on("end", () => backendGot.push(n))
    })
    const backendGot: number[] = []
    const pipe = await startPipe(t, { ports: () => backend.port })
    const client = await dial(t, pipe.port)
    await withDeadline(client.ended, 5000, "the backend's FIN reached the client")
    assert.equal(client.received().toString(), "bye first\n")
    client.socket.end("still talking")
    await waitFor(() => backendGot.length === 1, "the backend read to its end")
    assert.deepEqual(backendGot, [13])
    await pipe.closed()
  })

  test("half-close over TLS: the client sends close_notify and still receives the backend's reply", async (t) => {
    const pki = makeOpensslPki()
    t.after(pki.close)
    const backend = await startBackend(t, replyAfterEnd)
    const pipe = await startPipe(t, { ports: () => backend.port, tls: { cert: pki.serverCert, key: pki.serverKey } })
    for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
      const socket = tls.connect({
        port: pipe.port,
        host: "127.0.0.1",
        servername: "localhost",
        ca: pki.ca,
        maxVersion,
      })
      const client = await track(t, socket, "secureConnect")
      socket.end("four")
      await withDeadline(client.ended, 5000, `the reply ended (${maxVersion})`)
      assert.equal(client.received().toString(), "got 4 bytes", maxVersion)
    }
  })

  test("fails over to the next backend when the first refuses", async (t) => {
    const refused = await refusedPort()
    const backend = await startBackend(t, echo)
    const pipe = await startPipe(t, { ports: (attempt) => (attempt === 1 ? refused : backend.port), maxAttempts: 2 })
    const client = await dial(t, pipe.port)
    client.socket.end("failover")
    await withDeadline(client.ended, 5000, "the echo ended")
    assert.equal(client.received().toString(), "failover")
    assert.deepEqual(pipe.attempts, [1, 2])
    const stats = await pipe.closed()
    assert.equal(stats.error, undefined)
  })

  test("closes the client with the last error when every attempt is refused", async (t) => {
    const refused = await refusedPort()
    const pipe = await startPipe(t, { ports: () => refused, maxAttempts: 3 })
    const client = await dial(t, pipe.port)
    client.socket.write("nobody home")
    await withDeadline(Promise.race([client.ended, client.closed]), 5000, "the client was closed")
    const stats = await pipe.closed()
    assert.deepEqual(pipe.attempts, [1, 2, 3])
    assert.equal((stats.error as NodeJS.ErrnoException | undefined)?.code, "ECONNREFUSED")
    assert.equal(stats.bytesIn, 0)
  })

  test("closes an idle connection after idleTimeoutMs", async (t) => {
    const backend = await startBackend(t, echo)
    const pipe = await startPipe(t, { ports: () => backend.port, idleTimeoutMs: 150 })
    const client = await dial(t, pipe.port)
    client.socket.write("x")
    await waitFor(() => client.received().length === 1, "the echo came back")
    const quietSince = Date.now()
    await withDeadline(Promise.race([client.ended, client.closed]), 5000, "the idle client was closed")
    assert.ok(Date.now() - quietSince >= 100, "not closed early")
    const stats = await pipe.closed()
    assert.equal((stats.error as { code?: string } | undefined)?.code, "PC_TCP_IDLE_TIMEOUT")
    await waitFor(() => backend.sockets[0]?.destroyed === true, "the backend connection was closed too")
  })

  test("traffic keeps a connection open past idleTimeoutMs", async (t) => {
    const backend = await startBackend(t, echo)
    const pipe = await startPipe(t, { ports: () => backend.port, idleTimeoutMs: 300 })
    const client = await dial(t, pipe.port)
    const started = Date.now()
    // One byte every 50 ms for 750 ms: never 300 ms quiet.
    for (let i = 1; i <= 15; i++) {
      client.socket.write("y")
      await waitFor(() => client.received().length === i, `echo ${i}`)
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.ok(Date.now() - started > 600)
    assert.equal(client.socket.destroyed, false)
    assert.equal(pipe.closes.length, 0)
    client.socket.end()
    const stats = await pipe.closed()
    assert.equal(stats.error, undefined)
  })

  test("a backend reset closes the client and releases the backend with the error", async (t) => {
    const backend = await startBackend(t, (socket) => socket.once("data", () => socket.resetAndDestroy()))
    const pipe = await startPipe(t, { ports: () => backend.port })
    const client = await dial(t, pipe.port)
    client.socket.write("boom")
    await withDeadline(Promise.race([client.ended, client.closed]), 5000, "the client was closed")
    const stats = await pipe.closed()
    assert.equal((stats.error as { source?: string } | undefined)?.source, "backend")
    assert.equal(pipe.releases.length, 1)
    assert.equal((pipe.releases[0] as NodeJS.ErrnoException | undefined)?.code, "ECONNRESET")
  })

  test("a client reset closes the backend connection", async (t) => {
    const backend = await startBackend(t, echo)
    const pipe = await startPipe(t, { ports: () => backend.port })
    const client = await dial(t, pipe.port)
    client.socket.write("z")
    await waitFor(() => client.received().length === 1, "the echo came back")
    client.socket.resetAndDestroy()
    const stats = await pipe.closed()
    assert.equal((stats.error as { source?: string } | undefined)?.source, "client")
    await waitFor(() => backend.sockets[0]?.destroyed === true, "the backend connection was closed")
    assert.equal(pipe.closes.length, 1)
  })
})
