/** @module exchange: one proxied HTTP request: pick a backend, stream the request, stream the response, retry or fail. */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http"
import type { Readable } from "node:stream"
import type { Dispatcher } from "undici"
import type { AccessLog } from "../../core/access-log.ts"
import type { ConnectionInfo } from "../../core/connection-info.ts"
import { BackendError, errorCode, errorMessage, PortcullisError } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import type { Backend } from "../../upstreams/backend.ts"
import type { StickyContext } from "../../upstreams/balancers/index.ts"
import type { FailureKind } from "../../upstreams/health/passive.ts"
import { canRetry, IDEMPOTENT_METHODS } from "../../upstreams/retry-policy.ts"
import type { HashKey, SlotWaiter, Upstream } from "../../upstreams/upstream.ts"
import { errorResponse } from "../respond-error.ts"
import { grpcMessage, grpcStatusFor, parseGrpcTimeout } from "./grpc-status.ts"
import type { H2Request, H2Response } from "./h2-stream.ts"
import { responseHeadersForClient } from "./hop-headers.ts"
import { buildRequestHeaders } from "./request-headers.ts"

export type ClientRequest = IncomingMessage | H2Request
export type ClientResponse = ServerResponse | H2Response

/** ExchangeContext: what an engine shares with each of its exchanges. */
export interface ExchangeContext {
  readonly listener: string
  readonly log: Logger
  readonly accessLog: AccessLog | undefined
  /** Strict-Transport-Security value, when configured. */
  readonly hsts: string | undefined
  /** The generation is closing: answer with Connection: close so clients move to the new one. */
  readonly closing: boolean
}

/**
 * Failures before any response byte that another backend may not share: refused, unreachable, reset, closed.
 * Whether the request may be sent again is canRetry's call (what was sent, the method, attempts, time).
 */
const RETRYABLE = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_CLOSED",
  "PC_BACKEND_STREAM_REFUSED",
])

const kExchange = Symbol("portcullis.exchange")
type WithExchange = { [kExchange]?: Exchange }

/** Failures where the backend got nothing of the request: the connection never opened. */
/** Failures where the backend got nothing of the request: the connection never opened, or (HTTP/2) the backend
 * refused the stream unprocessed (RFC 9113 §8.7), so any method may go elsewhere. */
const CONNECT_PHASE = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "UND_ERR_CONNECT_TIMEOUT",
  "PC_BACKEND_STREAM_REFUSED",
])

/** Timeouts waiting on the backend, for passive health. */
const TIMEOUTS = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT", "UND_ERR_CONNECT_TIMEOUT"])

/** Exchange carries one request through the backend; it is undici's dispatch handler for each try. */
export class Exchange implements Dispatcher.DispatchHandler, SlotWaiter {
  readonly ctx: ExchangeContext
  readonly req: ClientRequest
  readonly res: ClientResponse
  readonly info: ConnectionInfo
  readonly upstream: Upstream
  readonly host: string | undefined
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
  /** The body is a stream that cannot be sent twice. */
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

  constructor(
    ctx: ExchangeContext,
    req: ClientRequest,
    res: ClientResponse,
    info: ConnectionInfo,
    upstream: Upstream,
    host: string | undefined,
  ) {
    this.ctx = ctx
    this.req = req
    this.res = res
    this.info = info
    this.upstream = upstream
    this.host = host
  }

