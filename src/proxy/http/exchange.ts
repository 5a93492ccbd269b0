/** @module exchange: one proxied HTTP request: pick a backend, stream the request, stream the response, retry or fail. */
import { randomBytes } from "node:crypto"
import type { IncomingHttpHeaders } from "node:http"
import { PassThrough, type Readable } from "node:stream"
import type { Dispatcher } from "undici"
import type { AccessLog } from "../../core/access-log.ts"
import type { ConnectionInfo } from "../../core/connection-info.ts"
import { BackendError, ClientError, errorMessage, PortcullisError } from "../../core/errors.ts"
import { classify, classifyCode, type Failure } from "../../core/failure.ts"
import type { Logger } from "../../core/log.ts"
import type { RouteMeter } from "../../state/instruments.ts"
import type { Backend } from "../../upstreams/backend.ts"
import { addStickyCookie, hashKeyOf, readCookie, type StickyContext } from "../../upstreams/balancers/index.ts"
import { type LeanDispatchOptions, RELAYS_CONTINUE } from "../../upstreams/h1/lean-pool.ts"
import { canRetry, IDEMPOTENT_METHODS } from "../../upstreams/retry-policy.ts"
import type { SlotWaiter, Upstream } from "../../upstreams/upstream.ts"
import { errorResponse } from "../respond-error.ts"
import { grpcMessage, grpcStatusFor, parseGrpcTimeout } from "./grpc-status.ts"
import { H1Body, type H1Request } from "./h1/h1-request.ts"
import type { H1Response } from "./h1/h1-response.ts"
import type { H2Request, H2Response } from "./h2-stream.ts"
import { responseHeadersForClient } from "./hop-headers.ts"
import { buildRequestHeaders } from "./request-headers.ts"

/**
 * ClientRequest / ClientResponse: one request of either client protocol. Both adapters (h1/h1-request.ts,
 * h1/h1-response.ts; h2-stream.ts) carry the members the exchange uses under ServerResponse's names; `"stream" in`
 * tells HTTP/2 apart where the protocols differ (trailers, resets, 100 Continue).
 */
export type ClientRequest = H1Request | H2Request
export type ClientResponse = H1Response | H2Response

/** ExchangeContext: what an engine shares with each of its exchanges. */
export interface ExchangeContext {
  readonly listener: string
  readonly log: Logger
  readonly accessLog: AccessLog | undefined
  /** Strict-Transport-Security value, when configured. */
  readonly hsts: string | undefined
  /** The generation is closing: answer with Connection: close so clients move to the new one. */
  readonly closing: boolean
  /** limits.body_buffer: request body bytes read before a backend is picked (0: none). */
  readonly bodyBuffer: number
  /** limits.body_timeout: longest pause of a client sending a body or reading a response, in ms. */
  readonly bodyTimeout: number
  /** tracing.generate: add a W3C traceparent to requests that carry none. */
  readonly generateTrace?: boolean
}

const kExchange = Symbol("portcullis.exchange")
type WithExchange = { [kExchange]?: Exchange }

/**
 * Exchange carries one request through the backend; it is undici's dispatch handler for each try.
 *
 * No exception may leave a handler callback (onRequestStart ... onResponseError): undici turns one into an 'error'
 * on its Client, and the lean client (h1/lean-pool.ts) into one on a socket's event, and either ends the process.
 * Writes to the client are no-ops once its response is over (writeChunk; H2Response does the same), and each
 * callback ends in #internal if anything throws anyway.
 */
