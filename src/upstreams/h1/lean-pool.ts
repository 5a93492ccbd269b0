/**
 * @module lean-pool: a keep-alive HTTP/1.1 client for plain-TCP backends, with undici's dispatch interface.
 *
 * Why: profiles of keep-alive and HTTP/2 small requests put undici's machinery (pool scan, request object, wasm
 * llhttp with a copy of every byte into wasm memory, header objects rebuilt twice) at ≈15% of the proxy's CPU. This
 * client does the common case directly: one request per connection at a time (no pipelining), a request body that is
 * absent or already a Buffer, no upgrade. Everything else (streamed bodies, Upgrade, Expect) goes to the undici Pool
 * given as fallback, so behaviour there is unchanged. The response side is parsed strictly (response-head.ts,
 * chunked.ts): conflicting framing is an error, never a guess.
 *
 * Errors carry undici's codes (UND_ERR_SOCKET, UND_ERR_HEADERS_TIMEOUT, ...) or the socket's (ECONNREFUSED,
 * ECONNRESET), so retries, passive health and error statuses treat both clients alike. The exchange counts a try as
 * sent from onRequestStart, which (as in undici) is called only once the socket is connected, just before the request
 * is written: a refused or timed-out connect is never "sent".
 *
 * A request sent on a reused connection that the backend closes before any byte of the response (it closed the idle
 * connection as we wrote: the keep-alive race of RFC 9112 §9.3.1) is sent again once on a new connection when it
 * is idempotent, as browsers and Go's http.Transport do; other failures go to the exchange, which may retry elsewhere.
 */
import type net from "node:net"
import type { Readable } from "node:stream"
import type { Dispatcher } from "undici"
import { putField, putLatin1 } from "../../core/bytes.ts"
import { hold } from "../../core/write-batch.ts"
import type { Dialer } from "../dial.ts"
import type { BackendPool } from "../pool.ts"
import { ChunkedDecoder } from "./chunked.ts"
import { BackendProtocolError, type Framing, parseResponseHead } from "./response-head.ts"

export interface LeanPoolOptions {
  /** The backend's dialer (plain TCP): connections are opened with its tcp() step. */
  dialer: Dialer
  /**
   * The upstream's `keepalive`: idle connections beyond this many are closed gradually, longest idle first (see
   * purge()), never one per response; 0: no reuse (every request asks for `Connection: close`).
   */
  keepalive: number
  /** At most this many connections (Infinity: no limit); requests beyond wait in order. */
  connections: number
  connectTimeout: number
  /** From sending the request to the end of the response head. */
  headersTimeout: number
  /** Longest silence while reading the body; also how long an idle connection is kept. */
  bodyTimeout: number
  /** How long an idle connection is kept when the backend gives no Keep-Alive hint. */
  keepAliveTimeout: number
  /** The longest an idle connection is kept, whatever the backend's hint. */
  keepAliveMaxTimeout: number
  maxHeaderSize: number
  /** Takes what this client does not do itself. */
  fallback: () => BackendPool
}

const NO_CONTEXT = Object.freeze({})
/** How long a request with Expect: 100-continue waits for the backend's 100 before its body goes anyway (as curl). */
const EXPECT_WAIT_MS = 1000
/**
 * How often idle connections above `keepalive` are purged (purgeCount says how many go each time). HAProxy
 * purges idle connections each `pool-purge-delay` (default 5 s) by a fraction of the excess; nginx keeps its cache of
 * `keepalive` idle ones and closes the least recently used beyond it. A connection goes only when it was idle through
 * a whole interval, so a pool under steady load keeps what the load uses and does not reconnect.
 */
export const PURGE_INTERVAL_MS = 1000

/** purgeCount: how many of `excess` idle connections one purge closes: half, and the last few at once. */
export function purgeCount(excess: number): number {
  return excess <= 4 ? excess : Math.ceil(excess / 2)
}

const PAYLOAD_METHODS = new Set(["POST", "PUT", "PATCH"])
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const BAD_VALUE = /[\0\r\n]/
/** Headers that change how the request or the connection is framed: requests carrying them go to the fallback. */
const FRAMING_HEADERS = new Set(["transfer-encoding", "connection", "upgrade", "expect", "keep-alive"])

function failure(code: string, message: string): Error {
  return Object.assign(new Error(message), { code })
}

/** LeanPool keeps idle connections to one backend and sends each request on one of them. */
export class LeanPool implements BackendPool {
  readonly options: LeanPoolOptions
  readonly #idle: Connection[] = []
  readonly #queue: LeanRequest[] = []
  #open = 0
  #busy = 0
  #closed = false
  #destroyed = false
  #fallback: BackendPool | undefined
  #whenIdle: (() => void) | undefined
  /** Runs while more than `keepalive` connections are idle. */
  #purgeTimer: NodeJS.Timeout | undefined
  /** Counts purge intervals; a connection going idle notes it (cheaper than reading a clock per response). */
  #epoch = 0
  /** Host for a request that has none (an HTTP/1.0 client's), as undici writes it: the backend's address. */
  readonly #host: string

