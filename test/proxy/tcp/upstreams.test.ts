/** The tcp engine and its upstream, as `mode tcp` users expect: passive ejection, drain, max_connections, in-flight counts, hashing on the client address. */
import assert from "node:assert/strict"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import type tls from "node:tls"
import { tlsConnect } from "../../helpers/clients.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { loopback } from "../../helpers/portcullis.ts"
import { type LoggedPortcullis, startLoggedPortcullis } from "../../helpers/servers.ts"
import { waitUntil } from "../../helpers/wait.ts"
import { upstreamStatus } from "../../upstreams/harness.ts"

interface BannerBackend {
  name: string
  port: number
  id: string
  /** Connections accepted so far. */
  accepted: () => number
  /** Connections open now. */
  open: () => number
  /** kill stops listening and resets every open connection, like a crashed process. */
  kill: () => Promise<void>
}

/** startBannerBackend greets each connection with "NAME\n" and echoes what it is sent. */
async function startBannerBackend(name: string): Promise<BannerBackend> {
  const sockets = new Set<net.Socket>()
  let accepted = 0
  const server = net.createServer((socket) => {
    accepted++
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    socket.on("error", () => {})
    socket.write(`${name}\n`)
    socket.pipe(socket)
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  const port = (server.address() as net.AddressInfo).port
  return {
    name,
    port,
    id: `127.0.0.1:${port}`,
    accepted: () => accepted,
    open: () => sockets.size,
    kill: () => {
      const closed = new Promise<void>((r) => server.close(() => r()))
      for (const s of sockets) s.resetAndDestroy()
      return closed
    },
  }
}

let pki: Pki
let pc: LoggedPortcullis
const backends: Record<string, BannerBackend> = {}
const ports: Record<string, number> = {}
const open = new Set<tls.TLSSocket>()

const UPSTREAMS = ["eject", "drain", "limit", "least", "hash"] as const

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  for (const u of UPSTREAMS) {
    for (const n of ["a", "b", "c"]) backends[`${u}-${n}`] = await startBannerBackend(`${u}-${n}`)
  }
  const tlsBlock = `tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }`
  // Each listener binds port 0 on its own loopback address (see loopback).
  const listeners = UPSTREAMS.map(
    (u, i) => `  - { name: ${u}, address: "${loopback(i + 1)}:0", engine: tcp, upstream: ${u}, ${tlsBlock} }`,
  ).join("\n")
  const addr = (name: string) => `"127.0.0.1:${backends[name]!.port}"`
  pc = await startLoggedPortcullis(`
listeners:
${listeners}
upstreams:
  eject:
    backends: [${addr("eject-a")}, ${addr("eject-b")}]
    balance: round_robin
    passive: { consecutive_errors: 2, base_ejection: 10m }
  drain:
    backends: [${addr("drain-a")}, ${addr("drain-b")}]
    balance: round_robin
  limit:
    backends:
      - { address: ${addr("limit-a")}, max_connections: 1 }
      - { address: ${addr("limit-b")}, max_connections: 1 }
    balance: round_robin
  least:
    backends: [${addr("least-a")}, ${addr("least-b")}]
    balance: least_conn
  hash:
    backends: [${addr("hash-a")}, ${addr("hash-b")}, ${addr("hash-c")}]
    balance: hash
    hash_key: client_ip
access_log: { enabled: true }
`)
  for (const u of UPSTREAMS) ports[u] = pc.port(u)
})

after(async () => {
  for (const s of open) s.destroy()
  await pc?.close()
  await Promise.all(Object.values(backends).map((b) => b.kill()))
  await pki?.close()
})