export class Exchange implements Dispatcher.DispatchHandler, SlotWaiter {
  readonly ctx: ExchangeContext
  readonly req: ClientRequest
  readonly res: ClientResponse
  readonly info: ConnectionInfo
  readonly upstream: Upstream
  readonly host: string | undefined
  /** The route that chose the upstream: with `client`, who saw a failure, for passive health (FailureSource). */
  readonly route: object | undefined
  readonly started = performance.now()
  /** Date.now() at the start, for try_duration. */
  readonly startedAt = Date.now()
  backend: Backend | undefined
  /** The backend whose inFlight count this exchange holds (exactly one decrement per try). */
  held: Backend | undefined
  lastError: unknown
  controller: Dispatcher.DispatchController | undefined
  headers: string[] = []
  body: Readable | Buffer | null = null
  /** The body cannot be sent twice: a stream, or held only to shield the backend (over retry_body_limit). */
  streamed = false
  /** The pick context when the upstream hashes or pins (sticky); undefined otherwise. */
  pickContext: StickyContext | undefined
  tried: Set<Backend> | undefined
  attempt = 0
  /** undici started writing this try's request to a connected socket (bytes may have reached the backend). */
  sent = false
  /** Waiting in the upstream's queue for a backend under max_connections. */
  waiting = false
  responseStarted = false
  done = false
  status = 0
  bytes = 0
  reason = ""
  /** The timeouts.total timer; only set when it is configured (no cost when off). */
  totalTimer: NodeJS.Timeout | undefined
  /** The client sent Expect: 100-continue and waits for our 100 before it sends the body. */
  expectsContinue = false
  /** The request body's idle timer (limits.body_timeout), refreshed by every piece; made for requests with a body. */
  bodyTimer: NodeJS.Timeout | undefined
  /** Where the request body comes from, while it is read (the HTTP/2 stream, or the HTTP/1.1 request). */
  bodySource: Readable | undefined
  /** The client-read idle timer: armed when the client stops taking the response (made on the first stop). */
  readTimer: NodeJS.Timeout | undefined
  /** The route's request instruments (set by the engine before start). */
  meter: RouteMeter | undefined
  /** The W3C traceparent the backend receives: the client's, or ours when tracing.generate added one. */
  traceparent: string | undefined

  constructor(
    ctx: ExchangeContext,
    req: ClientRequest,
    res: ClientResponse,
    info: ConnectionInfo,
    upstream: Upstream,
    host: string | undefined,
    route?: object,
  ) {
    this.ctx = ctx
    this.req = req
    this.res = res
    this.info = info
    this.upstream = upstream
    this.host = host
    this.route = route
  }

  /** client is the client's address, for passive health (FailureSource). */
  get client(): string {
    return this.info.clientAddress
  }

  /** start builds the backend request once and sends the first try. */
  start(): void {
    const req = this.req
    this.headers = buildRequestHeaders(req.rawHeaders, this.info, this.host, this.upstream.config.protocol !== "http1")
    // W3C Trace Context: the client's traceparent goes to the backend as it came (buildRequestHeaders keeps it).
    const traceparent = "stream" in req ? req.headers.traceparent : req.header("traceparent")
    if (typeof traceparent === "string") this.traceparent = traceparent
    else if (this.ctx.generateTrace === true) {
      this.traceparent = newTraceparent()
      this.headers.push("traceparent", this.traceparent)
    }
    const upstream = this.upstream
    let total = upstream.config.timeouts.total
    if ("stream" in this.res && this.res.grpc) {
      // grpc-timeout bounds the whole call: the proxy answers DEADLINE_EXCEEDED rather than wait past it.
      const deadline = parseGrpcTimeout(req.headers["grpc-timeout"])
      if (deadline !== undefined && (total === 0 || deadline < total)) total = deadline
    }
    if (total > 0) this.totalTimer = setTimeout(onTotalTimeout, total, this)
    if (upstream.sticky !== undefined || upstream.hashKey !== undefined) {
      this.pickContext = {
        key: upstream.hashKey && hashKeyOf(upstream.hashKey, req, this.info.clientAddress),
        cookie: upstream.sticky && readCookie(req.headers.cookie, upstream.sticky.cookieName),
      }
    }
    ;(this.res as WithExchange)[kExchange] = this
    this.res.on("drain", onClientDrain)
    this.res.on("close", onClientClose)
    if (hasBody(req)) {
      this.expectsContinue = isExpectContinue("stream" in req ? req.headers.expect : req.expect)
      const length =
        "stream" in req
          ? Number(req.headers["content-length"])
          : req.contentLength >= 0
            ? req.contentLength
            : Number.NaN
      // gRPC streams its messages both ways and may idle between them: neither held nor timed (a bidirectional
      // call would wait forever for a reply to a message we held).
      const grpc = "stream" in this.res && this.res.grpc
      const bodyBuffer = grpc ? 0 : this.ctx.bodyBuffer
      this.bodySource = "stream" in req ? req.stream : req.body
      // HTTP/2 request trailers come as an event; kept on the stream as IncomingMessage keeps them (announced only).
      if ("stream" in req && req.headers.trailer !== undefined) keepTrailers(req.stream)
      if (this.ctx.bodyTimeout > 0 && !grpc) {
        this.bodyTimer = setTimeout(onBodyTimeout, this.ctx.bodyTimeout, this)
      }
      const retryable = upstream.config.retries > 0 && length > 0 && length <= upstream.config.retry_body_limit
      if (retryable || (length > 0 && length <= bodyBuffer)) {
        // Small enough to hold: read it all before a backend is taken (a slow client holds none), and, within
        // retry_body_limit, so a failed try can be sent again elsewhere. Held only for the first reason, it is
        // sent once, as it would have been streamed.
        this.streamed = !retryable
        this.continueClient()
        bufferBody(this, length)
        return
      }
      if (bodyBuffer > 0 && !this.expectsContinue) {
        // Slow-client shielding (as nginx's proxy_request_buffering, bounded): the first body_buffer bytes, or the
        // whole body if shorter, arrive before a backend connection is taken; the rest is streamed. Not with
        // Expect: 100-continue: that client sends nothing until the backend is ready, and a request no backend can
        // take gets its final status without ever sending the body.
        this.streamed = true
        bufferBodyHead(this, bodyBuffer, Number.isNaN(length) ? -1 : length)
        return
      }
      // HTTP/2: the body through its own Readable (undici ends what it sent; the stream carries the response too).
      this.body = "stream" in req ? req.bodyStream() : req.body!
      this.streamed = true
      watchBody(this, this.bodySource!)
    }
    this.#try()
  }

