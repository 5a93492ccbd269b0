/** Shared test plumbing for the PROXY protocol tests: deadlines, fast polling, and a server that reads one header. */
import net from "node:net"
import type { TestContext } from "node:test"
import { type ProxyInfo, readProxyHeader } from "../../../src/listeners/proxy-protocol/read-header.ts"

/** withDeadline rejects with message if promise has not settled within ms. */
export function withDeadline<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${message}`)), ms)
  })
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer))
}

/** waitFor polls condition on every turn of the event loop until it holds, or fails after ms. */
export async function waitFor(condition: () => boolean, message: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${message}`)
    await new Promise((r) => setImmediate(r))
  }
}

/** HeaderOutcome is what readProxyHeader gave for one accepted connection. */
export interface HeaderOutcome {
  socket: net.Socket
  info?: ProxyInfo | null
  error?: Error & { code?: string; source?: string }
}

/** HeaderServer accepts connections and runs readProxyHeader on each; next() waits for the next outcome. */
export interface HeaderServer {
  port: number
  /** accepted resolves with the next accepted server-side socket, before the header is read. */
  accepted: () => Promise<net.Socket>
  outcome: () => Promise<HeaderOutcome>
}

/** startHeaderServer listens on 127.0.0.1:0 and reads a PROXY header from every connection (closed in t.after). */
export async function startHeaderServer(t: TestContext, options = { timeoutMs: 2000 }): Promise<HeaderServer> {
  const outcomes: Promise<HeaderOutcome>[] = []
  const sockets: Promise<net.Socket>[] = []
  const resolvers: ((o: HeaderOutcome) => void)[] = []
  const socketResolvers: ((s: net.Socket) => void)[] = []
  const open = new Set<net.Socket>()
  const next = () => {
    outcomes.push(new Promise((r) => resolvers.push(r)))
    sockets.push(new Promise((r) => socketResolvers.push(r)))
  }
  next()
  const server = net.createServer((socket) => {
    open.add(socket)
    socket.on("close", () => open.delete(socket))
    const resolve = resolvers.shift()!
    socketResolvers.shift()!(socket)
    next()
    readProxyHeader(socket, options).then(
      (info) => {
        socket.on("error", () => {})
        resolve({ socket, info })
      },
      (error: Error) => {
        socket.destroy()
        resolve({ socket, error })
      },
    )
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  t.after(() => {
    for (const s of open) s.destroy()
    server.close()
  })
  let taken = 0
  let takenSockets = 0
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => withDeadline(sockets[takenSockets++]!, 5000, "a connection was accepted"),
    outcome: () => withDeadline(outcomes[taken++]!, 5000, "readProxyHeader settled"),
  }
}

/** connect opens a client socket to port with no Nagle delay (destroyed in t.after). */
export async function connect(t: TestContext, port: number): Promise<net.Socket> {
  const socket = net.connect({ port, host: "127.0.0.1", noDelay: true })
  socket.on("error", () => {})
  t.after(() => socket.destroy())
  await withDeadline(new Promise((r) => socket.once("connect", r)), 5000, "client connected")
  return socket
}