  /** start builds the backend request once and sends the first try. */
  start(): void {
    const req = this.req
    this.headers = buildRequestHeaders(req.rawHeaders, this.info, this.host, this.upstream.config.protocol !== "http1")
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
        key: upstream.hashKey && hashKeyOf(upstream.hashKey, req, this.info),
        cookie: upstream.sticky && readCookie(req.headers.cookie, upstream.sticky.cookieName),
      }
    }
    ;(this.res as WithExchange)[kExchange] = this
    this.res.on("drain", onClientDrain)
    this.res.on("close", onClientClose)
    if (hasBody(req)) {
      this.expectsContinue = isExpectContinue(req.headers.expect)
      const length = Number(req.headers["content-length"])
      if (upstream.config.retries > 0 && length > 0 && length <= upstream.config.retry_body_limit) {
        // Small enough to hold: read it all, so a failed try can be sent again elsewhere.
        this.continueClient()
        bufferBody(this, length)
        return
      }
      // HTTP/2: the body through its own Readable (undici ends what it sent; the stream carries the response too).
      this.body = "stream" in req ? req.bodyStream() : req
      this.streamed = true
    }
    this.#try()
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
    backend.inFlight++
    const method = this.req.method ?? "GET"
    upstream.poolFor(backend).dispatch(
      {
        path: this.req.url ?? "/",
        method,
        headers: this.headers,
        body: this.body,
        idempotent: IDEMPOTENT_METHODS.has(method),
      },
      this,
      this.info,
    )
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

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    this.sent = true
    // A streamed body goes out once the backend connection is open: that is when the client may send it.
    if (this.expectsContinue) this.continueClient()
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
    if (statusCode < 200) return // 1xx: Node's server sends its own 100 Continue
    if (this.done) return
    this.responseStarted = true
    this.status = statusCode
    const upstream = this.upstream
    const backend = this.backend!
    if (upstream.outliers !== undefined) {
      if (statusCode >= 500) upstream.failed(backend, "5xx")
      else upstream.outliers.onSuccess(backend)
    }
    const out = responseHeadersForClient(headers)
    if (upstream.sticky !== undefined) addStickyCookie(out, upstream, backend, this.pickContext?.cookie)
    if (this.ctx.hsts) out["strict-transport-security"] = this.ctx.hsts
    if (this.ctx.closing && this.info.alpn !== "h2") out["connection"] = "close"
    try {
      const res = this.res
      if ("stream" in res) {
        // An HTTP/2 backend may end with trailers (gRPC always does): the client's stream must wait for them.
        if (endStream === true) res.writeHead(statusCode, out, true)
        else {
          if (upstream.config.protocol !== "http1") res.expectTrailers()
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
    if (!(this.res as ServerResponse).write(chunk)) controller.pause()
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
    if (!(this.res as ServerResponse).write(chunk, release)) controller.pause()
  }

  /** onResponseEnd ends the client's response, with the backend's trailers when it sent any (RFC 9110 §6.5). */
  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    this.#release()
    if (this.done) return
    const res = this.res
    if (trailers !== undefined && hasKeys(trailers)) {
      if ("stream" in res) {
        res.end(undefined, trailers as Record<string, string | string[]>)
        return
      }
      // HTTP/1.1 carries trailers only in a chunked body (no Content-Length was set).
      if (!res.hasHeader("content-length")) res.addTrailers(trailers as Record<string, string>)
    }
    res.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.#release()
    if (this.done) return
    const code = errorCode(err)
    if (this.responseStarted) {
      this.#fail(err)
      return
    }
    const backend = this.backend!
    const sent = this.sent && !CONNECT_PHASE.has(code)
    this.upstream.failed(backend, failureKind(code, sent))
    if (this.#mayRetry(code, sent)) {
      this.ctx.log.debug(
        { backend: backend.id, err: errorMessage(err), attempt: this.attempt },
        "retrying on another backend",
      )
      this.upstream.stats.retries.inc()
      this.lastError = err
      this.tried ??= new Set()
      this.tried.add(backend)
      this.#try()
      return
    }
    this.#fail(err)
  }

  #mayRetry(code: string, sent: boolean): boolean {
    if (!RETRYABLE.has(code) || this.streamed) return false
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

  #fail(err: unknown): void {
    const res = this.res
    if (res.headersSent) {
      // The response has begun: the client must see a broken response, never a short one that looks whole.
      this.reason = `backend failed mid-response: ${errorMessage(err)}`
      destroyResponse(res, err)
      return
    }
    const mapped = errorResponse(err)
    this.reason = `${mapped.reason}: ${errorMessage(err)}`
    this.ctx.log.warn(
      { upstream: this.upstream.name, backend: this.backend?.id, err: errorMessage(err), code: errorCode(err) },
      mapped.reason,
    )
    sendPlain(res, mapped.status, mapped.body, this.ctx)
    this.status = mapped.status
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
    if (this.waiting) {
      this.waiting = false
      this.upstream.cancelWait(this)
    }
    const controller = this.controller
    // The backend's response has not ended (this try still holds its backend): stop it. Not writableFinished: an
    // HTTP/2 stream the client reset reads as finished, and the backend would go on working for nobody.
    if (controller && this.held !== undefined) controller.abort(new Error("client closed the connection"))
    if (this.ctx.accessLog) logAccess(this.ctx.accessLog, this)
  }
}