  /** bodyHeadBuffered: the first part of a longer body is held; `rest` streams it all, held part first. */
  bodyHeadBuffered(rest: Readable): void {
    if (this.done) return
    this.body = rest
    this.streamed = true
    this.#try()
  }

  /**
   * bodyIdle: the client sent no body byte for limits.body_timeout while we were reading (nginx's
   * client_body_timeout). 408 and the connection closed; the try in flight is aborted without counting against the
   * backend, which did nothing wrong.
   */
  bodyIdle(): void {
    if (this.done) return
    const source = this.bodySource
    // Paused by backpressure (the backend is not taking the body): not the client's pause.
    if (source !== undefined && source.readableFlowing === false) {
      this.bodyTimer?.refresh()
      return
    }
    const res = this.res
    if (!res.headersSent && !("stream" in res)) res.shouldKeepAlive = false
    this.#fail(new ClientError("PC_CLIENT_BODY_TIMEOUT", `no request body byte for ${this.ctx.bodyTimeout} ms`))
    const controller = this.controller
    this.finish()
    controller?.abort(new Error("client body timeout"))
    // undici finishes an aborted request only when its body stream does: end ours (never the client request).
    const body = this.body
    if (body !== null && !Buffer.isBuffer(body) && ("stream" in this.req || body !== this.req.body)) body.destroy()
    // HTTP/2: the request side is still open. RST_STREAM NO_ERROR after the 408 asks the client to stop sending
    // (RFC 9113 §8.1); Node sends it once the response is written.
    if ("stream" in res && !res.gone) res.stream.close(0x0 /* NO_ERROR */)
  }

  /**
   * readIdle: the client took no response byte for limits.body_timeout. Its connection (HTTP/2: its stream) is
   * closed and the backend request aborted, so the backend connection is freed.
   */
  readIdle(): void {
    if (this.done || this.controller?.paused !== true) return
    this.reason = `client read nothing for ${this.ctx.bodyTimeout} ms`
    const controller = this.controller
    this.finish()
    controller.abort(new Error("client read timeout"))
    destroyResponse(this.res, new Error(this.reason))
  }

  /** clientStalled: a write to the client was not taken at once; arm the read idle timer. */
  clientStalled(): void {
    const ms = this.ctx.bodyTimeout
    if (ms <= 0) return
    if (this.readTimer === undefined) this.readTimer = setTimeout(onReadTimeout, ms, this)
    else this.readTimer.refresh()
  }

  /** bodyBuffered is called once the whole request body is held in memory. */
  bodyBuffered(body: Buffer): void {
    if (this.done) return
    this.body = body
    this.#try()
  }

  /**
   * bodyShort: the request body ended before its Content-Length. Malformed (RFC 9113 §8.1.1; RFC 9112 §6.3 for
   * HTTP/1.1, where the parser already refuses it): nothing goes to the backend and the client's stream is reset.
   */
  bodyShort(received: number, length: number): void {
    if (this.done) return
    this.reason = `request body of ${received} bytes, content-length ${length}`
    this.status = 400
    const res = this.res
    if ("stream" in res) res.stream.close(0x1 /* PROTOCOL_ERROR */)
    else res.destroy()
  }

