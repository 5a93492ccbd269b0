/**
 * @module h1-response: the response side of one HTTP/1.1 request, with ServerResponse's names for what the exchange
 * calls. The head is held until the first piece of body (or the end) so that head and a small body leave in one
 * socket write: one TLS record, one syscall (node:http writes the head as a string and the body through writev).
 * writeHead checks the fields and measures the head; the bytes are written straight into that write's buffer, not
 * built as a string first (a string head was ≈1.4 KB of garbage per request: one piece per `+`, then a flat copy).
 */
import { STATUS_CODES } from "node:http"
import { putField, putLatin1 } from "../../../core/bytes.ts"
import type { H1Request } from "./h1-request.ts"

/** ResponseOwner: the connection a response is written to. */
export interface ResponseOwner {
  /** write: bytes for the client; false: the socket's buffer is full ('drain' follows). */
  write(data: Buffer | string, callback?: () => void): boolean
  /** responseEnded: the response is complete (every byte handed to the socket). */
  responseEnded(res: H1Response): void
  /** destroy: close the connection now. */
  destroy(): void
  /** bodyPending: the request's body is not all read yet. */
  bodyPending(): boolean
  /** The keep-alive idle timeout in whole seconds, for the Keep-Alive header. */
  readonly keepAliveSeconds: number
}

/** A body piece up to this size is copied behind the head (or its chunk framing) into one buffer, one write. */
const COPY_LIMIT = 16 * 1024
/** A field value HTTP/1.1 can carry (RFC 9110 §5.5); anything else would split the response (CR, LF). */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/
const LAST_CHUNK = "0\r\n\r\n"
const noop = (): void => {}

/** dateLine: the Date field of now (RFC 9110 §5.6.7, IMF-fixdate), made once a second. */
let dateText = ""
let dateSecond = 0
function dateLine(): string {
  // A per-process cache of one string (as nginx's ngx_cached_http_time): the date changes once a second.
  const now = Date.now()
  const second = Math.floor(now / 1000)
  if (second !== dateSecond) {
    dateSecond = second
    dateText = `Date: ${new Date(now).toUTCString()}\r\n`
  }
  return dateText
}

