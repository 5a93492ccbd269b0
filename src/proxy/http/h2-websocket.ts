/**
 * @module h2-websocket: RFC 8441 WebSocket over HTTP/2: an extended CONNECT stream from a client becomes an HTTP/1.1
 * WebSocket upgrade to the backend (RFC 6455 §4.1), then the stream's DATA and the backend socket are piped both ways.
 */
import { createHash, randomBytes } from "node:crypto"
import { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2"
import type { Duplex } from "node:stream"
import type { Dispatcher } from "undici"
import type { ConnectionInfo } from "../../core/connection-info.ts"
import { errorMessage } from "../../core/errors.ts"
import { classify, classifyCode, type Failure } from "../../core/failure.ts"
import type { Backend } from "../../upstreams/backend.ts"
import type { Upstream } from "../../upstreams/upstream.ts"
import { errorResponse } from "../respond-error.ts"
import type { ExchangeContext } from "./exchange.ts"
import { buildRequestHeaders } from "./request-headers.ts"
import { UpgradeTries } from "./upgrade-tries.ts"

/** RFC 6455 §1.3: the GUID the backend appends to our key before hashing it into Sec-WebSocket-Accept. */
const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/** Headers of the HTTP/1.1 handshake that we make ourselves: the client's copies (if any) never reach the backend. */
const OWN_HANDSHAKE = new Set(["sec-websocket-key", "sec-websocket-version", "sec-websocket-accept"])

/** isExtendedConnect: an RFC 8441 §4 request: CONNECT with a :protocol pseudo-header. */
export function isExtendedConnect(headers: IncomingHttpHeaders): boolean {
  return headers[":method"] === "CONNECT" && headers[":protocol"] !== undefined
}

/** Upgrade is the dispatch handler for one backend handshake made on behalf of an HTTP/2 stream. */
class H2Upgrade implements Dispatcher.DispatchHandler {
  readonly ctx: ExchangeContext
  readonly stream: ServerHttp2Stream
  readonly upstream: Upstream
  readonly backend: Backend
  readonly accept: string
  readonly tries: UpgradeTries
  /** retry starts the handshake again on another backend; false when none is left. */
  readonly retry: () => boolean
  released = false
  /** Set once the backend refused the upgrade with a normal response, which the stream then carries. */
  refused = false

  constructor(
    ctx: ExchangeContext,
    stream: ServerHttp2Stream,
    upstream: Upstream,
    backend: Backend,
    key: string,
    tries: UpgradeTries,
    retry: () => boolean,
  ) {
    this.ctx = ctx
    this.tries = tries
    this.retry = retry
    this.stream = stream
    this.upstream = upstream
    this.backend = backend
    this.accept = createHash("sha1")
      .update(key + WS_GUID)
      .digest("base64")
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // The client left before the backend answered: stop the handshake.
    this.stream.once("close", () => {
      if (!this.released) controller.abort(new Error("client stream closed"))
    })
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    socket: Duplex,
  ): void {
    // As the exchange's, these callbacks never throw into the backend client: a bug of ours closes both sides.
    try {
      this.#join(statusCode, headers, socket)
    } catch (err) {
      socket.destroy()
      this.fail(err, classifyCode("PC_INTERNAL"))
    }
  }

  #join(statusCode: number, headers: Record<string, string | string[] | undefined>, socket: Duplex): void {
    const stream = this.stream
    const accept = headers["sec-websocket-accept"]
    if (statusCode !== 101 || accept !== this.accept) {
      // RFC 6455 §4.1: a handshake whose accept value is not ours is not a WebSocket; fail it.
      socket.destroy()
      this.#release()
      this.ctx.log.warn(
        { upstream: this.upstream.name, backend: this.backend.id, status: statusCode },
        "websocket (h2): backend answered the upgrade without the right sec-websocket-accept",
      )
      respondH2(stream, 502, "backend WebSocket handshake failed", this.ctx.hsts)
      return
    }
    if (stream.destroyed) {
      socket.destroy()
      this.#release()
      return
    }
    const response: Record<string, string> = { ":status": "200" }
    const protocol = headers["sec-websocket-protocol"]
    const extensions = headers["sec-websocket-extensions"]
    if (typeof protocol === "string") response["sec-websocket-protocol"] = protocol
    if (extensions !== undefined) {
      response["sec-websocket-extensions"] = Array.isArray(extensions) ? extensions.join(", ") : extensions
    }
    stream.respond(response)
    let ended = false
    socket.on("end", () => {
      ended = true
    })
    socket.on("error", () => stream.close(constants.NGHTTP2_CANCEL))
    socket.on("close", () => {
      this.#release()
      // The backend went away without a FIN: RST_STREAM CANCEL toward the client (RFC 8441 §5 maps a TCP reset to
      // it). After a FIN the pipe has ended the stream's side with END_STREAM.
      if (!ended && !stream.destroyed) stream.close(constants.NGHTTP2_CANCEL)
    })
    stream.on("close", () => socket.destroy())
    // pipe: backpressure both ways (a full stream window pauses the socket, a full socket pauses the stream); an
    // END_STREAM from either side ends the other's writable side (RFC 8441 §5: END_STREAM is a TCP FIN).
    socket.pipe(stream)
    stream.pipe(socket)
  }

  onResponseStart(
    _c: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    // The backend refused the upgrade with a normal response (401, 403, 404, ...): its status on the stream.
    this.refused = true
    const stream = this.stream
    if (stream.destroyed) return
    const out: Record<string, string> = { ":status": String(statusCode) }
    const type = headers["content-type"]
    if (typeof type === "string") out["content-type"] = type
    if (this.ctx.hsts) out["strict-transport-security"] = this.ctx.hsts
    stream.respond(out)
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.stream.destroyed) this.stream.write(chunk)
  }

  onResponseEnd(): void {
    this.#release()
    if (!this.stream.destroyed) this.stream.end()
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    const failure = classify(err)
    try {
      // The stream has had nothing yet (its 200 or the backend's refusal end the try).
      if (!this.stream.destroyed && !this.stream.headersSent && this.tries.again(this.backend, failure)) {
        this.#release()
        if (this.retry()) return
      }
    } catch {}
    this.fail(err, failure)
  }

  /** fail answers a failed handshake through the one mapping (respond-error.ts), as websocket.ts does for HTTP/1.1. */
  fail(err: unknown, failure: Failure = classify(err)): void {
    this.#release()
    const stream = this.stream
    try {
      const mapped = errorResponse(failure)
      const fields = {
        upstream: this.upstream.name,
        backend: this.backend.id,
        err: errorMessage(err),
        code: failure.code,
      }
      if (failure.source === "client") this.ctx.log.debug(fields, `websocket (h2): ${mapped.reason}`)
      else this.ctx.log.warn(fields, `websocket (h2): ${mapped.reason}`)
      if (stream.destroyed) return
      // Before the 200 the client gets the mapped status (502, 504, ...); after it, or when the mapping says close,
      // RST_STREAM CANCEL.
      if (stream.headersSent || mapped.close) stream.close(constants.NGHTTP2_CANCEL)
      else respondH2(stream, mapped.status, mapped.body.trim(), this.ctx.hsts)
    } catch {
      if (!stream.destroyed) stream.close(constants.NGHTTP2_INTERNAL_ERROR)
    }
  }

  #release(): void {
    if (!this.released) {
      this.released = true
      this.upstream.release(this.backend)
    }
  }
}

