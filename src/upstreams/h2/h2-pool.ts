/**
 * @module h2-pool: a multiplexed HTTP/2 client for one backend, h2 over TLS (ALPN) or h2c (prior knowledge, RFC 9113
 * §3.3), with undici's dispatch interface so the exchange drives it like the HTTP/1.1 pools.
 *
 * Why our own and not undici's `allowH2`: undici 7 has no h2c, cannot send request trailers (gRPC clients send
 * none, but HTTP/1.1 chunked clients may), and hides REFUSED_STREAM and GOAWAY, which decide whether a request may
 * go to another backend. node:http2's client session gives all of them.
 *
 * A few sessions per backend (`sessions`), each carrying up to the peer's SETTINGS_MAX_CONCURRENT_STREAMS; a request
 * takes the least busy session with room, a new session is opened while under the cap, and the rest wait in order.
 * A session that gets GOAWAY takes no new streams; streams the backend refused (RST_STREAM REFUSED_STREAM, or above
 * GOAWAY's last stream id: RFC 9113 §8.7 "not processed") fail with PC_BACKEND_STREAM_REFUSED, which the exchange
 * retries like a connect failure, whatever the method.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from "node:http2"
import type { Duplex, Readable } from "node:stream"
import type { Dispatcher } from "undici"
import { adoptSessionTables } from "../../core/h2-session-tables.ts"
import type { BackendPool } from "../pool.ts"

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_FLAG_END_STREAM } = http2.constants

/** A handler whose onResponseStart takes a fifth argument: the head ended the stream (the exchange's does). */
interface EndStreamAware extends Dispatcher.DispatchHandler {
  onResponseStart?(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[]>,
    statusMessage: string,
    endStream?: boolean,
  ): void
}

/** H2PoolOptions: how to reach the backend and the limits that apply to it. */
export interface H2PoolOptions {
  /** "http" (h2c) or "https" (h2 over TLS): the :scheme of every request and the session's origin. */
  scheme: "http" | "https"
  /** host:port of the backend, the :authority of a request that carries no Host. */
  authority: string
  /**
   * connect opens one transport: a TCP socket (h2c) or a TLS socket whose ALPN is h2, already connected; it calls
   * back once, with the socket or the error (codes as the HTTP/1.1 clients': ECONNREFUSED, UND_ERR_CONNECT_TIMEOUT).
   */
  connect: (callback: (err: Error | null, socket?: Duplex) => void) => void
  /** Sessions (connections) kept to this backend at most. */
  sessions: number
  /** Streams in flight at most on this backend (its max_connections); Infinity for none. */
  maxStreams: number
  /** From sending the request to the response head. */
  headersTimeout: number
  /** Longest silence in the response body; also how long an idle session is kept. */
  bodyTimeout: number
  idleTimeout: number
}

/** Connection-specific fields that HTTP/2 forbids (RFC 9113 §8.2.2); the exchange already drops hop-by-hop ones. */
const CONNECTION_SPECIFIC = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"])

function failure(code: string, message: string): Error {
  return Object.assign(new Error(message), { code })
}

/** Session: one backend connection and the streams it carries. */
interface Session {
  readonly session: ClientHttp2Session
  active: number
  /** GOAWAY received or closing: no new streams. */
  draining: boolean
}

/** H2Pool multiplexes requests to one backend over a few HTTP/2 sessions. */
export class H2Pool implements BackendPool {
  readonly options: H2PoolOptions
  readonly #sessions: Session[] = []
  readonly #queue: H2Request[] = []
  #connecting = 0
  #inFlight = 0
  #closed = false
  #whenIdle: (() => void) | undefined

  constructor(options: H2PoolOptions) {
    this.options = options
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const request = new H2Request(this, options, handler)
    if (this.#closed) {
      request.fail(failure("UND_ERR_CLOSED", "the backend pool is closed"))
      return true
    }
    this.#queue.push(request)
    this.#schedule()
    return true
  }

  /** #schedule starts queued requests on sessions with room, opening sessions while under the cap. */
  #schedule(): void {
    while (this.#queue.length > 0) {
      const next = this.#queue[0]!
      if (next.settled) {
        this.#queue.shift()
        continue
      }
      if (this.#inFlight >= this.options.maxStreams) return
      const session = this.#pick()
      if (session === undefined) {
        if (this.#sessions.length + this.#connecting < this.options.sessions && this.#connecting < this.#queue.length) {
          this.#open()
        }
        return
      }
      this.#queue.shift()
      this.#start(session, next)
    }
  }

