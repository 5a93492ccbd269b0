/** @module pipe: the L4 byte pipe between a client and one backend: failover on connect, PROXY header, backpressure, half-close, idle timeout. */
import type net from "node:net"
import { BackendError, errorMessage, PortcullisError } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"

/** BackendConnection is an open backend socket and what to call once it is closed (err set when it failed). */
export interface BackendConnection {
  socket: net.Socket
  release?: (err?: Error) => void
}

/** PipeStats is reported once when both sides are closed: bytes from the client (in), bytes to it (out), the first error. */
export interface PipeStats {
  bytesIn: number
  bytesOut: number
  error?: Error
}

/** PipeOptions: how to reach a backend (attempt counts from 1), what to send first, and the limits. */
export interface PipeOptions {
  /** connect opens a backend connection; on rejection it is called again with attempt + 1, up to maxAttempts. */
  connect: (attempt: number) => Promise<BackendConnection>
  /** header is written to the backend before any client byte (a PROXY v1/v2 header). */
  header?: Buffer
  /** idleTimeoutMs closes the connection when no byte moved either way for this long (0: never). */
  idleTimeoutMs: number
  maxAttempts: number
  log?: Logger
  onClose?: (stats: PipeStats) => void
}

/** One state object per connection (STYLE.md, hot path): the socket handlers below are module-level and read it. */
interface PipeState {
  client: PipeSocket
  backend: PipeSocket | undefined
  options: PipeOptions
  attempt: number
  connecting: boolean
  release: ((err?: Error) => void) | undefined
  backendError: Error | undefined
  timer: NodeJS.Timeout | undefined
  bytesIn: number
  bytesOut: number
  error: Error | undefined
  clientClosed: boolean
  backendClosed: boolean
  done: boolean
}

const kPipe = Symbol("portcullis.pipe")
const kEarly = Symbol("portcullis.pipe.early")
type PipeSocket = net.Socket & { [kPipe]?: PipeState; [kEarly]?: Buffer[] }

/**
 * One read buffer shared by every plain backend socket (pass `onread: BACKEND_ONREAD` to net.connect). A socket
 * that reads into fresh Buffers allocates one ArrayBuffer (up to 64 KiB) per read: at hundreds of MB/s that
 * external memory makes V8 run full mark-compacts many times a second. A read lands here and is handed to the
 * client socket in the same tick (see forwardToClient), so one buffer serves every connection of the process.
 */
export const BACKEND_ONREAD = {
  buffer: Buffer.allocUnsafe(64 * 1024),
  callback: onBackendRead as (this: unknown, bytes: number, buffer: Uint8Array) => boolean,
}

/**
 * pipeConnection connects client to a backend and copies bytes both ways until both sides are done; it owns both
 * sockets from now on (a failure ends this connection alone) and calls onClose exactly once.
 */
export function pipeConnection(client: net.Socket, options: PipeOptions): void {
  const c = client as PipeSocket
  const state: PipeState = {
    client: c,
    backend: undefined,
    options,
    attempt: 0,
    connecting: false,
    release: undefined,
    backendError: undefined,
    timer: undefined,
    bytesIn: 0,
    bytesOut: 0,
    error: undefined,
    clientClosed: false,
    backendClosed: false,
    done: false,
  }
  c[kPipe] = state
  // Half-close: the client ending its side must not end ours (a TLS socket would send close_notify and FIN).
  c.allowHalfOpen = true
  // Nothing is read from the client until a backend is connected, so a failover never loses a byte.
  c.pause()
  c.on("data", onClientData)
  c.on("end", onClientEnd)
  c.on("drain", onClientDrain)
  c.on("error", onClientError)
  c.on("close", onClientClose)
  if (options.idleTimeoutMs > 0) state.timer = setTimeout(onIdle, options.idleTimeoutMs, state)
  if (c.destroyed) {
    state.clientClosed = true
    finish(state)
    return
  }
  connectNext(state)
}

function connectNext(state: PipeState): void {
  state.attempt++
  state.connecting = true
  let pending: Promise<BackendConnection>
  try {
    pending = state.options.connect(state.attempt)
  } catch (err) {
    pending = Promise.reject(err)
  }
  pending.then(
    (conn) => onConnected(state, conn),
    (err: unknown) => onConnectFailed(state, err),
  )
}

function onConnectFailed(state: PipeState, err: unknown): void {
  state.connecting = false
  const error =
    err instanceof Error ? err : new BackendError("PC_BACKEND_CONNECT", `tcp: connecting: ${errorMessage(err)}`)
  if (state.clientClosed) {
    finish(state)
    return
  }
  state.options.log?.debug({ attempt: state.attempt, err: error.message }, "tcp: backend connect failed")
  if (state.attempt < state.options.maxAttempts) {
    connectNext(state)
    return
  }
  state.error ??= error
  state.client.destroy()
}

function onConnected(state: PipeState, conn: BackendConnection): void {
  state.connecting = false
  const backend = conn.socket as PipeSocket
  if (state.clientClosed || state.done) {
    backend.on("error", ignore)
    backend.destroy()
    conn.release?.()
    finish(state)
    return
  }
  state.backend = backend
  state.release = conn.release
  backend[kPipe] = state
  backend.allowHalfOpen = true
  backend.on("data", onBackendData)
  backend.on("end", onBackendEnd)
  backend.on("drain", onBackendDrain)
  backend.on("error", onBackendError)
  backend.on("close", onBackendClose)
  if (backend.destroyed) {
    // It died between connecting and now; its 'close' may already be gone.
    onBackendClose.call(backend, true)
    return
  }
  const early = backend[kEarly]
  backend[kEarly] = undefined
  if (early) for (const chunk of early) forwardToClient(state, chunk, false)
  backend.resume()
  if (state.options.header) backend.write(state.options.header)
  state.client.resume()
}