/** respondH2 answers an extended CONNECT stream with a short plain-text status (no backend involved). */
export function respondH2(stream: ServerHttp2Stream, status: number, text: string, hsts: string | undefined): void {
  if (stream.destroyed || stream.headersSent) return
  const body = `${text}\n`
  const out: Record<string, string | number> = {
    ":status": status,
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(body),
  }
  if (hsts) out["strict-transport-security"] = hsts
  stream.respond(out)
  stream.end(body)
}

/**
 * proxyH2WebSocket serves one RFC 8441 extended CONNECT (`:protocol websocket`, already routed by :authority and
 * :path): a GET with Upgrade: websocket to a backend of the upstream, our own Sec-WebSocket-Key and Version 13, the
 * client's Sec-WebSocket-Protocol/-Extensions and other end-to-end headers passed on (RFC 8441 §5).
 */
export function proxyH2WebSocket(
  ctx: ExchangeContext,
  stream: ServerHttp2Stream,
  raw: readonly string[],
  info: ConnectionInfo,
  upstream: Upstream,
  host: string | undefined,
  path: string,
): void {
  if (upstream.config.protocol !== "http1") {
    // RFC 8441 toward an HTTP/2 backend is not done: our WebSocket backends speak HTTP/1.1.
    respondH2(stream, 501, "WebSocket to an HTTP/2 upstream is not supported", ctx.hsts)
    return
  }
  const forwarded = buildRequestHeaders(raw, info, host)
  const headers: string[] = []
  for (let i = 0; i < forwarded.length; i += 2) {
    if (!OWN_HANDSHAKE.has(forwarded[i]!.toLowerCase())) headers.push(forwarded[i]!, forwarded[i + 1]!)
  }
  const key = randomBytes(16).toString("base64")
  headers.push("sec-websocket-key", key, "sec-websocket-version", "13")
  const tries = new UpgradeTries(upstream)
  const attempt = (): boolean => {
    const backend = tries.next()
    if (!backend) return false
    // undici writes Connection: upgrade and Upgrade: websocket itself from opts.upgrade.
    const handler = new H2Upgrade(ctx, stream, upstream, backend, key, tries, attempt)
    try {
      upstream
        .poolFor(backend)
        .dispatch({ path, method: "GET", headers, upgrade: "websocket", body: null }, handler, info)
    } catch (err) {
      // A pool that throws instead of calling onResponseError: ours.
      handler.fail(err, classifyCode("PC_INTERNAL"))
    }
    return true
  }
  if (!attempt()) {
    const mapped = errorResponse(classifyCode("PC_NO_BACKEND"))
    respondH2(stream, mapped.status, mapped.body.trim(), ctx.hsts)
  }
}