  #try(): void {
    const upstream = this.upstream
    let context: StickyContext | undefined = this.pickContext
    if (this.tried !== undefined) {
      if (context === undefined) context = { exclude: this.tried }
      else context.exclude = this.tried
    }
    const backend = upstream.pick(context)
    if (!backend || this.tried?.has(backend)) {
      if (upstream.saturated(this.tried)) {
        try {
          upstream.wait(this)
          this.waiting = true
        } catch (err) {
          this.#fail(err)
        }
        return
      }
      this.#fail(
        this.lastError ??
          new PortcullisError("PC_NO_BACKEND", `upstream ${upstream.name}: no backend available`, {
            source: "backend",
          }),
      )
      return
    }
    this.backend = backend
    this.held = backend
    this.attempt++
    this.sent = false
    this.controller = undefined
    upstream.acquire(backend)
    const method = this.req.method ?? "GET"
    try {
      upstream.poolFor(backend).dispatch(
        {
          path: this.req.url ?? "/",
          method,
          headers: this.headers,
          body: this.body,
          idempotent: IDEMPOTENT_METHODS.has(method),
          // The lean HTTP/1.1 client asks the backend the same and relays its 100 (or its early final answer).
          expectContinue: this.expectsContinue,
          batched: !("stream" in this.res),
        } as LeanDispatchOptions,
        this,
        this.info,
      )
    } catch (err) {
      // A pool that throws instead of calling onResponseError (e.g. a PROXY header it cannot encode): ours.
      this.#release()
      this.#fail(err, classifyCode("PC_INTERNAL"))
    }
  }

  /**
   * continueClient answers the client's Expect: 100-continue once, when the proxy is ready to take the body (RFC 9110
   * §10.1.1). Not before: a request that fails first (no backend, queue full) gets its final status and the client
   * never sends the body. curl sends Expect by itself for uploads over 1 MiB and waits up to 1 s for the 100.
   */
  continueClient(): void {
    if (!this.expectsContinue) return
    this.expectsContinue = false
    const res = this.res
    if ("stream" in res) {
      if (!res.gone && !res.headersSent) res.stream.additionalHeaders({ ":status": 100 })
    } else if (!res.headersSent && !res.destroyed) res.writeContinue()
  }

  /** onSlot: a backend under max_connections may be free now; pick again. */
  onSlot(): void {
    this.waiting = false
    if (!this.done) this.#try()
  }

  onQueueTimeout(): void {
    this.waiting = false
    if (this.done) return
    this.#fail(
      new BackendError(
        "PC_BACKEND_QUEUE_TIMEOUT",
        `upstream ${this.upstream.name}: no backend slot within ${this.upstream.config.queue.timeout} ms`,
      ),
    )
  }

  onRequestStart(controller: Dispatcher.DispatchController, context?: object): void {
    this.controller = controller
    this.sent = true
    // A streamed body goes out once the backend connection is open: that is when the client may send it; unless the
    // backend client relays the backend's own answer to Expect (lean-pool.ts RELAYS_CONTINUE): then its 100 (or a
    // final status before any body) is what the client gets.
    if (this.expectsContinue && context !== RELAYS_CONTINUE) this.continueClient()
    if (this.done) controller.abort(new Error("client went away"))
  }

  /**
   * onResponseStart: the backend's response head. `endStream` (HTTP/2 backends only) says the head is the whole
   * response: a gRPC "trailers-only" answer, whose status must reach the client in that one HEADERS frame too.
   */
  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    _statusMessage?: string,
    endStream?: boolean,
  ): void {
    if (statusCode < 200) {
      // The backend's 100 to our Expect: the client may send its body now. Other 1xx are not passed on.
      if (statusCode === 100) this.continueClient()
      return
    }
    if (this.done) return
    try {
      this.#respond(statusCode, headers, endStream)
    } catch (err) {
      this.#internal(err)
    }
  }

  #respond(statusCode: number, headers: Record<string, string | string[] | undefined>, endStream?: boolean): void {
    this.responseStarted = true
    this.status = statusCode
    const firstByte = (performance.now() - this.started) / 1000
    this.meter?.firstByte.observe(firstByte)
    const upstream = this.upstream
    const backend = this.backend!
    backend.responses++
    backend.firstByteSeconds += firstByte
    if (statusCode >= 500) upstream.failed(backend, "5xx", this)
    else upstream.succeeded(backend)
    const out = responseHeadersForClient(headers)
    const sticky = upstream.sticky
    if (sticky !== undefined) addStickyCookie(out, sticky, backend, this.pickContext?.cookie)
    if (this.ctx.hsts) out["strict-transport-security"] = this.ctx.hsts
    if (this.ctx.closing && this.info.alpn !== "h2") out["connection"] = "close"
    try {
      const res = this.res
      if ("stream" in res) {
        // An HTTP/2 backend may end with trailers (gRPC always does): the client's stream must wait for them.
        if (endStream === true) res.writeHead(statusCode, out, true)
        else {
          // An HTTP/1.1 backend that announces trailers (Trailer, RFC 9110 §6.6.2) sends them after a chunked body.
          if (upstream.config.protocol !== "http1" || headers.trailer !== undefined) res.expectTrailers()
          res.writeHead(statusCode, out)
        }
      } else res.writeHead(statusCode, out)
    } catch (err) {
      // A header value the client protocol cannot carry (e.g. invalid on HTTP/2): the backend's fault.
      this.controller?.abort(err as Error)
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.done) return
    this.bytes += chunk.length
    try {
      if (!writeChunk(this.res, chunk, undefined)) {
        controller.pause()
        this.clientStalled()
      }
    } catch (err) {
      this.#internal(err)
    }
  }

  /**
   * onResponseDataBorrowed: chunk is a view of the backend client's read buffer (lean-pool.ts); release, called by the
   * client write once it has taken the bytes (or dropped them), lets that buffer be read into again.
   */
  onResponseDataBorrowed(controller: Dispatcher.DispatchController, chunk: Buffer, release: () => void): void {
    if (this.done) {
      release()
      return
    }
    this.bytes += chunk.length
    try {
      if (!writeChunk(this.res, chunk, release)) {
        controller.pause()
        this.clientStalled()
      }
    } catch (err) {
      this.#internal(err)
    }
  }

  /** onResponseEnd ends the client's response, with the backend's trailers when it sent any (RFC 9110 §6.5). */
  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    try {
      this.#release()
      if (this.done) return
      const res = this.res
      if (trailers !== undefined && hasKeys(trailers)) {
        if ("stream" in res) {
          res.end(undefined, trailers as Record<string, string | string[]>)
          return
        }
        // HTTP/1.1 carries trailers only in a chunked body (no Content-Length was set).
        if (!res.hasHeader("content-length") && !res.writableEnded) res.addTrailers(trailers as Record<string, string>)
      }
      endResponse(res)
    } catch (err) {
      this.#internal(err)
    }
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    try {
      this.#release()
      if (this.done) return
      this.#failed(err)
    } catch (thrown) {
      this.#internal(thrown)
    }
  }

  /** #failed: a try failed. Passive health hears it (if it is the backend's), then it is retried or answered. */
  #failed(err: Error): void {
    const failure = classify(err)
    if (this.responseStarted) {
      this.#fail(err, failure)
      return
    }
    const backend = this.backend!
    const sent = this.sent && failure.phase !== "connect"
    this.upstream.failed(backend, failure, this)
    if (failure.retryable && this.#mayRetry(sent)) {
      this.ctx.log.debug(
        { backend: backend.id, err: errorMessage(err), attempt: this.attempt },
        "retrying on another backend",
      )
      this.upstream.retried()
      this.meter?.retried(backend.id)
      this.lastError = err
      this.tried ??= new Set()
      this.tried.add(backend)
      this.#try()
      return
    }
    this.#fail(err, failure)
  }

  #mayRetry(sent: boolean): boolean {
    if (this.streamed) return false
    const config = this.upstream.config
    return canRetry({
      method: this.req.method ?? "GET",
      bytesSent: sent ? 1 : 0,
      responseStarted: this.responseStarted,
      attempt: this.attempt,
      retries: config.retries,
      startedAt: this.startedAt,
      tryDuration: config.try_duration,
      bodyBuffered: true,
    })
  }

  #release(): void {
    const held = this.held
    if (held) {
      this.held = undefined
      this.upstream.release(held)
    }
  }

  #fail(err: unknown, failure: Failure = classify(err)): void {
    const res = this.res
    if (res.headersSent) {
      // The response has begun: the client must see a broken response, never a short one that looks whole.
      this.reason = `backend failed mid-response: ${errorMessage(err)}`
      destroyResponse(res, err)
      return
    }
    const mapped = errorResponse(failure)
    this.reason = `${mapped.reason}: ${errorMessage(err)}`
    this.status = mapped.status
    // Answer first: a log destination that fails (a full disk) must not cost the client its answer.
    if (mapped.close) closeResponse(res, failure.kind === "truncated")
    else sendPlain(res, mapped.status, mapped.body, this.ctx)
    const fields = {
      upstream: this.upstream.name,
      backend: this.backend?.id,
      err: errorMessage(err),
      code: failure.code,
    }
    // A client's own failure is its business, not the operator's: debug, so one bad client cannot flood the log.
    if (failure.source === "client") this.ctx.log.debug(fields, mapped.reason)
    else this.ctx.log.warn(fields, mapped.reason)
  }

  /**
   * #internal: one of our own callbacks threw (a bug). It must not reach undici: log it, answer 500 if nothing was
   * sent yet, else break the response; nothing here may throw again.
   */
  #internal(err: unknown): void {
    try {
      this.ctx.log.error(
        { upstream: this.upstream.name, backend: this.backend?.id, err: errorMessage(err) },
        "internal error in the http exchange",
      )
    } catch {}
    try {
      const res = this.res
      if (this.done || responseOver(res)) return
      if (res.headersSent) {
        destroyResponse(res, undefined)
        return
      }
      const mapped = errorResponse(classifyCode("PC_INTERNAL"))
      this.status = mapped.status
      this.reason = `${mapped.reason}: ${errorMessage(err)}`
      sendPlain(res, mapped.status, mapped.body, this.ctx)
    } catch {
      try {
        destroyResponse(this.res, undefined)
      } catch {}
    }
  }

  /** expire ends the request when timeouts.total passes: 504 before the response began, else a broken response. */
  expire(): void {
    this.totalTimer = undefined
    if (this.done) return
    const total = this.upstream.config.timeouts.total
    this.#fail(
      new BackendError("PC_BACKEND_TIMEOUT", `upstream ${this.upstream.name}: no whole response within ${total} ms`),
    )
    // Done now (not at the client's close): the try in flight is aborted and nothing else is written or retried.
    this.finish()
  }

  /** finish runs once when the client response is closed: access log line. */
  finish(): void {
    if (this.done) return
    this.done = true
    if (this.totalTimer !== undefined) clearTimeout(this.totalTimer)
    if (this.bodyTimer !== undefined) clearTimeout(this.bodyTimer)
    if (this.readTimer !== undefined) clearTimeout(this.readTimer)
    if (this.waiting) {
      this.waiting = false
      this.upstream.cancelWait(this)
    }
    const controller = this.controller
    // The backend's response has not ended (this try still holds its backend): stop it. Not writableFinished: an
    // HTTP/2 stream the client reset reads as finished, and the backend would go on working for nobody.
    if (controller && this.held !== undefined) controller.abort(new Error("client closed the connection"))
    const meter = this.meter
    const accessLog = this.ctx.accessLog
    if (meter === undefined && accessLog === undefined) return
    // One clock read for both.
    const elapsed = performance.now() - this.started
    if (meter !== undefined) {
      meter.duration.observe(elapsed / 1000)
      meter.request(this.req.method, this.status || (this.res.headersSent ? this.res.statusCode : 0))
    }
    if (accessLog !== undefined) logAccess(accessLog, this, elapsed)
  }
}