/** The status lines made so far, by code: the same few in every response. */
const statusLines: (string | undefined)[] = []
function statusLine(status: number): string {
  let text = statusLines[status]
  if (text === undefined) {
    text = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "unknown"}\r\n`
    if (status >= 100 && status <= 999) statusLines[status] = text
  }
  return text
}

/** The Connection and Keep-Alive fields of a response that keeps the connection, for the last timeout seen. */
let keepAliveFor = -1
let keepAliveText = ""
function keepAliveLines(seconds: number): string {
  if (seconds !== keepAliveFor) {
    keepAliveFor = seconds
    keepAliveText = `Connection: keep-alive\r\nKeep-Alive: timeout=${seconds}\r\n`
  }
  return keepAliveText
}
const CLOSE_LINE = "Connection: close\r\n"
const CHUNKED_LINE = "Transfer-Encoding: chunked\r\n"

/** InvalidHeaderError: a header value the response cannot carry (ServerResponse throws the same). */
class InvalidHeaderError extends TypeError {
  readonly code = "ERR_INVALID_CHAR"
}

/** H1Response: one response; writes go to the connection, which serves requests one at a time. */
export class H1Response {
  readonly owner: ResponseOwner
  readonly req: H1Request
  statusCode = 200
  /** The head was built (writeHead); it may still wait for the first body piece. */
  headersSent = false
  /** Keep the connection open after this response; false before writeHead: "Connection: close". */
  shouldKeepAlive: boolean
  writableEnded = false
  /** The connection was closed before the response was complete. */
  destroyed = false
  /** A 100 Continue was sent. */
  continued = false
  /** The head is measured and waits for the first body piece (or the end) to be written with it. */
  #held = false
  /** The head's parts (see #headInto); #headLength is its size in bytes (every character is one latin1 byte). */
  #status = ""
  #fields: Record<string, string | string[] | number> | undefined = undefined
  #dateLine = ""
  #connectionLine = ""
  #headLength = 0
  #chunked = false
  #noBody = false
  #contentLength = false
  #trailers: Record<string, string | string[]> | undefined = undefined
  #onDrain: ((this: H1Response) => void) | undefined = undefined
  #onClose: ((this: H1Response) => void) | undefined = undefined
  #closed = false

  constructor(owner: ResponseOwner, req: H1Request, keepAlive: boolean) {
    this.owner = owner
    this.req = req
    this.shouldKeepAlive = keepAlive
  }

  /**
   * writeHead checks and measures the status line and fields; they leave with the first body piece or the end, so
   * `headers` must not change after this call (the exchange hands over an object of its own).
   */
  writeHead(status: number, headers: Record<string, string | string[] | number>): this {
    if (this.headersSent || this.destroyed) return this
    this.statusCode = status
    this.#noBody = this.req.method === "HEAD" || status === 204 || status === 304 || status < 200
    const first = statusLine(status)
    let length = first.length + 2 // the empty line that ends the head
    let date = false
    let connection = false
    for (const name in headers) {
      const value = headers[name]!
      if (typeof value === "object") {
        for (let i = 0; i < value.length; i++) length += measure(name, value[i]!)
      } else length += measure(name, typeof value === "number" ? String(value) : value)
      switch (name.length) {
        case 4:
          if (name === "date") date = true
          break
        case 10:
          if (name === "connection") {
            connection = true
            if (String(value).toLowerCase().includes("close")) this.shouldKeepAlive = false
          }
          break
        case 14:
          if (name === "content-length") this.#contentLength = true
          break
      }
    }
    if (!this.#noBody && !this.#contentLength) {
      // RFC 9112 §6.1/§6.3: a body of unknown length is chunked to an HTTP/1.1 client; an HTTP/1.0 one reads
      // until the connection closes.
      if (this.req.minor === 1) this.#chunked = true
      else this.shouldKeepAlive = false
    }
    // A 100-continue request answered without a 100 (RFC 9110 §10.1.1): the client may never send the body, so the
    // connection cannot carry another request.
    if (this.req.expect !== undefined && !this.continued && this.owner.bodyPending()) this.shouldKeepAlive = false
    this.#dateLine = date ? "" : dateLine()
    this.#connectionLine = connection
      ? ""
      : this.shouldKeepAlive
        ? keepAliveLines(this.owner.keepAliveSeconds)
        : CLOSE_LINE
    this.#status = first
    this.#fields = headers
    this.#headLength =
      length + this.#dateLine.length + this.#connectionLine.length + (this.#chunked ? CHUNKED_LINE.length : 0)
    this.#held = true
    this.headersSent = true
    return this
  }

  /** #takeHead: the size of the held head (0: none, or already written); the caller writes it with #headInto. */
  #takeHead(): number {
    if (!this.#held) return 0
    this.#held = false
    return this.#headLength
  }

  /** #headInto writes the held head (#headLength bytes) into out at offset; returns the offset after it. */
  #headInto(out: Buffer, offset: number): number {
    let o = putLatin1(out, offset, this.#status)
    const fields = this.#fields!
    this.#fields = undefined
    for (const name in fields) {
      const value = fields[name]!
      if (typeof value === "object") {
        for (let i = 0; i < value.length; i++) o = putField(out, o, name, value[i]!)
      } else o = putField(out, o, name, typeof value === "number" ? String(value) : value)
    }
    if (this.#dateLine.length > 0) o = putLatin1(out, o, this.#dateLine)
    if (this.#connectionLine.length > 0) o = putLatin1(out, o, this.#connectionLine)
    if (this.#chunked) o = putLatin1(out, o, CHUNKED_LINE)
    out[o++] = 13
    out[o++] = 10
    return o
  }

  hasHeader(name: string): boolean {
    return name === "content-length" && this.#contentLength
  }

  /** addTrailers: fields sent after a chunked body (RFC 9112 §7.1.2). */
  addTrailers(trailers: Record<string, string | string[]>): void {
    this.#trailers = trailers
  }

  /** writeContinue sends 100 Continue (RFC 9110 §15.2.1), once, before the final head. */
  writeContinue(): void {
    if (this.continued || this.headersSent || this.destroyed) return
    this.continued = true
    this.owner.write("HTTP/1.1 100 Continue\r\n\r\n")
  }

  /**
   * write sends a piece of body; callback runs once the socket has taken the bytes (or they were dropped). A small
   * piece is copied behind the head, so its callback (the backend client's release of its read buffer) runs at once:
   * a queued microtask cost an AsyncResource and a bound function per response.
   */
  write(chunk: Buffer, callback?: () => void): boolean {
    if (this.writableEnded || this.destroyed || this.#noBody || chunk.length === 0) {
      if (callback) queueMicrotask(callback)
      return true
    }
    if (!this.headersSent) this.writeHead(this.statusCode, {})
    const headLength = this.#takeHead()
    const framed = this.#chunked
    if (headLength === 0 && !framed) return callback ? this.owner.write(chunk, callback) : this.owner.write(chunk)
    const size = framed ? `${chunk.length.toString(16)}\r\n` : ""
    const prefix = headLength + size.length
    if (chunk.length <= COPY_LIMIT) {
      // One buffer, one write: the head, the chunk-size line when chunked, the piece, and its CRLF when chunked.
      const out = Buffer.allocUnsafe(prefix + chunk.length + (framed ? 2 : 0))
      const o = headLength > 0 ? this.#headInto(out, 0) : 0
      if (framed) putLatin1(out, o, size)
      chunk.copy(out, prefix)
      if (framed) {
        out[prefix + chunk.length] = 13
        out[prefix + chunk.length + 1] = 10
      }
      const ok = this.owner.write(out)
      callback?.()
      return ok
    }
    const head = Buffer.allocUnsafe(prefix)
    const o = headLength > 0 ? this.#headInto(head, 0) : 0
    if (framed) putLatin1(head, o, size)
    this.owner.write(head)
    const ok = callback ? this.owner.write(chunk, callback) : this.owner.write(chunk)
    return framed ? this.owner.write("\r\n") : ok
  }

  /** end completes the response (with a last small body); head, body and the last chunk leave in one write. */
  end(body?: string | Buffer): void {
    if (this.writableEnded || this.destroyed) return
    if (!this.headersSent) this.writeHead(this.statusCode, {})
    if (body !== undefined && body.length > 0 && !this.#noBody) {
      const buf = typeof body === "string" ? Buffer.from(body) : body
      if (!this.#chunked) {
        const headLength = this.#takeHead()
        if (headLength === 0) this.owner.write(buf)
        else {
          const out = Buffer.allocUnsafe(headLength + buf.length)
          buf.copy(out, this.#headInto(out, 0))
          this.owner.write(out)
        }
        this.#ended()
        return
      }
      this.write(buf)
    }
    this.writableEnded = true
    const last = this.#chunked
      ? this.#trailers === undefined
        ? LAST_CHUNK
        : `0\r\n${trailerLines(this.#trailers)}\r\n`
      : ""
    const headLength = this.#takeHead()
    if (headLength > 0) {
      const out = Buffer.allocUnsafe(headLength + last.length)
      const o = this.#headInto(out, 0)
      if (last.length > 0) putLatin1(out, o, last)
      this.owner.write(out)
    } else if (last.length > 0) this.owner.write(last)
    this.#ended()
  }

  #ended(): void {
    this.writableEnded = true
    this.owner.responseEnded(this)
    this.emitClose()
  }

  /** destroy closes the connection (the client sees a broken response, never a short one that looks whole). */
  destroy(_err?: Error): void {
    if (this.destroyed) return
    this.destroyed = true
    this.owner.destroy()
    this.emitClose()
  }

  /** on: 'drain' and 'close', called with this response as `this` (one listener each: the exchange's). */
  on(event: "drain" | "close", listener: (this: H1Response) => void): this {
    if (event === "drain") this.#onDrain = listener
    else this.#onClose = listener
    return this
  }

  /** emitDrain: the socket took what was buffered. */
  emitDrain(): void {
    this.#onDrain?.call(this)
  }

  /** emitClose: the response is over (complete, or the connection closed); once. */
  emitClose(): void {
    if (this.#closed) return
    this.#closed = true
    ;(this.#onClose ?? noop).call(this)
  }
}

/** checkValue refuses a value the response cannot carry (a CR, LF, NUL or other control), as ServerResponse does. */
function checkValue(name: string, value: string): void {
  if (BAD_VALUE.test(value)) throw new InvalidHeaderError(`invalid character in header ${name}`)
}

function line(name: string, value: string): string {
  checkValue(name, value)
  return `${name}: ${value}\r\n`
}

/** measure checks one field and returns the bytes it takes in the head (written later by putField). */
function measure(name: string, value: string): number {
  checkValue(name, value)
  return name.length + value.length + 4
}

function trailerLines(trailers: Record<string, string | string[]>): string {
  let out = ""
  for (const name in trailers) {
    const value = trailers[name]!
    if (typeof value === "object") for (const v of value) out += line(name, v)
    else out += line(name, value)
  }
  return out
}