  constructor(options: LeanPoolOptions) {
    this.options = options
    const { host, port } = options.dialer
    this.#host = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const reset = options.reset === true || this.options.keepalive === 0
    const head = this.#closed ? undefined : serializeHead(options as LeanDispatchOptions, reset, this.#host)
    if (head === undefined) {
      this.#fallback ??= this.options.fallback()
      return this.#fallback.dispatch(options, handler)
    }
    const body = options.body
    const streamed = body !== null && body !== undefined && !Buffer.isBuffer(body)
    const request = new LeanRequest(handler, options.method, head.bytes, streamed ? null : (body as Buffer | null))
    request.reset = reset
    if (streamed) {
      request.stream = body as Readable
      request.chunked = head.chunked
      request.expectContinue = head.expectContinue
      request.contentLength = head.contentLength
    }
    // A streamed body is read once: such a request is never sent again after a keep-alive race.
    request.idempotent = options.idempotent === true && !streamed
    request.batched = (options as LeanDispatchOptions).batched === true
    // Nobody waits ahead of it (nearly always): straight to a connection, without the queue's push and shift.
    if (this.#queue.length === 0 && this.#hasRoom()) this.#start(request)
    else {
      this.#queue.push(request)
      this.#schedule()
    }
    return true
  }

  /** #schedule gives queued requests an idle connection, or opens one while under the limit. */
  #schedule(): void {
    while (this.#queue.length > 0) {
      if (this.#queue[0]!.settled) {
        this.#queue.shift() // aborted while waiting
        continue
      }
      if (!this.#hasRoom()) return
      this.#start(this.#queue.shift()!)
    }
  }

  /** #hasRoom: an idle connection, or room for one more. */
  #hasRoom(): boolean {
    return this.#idle.length > 0 || this.#open < this.options.connections
  }