function onTotalTimeout(exchange: Exchange): void {
  exchange.expire()
}

function onBodyTimeout(exchange: Exchange): void {
  exchange.bodyIdle()
}

function onReadTimeout(exchange: Exchange): void {
  exchange.readIdle()
}

function onClientDrain(this: ClientResponse): void {
  const exchange = (this as WithExchange)[kExchange]
  if (exchange?.controller?.paused) exchange.controller.resume()
}

function onClientClose(this: ClientResponse): void {
  ;(this as WithExchange)[kExchange]?.finish()
}

/** hasBody: a request carries a body when it says so (Content-Length > 0, Transfer-Encoding, or an open HTTP/2 stream). */
function hasBody(req: ClientRequest): boolean {
  if ("stream" in req) return !req.stream.endAfterHeaders
  return req.body !== undefined
}

function hasKeys(o: object): boolean {
  for (const _ in o) return true
  return false
}

/** isExpectContinue: the Expect header asks for 100-continue (the one expectation defined, RFC 9110 §10.1.1). */
function isExpectContinue(value: string | string[] | undefined): boolean {
  if (value === undefined) return false
  return (Array.isArray(value) ? value.join(",") : value).trim().toLowerCase() === "100-continue"
}

/** bufferBody reads a request body of known, small length into one Buffer, then hands it to the exchange. */
function bufferBody(exchange: Exchange, length: number): void {
  const req = exchange.req
  const body = Buffer.allocUnsafe(length)
  let filled = 0
  const timer = exchange.bodyTimer
  req.on("data", (chunk: Buffer) => {
    timer?.refresh()
    // The parser holds a body to its Content-Length; guard the copy anyway.
    filled += chunk.copy(body, filled)
  })
  req.once("end", () => {
    bodyDone(exchange)
    if (filled === length) exchange.bodyBuffered(body)
    else exchange.bodyShort(filled, length)
  })
}