function onClientData(this: PipeSocket, chunk: Buffer): void {
  const state = this[kPipe]!
  state.bytesIn += chunk.length
  state.timer?.refresh()
  const backend = state.backend
  if (!backend || backend.destroyed || backend.writableEnded) return
  if (!backend.write(chunk)) this.pause()
}

function onBackendData(this: PipeSocket, chunk: Buffer): void {
  if (!forwardToClient(this[kPipe]!, chunk, false)) this.pause()
}

/** onBackendRead is BACKEND_ONREAD's callback: the bytes are in the shared buffer, valid until it returns. */
function onBackendRead(this: PipeSocket, bytes: number, buffer: Buffer): boolean {
  const chunk = buffer.subarray(0, bytes)
  const state = this[kPipe]
  if (!state) {
    // Bytes a server sends first, before the pipe took this socket: keep a copy until onConnected.
    const early = this[kEarly] ?? []
    early.push(Buffer.from(chunk))
    this[kEarly] = early
    this.pause()
  } else if (!forwardToClient(state, chunk, true)) {
    this.pause()
  }
  // pause() (not a false return, which stops reading without telling the stream) so that resume() starts it again.
  return true
}

/**
 * forwardToClient writes backend bytes to the client; false when the client wants us to wait for 'drain'.
 * A view of the shared read buffer (shared) is only handed over when the write reaches the TLS layer at once, which
 * encrypts (or copies) it before returning; a write the stream would queue gets a copy instead.
 */
function forwardToClient(state: PipeState, chunk: Buffer, shared: boolean): boolean {
  state.bytesOut += chunk.length
  state.timer?.refresh()
  const client = state.client
  if (client.destroyed || client.writableEnded) return true
  const direct = !shared || (isTls(client) && client.writableLength === 0 && client.writableCorked === 0)
  return client.write(direct ? chunk : Buffer.from(chunk))
}

function isTls(socket: net.Socket): boolean {
  return (socket as net.Socket & { encrypted?: boolean }).encrypted === true
}

/** The backend took our backlog: read from the client again. */
function onBackendDrain(this: PipeSocket): void {
  const state = this[kPipe]!
  state.timer?.refresh()
  if (!state.client.readableEnded) state.client.resume()
}

/** The client took our backlog: read from the backend again. */
function onClientDrain(this: PipeSocket): void {
  const state = this[kPipe]!
  state.timer?.refresh()
  const backend = state.backend
  if (backend && !backend.readableEnded) backend.resume()
}

/** The client is done sending: pass the FIN on, keep reading the backend's reply. */
function onClientEnd(this: PipeSocket): void {
  const backend = this[kPipe]!.backend
  if (backend && !backend.destroyed && !backend.writableEnded) backend.end()
}

/** The backend is done sending: pass the FIN (close_notify for TLS) on, keep reading the client. */
function onBackendEnd(this: PipeSocket): void {
  const client = this[kPipe]!.client
  if (!client.destroyed && !client.writableEnded) client.end()
}

function onClientError(this: PipeSocket, err: Error): void {
  const state = this[kPipe]!
  state.error ??= new PortcullisError("PC_CLIENT_SOCKET", `tcp: client connection: ${err.message}`, {
    source: "client",
    cause: err,
  })
  state.options.log?.debug({ err: err.message }, "tcp: client socket error")
}

function onBackendError(this: PipeSocket, err: Error): void {
  const state = this[kPipe]!
  state.backendError ??= err
  state.error ??= new BackendError("PC_BACKEND_SOCKET", `tcp: backend connection: ${err.message}`, { cause: err })
  state.options.log?.debug({ err: err.message }, "tcp: backend socket error")
}

function onClientClose(this: PipeSocket, hadError: boolean): void {
  const state = this[kPipe]!
  state.clientClosed = true
  const backend = state.backend
  // A clean close leaves the backend to finish flushing what it was told to end with; anything else tears it down.
  if (backend && !state.backendClosed && (hadError || !backend.readableEnded || !backend.writableEnded))
    backend.destroy()
  finish(state)
}

function onBackendClose(this: PipeSocket, hadError: boolean): void {
  const state = this[kPipe]!
  if (state.backendClosed) return
  state.backendClosed = true
  const release = state.release
  state.release = undefined
  release?.(state.backendError)
  const client = state.client
  if (!state.clientClosed && (hadError || !client.readableEnded || !client.writableEnded)) client.destroy()
  finish(state)
}

function onIdle(state: PipeState): void {
  if (state.done) return
  state.error ??= new PortcullisError("PC_TCP_IDLE_TIMEOUT", `tcp: no traffic for ${state.options.idleTimeoutMs} ms`, {
    source: "client",
  })
  state.client.destroy()
  state.backend?.destroy()
}

/** finish reports once, when the client is closed and no backend is open or being opened. */
function finish(state: PipeState): void {
  if (state.done || !state.clientClosed || state.connecting) return
  if (state.backend && !state.backendClosed) return
  state.done = true
  clearTimeout(state.timer)
  const stats: PipeStats = { bytesIn: state.bytesIn, bytesOut: state.bytesOut }
  if (state.error) stats.error = state.error
  try {
    state.options.onClose?.(stats)
  } catch (err) {
    state.options.log?.debug({ err: errorMessage(err) }, "tcp: onClose threw")
  }
}

function ignore(): void {}