function onTotalTimeout(exchange: Exchange): void {
  exchange.expire()
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
  const length = req.headers["content-length"]
  if (length !== undefined) return length !== "0"
  return req.headers["transfer-encoding"] !== undefined
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

/** failureKind classifies a failed try for passive health. */
function failureKind(code: string, sent: boolean): FailureKind {
  if (TIMEOUTS.has(code)) return "timeout"
  return sent ? "reset" : "connect"
}

/** bufferBody reads a request body of known, small length into one Buffer, then hands it to the exchange. */
function bufferBody(exchange: Exchange, length: number): void {
  const req = exchange.req
  const body = Buffer.allocUnsafe(length)
  let filled = 0
  req.on("data", (chunk: Buffer) => {
    // The parser holds a body to its Content-Length; guard the copy anyway.
    filled += chunk.copy(body, filled)
  })
  req.once("end", () => {
    if (filled === length) exchange.bodyBuffered(body)
    else exchange.bodyShort(filled, length)
  })
}

/** hashKeyOf reads the request's hash key; undefined (no such header or cookie) falls back to round robin. */
function hashKeyOf(hashKey: HashKey, req: ClientRequest, info: ConnectionInfo): string | undefined {
  switch (hashKey.kind) {
    case "client_ip":
      return info.clientAddress
    case "path": {
      const url = req.url ?? "/"
      const q = url.indexOf("?")
      return q === -1 ? url : url.slice(0, q)
    }
    case "header": {
      const value = req.headers[hashKey.name]
      return Array.isArray(value) ? value.join(",") : value
    }
    case "cookie":
      return readCookie(req.headers.cookie, hashKey.name)
  }
}

/** readCookie finds one cookie's value in a Cookie header (HTTP/2 joins several with "; "). */
export function readCookie(header: string | string[] | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  const text = Array.isArray(header) ? header.join("; ") : header
  let start = 0
  while (start < text.length) {
    let end = text.indexOf(";", start)
    if (end === -1) end = text.length
    const eq = text.indexOf("=", start)
    if (eq !== -1 && eq < end && text.slice(start, eq).trim() === name) return text.slice(eq + 1, end).trim()
    start = end + 1
  }
  return undefined
}

/** addStickyCookie pins the client to the backend that answered, unless its cookie already names that backend. */
function addStickyCookie(
  out: Record<string, string | string[]>,
  upstream: Upstream,
  backend: Backend,
  cookie: string | undefined,
): void {
  const sticky = upstream.sticky!
  if (cookie === sticky.valueFor(backend)) return
  const value = sticky.cookieFor(backend)
  const existing = out["set-cookie"]
  out["set-cookie"] = existing === undefined ? value : [...(Array.isArray(existing) ? existing : [existing]), value]
}

function destroyResponse(res: ClientResponse, err: unknown): void {
  if ("stream" in res) res.stream.close(0x2 /* INTERNAL_ERROR */)
  else res.destroy(err instanceof Error ? err : undefined)
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
  ;(res as ServerResponse).writeHead(status, headers)
  res.end(body)
}

/** logAccess writes the exchange's access line (core/access-log.ts builds it from the fields, no object). */
function logAccess(log: AccessLog, ex: Exchange): void {
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
    Math.round((performance.now() - ex.started) * 100) / 100,
    ex.reason,
  )
}