/**
 * bufferBodyHead holds the first `limit` bytes of a body longer than that, or of unknown length (-1): a body that
 * ends first is handed over whole (bodyBuffered), else the held part and the rest as one stream (bodyHeadBuffered).
 */
function bufferBodyHead(exchange: Exchange, limit: number, length: number): void {
  const source = exchange.bodySource!
  const timer = exchange.bodyTimer
  const chunks: Buffer[] = []
  let held = 0
  const onData = (chunk: Buffer) => {
    timer?.refresh()
    chunks.push(chunk)
    held += chunk.length
    if (held < limit) return
    // Enough to take a backend: stop here, and stream the held part, then the rest, with backpressure.
    source.pause()
    source.off("data", onData)
    source.off("end", onEnd)
    const rest = new PassThrough()
    // Request trailers come with the source's end (IncomingMessage.trailers, h2-stream.ts bodyStream): the backend
    // client reads them off the stream it was given.
    source.once("end", () => {
      const trailers = (source as { trailers?: object }).trailers
      if (trailers !== undefined) (rest as PassThrough & { trailers?: object }).trailers = trailers
    })
    for (const c of chunks) rest.write(c)
    chunks.length = 0
    source.pipe(rest)
    // pipe() passes on no close: a client that leaves mid-body must end the backend's body stream too.
    source.once("close", () => {
      if (!source.readableEnded) rest.destroy()
    })
    watchBody(exchange, source)
    exchange.bodyHeadBuffered(rest)
  }
  const onEnd = () => {
    bodyDone(exchange)
    if (length >= 0 && held !== length) {
      exchange.bodyShort(held, length)
      return
    }
    const trailers = (source as { trailers?: Record<string, unknown> }).trailers
    if (trailers !== undefined && Object.keys(trailers).length > 0) {
      // Request trailers (RFC 9110 §6.5) go after the body, so it stays a stream (chunked to an HTTP/1.1 backend).
      const whole = new PassThrough() as PassThrough & { trailers?: object }
      whole.trailers = trailers
      for (const c of chunks) whole.write(c)
      whole.end()
      exchange.bodyHeadBuffered(whole)
      return
    }
    exchange.bodyBuffered(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, held))
  }
  source.on("data", onData)
  source.once("end", onEnd)
}

