/**
 * @module h2-stream: HTTP/2 requests served on the core stream API, with the few request and response members the
 * exchange uses.
 *
 * Why not node:http2's compatibility API (Http2ServerRequest/Response): it builds a Readable, a socket Proxy and
 * two objects with their listeners for every stream, and ends every response through waitForTrailers and an empty
 * trailers frame. Measured on this machine (one core, h2load -c 10 -m 10, 100-byte body): 35 µs of CPU per request
 * with it, 25 µs on the core API: a third of what the proxied HTTP/2 request costs beyond the backend exchange.
 */
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2"
import { PassThrough, type Readable } from "node:stream"
import type { TLSSocket } from "node:tls"

/** H2Request: one HTTP/2 request's head; its body, if any, is the stream's readable side. */
export class H2Request {
  readonly stream: ServerHttp2Stream
  readonly headers: IncomingHttpHeaders
  /** [name, value, ...] as received, pseudo-headers included (as Node's rawHeaders). */
  readonly rawHeaders: string[]
  readonly method: string
  readonly url: string
  /** The TLS socket under the session (connection info is attached to it). */
  readonly socket: TLSSocket

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: string[], socket: TLSSocket) {
    this.stream = stream
    this.headers = headers
    this.rawHeaders = rawHeaders
    this.method = headers[":method"] ?? "GET"
    this.url = headers[":path"] ?? "/"
    this.socket = socket
  }

  /**
   * bodyStream gives the request body as its own Readable for the backend client. Not the stream itself: undici
   * ends or destroys a body it has sent, and that would take the response side of the stream with it.
   */
  bodyStream(): Readable {
    const body = new PassThrough()
    // Request trailers (RFC 9113 §8.1) arrive before the end: kept on the body, as IncomingMessage keeps them, for a
    // backend client that forwards them (lean-pool.ts chunked bodies, h2-pool.ts).
    this.stream.once("trailers", (trailers: IncomingHttpHeaders) => {
      const out: Record<string, string | string[]> = {}
      for (const name in trailers) if (name.charCodeAt(0) !== 58) out[name] = trailers[name] as string | string[]
      ;(body as PassThrough & { trailers?: Record<string, string | string[]> }).trailers = out
    })
    this.stream.pipe(body)
    return body
  }

  /** on/once read the request body ('data', 'end') from the stream. */
  on(event: "data" | "end", listener: (chunk: Buffer) => void): this {
    this.stream.on(event, listener)
    return this
  }

  once(event: "data" | "end", listener: (chunk: Buffer) => void): this {
    this.stream.once(event, listener)
    return this
  }
}

/** onWantTrailers sends the trailers end() was given (an empty HEADERS frame with END_STREAM when none). */
function onWantTrailers(this: ServerHttp2Stream): void {
  const res = (this as ServerHttp2Stream & { [kResponse]?: H2Response })[kResponse]
  const trailers = res?.takeTrailers() ?? {}
  try {
    this.sendTrailers(trailers)
    stopRequestBody.call(this)
  } catch {
    // A trailer field HTTP/2 cannot carry (e.g. a connection-specific one): end the stream without it.
    if (!this.destroyed) this.close()
  }
}

const kResponse = Symbol("portcullis.h2.response")

/**
 * stopRequestBody: the response is complete while the client is still sending its body (a backend that answered
 * early, e.g. a 413, or one that never reads it). Nobody reads that body any more, so the stream's window would
 * fill and the client would wait forever: RFC 9113 §8.1 lets the server end it with RST_STREAM NO_ERROR, and the
 * client keeps the complete response.
 */
/** respond() options, made once (Node reads them, never keeps them). */
const OPEN = Object.freeze({ endStream: false })
const END_STREAM = Object.freeze({ endStream: true })
const WAIT_FOR_TRAILERS = Object.freeze({ endStream: false, waitForTrailers: true })

/**
 * remoteClosed: the client has sent END_STREAM. A request whose HEADERS carried it (a GET) says so without asking
 * nghttp2: stream.state builds a fresh object of six fields from a native call.
 */
function remoteClosed(stream: ServerHttp2Stream): boolean {
  return stream.endAfterHeaders || stream.state.remoteClose === 1
}

function stopRequestBody(this: ServerHttp2Stream): void {
  // remoteClose: the client sent END_STREAM (a body nobody read still counts as sent).
  if (this.destroyed || this.state.remoteClose === 1) return
  // Read the rest and drop it, as nginx discards a body it answered early: curl 7.88 waits forever after a
  // RST_STREAM NO_ERROR while uploading. A client still sending after DRAIN_MS gets the RST.
  this.unpipe()
  this.removeAllListeners("data")
  this.resume()
  setTimeout(() => {
    if (!this.destroyed && this.state.remoteClose !== 1) this.close(0x0 /* NO_ERROR */)
  }, DRAIN_MS).unref()
}

/** How long a client may go on sending a body nobody reads after its complete response (then RST_STREAM). */
const DRAIN_MS = 5_000

