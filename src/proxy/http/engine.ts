/** @module engine: the http engine: HTTP/1.1 and HTTP/2 (by ALPN) on decrypted sockets, routed to upstreams. */
import http, { type IncomingMessage, type ServerResponse } from "node:http"
import http2, { type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2"
import type { Duplex } from "node:stream"
import type { TLSSocket } from "node:tls"
import type { ListenerConfig } from "../../config/schema.ts"
import type { AccessLog } from "../../core/access-log.ts"
import { type ConnectionInfo, infoOf } from "../../core/connection-info.ts"
import type { Logger } from "../../core/log.ts"
import type { ClientGate } from "../../listeners/limits/client-gate.ts"
import { normalizeHost, type Router } from "../../routing/router.ts"
import type { Upstream } from "../../upstreams/upstream.ts"
import { type ClientRequest, type ClientResponse, Exchange, type ExchangeContext, sendPlain } from "./exchange.ts"
import { isGrpc } from "./grpc-status.ts"
import { H2Request, H2Response } from "./h2-stream.ts"
import { proxyUpgrade } from "./websocket.ts"

/** HttpEngineOptions: the listener's config slice and what the generation built for it. */
export interface HttpEngineOptions {
  listener: ListenerConfig
  router: Router
  upstreams: ReadonlyMap<string, Upstream>
  log: Logger
  accessLog: AccessLog | undefined
  /** Per-client limits; the engine applies the request rate (429). */
  gate?: ClientGate | undefined
}

const kEngine = Symbol("portcullis.engine")
type WithEngine = { [kEngine]?: HttpEngine }
/** The TLS socket under an HTTP/2 session (session.socket is a Proxy: slower, and per request). */
const kTlsSocket = Symbol("portcullis.h2.socket")
type WithTlsSocket = Http2Session & { [kTlsSocket]?: TLSSocket }

/** HttpEngine serves one listener's decrypted connections for one generation. */
export class HttpEngine implements ExchangeContext {
  readonly listener: string
  readonly log: Logger
  readonly accessLog: AccessLog | undefined
  readonly hsts: string | undefined
  closing = false
  readonly #router: Router
  readonly #upstreams: ReadonlyMap<string, Upstream>
  readonly #maxHeaders: number
  /** Set only when the listener has a request rate limit. */
  readonly #rateGate: ClientGate | undefined
  readonly #h1: http.Server
  readonly #h2: http2.Http2Server
  readonly #sockets = new Set<TLSSocket>()
  readonly #sessions = new Set<Http2Session>()
  /** The socket being handed to the HTTP/2 server, for its 'session' event (emitted synchronously). */
  #accepting: TLSSocket | undefined

  constructor(options: HttpEngineOptions) {
    const { listener, log } = options
    const limits = listener.limits
    this.listener = listener.name
    this.log = log
    this.accessLog = options.accessLog
    this.#router = options.router
    this.#upstreams = options.upstreams
    this.#maxHeaders = limits.max_headers
    this.#rateGate = limits.rate ? options.gate : undefined
    const hsts = listener.tls?.hsts
    this.hsts = hsts
      ? `max-age=${Math.floor(hsts.max_age / 1000)}${hsts.include_subdomains ? "; includeSubDomains" : ""}${hsts.preload ? "; preload" : ""}`
      : undefined

    this.#h1 = http.createServer(
      {
        maxHeaderSize: limits.max_header_size,
        headersTimeout: limits.header_timeout,
        requestTimeout: limits.request_timeout,
        keepAliveTimeout: limits.idle_timeout,
        requireHostHeader: true,
        connectionsCheckingInterval: Math.min(1000, limits.header_timeout),
      },
      (req, res) => this.#onRequest(req, res),
    )
    // Expect: 100-continue. Without a listener Node answers 100 at once, before we know there is a backend; the
    // exchange answers it when it starts to take the body (exchange.ts continueClient). Other expectations get
    // Node's 417 (no 'checkExpectation' listener).
    this.#h1.on("checkContinue", (req: IncomingMessage, res: ServerResponse) => this.#onRequest(req, res))
    // Node counts headers past maxHeadersCount silently; keep one more so that too many is seen and refused.
    this.#h1.maxHeadersCount = limits.max_headers + 1
    this.#h1.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket, head))
    this.#h1.on("clientError", onClientError)
    // Node starts its header and request timeout checks on 'listening'; this server never listens itself
    // (the listener's socket hands connections to it), so start them here.
    this.#h1.emit("listening")

    // No request listener: HTTP/2 requests are served on the core stream API (h2-stream.ts says why).
    this.#h2 = http2.createServer({
      maxHeaderListPairs: limits.max_headers + 4,
      settings: { maxHeaderListSize: limits.max_header_size, maxConcurrentStreams: 128 },
      maxSessionMemory: 32,
    })
    this.#h2.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]) =>
      this.#onStream(stream, headers, raw),
    )
    this.#h2.on("session", (session: Http2Session) => {
      ;(session as WithTlsSocket)[kTlsSocket] = this.#accepting
      this.#sessions.add(session)
      session.on("close", () => this.#sessions.delete(session))
      session.on("error", () => {})
      session.setTimeout(limits.idle_timeout, () => session.close())
      if (this.closing) session.close()
    })
    this.#h2.on("sessionError", () => {})
  }

  /** handle takes a socket after its TLS handshake and serves it with HTTP/2 or HTTP/1.1 by ALPN. */
  handle(socket: TLSSocket): void {
    ;(socket as WithEngine)[kEngine] = this
    this.#sockets.add(socket)
    socket.on("close", onSocketClose)
    if (socket.alpnProtocol === "h2") {
      this.#accepting = socket
      this.#h2.emit("connection", socket)
      this.#accepting = undefined
    } else this.#h1.emit("connection", socket)
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, raw: string[]): void {
    // A reset or a broken session must not become an uncaught 'error'; the exchange sees 'close'.
    stream.on("error", ignore)
    const socket = (stream.session as WithTlsSocket | undefined)?.[kTlsSocket]
    if (!socket) {
      stream.close(0x2 /* INTERNAL_ERROR */)
      return
    }
    const req = new H2Request(stream, headers, raw, socket)
    const res = new H2Response(stream, req.method)
    if (isGrpc(headers["content-type"])) res.grpc = true
    const expect = headers.expect
    if (expect !== undefined && String(expect).toLowerCase() !== "100-continue") {
      // RFC 9110 §10.1.1: an expectation we cannot meet.
      sendPlain(res, 417, "Expectation Failed\n", this)
      return
    }
    this.#onRequest(req, res)
  }

  #onRequest(req: ClientRequest, res: ClientResponse): void {
    const info = infoOf(req.socket)
    if (!info) {
      sendPlain(res, 500, "Internal Server Error\n", this)
      return
    }
    if (req.rawHeaders.length / 2 > this.#maxHeaders) {
      sendPlain(res, 431, "Request Header Fields Too Large\n", this)
      return
    }
    const gate = this.#rateGate
    if (gate !== undefined && !gate.takeRequest(info.clientAddress)) {
      this.#tooManyRequests(req, res, info, gate.retryAfter(info.clientAddress))
      return
    }
    const rawHost = (req.headers[":authority"] as string | undefined) ?? req.headers.host
    const route = this.#router.match(normalizeHost(rawHost), req.url ?? "/")
    if (!route) {
      if (this.closing && !("stream" in res)) res.setHeader("connection", "close")
      sendPlain(res, 404, "Not Found\n", this)
      this.#logLocal(req, info, rawHost, 404, "no route")
      return
    }
    const upstream = this.#upstreams.get(route.upstream)!
    new Exchange(this, req, res, info, upstream, rawHost).start()
  }

  /** #tooManyRequests answers 429 with Retry-After: the client is over its request rate. */
  #tooManyRequests(req: ClientRequest, res: ClientResponse, info: ConnectionInfo, retryAfter: number): void {
    const body = "Too Many Requests\n"
    const headers: Record<string, string | number> = {
      "content-type": "text/plain; charset=utf-8",
      "content-length": body.length,
      "retry-after": retryAfter,
    }
    if (this.hsts) headers["strict-transport-security"] = this.hsts
    ;(res as ServerResponse).writeHead(429, headers)
    res.end(body)
    this.#logLocal(req, info, req.headers.host, 429, "rate limited")
  }

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const info = infoOf(socket)
    const rawHost = req.headers.host
    const route = info && this.#router.match(normalizeHost(rawHost), req.url ?? "/")
    if (!info || !route || String(req.headers.upgrade).toLowerCase() !== "websocket") {
      socket.end("HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 10\r\n\r\nNot Found\n")
      return
    }
    proxyUpgrade(this, req, socket, head, info, this.#upstreams.get(route.upstream)!, rawHost)
  }

  #logLocal(req: ClientRequest, info: ConnectionInfo, host: string | undefined, status: number, error: string): void {
    this.accessLog?.http(
      info,
      this.listener,
      req.method,
      host,
      req.url,
      status,
      0,
      undefined,
      undefined,
      undefined,
      undefined,
      error,
    )
  }

  /** forget drops a closed socket from the engine's set. */
  forget(socket: TLSSocket): void {
    this.#sockets.delete(socket)
  }

  /** connections counts the open client connections of this engine. */
  get connections(): number {
    return this.#sockets.size
  }

  /**
   * close stops keep-alive: the next response on each connection says Connection: close, HTTP/2 sessions get GOAWAY;
   * requests in flight finish. On shutdown (closeIdle) idle connections close at once; on reload they stay, since
   * closing them races with a client's next request, and end after their next response or their idle timeout.
   * Resolves when every connection is gone or after graceMs, destroying the rest.
   */
  async close(graceMs: number, closeIdle = true): Promise<void> {
    this.closing = true
    for (const session of this.#sessions) session.close()
    const deadline = Date.now() + graceMs
    while (this.#sockets.size > 0 && Date.now() < deadline) {
      if (closeIdle) this.#h1.closeIdleConnections()
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    this.destroy()
  }

  /** destroy closes every connection now. */
  destroy(): void {
    for (const socket of this.#sockets) socket.destroy()
    this.#h1.close()
    this.#h2.close()
  }
}

function onSocketClose(this: TLSSocket): void {
  ;(this as WithEngine)[kEngine]?.forget(this)
}

/** onClientError answers malformed requests (400), oversized headers (431) and slow ones (408), then closes. */
function onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable || (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage?.headersSent) {
    socket.destroy()
    return
  }
  const code = err.code ?? ""
  const [status, text] =
    code === "HPE_HEADER_OVERFLOW"
      ? [431, "Request Header Fields Too Large"]
      : code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? [408, "Request Timeout"]
        : [400, "Bad Request"]
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${text.length + 1}\r\n\r\n${text}\n`,
  )
}

function ignore(): void {}