  /** #start sends the request on the most recently used idle connection, or on a new one (#hasRoom said which). */
  #start(request: LeanRequest): void {
    const idle = this.#idle.pop()
    this.#busy++
    if (idle !== undefined) {
      idle.busy = true
      idle.send(request)
    } else {
      this.#open++
      new Connection(this, request)
    }
  }

  /** resend queues a request again, first in line, for a new try (see the module's note on the keep-alive race). */
  resend(request: LeanRequest): void {
    if (this.#destroyed) {
      request.fail(failure("UND_ERR_DESTROYED", "The client is destroyed"))
      return
    }
    this.#queue.unshift(request)
    this.#schedule()
  }

  /** released: the connection finished its request; reusable tells whether it can take another. */
  released(connection: Connection, reusable: boolean): void {
    connection.busy = false
    this.#busy--
    if (reusable && !this.#closed) {
      connection.idleEpoch = this.#epoch
      // The stack's top is the most recently used: #schedule takes from it, purge() from the bottom (longest idle).
      this.#idle.push(connection)
      if (this.#idle.length > this.options.keepalive && this.#purgeTimer === undefined) {
        this.#purgeTimer = setInterval(onPurge, PURGE_INTERVAL_MS, this)
        this.#purgeTimer.unref()
      }
    } else connection.destroy()
    this.#schedule()
    if (this.#busy === 0) this.#whenIdle?.()
  }

  /**
   * purge closes part of the idle connections above `keepalive`: those idle through a whole interval, longest idle
   * first. `#idle` is in the order connections went idle, so the oldest are at its start.
   */
  purge(): void {
    this.#epoch++
    const excess = this.#idle.length - this.options.keepalive
    if (excess <= 0) {
      clearInterval(this.#purgeTimer)
      this.#purgeTimer = undefined
      return
    }
    let n = purgeCount(excess)
    // idleEpoch < epoch - 1: no request took it since before the previous purge.
    while (n > 0 && this.#idle.length > 0 && this.#idle[0]!.idleEpoch < this.#epoch - 1) {
      this.#idle.shift()!.destroy()
      n--
    }
  }

  /** lost: the connection is closed or closing; it is counted no more. */
  lost(connection: Connection): void {
    this.#open--
    if (connection.busy) {
      connection.busy = false
      this.#busy--
    }
    const i = this.#idle.indexOf(connection)
    if (i !== -1) this.#idle.splice(i, 1)
    this.#schedule()
    if (this.#busy === 0) this.#whenIdle?.()
  }

  /** close lets requests in flight and queued finish, then closes every connection. */
  async close(): Promise<void> {
    this.#closed = true
    clearInterval(this.#purgeTimer)
    if (this.#busy > 0 || this.#queue.length > 0) {
      await new Promise<void>((resolve) => {
        this.#whenIdle = resolve
      })
    }
    for (const c of this.#idle.splice(0)) c.destroy()
    await this.#fallback?.close()
  }

  /** destroy closes every connection now; requests in flight fail. */
  async destroy(): Promise<void> {
    this.#closed = true
    this.#destroyed = true
    clearInterval(this.#purgeTimer)
    for (const r of this.#queue.splice(0)) r.fail(failure("UND_ERR_DESTROYED", "The client is destroyed"))
    for (const c of this.#idle.splice(0)) c.destroy()
    Connection.destroyAll(this)
    await this.#fallback?.destroy()
  }
}

/** RELAYS_CONTINUE: the onRequestStart context of a request whose Expect this client relays (the exchange waits). */
export const RELAYS_CONTINUE = Object.freeze({ relaysContinue: true })

/** LeanDispatchOptions: undici's options plus what the exchange tells this client alone. */
export interface LeanDispatchOptions extends Dispatcher.DispatchOptions {
  /** The client sent Expect: 100-continue: ask the backend the same and wait for its 100 before the body. */
  expectContinue?: boolean
  /** The request head may wait for the end of this event-loop round (core/write-batch.ts hold). */
  batched?: boolean
}

/** SerializedHead: the request head, and how a streamed body that follows it is framed. */
interface SerializedHead {
  bytes: Buffer
  chunked: boolean
  expectContinue: boolean
  /** The Content-Length a streamed body must match (-1: chunked or none). */
  contentLength: number
}

/**
 * The head is written here, then copied out at its size: one small Buffer per request instead of a string built
 * piece by piece (four pieces per field, ≈1.2 KB of garbage per request). A head that does not fit (a request head
 * over 64 KiB) goes to the fallback. Serializing is synchronous, so one buffer serves every pool.
 */
const scratch = Buffer.allocUnsafeSlow(64 * 1024)
/** Room kept after the fields for what serializeHead adds (host, framing, connection, the empty line). */
const TAIL_ROOM = 1024

/** put writes s (latin1) into the scratch buffer at o; returns the offset after it. */
function put(o: number, s: string): number {
  return putLatin1(scratch, o, s)
}

/**
 * serializeHead writes the request head, or undefined when the request is not one this client does. A streamed
 * body keeps the client's Content-Length, or goes chunked when it had none (the client's own Transfer-Encoding is
 * hop-by-hop and already gone); with `expectContinue` the head asks for 100-continue.
 */
function serializeHead(options: LeanDispatchOptions, reset: boolean, host: string): SerializedHead | undefined {
  const { body, headers } = options
  if (options.upgrade || !Array.isArray(headers)) return undefined
  const streamed = body !== null && body !== undefined && !Buffer.isBuffer(body)
  if (streamed && typeof (body as Readable).on !== "function") return undefined
  const path = options.path
  if (!TOKEN.test(options.method) || typeof path !== "string" || /[^\x21-\x7e]/.test(path)) return undefined
  const limit = scratch.length - TAIL_ROOM - host.length
  if (options.method.length + path.length + 11 > limit) return undefined
  let o = put(0, options.method)
  scratch[o++] = 32
  o = put(o, path)
  o = put(o, " HTTP/1.1\r\n")
  let contentLength: string | undefined
  let sawHost = false
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string
    const value = headers[i + 1] as string
    if (typeof value !== "string" || !TOKEN.test(name) || BAD_VALUE.test(value)) return undefined
    const lower = name.length <= 17 ? name.toLowerCase() : ""
    if (FRAMING_HEADERS.has(lower)) return undefined
    if (lower === "content-length") contentLength = value
    else if (lower === "host") sawHost = true
    if (o + name.length + value.length + 4 > limit) return undefined
    o = putField(scratch, o, name, value)
  }
  // RFC 9112 §3.2: an HTTP/1.1 request carries Host.
  if (!sawHost) o = putField(scratch, o, "host", host)
  let chunked = false
  const expectContinue = streamed && options.expectContinue === true
  if (streamed) {
    if (contentLength === undefined) {
      o = put(o, "transfer-encoding: chunked\r\n")
      chunked = true
    } else if (!/^\d{1,15}$/.test(contentLength)) return undefined
    if (expectContinue) o = put(o, "expect: 100-continue\r\n")
  } else {
    const length = body ? (body as Buffer).length : 0
    if (contentLength !== undefined) {
      // The client's own Content-Length must describe what we send; anything else is the slow path's to refuse.
      if (contentLength !== String(length)) return undefined
    } else if (body || PAYLOAD_METHODS.has(options.method)) {
      o = putField(scratch, o, "content-length", String(length))
    }
  }
  o = put(o, reset ? "connection: close\r\n\r\n" : "\r\n")
  const bytes = Buffer.allocUnsafe(o)
  scratch.copy(bytes, 0, 0, o)
  return { bytes, chunked, expectContinue, contentLength: streamed && !chunked ? Number(contentLength) : -1 }
}

/** LeanRequest is one request and its undici DispatchController (pause, resume, abort). */
class LeanRequest implements Dispatcher.DispatchController {
  readonly handler: Dispatcher.DispatchHandler
  readonly method: string
  readonly head: Buffer
  readonly body: Buffer | null
  /** A streamed body (read once: never sent again after a keep-alive race). */
  stream: Readable | undefined
  /** The streamed body is framed chunked (the client sent no Content-Length). */
  chunked = false
  /** The head carries Expect: 100-continue: the body waits for the backend's 100 (or a short timer). */
  expectContinue = false
  /** Every byte of a streamed body is written. */
  bodySent = false
  /** The Content-Length a streamed body must match; -1 when chunked. */
  contentLength = -1
  connection: Connection | undefined
  /** Ask for Connection: close; the connection is not reused after this response. */
  reset = false
  /** May be sent again after a keep-alive race (options.idempotent). */
  idempotent = false
  /** The head may wait for the end of this round (options.batched). */
  batched = false
  #aborted = false
  #paused = false
  #reason: Error | null = null
  /** Set once the handler heard its last callback (end or error). */
  settled = false

  constructor(handler: Dispatcher.DispatchHandler, method: string, head: Buffer, body: Buffer | null) {
    this.handler = handler
    this.method = method
    this.head = head
    this.body = body
  }

  get aborted(): boolean {
    return this.#aborted
  }
  get paused(): boolean {
    return this.#paused
  }
  get reason(): Error | null {
    return this.#reason
  }

  abort(reason: Error): void {
    if (this.#aborted || this.settled) return
    this.#aborted = true
    this.#reason = reason
    if (this.connection) this.connection.abort(this, reason)
    else this.fail(reason)
  }

  pause(): void {
    this.#paused = true
    this.connection?.pause()
  }

  resume(): void {
    if (!this.#paused) return
    this.#paused = false
    this.connection?.resume()
  }

  /** fail tells the handler once; a request still in the pool's queue is simply never sent. */
  fail(err: Error): void {
    if (this.settled) return
    this.settled = true
    this.detachBody()
    this.handler.onResponseError?.(this, err)
  }

  end(trailers: Record<string, string | string[]> = {}): void {
    if (this.settled) return
    this.settled = true
    this.detachBody()
    this.handler.onResponseEnd?.(this, trailers)
  }

  /** detachBody stops reading a streamed body (the request is over, or the backend answered before it was sent). */
  detachBody(): void {
    const body = this.stream
    if (body === undefined || this.#onBodyData === undefined) return
    body.off("data", this.#onBodyData)
    body.off("end", this.#onBodyEnd!)
    body.off("error", this.#onBodyError!)
    this.#onBodyData = undefined
  }

  #onBodyData: ((chunk: Buffer) => void) | undefined
  #onBodyEnd: (() => void) | undefined
  #onBodyError: ((err: Error) => void) | undefined

  /**
   * pipeBody writes a streamed body to the socket with backpressure (content-length framing as the client's, else
   * chunked with the client's trailers at the end); done is called once all of it is written.
   */
  pipeBody(socket: net.Socket, done: () => void, failed: (err: Error) => void): void {
    const body = this.stream!
    const chunked = this.chunked
    let written = 0
    this.#onBodyData = (chunk: Buffer) => {
      if (chunk.length === 0) return
      written += chunk.length
      // A body write is activity, as it was for the socket's own timeout: a long upload is not a silent backend.
      this.connection?.touch()
      const ok = chunked
        ? socket.write(`${chunk.length.toString(16)}\r\n`, "latin1") &&
          socket.write(chunk) &&
          socket.write("\r\n", "latin1")
        : socket.write(chunk)
      if (!ok) {
        body.pause()
        socket.once("drain", () => body.resume())
      }
    }
    this.#onBodyEnd = () => {
      this.detachBody()
      if (!chunked && written !== this.contentLength) {
        // The backend was promised Content-Length bytes (RFC 9112 §6.3): a shorter body leaves the connection
        // mid-request, so it is never reused.
        failed(
          failure("UND_ERR_REQ_CONTENT_LENGTH_MISMATCH", "Request body length does not match content-length header"),
        )
        return
      }
      this.bodySent = true
      if (chunked) socket.write(`0\r\n${trailerLines((body as { trailers?: unknown }).trailers)}\r\n`, "latin1")
      done()
    }
    this.#onBodyError = (err: Error) => {
      this.detachBody()
      failed(err)
    }
    body.on("data", this.#onBodyData)
    body.once("end", this.#onBodyEnd)
    body.once("error", this.#onBodyError)
    body.resume()
  }
}

/**
 * BorrowingHandler: a handler that can take views of the connection's read buffer and say when it is done with each
 * (release, e.g. from the client write's callback). Reads then need no fresh ArrayBuffer each: at hundreds of MB/s
 * those drive V8's full GCs and the peak RSS. A handler without it gets copies.
 */
export interface BorrowingHandler extends Dispatcher.DispatchHandler {
  onResponseDataBorrowed(controller: Dispatcher.DispatchController, chunk: Buffer, release: () => void): void
}

/**
 * A connection reads into READ_SIZE bytes; once a read fills them (a body arriving faster than one read takes), the
 * next reads go into BULK_SIZE bytes until the response ends: a 1 MiB body then takes 4 reads, 4 client writes (16
 * TLS records each) and 4 write callbacks instead of 16 of each, where the per-chunk JavaScript costs more than the
 * copy. Small responses never leave READ_SIZE, so an idle connection holds no more than before.
 */
const READ_SIZE = 64 * 1024
const BULK_SIZE = 256 * 1024
/** Read buffers whose every view was released, for any connection's next read; bounded (by size: 64 and 256 KiB). */
const freeBuffers: Buffer[] = []
const freeBulk: Buffer[] = []
const MAX_FREE = 64
const MAX_FREE_BULK = 16

/** ReadBuffer counts the views of one read buffer still held by handlers. */
class ReadBuffer {
  readonly buf: Buffer
  refs = 0
  /** No longer the connection's read buffer: goes back to its free list at refs 0. */
  retired = false

  constructor(bulk: boolean) {
    this.buf = (bulk ? freeBulk.pop() : freeBuffers.pop()) ?? Buffer.allocUnsafeSlow(bulk ? BULK_SIZE : READ_SIZE)
  }

  release = (): void => {
    if (--this.refs === 0 && this.retired) freeReadBuffer(this.buf)
  }
}

/** freeReadBuffer keeps a buffer nobody reads into or holds a view of for a later read, within the bounds. */
function freeReadBuffer(buf: Buffer): void {
  if (buf.length === BULK_SIZE) {
    if (freeBulk.length < MAX_FREE_BULK) freeBulk.push(buf)
  } else if (freeBuffers.length < MAX_FREE) freeBuffers.push(buf)
}

const kConnection = Symbol("portcullis.lean.connection")
type WithConnection = net.Socket & { [kConnection]?: Connection }
const live = new WeakMap<LeanPool, Set<Connection>>()

const HEAD = 0
const BODY = 1
/** The empty line that ends a head, as bytes: indexOf with a string needle encodes it again on every call. */
const END_OF_HEAD = Buffer.from("\r\n\r\n", "latin1")

/** Connection: one socket to the backend and the request it is serving, if any. */
class Connection {
  readonly pool: LeanPool
  readonly socket: WithConnection
  request: LeanRequest | undefined
  /** Checked out by the pool (serving or about to serve a request). */
  busy = true
  /** Served a request before the current one: the backend may have closed it while idle. */
  reused = false
  /** The pool's purge epoch when this connection last went idle. */
  idleEpoch = 0
  /** No byte of the current request's response has arrived yet. */
  #untouched = true
  #connected = false
  #phase = HEAD
  #head: Buffer | undefined
  #framing: Framing = { kind: "none" }
  #remaining = 0
  #chunked: ChunkedDecoder | undefined
  #keepAlive = false
  #idleTimeout: number
  /** Bytes read while the handler had paused us. */
  #pending: Buffer | undefined
  /** The backend ended its side. */
  #eof = false
  #gone = false
  /** The buffer the socket reads into; views of it handed to the handler are counted there. */
  #read = new ReadBuffer(false)
  /** A read of this response filled its buffer: the next ones are BULK_SIZE (until the response ends). */
  #bulk = false

  static destroyAll(pool: LeanPool): void {
    for (const c of live.get(pool) ?? []) c.destroy()
  }

  constructor(pool: LeanPool, first: LeanRequest) {
    this.pool = pool
    const o = pool.options
    this.#idleTimeout = o.keepAliveTimeout
    let set = live.get(pool)
    if (!set) {
      set = new Set()
      live.set(pool, set)
    }
    set.add(this)
    this.request = first
    first.connection = this
    // allowHalfOpen: a backend's FIN must not close the socket before bytes we hold (paused) are delivered. The
    // connect timeout is the connection's one timer (see #setTimeout), which runs every later phase too.
    const socket = o.dialer.tcp({
      allowHalfOpen: true,
      onread: { buffer: () => this.#nextReadBuffer(), callback: onRead },
    }) as WithConnection
    this.socket = socket
    socket[kConnection] = this
    this.#setTimeout(o.connectTimeout)
    socket.on("connect", onConnect)
    socket.on("end", onEnd)
    socket.on("error", onError)
    socket.on("close", onClose)
  }

  /** The current phase's inactivity timeout (ms; 0: none). */
  #timeoutMs = 0
  /** performance.now() past which the phase has timed out: the last activity plus #timeoutMs. */
  #deadline = 0
  /** The connection's one timer; it fires at #fireAt, never after #deadline (it may fire before: see onTimer). */
  #timer: NodeJS.Timeout | undefined
  #timerMs = 0
  #fireAt = Number.POSITIVE_INFINITY

  /**
   * #setTimeout starts the next phase's inactivity timeout (0: none), as socket.setTimeout would, without its cost:
   * that makes a Timeout and a bound function per call, and a keep-alive request changes phase twice (idle to
   * response, then back). Here a phase change only moves #deadline; the one timer is re-armed when it would fire
   * too late for it (a shorter timeout), and a timer that fires early finds the deadline later and waits the rest.
   * So under load a connection's timer fires about once per idle timeout, not once per request.
   */
  #setTimeout(ms: number): void {
    this.#timeoutMs = ms
    if (ms === 0) return
    const now = performance.now()
    this.#deadline = now + ms
    if (this.#fireAt > this.#deadline) this.#arm(now, ms)
  }

  /** touch: bytes moved (a read, a body write): the inactivity timeout runs again from now. */
  touch(): void {
    if (this.#timeoutMs !== 0) this.#deadline = performance.now() + this.#timeoutMs
  }

  #arm(now: number, ms: number): void {
    const delay = Math.max(1, Math.ceil(ms))
    if (this.#timer !== undefined && this.#timerMs === delay) this.#timer.refresh()
    else {
      if (this.#timer !== undefined) clearTimeout(this.#timer)
      this.#timer = setTimeout(onTimer, delay, this)
      this.#timer.unref()
      this.#timerMs = delay
    }
    this.#fireAt = now + delay
  }

  /** timerFired: the timer ran out; the phase has timed out only if nothing moved since (else wait the rest). */
  timerFired(): void {
    this.#fireAt = Number.POSITIVE_INFINITY
    if (this.#gone || this.#timeoutMs === 0) return
    const now = performance.now()
    const left = this.#deadline - now
    if (left > 0) {
      this.#arm(now, left)
      return
    }
    this.timedOut()
  }

  connected(): void {
    this.#connected = true
    const request = this.request
    if (request) this.send(request)
  }

  /** send writes the request's head and body once the socket is connected. */
  send(request: LeanRequest): void {
    this.request = request
    request.connection = this
    if (!this.#connected) return
    this.#phase = HEAD
    this.#head = undefined
    this.#untouched = true
    this.#setTimeout(this.pool.options.headersTimeout)
    request.handler.onRequestStart?.(request, request.expectContinue ? RELAYS_CONTINUE : NO_CONTEXT)
    if (request.settled || this.#gone) return
    const socket = this.socket
    if (request.stream !== undefined) {
      socket.write(request.head)
      if (request.expectContinue) {
        // RFC 9110 §10.1.1: wait a little for the backend's 100 (or its final answer) before the body; a backend
        // that ignores Expect gets the body after the wait.
        this.#continueTimer = setTimeout(onExpectTimeout, EXPECT_WAIT_MS, this)
      } else this.#startBody(request)
    } else if (request.body && request.body.length > 0) {
      socket.cork()
      socket.write(request.head)
      socket.write(request.body)
      socket.uncork()
    } else {
      // An HTTP/1.1 client's request leaves with the round's other writes (core/write-batch.ts): such clients send
      // one request per read, and their requests would otherwise go out one at a time between other sockets' work.
      // An HTTP/2 session's requests arrive many to a read and leave back to back already (held, W3 lost 6%).
      if (request.batched) hold(socket)
      socket.write(request.head)
    }
  }

  #continueTimer: NodeJS.Timeout | undefined

  /** continued: the backend said 100 Continue (or the wait passed): tell the handler, then send the body. */
  continued(): void {
    const request = this.request
    if (this.#continueTimer === undefined || request === undefined) return
    clearTimeout(this.#continueTimer)
    this.#continueTimer = undefined
    // The exchange answers its client's Expect with this (exchange.ts onResponseStart, status 100).
    request.handler.onResponseStart?.(request, 100, {}, "Continue")
    if (!request.settled && !this.#gone) this.#startBody(request)
  }

  #startBody(request: LeanRequest): void {
    request.pipeBody(
      this.socket,
      () => {},
      (err) => {
        if (this.request === request) this.#fail(err)
      },
    )
  }

  /** #nextReadBuffer: the same buffer while no handler holds a view of it, else a free or new one. */
  #nextReadBuffer(): Buffer {
    const current = this.#read
    if (current.refs === 0 && (current.buf.length === BULK_SIZE) === this.#bulk) return current.buf
    current.retired = true
    if (current.refs === 0) freeReadBuffer(current.buf)
    this.#read = new ReadBuffer(this.#bulk)
    return this.#read.buf
  }

  /** deliver hands a view of the read buffer to the handler, counted until released, or a copy. */
  #deliver(request: LeanRequest, view: Buffer): void {
    const handler = request.handler as Partial<BorrowingHandler>
    if (handler.onResponseDataBorrowed) {
      const read = this.#read
      read.refs++
      handler.onResponseDataBorrowed(request, view, read.release)
    } else {
      handler.onResponseData?.(request, Buffer.from(view))
    }
  }

  /** onData: bytes in the read buffer, valid until this returns (views handed out are counted). */
  onData(chunk: Buffer): void {
    const request = this.request
    if (request === undefined || request.settled) {
      // Bytes nobody asked for: the connection's framing is lost.
      this.destroy()
      return
    }
    this.#untouched = false
    this.touch()
    if (chunk.length === READ_SIZE) this.#bulk = true
    if (request.paused) {
      this.#pending = this.#pending ? Buffer.concat([this.#pending, chunk]) : Buffer.from(chunk)
      this.socket.pause()
      return
    }
    try {
      this.#consume(request, chunk)
    } catch (err) {
      this.#fail(err as Error)
    }
  }

  #consume(request: LeanRequest, chunk: Buffer): void {
    let pos = 0
    while (this.request === request && !request.settled) {
      if (this.#phase === HEAD) {
        pos = this.#readHead(request, chunk, pos)
        if (pos < 0) return
        continue
      }
      if (pos >= chunk.length) return
      if (request.paused) {
        this.#pending = chunk === this.#pending ? chunk.subarray(pos) : Buffer.from(chunk.subarray(pos))
        this.socket.pause()
        return
      }
      pos = this.#readBody(request, chunk, pos)
    }
  }

  /** #readHead consumes the head (and any 1xx before it); -1 when more bytes are needed or the request is over. */
  #readHead(request: LeanRequest, chunk: Buffer, pos: number): number {
    let buf = chunk
    let start = pos
    if (this.#head) {
      buf = Buffer.concat([this.#head, chunk.subarray(pos)])
      start = 0
    }
    const end = buf.indexOf(END_OF_HEAD, start)
    const limit = this.pool.options.maxHeaderSize
    if (end === -1) {
      // A head ended by bare LFs would never show CRLFCRLF: refuse it now rather than wait for the headers timeout.
      if (buf.indexOf("\n\n", start, "latin1") !== -1) throw new BackendProtocolError("bare LF in the head")
      if (buf.length - start > limit) throw new BackendProtocolError("head too large", "UND_ERR_HEADERS_OVERFLOW")
      this.#head = Buffer.from(buf.subarray(start))
      return -1
    }
    if (end - start > limit) throw new BackendProtocolError("head too large", "UND_ERR_HEADERS_OVERFLOW")
    const head = parseResponseHead(buf.toString("latin1", start, end), request.method)
    // Whatever of buf follows the head is the tail of chunk.
    const next = chunk.length - (buf.length - (end + 4))
    this.#head = undefined
    if (head.status < 200) {
      if (head.status === 101) throw new BackendProtocolError("101 to a request that asked no upgrade")
      if (head.status === 100) this.continued()
      return next // 100 Continue and other interim responses: the final one follows
    }
    if (this.#continueTimer !== undefined) {
      // A final answer before the body (e.g. 413, 401): the body is never sent, and the connection is not reused.
      clearTimeout(this.#continueTimer)
      this.#continueTimer = undefined
    }
    this.#phase = BODY
    this.#framing = head.framing
    this.#keepAlive = head.keepAlive
    const o = this.pool.options
    // Keep a second of margin so we never send on a connection the backend is about to close.
    this.#idleTimeout =
      head.keepAliveTimeoutMs === undefined
        ? o.keepAliveTimeout
        : Math.max(1, Math.min(o.keepAliveMaxTimeout, head.keepAliveTimeoutMs - 1000))
    this.#remaining = head.framing.kind === "length" ? head.framing.length : 0
    this.#chunked = head.framing.kind === "chunked" ? new ChunkedDecoder() : undefined
    this.#setTimeout(this.pool.options.bodyTimeout)
    request.handler.onResponseStart?.(request, head.status, head.headers, head.statusText)
    if (request.settled) return -1 // the handler aborted
    if (head.framing.kind === "none" || (head.framing.kind === "length" && head.framing.length === 0)) {
      this.#complete(request, next === chunk.length)
      return -1
    }
    return next
  }

  /** #readBody hands one piece of body to the handler and returns the next position. */
  #readBody(request: LeanRequest, chunk: Buffer, pos: number): number {
    const kind = this.#framing.kind
    if (kind === "close") {
      this.#deliver(request, chunk.subarray(pos))
      return chunk.length
    }
    if (kind === "length") {
      const end = Math.min(chunk.length, pos + this.#remaining)
      this.#remaining -= end - pos
      this.#deliver(request, chunk.subarray(pos, end))
      if (this.#remaining === 0 && !request.settled) this.#complete(request, end === chunk.length)
      return end
    }
    const decoder = this.#chunked!
    const next = decoder.step(chunk, pos)
    if (decoder.data && decoder.data.length > 0) this.#deliver(request, decoder.data)
    if (decoder.done && !request.settled) this.#complete(request, next === chunk.length)
    return next
  }

  /**
   * #complete: the response is whole. The connection goes back to the pool before the handler hears the end
   * (which may dispatch the next request); clean says no byte followed the response (else it is not reused).
   */
  #complete(request: LeanRequest, clean: boolean): void {
    this.request = undefined
    this.#bulk = false
    request.connection = undefined
    this.#setTimeout(this.#idleTimeout)
    // The handler may have paused us on the last piece; its resume will not reach this connection any more, and
    // the next request (or the backend closing an idle connection) must be read.
    if (request.paused) this.socket.resume()
    this.reused = true
    // A request whose body was not all sent (the backend answered early) leaves the connection mid-request.
    const sentWhole = request.stream === undefined || request.bodySent
    this.pool.released(this, clean && sentWhole && this.#keepAlive && !request.reset && !this.#eof && !this.#gone)
    request.end(this.#chunked?.trailers)
  }

  #fail(err: Error): void {
    const request = this.request
    this.request = undefined
    this.destroy()
    if (request) this.#failOrResend(request, err)
  }

  /** #failOrResend: the keep-alive race (see the module's note) sends the request again; anything else fails it. */
  #failOrResend(request: LeanRequest, err: Error): void {
    const code = (err as NodeJS.ErrnoException).code
    const race =
      this.reused &&
      this.#untouched &&
      request.idempotent &&
      !request.aborted &&
      (code === "UND_ERR_SOCKET" || code === "ECONNRESET" || code === "EPIPE")
    if (race && !request.settled) {
      request.connection = undefined
      this.pool.resend(request)
    } else request.fail(err)
  }

  pause(): void {
    this.#setTimeout(0)
    this.socket.pause()
  }

  resume(): void {
    const request = this.request
    if (!request || this.#gone) return
    this.#setTimeout(this.pool.options.bodyTimeout)
    const pending = this.#pending
    this.#pending = undefined
    if (pending) {
      try {
        this.#consume(request, pending)
      } catch (err) {
        this.#fail(err as Error)
        return
      }
    }
    if (this.request !== request) {
      // The bytes kept while paused ended the response (#complete): the socket, paused when they were kept, reads
      // again for the next request on this connection, or for the backend closing it while idle.
      if (!this.#gone && !this.#eof) this.socket.resume()
      return
    }
    if (request.paused) return
    if (this.#eof) this.ended()
    else this.socket.resume()
  }

  abort(request: LeanRequest, reason: Error): void {
    if (this.request === request) this.#fail(reason)
  }

  /** ended: the backend closed its side. A close-delimited body ends here; anything else in flight failed. */
  ended(): void {
    this.#eof = true
    const request = this.request
    if (!request) {
      this.destroy()
      return
    }
    if (this.#pending) return // resume() delivers what was read, then comes back here
    if (this.#phase === BODY && this.#framing.kind === "close") {
      this.#complete(request, false)
      return
    }
    this.#fail(failure("UND_ERR_SOCKET", "other side closed"))
  }

  timedOut(): void {
    if (!this.#connected) this.#fail(failure("UND_ERR_CONNECT_TIMEOUT", "Connect Timeout Error"))
    else if (!this.request) this.destroy()
    else if (this.#phase === HEAD) this.#fail(failure("UND_ERR_HEADERS_TIMEOUT", "Headers Timeout Error"))
    else this.#fail(failure("UND_ERR_BODY_TIMEOUT", "Body Timeout Error"))
  }

  errored(err: Error): void {
    this.#fail(err)
  }

  /** destroy closes the socket and takes the connection out of the pool's count (once). */
  destroy(): void {
    if (this.#continueTimer !== undefined) clearTimeout(this.#continueTimer)
    this.#continueTimer = undefined
    if (this.#gone) return
    this.#gone = true
    this.#stopTimer()
    this.socket.destroy()
    this.pool.lost(this)
  }

  #stopTimer(): void {
    this.#timeoutMs = 0
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#fireAt = Number.POSITIVE_INFINITY
  }

  /** closed: the socket is gone; a request still on it (closed without an error event) failed. */
  closed(): void {
    live.get(this.pool)?.delete(this)
    const request = this.request
    this.request = undefined
    this.#stopTimer()
    if (!this.#gone) {
      this.#gone = true
      this.pool.lost(this)
    }
    if (request) this.#failOrResend(request, failure("UND_ERR_SOCKET", "other side closed"))
  }
}
function onExpectTimeout(connection: Connection): void {
  connection.continued()
}
function onPurge(pool: LeanPool): void {
  pool.purge()
}
function onConnect(this: WithConnection): void {
  this[kConnection]!.connected()
}
function onRead(this: WithConnection, bytes: number, buffer: Buffer): boolean {
  this[kConnection]!.onData(buffer.subarray(0, bytes))
  return true
}
function onEnd(this: WithConnection): void {
  this[kConnection]!.ended()
}
function onError(this: WithConnection, err: Error): void {
  this[kConnection]!.errored(err)
}
function onClose(this: WithConnection): void {
  this[kConnection]!.closed()
}
function onTimer(connection: Connection): void {
  connection.timerFired()
}

/** trailerLines renders a request's trailer fields for the last chunk (RFC 9112 §7.1.2); unsafe ones are dropped. */
function trailerLines(trailers: unknown): string {
  if (trailers === null || typeof trailers !== "object") return ""
  let out = ""
  for (const [name, value] of Object.entries(trailers as Record<string, string | string[] | undefined>)) {
    if (value === undefined || !TOKEN.test(name)) continue
    for (const v of Array.isArray(value) ? value : [value]) if (!BAD_VALUE.test(v)) out += `${name}: ${v}\r\n`
  }
  return out
}