/** watchBody keeps the body idle timer running while a body streams to the backend. */
function watchBody(exchange: Exchange, source: Readable): void {
  const timer = exchange.bodyTimer
  if (timer === undefined) return
  if (source instanceof H1Body) {
    // Not a 'data' listener: that would set the body flowing before the backend client reads it, and a body the
    // client sent at once (without waiting for 100 Continue) would flow past it. The connection refreshes the timer.
    source.timer = timer
  } else source.on("data", () => timer.refresh())
  source.once("end", () => bodyDone(exchange))
}

/** keepTrailers records an HTTP/2 request's trailers on its stream (without pseudo-headers) when they arrive. */
function keepTrailers(stream: Readable): void {
  stream.once("trailers", (trailers: IncomingHttpHeaders) => {
    const out: Record<string, string | string[]> = {}
    for (const name in trailers) if (name.charCodeAt(0) !== 58) out[name] = trailers[name] as string | string[]
    ;(stream as Readable & { trailers?: object }).trailers = out
  })
}

/** bodyDone: the whole request body has arrived; its idle timer ends. */
function bodyDone(exchange: Exchange): void {
  if (exchange.bodyTimer !== undefined) clearTimeout(exchange.bodyTimer)
  exchange.bodySource = undefined
}

function destroyResponse(res: ClientResponse, err: unknown): void {
  if ("stream" in res) res.stream.close(0x2 /* INTERNAL_ERROR */)
  else res.destroy(err instanceof Error ? err : undefined)
}