  /** #pick: the least busy live session under the peer's concurrent-stream limit. */
  #pick(): Session | undefined {
    let best: Session | undefined
    for (const s of this.#sessions) {
      if (s.draining || s.session.destroyed) continue
      const limit = s.session.remoteSettings.maxConcurrentStreams ?? 100
      if (s.active >= limit) continue
      if (best === undefined || s.active < best.active) best = s
    }
    return best
  }

  #open(): void {
    this.#connecting++
    this.options.connect((err, socket) => {
      this.#connecting--
      if (err || !socket) {
        // Nothing of a queued request was sent. With no live session the backend is unreachable: every waiting
        // request gets the connect error (the exchange may try another backend); with live ones only the request
        // this connect was opened for, the rest wait for room there.
        const error = err ?? failure("UND_ERR_SOCKET", "no socket")
        const waiting = this.#sessions.some((s) => !s.draining) ? this.#queue.splice(0, 1) : this.#queue.splice(0)
        for (const r of waiting) r.fail(error)
        this.#schedule()
        return
      }
      if (this.#closed) {
        socket.destroy()
        return
      }
      const session = http2.connect(`${this.options.scheme}://${this.options.authority}`, {
        createConnection: () => socket,
        // The backend decides its own header limits; forward what the client sent.
        maxHeaderListPairs: 1_000,
        peerMaxConcurrentStreams: 100,
      })
      adoptSessionTables(session)
      const entry: Session = { session, active: 0, draining: false }
      this.#sessions.push(entry)
      session.on("error", () => {}) // each stream reports its own failure
      session.on("goaway", () => {
        entry.draining = true
      })
      session.on("close", () => {
        entry.draining = true
        const i = this.#sessions.indexOf(entry)
        if (i !== -1) this.#sessions.splice(i, 1)
        this.#schedule()
      })
      session.setTimeout(this.options.idleTimeout, () => {
        if (entry.active === 0) session.close()
      })
      // remoteSettings arrive with the peer's first SETTINGS; until then Node assumes the default (unlimited), and
      // peerMaxConcurrentStreams bounds what we start.
      session.once("remoteSettings", () => this.#schedule())
      this.#schedule()
    })
  }

  #start(entry: Session, request: H2Request): void {
    let stream: ClientHttp2Stream
    try {
      stream = entry.session.request(request.headers, {
        endStream: request.body === null,
        // A client that announced request trailers (Trailer, RFC 9110 §6.6.2) gets them passed on after the body.
        waitForTrailers: request.body !== null && request.headers.trailer !== undefined,
      })
    } catch (err) {
      // The session went away between pick and request (GOAWAY, closed): nothing was sent; try another.
      entry.draining = true
      this.#queue.unshift(request)
      queueMicrotask(() => this.#schedule())
      void err
      return
    }
    entry.active++
    this.#inFlight++
    stream.once("close", () => {
      entry.active--
      this.#inFlight--
      if (entry.draining && entry.active === 0) entry.session.close()
      this.#schedule()
      if (this.#inFlight === 0) this.#whenIdle?.()
    })
    request.run(stream, entry)
  }

  /**
   * requeue puts a request the backend refused unprocessed (GOAWAY or REFUSED_STREAM) back at the head of the queue,
   * for another session of this backend: it is what a graceful GOAWAY asks of a client (RFC 9113 §6.8).
   */
  requeue(request: H2Request): void {
    if (this.#closed) {
      request.fail(failure("PC_BACKEND_STREAM_REFUSED", "the backend refused the stream and the pool is closing"))
      return
    }
    this.#queue.unshift(request)
    this.#schedule()
  }

  /** close lets streams in flight and queued requests finish, then closes every session (GOAWAY). */
  async close(): Promise<void> {
    this.#closed = true
    if (this.#inFlight > 0 || this.#queue.length > 0) {
      await new Promise<void>((resolve) => {
        this.#whenIdle = resolve
      })
    }
    for (const s of this.#sessions.splice(0)) s.session.close()
  }

  /** destroy closes every session now; requests in flight fail. */
  async destroy(): Promise<void> {
    this.#closed = true
    for (const r of this.#queue.splice(0)) r.fail(failure("UND_ERR_DESTROYED", "the backend pool is destroyed"))
    for (const s of this.#sessions.splice(0)) s.session.destroy()
  }
}

/** requestHeaders turns undici's flat header list into an HTTP/2 header block with the pseudo-headers first. */
function requestHeaders(options: Dispatcher.DispatchOptions, pool: H2PoolOptions): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {
    ":method": options.method,
    ":scheme": pool.scheme,
    ":path": options.path,
  }
  let authority: string | undefined
  const list = options.headers
  if (Array.isArray(list)) {
    for (let i = 0; i < list.length; i += 2) {
      const name = String(list[i]).toLowerCase()
      const value = list[i + 1] as string
      if (name === "host") {
        authority ??= value
        continue
      }
      if (CONNECTION_SPECIFIC.has(name)) continue
      // RFC 9113 §8.2.2: TE may only say "trailers" (what gRPC requires).
      if (name === "te") {
        if (value.trim().toLowerCase() === "trailers") out.te = "trailers"
        continue
      }
      const existing = out[name]
      if (existing === undefined) out[name] = value
      else if (Array.isArray(existing)) existing.push(value)
      else out[name] = [String(existing), value]
    }
  }
  out[":authority"] = authority ?? pool.authority
  return out
}

/** H2Request: one request's stream and its undici DispatchController (pause, resume, abort). */
class H2Request implements Dispatcher.DispatchController {
  readonly pool: H2Pool
  readonly handler: Dispatcher.DispatchHandler
  readonly headers: http2.OutgoingHttpHeaders
  readonly body: Buffer | Readable | null
  stream: ClientHttp2Stream | undefined
  settled = false
  /** Times the backend refused this request unprocessed and it was queued again. */
  refusals = 0
  #aborted = false
  #paused = false
  #reason: Error | null = null
  #responded = false
  #trailers: Record<string, string | string[]> | undefined
  #headersTimer: NodeJS.Timeout | undefined
  /** The session's GOAWAY last stream id when it came, to tell refused streams from reset ones. */
  #entry: Session | undefined

  constructor(pool: H2Pool, options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) {
    this.pool = pool
    this.handler = handler
    this.headers = requestHeaders(options, pool.options)
    const body = options.body
    this.body =
      body === null || body === undefined || (Buffer.isBuffer(body) && body.length === 0)
        ? null
        : (body as Buffer | Readable)
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
    if (this.stream && !this.stream.destroyed) this.stream.close(NGHTTP2_CANCEL)
    this.fail(reason)
  }

  pause(): void {
    this.#paused = true
    this.stream?.pause()
  }

  resume(): void {
    if (!this.#paused) return
    this.#paused = false
    this.stream?.resume()
  }

  fail(err: Error): void {
    if (this.settled) return
    this.settled = true
    clearTimeout(this.#headersTimer)
    if (this.body !== null && !Buffer.isBuffer(this.body)) this.body.unpipe?.()
    this.handler.onResponseError?.(this, err)
  }

  run(stream: ClientHttp2Stream, entry: Session): void {
    this.stream = stream
    this.#entry = entry
    const options = this.pool.options
    this.handler.onRequestStart?.(this, {})
    if (this.settled) {
      stream.close(NGHTTP2_CANCEL)
      return
    }
    this.#headersTimer = setTimeout(() => {
      this.fail(failure("UND_ERR_HEADERS_TIMEOUT", `no response head within ${options.headersTimeout} ms`))
      stream.close(NGHTTP2_CANCEL)
    }, options.headersTimeout)
    stream.on("response", (headers: IncomingHttpHeaders, flags: number) => this.#onResponse(headers, flags))
    stream.on("trailers", (trailers: IncomingHttpHeaders) => {
      this.#trailers = withoutPseudo(trailers)
    })
    stream.on("data", (chunk: Buffer) => {
      if (!this.settled) this.handler.onResponseData?.(this, chunk)
    })
    stream.on("end", () => {
      if (this.settled || !this.#responded) return
      this.settled = true
      this.handler.onResponseEnd?.(this, this.#trailers ?? {})
    })
    stream.on("error", () => {}) // the outcome is read on 'close'
    stream.on("close", () => this.#onClose(stream))
    this.#sendBody(stream)
  }

  #onResponse(headers: IncomingHttpHeaders, flags: number): void {
    if (this.settled) return
    clearTimeout(this.#headersTimer)
    this.#responded = true
    const status = Number(headers[":status"])
    const stream = this.stream!
    if ((flags & NGHTTP2_FLAG_END_STREAM) !== 0) {
      // The head is the whole response (gRPC trailers-only): a handler that can say so gets endStream.
      this.settled = true
      const handler = this.handler as EndStreamAware
      handler.onResponseStart?.(this, status, withoutPseudo(headers) as Record<string, string | string[]>, "", true)
      handler.onResponseEnd?.(this, {})
      return
    }
    stream.setTimeout(this.pool.options.bodyTimeout, () => {
      this.fail(failure("UND_ERR_BODY_TIMEOUT", `response body idle for ${this.pool.options.bodyTimeout} ms`))
      stream.close(NGHTTP2_CANCEL)
    })
    this.handler.onResponseStart?.(this, status, withoutPseudo(headers) as Record<string, string | string[]>, "")
    if (this.#paused) stream.pause()
  }

  #onClose(stream: ClientHttp2Stream): void {
    clearTimeout(this.#headersTimer)
    if (this.settled) return
    const code = stream.rstCode ?? NGHTTP2_NO_ERROR
    const goaway = this.#entry?.draining === true
    if (!this.#responded && (code === NGHTTP2_REFUSED_STREAM || (goaway && code !== NGHTTP2_NO_ERROR))) {
      // RFC 9113 §8.7: the backend did not process it, so any method may be sent again. A body we still hold
      // (none, or a Buffer) goes again on another session of this backend, twice at most; otherwise the exchange
      // decides (another backend, when its body is held).
      if (this.refusals < 2 && (this.body === null || Buffer.isBuffer(this.body))) {
        this.refusals++
        this.stream = undefined
        this.#entry = undefined
        stream.removeAllListeners("response")
        stream.removeAllListeners("data")
        this.pool.requeue(this)
        return
      }
      this.fail(failure("PC_BACKEND_STREAM_REFUSED", "the backend refused the stream before processing it"))
      return
    }
    this.fail(
      failure(
        this.#responded ? "UND_ERR_SOCKET" : "ECONNRESET",
        `the backend reset the stream (HTTP/2 error code ${code})`,
      ),
    )
  }

  #sendBody(stream: ClientHttp2Stream): void {
    const body = this.body
    if (body === null) return
    if (Buffer.isBuffer(body)) {
      stream.end(body)
      return
    }
    if (this.headers.trailer !== undefined) {
      stream.once("wantTrailers", () => {
        const trailers = (body as { trailers?: Record<string, string | string[]> }).trailers ?? {}
        try {
          stream.sendTrailers(withoutConnectionSpecific(trailers))
        } catch {
          if (!stream.destroyed) stream.close(NGHTTP2_CANCEL)
        }
      })
    }
    // A stream: forward with backpressure; its end ends ours (then the trailers, when announced).
    const onData = (chunk: Buffer) => {
      if (!stream.write(chunk)) body.pause()
    }
    stream.on("drain", () => body.resume())
    body.on("data", onData)
    body.once("end", () => {
      if (!stream.destroyed) stream.end()
    })
    body.once("error", () => {
      if (!stream.destroyed) stream.close(NGHTTP2_CANCEL)
    })
    stream.once("close", () => body.off("data", onData))
  }
}

function withoutPseudo(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* : */) continue
    const value = headers[name]
    if (value !== undefined) out[name] = value
  }
  return out
}

/** withoutConnectionSpecific drops fields HTTP/2 refuses (RFC 9113 §8.2.2) from request trailers. */
function withoutConnectionSpecific(trailers: Record<string, string | string[]>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const name in trailers) {
    const lower = name.toLowerCase()
    if (!CONNECTION_SPECIFIC.has(lower) && lower !== "te" && lower !== "host" && lower !== "content-length") {
      out[lower] = trailers[name]!
    }
  }
  return out
}