/** H2Response: the response side of one stream, with ServerResponse's names for what the exchange calls. */
export class H2Response {
  readonly stream: ServerHttp2Stream
  statusCode = 200
  /** The request is gRPC: an error the proxy answers itself goes out as a gRPC status (grpc-status.ts). */
  grpc = false
  /** A HEAD request: the response has headers only (RFC 9110 §9.3.2). */
  readonly #head: boolean
  /** The response may end with trailers: respond() waits for them (set before writeHead). */
  #waitForTrailers = false
  #trailers: Record<string, string | string[]> | undefined

  constructor(stream: ServerHttp2Stream, method: string) {
    this.stream = stream
    this.#head = method === "HEAD"
  }

  get headersSent(): boolean {
    return this.stream.headersSent
  }

  get writableFinished(): boolean {
    return this.stream.writableFinished
  }

  /**
   * gone: the client reset or closed the stream, or the session went away. Every write below is then a no-op, as a
   * write to a destroyed socket is: the client left, and nothing sent after that may throw (respond() on a closed
   * stream throws ERR_HTTP2_INVALID_STREAM, which out of a backend client's callback would end the process).
   */
  get gone(): boolean {
    const stream = this.stream
    return stream.destroyed || stream.closed
  }

  /**
   * writeHead sends the response headers; throws (like ServerResponse) on a value HTTP/2 cannot carry. They go to
   * respond() as a flat [name, value, ...] list: for an object Node copies it into a fresh dictionary (no prototype)
   * and walks that with Object.keys; for a list it only lowercases the names (1.5% of W3 in the profile). An array
   * value becomes one field per element, as Node sends it from the object form (and refuses it for a single-value
   * field either way).
   */
  writeHead(status: number, headers: Record<string, string | string[] | number>, endStream = false): this {
    this.statusCode = status
    if (this.gone) return this
    const list: string[] = [":status", String(status)]
    for (const name in headers) {
      const value = headers[name]!
      if (typeof value === "string") list.push(name, value)
      else if (typeof value === "number") list.push(name, String(value))
      else for (let i = 0; i < value.length; i++) list.push(name, value[i]!)
    }
    if (endStream) {
      this.stream.respond(list, END_STREAM)
      if (!remoteClosed(this.stream)) this.stream.once("finish", stopRequestBody)
    } else if (this.#waitForTrailers) {
      this.stream.respond(list, WAIT_FOR_TRAILERS)
      this.stream.once("wantTrailers", onWantTrailers)
    } else this.stream.respond(list, OPEN)
    return this
  }

  /**
   * expectTrailers: the backend may send trailers, so the stream is kept open after the last DATA for a trailing
   * HEADERS frame (empty when none came). Only for HTTP/2 backends: it costs one more frame per response.
   */
  expectTrailers(): void {
    this.#waitForTrailers = true
    ;(this.stream as ServerHttp2Stream & { [kResponse]?: H2Response })[kResponse] = this
  }

  /** trailersToSend: what end() was given, for the 'wantTrailers' handler. */
  takeTrailers(): Record<string, string | string[]> {
    const t = this.#trailers ?? {}
    this.#trailers = undefined
    return t
  }

  /** write sends a piece of body; callback (as ServerResponse's) runs once the stream has taken the bytes or dropped them. */
  write(chunk: Buffer, callback?: () => void): boolean {
    if (this.#head || this.gone) {
      if (callback) queueMicrotask(callback)
      return true
    }
    const ok = callback ? this.stream.write(chunk, callback) : this.stream.write(chunk)
    if (!ok && this.#onDrain !== undefined && !this.#drainHeard) {
      // The stream's 'drain' is listened to from the first write it did not take at once (see on()).
      this.#drainHeard = true
      const onDrain = this.#onDrain
      this.stream.on("drain", () => onDrain.call(this))
    }
    return ok
  }

  end(body?: string | Buffer, trailers?: Record<string, string | string[]>): void {
    const stream = this.stream
    if (this.gone || stream.writableEnded) return
    if (trailers !== undefined) this.#trailers = trailers
    if (!stream.headersSent) stream.respond({ ":status": this.statusCode }, OPEN)
    if (body !== undefined && !this.#head) stream.end(body)
    else stream.end()
    // A client still sending its body must be told to stop once the response is out (see stopRequestBody).
    if (!remoteClosed(stream)) stream.once("finish", stopRequestBody)
  }

  destroy(err?: Error): void {
    if (!this.stream.destroyed) this.stream.destroy(err)
  }

  /** The 'drain' listener, put on the stream only once a write returned false (write()). */
  #onDrain: ((this: H2Response) => void) | undefined
  #drainHeard = false

  /**
   * on: 'drain' and 'close' of the stream, called with this response as `this` (the exchange's handlers read it).
   * 'drain' follows only a write that returned false, so it is listened to from the first such write: a small
   * response never needs it, and each listener added to a stream costs a 'newListener' event in node:http2.
   */
  on(event: "drain" | "close", listener: (this: H2Response) => void): this {
    if (event === "drain") {
      this.#onDrain = listener
      return this
    }
    // A closure, not the response kept on the stream: a property added to Node's stream objects after construction
    // gives them a second shape, and every property read in node:http2's own code on streams turns polymorphic.
    this.stream.on(event, () => listener.call(this))
    return this
  }
}