/** closeResponse sends nothing more: a malformed request's stream is reset with PROTOCOL_ERROR (RFC 9113 §8.1.1). */
function closeResponse(res: ClientResponse, malformed: boolean): void {
  if ("stream" in res) res.stream.close(malformed ? 0x1 /* PROTOCOL_ERROR */ : 0x8 /* CANCEL */)
  else res.destroy()
}

/**
 * writeChunk writes a piece of the response body. Once the client's response is over (ended or destroyed) it is a
 * no-op, as a write to a destroyed socket is: ServerResponse would emit 'error' for a write after end, with no
 * listener. H2Response checks the same itself.
 */
function writeChunk(res: ClientResponse, chunk: Buffer, release: (() => void) | undefined): boolean {
  if ("stream" in res) return res.write(chunk, release)
  if (responseOver(res)) {
    if (release) queueMicrotask(release)
    return true
  }
  return release ? res.write(chunk, release) : res.write(chunk)
}

/** endResponse ends the response unless it is over already (see writeChunk). */
function endResponse(res: ClientResponse): void {
  if (!responseOver(res)) res.end()
}

/** responseOver: the response was ended or destroyed; nothing more may be written. */
function responseOver(res: ClientResponse): boolean {
  if ("stream" in res) return res.gone || res.stream.writableEnded
  return res.writableEnded || res.destroyed
}

/** sendPlain answers with a small plain-text body; used for every error status. */
export function sendPlain(
  res: ClientResponse,
  status: number,
  body: string,
  ctx: Pick<ExchangeContext, "hsts" | "closing">,
): void {
  if (res.headersSent) return
  if ("stream" in res && res.grpc) {
    // A gRPC client reads only the gRPC status: a trailers-only answer (grpc-status.ts).
    const grpc: Record<string, string | number> = {
      "content-type": "application/grpc",
      "grpc-status": grpcStatusFor(status),
      "grpc-message": grpcMessage(`${status} ${body.trim()}`),
    }
    if (ctx.hsts) grpc["strict-transport-security"] = ctx.hsts
    res.writeHead(200, grpc, true)
    return
  }
  const headers: Record<string, string | number> = {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(body),
  }
  if (ctx.hsts) headers["strict-transport-security"] = ctx.hsts
  res.writeHead(status, headers)
  res.end(body)
}

/** logAccess writes the exchange's access line (core/access-log.ts builds it from the fields, no object). */
function logAccess(log: AccessLog, ex: Exchange, elapsed: number): void {
  const req = ex.req
  log.http(
    ex.info,
    ex.ctx.listener,
    req.method,
    ex.host,
    req.url,
    ex.status || (ex.res.headersSent ? ex.res.statusCode : 0),
    ex.bytes,
    ex.upstream.name,
    ex.backend?.id,
    ex.attempt,
    Math.round(elapsed * 100) / 100,
    ex.reason,
    traceIdOf(ex.traceparent),
  )
}

/** TRACEPARENT: version 00, 32 hex trace id (not all zero), 16 hex parent id, 2 hex flags (W3C Trace Context §3.2). */
const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/

/** traceIdOf reads the trace id of a well-formed traceparent; undefined for none or a malformed one. */
function traceIdOf(traceparent: string | undefined): string | undefined {
  if (traceparent === undefined) return undefined
  const m = TRACEPARENT.exec(traceparent.trim())
  return m && m[1] !== "00000000000000000000000000000000" ? m[1] : undefined
}

/** newTraceparent starts a trace: random trace and parent ids, sampled (flags 01). */
function newTraceparent(): string {
  const ids = randomBytes(24).toString("hex")
  return `00-${ids.slice(0, 32)}-${ids.slice(32)}-01`
}
