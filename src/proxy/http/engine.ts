/** @module engine: the http engine: HTTP/1.1 and HTTP/2 (by ALPN) on decrypted sockets, routed to upstreams. */
import http2, { type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2"
import type { TLSSocket } from "node:tls"
import type { ListenerConfig } from "../../config/schema.ts"
import type { AccessLog } from "../../core/access-log.ts"
import { type ConnectionInfo, infoOf } from "../../core/connection-info.ts"
import { classify, classifyCode } from "../../core/failure.ts"
import { adoptSessionTables } from "../../core/h2-session-tables.ts"
import type { Logger } from "../../core/log.ts"
import { release } from "../../core/write-batch.ts"
import type { ClientGate } from "../../listeners/limits/client-gate.ts"
import { normalizeHost, type Router } from "../../routing/router.ts"
import type { RouteMeter } from "../../state/instruments.ts"
import type { Upstream } from "../../upstreams/upstream.ts"
import { errorResponse, rawResponse } from "../respond-error.ts"
import { h1Authority, h2Authority, Refusal } from "./authority.ts"
import { type ClientRequest, type ClientResponse, Exchange, type ExchangeContext, sendPlain } from "./exchange.ts"
import { isGrpc } from "./grpc-status.ts"
import { closeIfIdle, H1Connection, type H1Host, type H1Limits } from "./h1/connection.ts"
import type { H1Request } from "./h1/h1-request.ts"
import type { H1Response } from "./h1/h1-response.ts"
import { H2Guard } from "./h2-guard.ts"
import { H2Request, H2Response } from "./h2-stream.ts"
import { isExtendedConnect, proxyH2WebSocket, respondH2 } from "./h2-websocket.ts"
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
  /** Request instruments by route index (Router.routes order); none: requests are not counted. */
  meters?: readonly RouteMeter[]
  /** tracing.generate: add a traceparent to requests without one. */
  generateTrace?: boolean
}

/**
 * PING_WAIT_MS: how long a closing HTTP/2 session waits for the ACK of the PING sent after its first GOAWAY
 * before it sends the final one anyway (a client that does not answer PINGs).
 */
const PING_WAIT_MS = 5_000

// The engine's own refusals, mapped once by the one mapping (respond-error.ts).
const NO_INFO = errorResponse(classifyCode("PC_INTERNAL"))
const TOO_MANY_HEADERS = errorResponse(classifyCode("HPE_HEADER_OVERFLOW", "client"))
const NO_ROUTE = errorResponse(classifyCode("PC_NO_ROUTE"))
const RATE_LIMITED = errorResponse(classifyCode("PC_RATE_LIMITED"))
const NO_ROUTE_RAW = rawResponse(NO_ROUTE.status, NO_ROUTE.body)
/** An Expect naming 100-continue (node:http's test). */
const CONTINUE = /(?:^|\W)100-continue(?:$|\W)/i

const kEngine = Symbol("portcullis.engine")
type WithEngine = { [kEngine]?: HttpEngine }
/** The TLS socket under an HTTP/2 session (session.socket is a Proxy: slower, and per request). */
const kTlsSocket = Symbol("portcullis.h2.socket")
type WithTlsSocket = Http2Session & { [kTlsSocket]?: TLSSocket; [kGuard]?: H2Guard }
/** The frame-level guard the session runs on (h2-guard.ts). */
const kGuard = Symbol("portcullis.h2.guard")

/** HttpEngine serves one listener's decrypted connections for one generation. */
export class HttpEngine implements ExchangeContext, H1Host {
  readonly listener: string
  readonly log: Logger
  readonly accessLog: AccessLog | undefined
  readonly hsts: string | undefined
  readonly bodyBuffer: number
  readonly bodyTimeout: number
  closing = false
  /** RFC 8441 WebSocket streams accepted over HTTP/2 (extended CONNECT), since start. */
  h2WebSockets = 0
  readonly generateTrace: boolean
  readonly #meters: readonly RouteMeter[] | undefined
  readonly #router: Router
  readonly #upstreams: ReadonlyMap<string, Upstream>
  readonly #maxHeaders: number
  /** Set only when the listener has a request rate limit. */
  readonly #rateGate: ClientGate | undefined
  readonly h1Limits: H1Limits
  readonly #h2: http2.Http2Server
  readonly #sockets = new Set<TLSSocket>()
  readonly #sessions = new Set<Http2Session>()
  /** The socket being handed to the HTTP/2 server, for its 'session' event (emitted synchronously). */
  #accepting: TLSSocket | undefined
  #acceptingGuard: H2Guard | undefined