/** connect opens a TLS connection to a tcp listener and reads the backend's banner; undefined when closed without one. */
async function connect(listener: string): Promise<{ socket: tls.TLSSocket; banner: string | undefined }> {
  const socket = await tlsConnect({
    host: pc.host(listener),
    port: ports[listener]!,
    servername: "localhost",
    ca: pki.ca.cert,
  })
  open.add(socket)
  socket.on("close", () => open.delete(socket))
  const banner = await new Promise<string | undefined>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${listener}: no banner and no close within 10 s`)), 10_000)
    socket.once("data", (c: Buffer) => {
      clearTimeout(timer)
      resolve(c.toString().trim())
    })
    socket.once("close", () => {
      clearTimeout(timer)
      resolve(undefined)
    })
  })
  return { socket, banner }
}

/** once connects, reads the banner and closes. */
async function once(listener: string): Promise<string | undefined> {
  const { socket, banner } = await connect(listener)
  socket.destroy()
  return banner
}

/** connectFailures counts the pipe's "backend connect failed" debug lines so far. */
function connectFailures(): number {
  return pc.logs.filter((l) => l.msg === "tcp: backend connect failed").length
}

describe("passive health on the tcp engine", () => {
  test("a killed backend is ejected after consecutive_errors connect failures; later connections go straight to the live one", async () => {
    const dead = backends["eject-b"]!
    await dead.kill()
    const before = connectFailures()
    // Round robin offers the dead backend every other connection until it is ejected: each such connection fails over.
    for (let i = 0; i < 10 && !upstreamStatus(pc, "eject").backends[1]!.ejected; i++) {
      assert.equal(await once("eject"), "eject-a", `connection ${i} failed over to the live backend`)
    }
    const status = upstreamStatus(pc, "eject")
    assert.equal(status.backends[1]!.ejected, true, "the dead backend is ejected")
    assert.equal(status.backends[0]!.ejected, false)
    assert.equal(status.stats.ejections, 1)
    assert.equal(connectFailures() - before, 2, "exactly consecutive_errors failed connects before the ejection")
    // From now on no connection even tries the dead backend: no failover, so no failed connect.
    const failuresAtEjection = connectFailures()
    const acceptedBefore = backends["eject-a"]!.accepted()
    for (let i = 0; i < 6; i++) assert.equal(await once("eject"), "eject-a")
    assert.equal(connectFailures(), failuresAtEjection, "no connect to the ejected backend")
    assert.equal(backends["eject-a"]!.accepted() - acceptedBefore, 6)
  })
})

describe("draining a backend of a tcp upstream", () => {
  test("new connections skip it; a connection open before the drain keeps working", async () => {
    const target = backends["drain-b"]!
    let held: tls.TLSSocket | undefined
    for (let i = 0; i < 2 && !held; i++) {
      const { socket, banner } = await connect("drain")
      if (banner === "drain-b") held = socket
      else socket.destroy()
    }
    assert.ok(held, "round robin gave one of two connections to drain-b")
    pc.runtime.drain("drain", target.id, true)
    try {
      for (let i = 0; i < 4; i++) assert.equal(await once("drain"), "drain-a", `new connection ${i}`)
      // The connection opened before the drain still reaches its backend both ways.
      const echoed = new Promise<string>((resolve) => held.once("data", (c: Buffer) => resolve(c.toString())))
      held.write("still here\n")
      assert.equal(await echoed, "still here\n")
      assert.equal(upstreamStatus(pc, "drain").backends[1]!.in_flight, 1)
    } finally {
      held.destroy()
      pc.runtime.drain("drain", target.id, false)
    }
    await waitUntil(() => upstreamStatus(pc, "drain").backends[1]!.in_flight === 0, "drained connection released")
  })
})

describe("backend max_connections on a tcp upstream", () => {
  test("a backend at its limit is skipped; when all are full the client is closed and counted; a freed slot serves again", async () => {
    const first = await connect("limit")
    const second = await connect("limit")
    assert.deepEqual([first.banner, second.banner].sort(), ["limit-a", "limit-b"], "the second skipped the full one")
    let status = upstreamStatus(pc, "limit")
    assert.deepEqual(
      status.backends.map((b) => b.in_flight),
      [1, 1],
    )
    const acceptedBefore = backends["limit-a"]!.accepted() + backends["limit-b"]!.accepted()
    const third = await connect("limit")
    assert.equal(third.banner, undefined, "closed without reaching a backend")
    status = upstreamStatus(pc, "limit")
    assert.equal(status.stats.tcp_rejected, 1)
    assert.equal(backends["limit-a"]!.accepted() + backends["limit-b"]!.accepted(), acceptedBefore)
    const freed = first.banner!
    first.socket.destroy()
    await waitUntil(
      () => upstreamStatus(pc, "limit").backends.every((b) => b.in_flight === (b.id === backends[freed]!.id ? 0 : 1)),
      "the closed connection's slot is free",
    )
    assert.equal(await once("limit"), freed)
    second.socket.destroy()
    await waitUntil(
      () => upstreamStatus(pc, "limit").backends.every((b) => b.in_flight === 0),
      "every slot free after the clients closed",
    )
    assert.equal(upstreamStatus(pc, "limit").stats.tcp_rejected, 1)
  })
})

describe("in-flight counts on a tcp upstream", () => {
  test("least_conn sends new connections away from the backend holding an open one", async () => {
    const held = await connect("least")
    assert.ok(held.banner)
    const other = held.banner === "least-a" ? "least-b" : "least-a"
    for (let i = 0; i < 4; i++) assert.equal(await once("least"), other, `connection ${i}`)
    held.socket.destroy()
  })
})

describe("hash on client_ip on a tcp listener", () => {
  test("every connection from one client address reaches the same backend", async () => {
    const seen = new Set<string | undefined>()
    for (let i = 0; i < 6; i++) seen.add(await once("hash"))
    assert.equal(seen.size, 1, `one backend for 127.0.0.1, got ${[...seen].join(", ")}`)
    assert.ok([...seen][0]?.startsWith("hash-"))
  })
})
