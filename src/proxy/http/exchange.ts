/** @module exchange: one proxied HTTP request: pick a backend, stream the request, stream the response, retry or fail. */
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Readable } from "node:stream"
import type { Dispatcher } from "undici"
import { errorCode, errorMessage, PortcullisError } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import type { ConnectionInfo } from "../../listeners/connection-info.ts"
import type { Backend } from "../../upstreams/backend.ts"
import type { Upstream } from "../../upstreams/upstream.ts"
import { errorResponse } from "../respond-error.ts"
import type { H2Request, H2Response } from "./h2-stream.ts"
import { responseHeadersForClient } from "./hop-headers.ts"
import { buildRequestHeaders } from "./request-headers.ts"

export type ClientRequest = IncomingMessage | H2Request
export type ClientResponse = ServerResponse | H2Response

/** ExchangeContext: what an engine shares with each of its exchanges. */
export interface ExchangeContext {
  readonly listener: string
  readonly log: Logger
  readonly accessLog: Logger | undefined
  /** Strict-Transport-Security value, when configured. */
  readonly hsts: string | undefined
  /** The generation is closing: answer with Connection: close so clients move to the new one. */
  readonly closing: boolean
  readonly forwardCert: boolean
}

/** Errors that happen before a request reached a backend: safe to try another backend. */
const CONNECT_FAILURES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_CLOSED",
])

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])

const kExchange = Symbol("portcullis.exchange")
type WithExchange = { [kExchange]?: Exchange }

/** Exchange carries one request through the backend; it is undici's dispatch handler for each try. */
export class Exchange implements Dispatcher.DispatchHandler {
  readonly ctx: ExchangeContext
  readonly req: ClientRequest
  readonly res: ClientResponse
  readonly info: ConnectionInfo
  readonly upstream: Upstream
  readonly host: string | undefined
  readonly started = performance.now()
  backend: Backend | undefined
  /** The backend whose inFlight count this exchange holds (exactly one decrement per try). */
  held: Backend | undefined
  lastError: unknown
  controller: Dispatcher.DispatchController | undefined
  headers: string[] = []
  body: Readable | null = null
  tried: Set<Backend> | undefined
  attempt = 0
  responseStarted = false
  done = false
  status = 0
  bytes = 0
  reason = ""

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
    this.headers = buildRequestHeaders(req.rawHeaders, this.info, {
      host: this.host,
      trusted: this.info.trusted,
      forwardCert: this.ctx.forwardCert,
    })
    this.body = hasBody(req) ? ("stream" in req ? req.bodyStream() : req) : null
    ;(this.res as WithExchange)[kExchange] = this
    this.res.on("drain", onClientDrain)
    this.res.on("close", onClientClose)
    this.#try()
  }

  #try(): void {
    const backend = this.upstream.pick(this.tried && { exclude: this.tried })
    if (!backend || this.tried?.has(backend)) {
      this.#fail(
        this.lastError ??
          new PortcullisError("PC_NO_BACKEND", `upstream ${this.upstream.name}: no backend available`, {
            source: "backend",
          }),
      )
      return
    }
    this.backend = backend
    this.held = backend
    this.attempt++
    backend.inFlight++
    const method = this.req.method ?? "GET"
    this.upstream.poolFor(backend).dispatch(
      {
        path: this.req.url ?? "/",
        method,
        headers: this.headers,
        body: this.body,
        idempotent: IDEMPOTENT.has(method),
      },
      this,
    )
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.done) controller.abort(new Error("client went away"))
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (statusCode < 200) return // 1xx: Node's server sends its own 100 Continue
    if (this.done) return
    this.responseStarted = true
    this.status = statusCode
    const out = responseHeadersForClient(headers)
    if (this.ctx.hsts) out["strict-transport-security"] = this.ctx.hsts
    if (this.ctx.closing && this.info.alpn !== "h2") out["connection"] = "close"
    try {
      ;(this.res as ServerResponse).writeHead(statusCode, out)
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

  onResponseEnd(): void {
    this.#release()
    if (!this.done) this.res.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.#release()
    if (this.done) return
    const code = errorCode(err)
    if (
      !this.responseStarted &&
      this.body === null &&
      CONNECT_FAILURES.has(code) &&
      this.attempt <= this.upstream.config.retries
    ) {
      this.ctx.log.debug(
        { backend: this.backend?.id, err: errorMessage(err), attempt: this.attempt },
        "retrying on another backend",
      )
      this.lastError = err
      this.tried ??= new Set()
      if (this.backend) this.tried.add(this.backend)
      this.#try()
      return
    }
    this.#fail(err)
  }

  #release(): void {
    const held = this.held
    if (held) {
      held.inFlight--
      this.held = undefined
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

  /** finish runs once when the client response is closed: access log line. */
  finish(): void {
    if (this.done) return
    this.done = true
    const controller = this.controller
    if (controller && !this.res.writableFinished) controller.abort(new Error("client closed the connection"))
    if (this.ctx.accessLog) logAccess(this.ctx.accessLog, this)
  }
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
  const headers: Record<string, string | number> = {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(body),
  }
  if (ctx.hsts) headers["strict-transport-security"] = ctx.hsts
  ;(res as ServerResponse).writeHead(status, headers)
  res.end(body)
}

function logAccess(log: Logger, ex: Exchange): void {
  const req = ex.req
  log.info({
    client: ex.info.clientAddress,
    listener: ex.ctx.listener,
    sni: ex.info.servername,
    tls: ex.info.tlsVersion,
    cipher: ex.info.cipher,
    alpn: ex.info.alpn,
    method: req.method,
    host: ex.host,
    path: req.url,
    status: ex.status || (ex.res.headersSent ? ex.res.statusCode : 0),
    bytes: ex.bytes,
    upstream: ex.upstream.name,
    backend: ex.backend?.id,
    tries: ex.attempt,
    duration_ms: Math.round((performance.now() - ex.started) * 100) / 100,
    ...(ex.reason && { error: ex.reason }),
  })
}