  constructor(options: HttpEngineOptions) {
    const { listener, log } = options
    const limits = listener.limits
    this.listener = listener.name
    this.log = log
    this.accessLog = options.accessLog
    this.#router = options.router
    this.#meters = options.meters
    this.generateTrace = options.generateTrace ?? false
    this.#upstreams = options.upstreams
    this.#maxHeaders = limits.max_headers
    this.bodyBuffer = limits.body_buffer
    this.bodyTimeout = limits.body_timeout
    this.#rateGate = limits.rate ? options.gate : undefined
    const hsts = listener.tls?.hsts
    this.hsts = hsts
      ? `max-age=${Math.floor(hsts.max_age / 1000)}${hsts.include_subdomains ? "; includeSubDomains" : ""}${hsts.preload ? "; preload" : ""}`
      : undefined

    this.h1Limits = {
      maxHeaderSize: limits.max_header_size,
      headerTimeout: limits.header_timeout,
      requestTimeout: limits.request_timeout,
      idleTimeout: limits.idle_timeout,
    }

    // No request listener: HTTP/2 requests are served on the core stream API (h2-stream.ts says why).
    this.#h2 = http2.createServer({
      maxHeaderListPairs: limits.max_headers + 4,
      // enableConnectProtocol: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3), so browsers open WebSockets as
      // streams of this connection rather than a second HTTP/1.1 one (h2-websocket.ts).
      settings: { maxHeaderListSize: limits.max_header_size, maxConcurrentStreams: 128, enableConnectProtocol: true },
      maxSessionMemory: 32,
    })
    this.#h2.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]) =>
      this.#onStream(stream, headers, raw),
    )
    this.#h2.on("session", (session: Http2Session) => {
      adoptSessionTables(session)
      ;(session as WithTlsSocket)[kTlsSocket] = this.#accepting
      const guard = this.#acceptingGuard
      if (guard) {
        ;(session as WithTlsSocket)[kGuard] = guard
        guard.session = session
      }
      this.#sessions.add(session)
      session.on("close", () => {
        this.#sessions.delete(session)
        setImmediate(releaseSession, session)
      })
      session.on("error", () => {})
      // The guard's idle timer, not session.setTimeout: Node 24's closeSession calls session.setTimeout(0) after
      // marking the session destroyed, which then returns early, so the timer (and with it the session, its socket
      // and buffers) lives until it fires: 60 s by default for every closed connection.
      if (guard) guard.setIdleTimeout(limits.idle_timeout, () => session.close())
      else session.setTimeout(limits.idle_timeout, () => session.close())
      // Accepted while the engine closes (during a takeover or a reload both processes accept for a moment).
      if (this.closing) closeGracefully(session, PING_WAIT_MS)
    })
    this.#h2.on("sessionError", () => {})
  }

  /** handle takes a socket after its TLS handshake and serves it with HTTP/2 or HTTP/1.1 by ALPN. */
  handle(socket: TLSSocket): void {
    ;(socket as WithEngine)[kEngine] = this
    this.#sockets.add(socket)
    socket.on("close", onSocketClose)
    if (socket.alpnProtocol === "h2") {
      // The session runs on the guard, which checks the client's frames before nghttp2 sees them (h2-guard.ts).
      const guard = new H2Guard(socket)
      this.#accepting = socket
      this.#acceptingGuard = guard
      this.#h2.emit("connection", guard)
      this.#accepting = undefined
      this.#acceptingGuard = undefined
    } else new H1Connection(this, socket)
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, raw: string[]): void {
    // A reset or a broken session must not become an uncaught 'error'; the exchange sees 'close'.
    stream.on("error", ignore)
    const session = stream.session as WithTlsSocket | undefined
    if (session?.[kGuard]?.adopt(stream) === false) return // reset: the guard found it in error
    const socket = session?.[kTlsSocket]
    if (!socket) {
      stream.close(0x2 /* INTERNAL_ERROR */)
      return
    }
    if (isExtendedConnect(headers)) {
      this.#onExtendedConnect(stream, headers, raw, socket)
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
    const host = h2Authority(req)
    if (host instanceof Refusal) this.#refuse(req, res, host)
    else this.#onRequest(req, res, host)
  }

  /**
   * onH1Request serves one HTTP/1.1 request; the connection (h1/connection.ts) hands them over one at a time, as
   * nginx and HAProxy serve them (issue 14, finding 2): what a client pipelines waits unparsed meanwhile.
   */
  onH1Request(req: H1Request, res: H1Response): void {
    const expect = req.expect
    if (expect !== undefined && req.minor === 1 && !CONTINUE.test(expect)) {
      // RFC 9110 §10.1.1: an expectation we cannot meet.
      sendPlain(res, 417, "Expectation Failed\n", this)
      return
    }
    const host = h1Authority(req)
    if (host instanceof Refusal) this.#refuse(req, res, host)
    else this.#onRequest(req, res, host)
  }

  /**
   * onH1Error answers what the HTTP/1.1 parser refused, through the one mapping: malformed (400), oversized headers
   * (431), too slow (408); a response already begun is broken off. Then the connection closes.
   */
  onH1Error(err: Error & { code: string }, socket: TLSSocket, responseStarted: boolean): void {
    if (responseStarted || !socket.writable) {
      // What of the response this round wrote is still held (core/write-batch.ts): it leaves before the close.
      release(socket)
      socket.destroy()
      return
    }
    const mapped = errorResponse(classify(err, "client"))
    if (mapped.close) socket.destroy()
    else socket.end(rawResponse(mapped.status, mapped.body))
  }

  /** #refuse answers 400 to a request whose target or authority is ambiguous; HTTP/1.1 closes the connection. */
  #refuse(req: ClientRequest, res: ClientResponse, refusal: Refusal): void {
    if (!("stream" in res)) res.shouldKeepAlive = false
    sendPlain(res, 400, "Bad Request\n", this)
    const info = infoOf(req.socket)
    // The access line names what the client sent (escaped by the writer), so an operator sees why it was refused.
    if (info) this.#logLocal(req, info, rawHostOf(req), 400, refusal.reason)
  }

  /** #onExtendedConnect routes an RFC 8441 extended CONNECT like a GET (by :authority and :path). */
  #onExtendedConnect(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, raw: string[], socket: TLSSocket): void {
    const info = infoOf(socket)
    const path = headers[":path"]
    // The same authority rules as any HTTP/2 request (authority.ts reads only the raw header list).
    const host = h2Authority({ rawHeaders: raw } as unknown as H2Request)
    if (host instanceof Refusal) {
      respondH2(stream, 400, "Bad Request", this.hsts)
      return
    }
    if (!info) {
      stream.close(0x2 /* INTERNAL_ERROR */)
      return
    }
    if (headers[":protocol"] !== "websocket" || path === undefined || headers[":scheme"] === undefined) {
      // RFC 8441 §4: :scheme and :path are required; websocket is the one protocol we carry.
      respondH2(stream, headers[":protocol"] === "websocket" ? 400 : 501, "Unsupported CONNECT", this.hsts)
      return
    }
    if (raw.length / 2 > this.#maxHeaders) {
      respondH2(stream, 431, "Request Header Fields Too Large", this.hsts)
      return
    }
    const gate = this.#rateGate
    if (gate !== undefined && !gate.takeRequest(info.clientAddress)) {
      respondH2(stream, 429, "Too Many Requests", this.hsts)
      return
    }
    const route = this.#router.match(normalizeHost(host), path)
    if (!route) {
      respondH2(stream, 404, "Not Found", this.hsts)
      return
    }
    this.h2WebSockets++
    proxyH2WebSocket(this, stream, raw, info, this.#upstreams.get(route.upstream)!, host, path)
  }

  #onRequest(req: ClientRequest, res: ClientResponse, rawHost: string | undefined): void {
    const info = infoOf(req.socket)
    if (!info) {
      sendPlain(res, NO_INFO.status, NO_INFO.body, this)
      return
    }
    if (req.rawHeaders.length / 2 > this.#maxHeaders) {
      sendPlain(res, TOO_MANY_HEADERS.status, TOO_MANY_HEADERS.body, this)
      return
    }
    const gate = this.#rateGate
    if (gate !== undefined && !gate.takeRequest(info.clientAddress)) {
      this.#tooManyRequests(req, res, info, gate.retryAfter(info.clientAddress), rawHost)
      return
    }
    const route = this.#router.match(normalizeHost(rawHost), req.url ?? "/")
    if (!route) {
      if (this.closing && !("stream" in res)) res.shouldKeepAlive = false
      sendPlain(res, NO_ROUTE.status, NO_ROUTE.body, this)
      this.#logLocal(req, info, rawHost, NO_ROUTE.status, NO_ROUTE.reason)
      return
    }
    const upstream = this.#upstreams.get(route.upstream)!
    const exchange = new Exchange(this, req, res, info, upstream, rawHost, route)
    exchange.meter = this.#meters?.[route.index]
    exchange.start()
  }

  /** #tooManyRequests answers 429 with Retry-After: the client is over its request rate. */
  #tooManyRequests(
    req: ClientRequest,
    res: ClientResponse,
    info: ConnectionInfo,
    retryAfter: number,
    host: string | undefined,
  ): void {
    const { status, body, reason } = RATE_LIMITED
    const headers: Record<string, string | number> = {
      "content-type": "text/plain; charset=utf-8",
      "content-length": body.length,
      "retry-after": retryAfter,
    }
    if (this.hsts) headers["strict-transport-security"] = this.hsts
    res.writeHead(status, headers)
    res.end(body)
    this.#logLocal(req, info, host, status, reason)
  }

  /** onH1Upgrade: an Upgrade request took the socket out of HTTP/1.1: proxied as a WebSocket, else refused. */
  onH1Upgrade(req: H1Request, socket: TLSSocket, head: Buffer): void {
    if (req.method === "CONNECT") {
      // No CONNECT tunnels (node:http closes the connection for a CONNECT nobody listens for).
      socket.destroy()
      return
    }
    const info = infoOf(socket)
    const rawHost = h1Authority(req)
    if (rawHost instanceof Refusal) {
      // The same one rule and answer as an ordinary request (#refuse), on the raw socket Node hands an upgrade.
      socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 12\r\n\r\nBad Request\n")
      if (info) this.#logLocal(req, info, rawHostOf(req), 400, rawHost.reason)
      return
    }
    const route = info && this.#router.match(normalizeHost(rawHost), req.url ?? "/")
    if (!info || !route || req.header("upgrade")?.toLowerCase() !== "websocket") {
      socket.end(NO_ROUTE_RAW)
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
    for (const session of this.#sessions) closeGracefully(session, Math.min(PING_WAIT_MS, graceMs))
    const deadline = Date.now() + graceMs
    while (this.#sockets.size > 0 && Date.now() < deadline) {
      if (closeIdle) for (const socket of this.#sockets) if (socket.alpnProtocol !== "h2") closeIfIdle(socket)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    this.destroy()
  }

  /** destroy closes every connection now. */
  destroy(): void {
    for (const socket of this.#sockets) socket.destroy()
    this.#h2.close()
  }
}

/**
 * closeGracefully is RFC 9113 §6.8's graceful shutdown of one session: a GOAWAY with the highest stream id (no new
 * streams, please), then, once the client has seen it, the final GOAWAY naming the last stream processed, so every
 * stream the client sent before it saw the first one is served. The first is the guard's shutdown notice (written
 * past nghttp2, which would otherwise drop the streams already on the wire: H2Guard.shutdownNotice says why); the
 * wait is a PING sent after it: the client acks only after it processed the notice, so every stream it sent before
 * is ahead of the ACK on the wire and read by then (a fixed wait was not enough when this process was busy or not
 * scheduled for longer: test/proxy/http/h2-goaway.test.ts). waitMs: the final GOAWAY goes anyway then.
 */
function closeGracefully(session: Http2Session, waitMs: number): void {
  if (session.closed || session.destroyed) return
  let done = false
  const finish = () => {
    if (done) return
    done = true
    clearTimeout(timer)
    // Node's close() sends GOAWAY with nghttp2's last processed stream id, and ends once those streams are done.
    if (!session.closed && !session.destroyed) session.close()
  }
  const timer = setTimeout(finish, waitMs)
  timer.unref()
  const ping = () => {
    // false: too many PINGs unanswered already (maxOutstandingPings); the timer decides then.
    if (!session.closed && !session.destroyed) session.ping(finish)
  }
  const guard = (session as WithTlsSocket)[kGuard]
  if (guard) guard.shutdownNotice(ping)
  else {
    session.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1)
    ping()
  }
}

/**
 * releaseSession lets go of everything a closed session refers to: its TLS socket, its guard, its listeners (whose
 * closures hold the guard and this engine). NODE INTERNAL (Node 24.21): a session that closes before the client
 * acknowledged its SETTINGS stays alive for good: the native Http2Settings keeps the callback Node bound to the
 * session (settingsCallback.bind(session), a global handle) and never releases it. A connection error nghttp2 finds
 * (DATA on stream 0, a bad SETTINGS value, a frame too large) ends such sessions hundreds of times a minute under the
 * fuzzers; each held its socket, buffers, this engine and with it the whole generation (test/proxy/http/
 * h2-session-release.test.ts). The shell Node keeps is a few hundred bytes.
 */
function releaseSession(session: WithTlsSocket): void {
  const guard = session[kGuard]
  if (guard) guard.session = undefined
  session[kTlsSocket] = undefined
  session[kGuard] = undefined
  session.removeAllListeners()
  // A late 'error' must still find a listener (an unhandled one would be thrown).
  session.on("error", ignore)
}

function onSocketClose(this: TLSSocket): void {
  ;(this as WithEngine)[kEngine]?.forget(this)
}

function ignore(): void {}

/** rawHostOf: the Host (HTTP/1.1) or :authority (HTTP/2) as the client sent it, several joined, for the log only. */
function rawHostOf(req: ClientRequest): string | undefined {
  if (!("stream" in req)) return req.header("host")
  const value = (req.headers[":authority"] as string | undefined) ?? req.headers.host
  return Array.isArray(value) ? value.join(",") : value
}
