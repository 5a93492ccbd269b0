/**
 * @module chunked: a strict decoder for a chunked body (RFC 9112 §7.1), fed the socket's bytes as they come: a
 * backend's response body, or (strict: true) a client's request body, parsed as llhttp does in strict mode.
 */

import { trimOws } from "../../core/ows.ts"
import { BackendProtocolError } from "./response-head.ts"

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** Fields a trailer may not carry (RFC 9110 §6.5.1: framing, routing, connection control): dropped. */
const FORBIDDEN_TRAILERS = new Set([
  "transfer-encoding",
  "content-length",
  "host",
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "upgrade",
  "proxy-connection",
])

const SIZE_LINE = /^([0-9A-Fa-f]{1,12})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/
/**
 * A client's chunk-size line (RFC 9112 §7.1.1): hex digits (leading zeros allowed, the value below 2^48), then
 * extensions `;name` or `;name=token|quoted-string` with no whitespace around them, as llhttp strict takes them.
 */
const STRICT_SIZE_LINE =
  /^0*([0-9A-Fa-f]{1,12})(?:;[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:=(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))?)*$/
/** A chunk-size line or a trailer line longer than this is refused (llhttp has similar limits). */
const MAX_LINE = 8 * 1024
const MAX_TRAILERS = 64 * 1024

const SIZE = 0
const DATA = 1
const DATA_END = 2
const TRAILERS = 3
const DONE = 4

/**
 * ChunkedDecoder: step(buf, pos) consumes bytes from pos and returns where it stopped; after each step `data` holds
 * a piece of body (a view of buf) or undefined, and `done` says the body and its trailers are over.
 */
export class ChunkedDecoder {
  data: Buffer | undefined = undefined
  done = false
  /** The trailer section (RFC 9112 §7.1.2), names lower-cased; undefined when there was none. */
  trailers: Record<string, string | string[]> | undefined = undefined
  #state = SIZE
  #remaining = 0
  #line = ""
  #trailerBytes = 0
  /** A client's body: the strict size line, and errors as a request parse error (the client's fault). */
  readonly #strict: boolean
  readonly #error: (message: string, code: string) => Error

  constructor(strict = false, error: (message: string, code: string) => Error = backendError) {
    this.#strict = strict
    this.#error = error
  }

  step(buf: Buffer, pos: number): number {
    this.data = undefined
    while (pos < buf.length) {
      switch (this.#state) {
        case DATA: {
          const end = Math.min(buf.length, pos + this.#remaining)
          this.#remaining -= end - pos
          if (this.#remaining === 0) this.#state = DATA_END
          this.data = buf.subarray(pos, end)
          return end
        }
        case SIZE:
        case DATA_END:
        case TRAILERS: {
          const nl = buf.indexOf(10, pos)
          const end = nl === -1 ? buf.length : nl + 1
          this.#line += buf.toString("latin1", pos, end)
          if (this.#line.length > MAX_LINE) throw this.#error("chunk line too long", "HPE_CHUNK_EXTENSIONS_OVERFLOW")
          pos = end
          if (nl === -1) return pos
          const line = this.#line
          this.#line = ""
          if (line.length < 2 || line.charCodeAt(line.length - 2) !== 13) {
            throw this.#error("bare LF in chunked framing", "HPE_STRICT")
          }
          this.#onLine(line.slice(0, -2))
          if ((this.#state as number) === DONE) {
            this.done = true
            return pos
          }
          break
        }
        default:
          return pos
      }
    }
    return pos
  }

  #onLine(line: string): void {
    if (this.#state === DATA_END) {
      if (line !== "") throw this.#error("chunk data longer than its size", "HPE_STRICT")
      this.#state = SIZE
      return
    }
    if (this.#state === TRAILERS) {
      this.#trailerBytes += line.length + 2
      if (this.#trailerBytes > MAX_TRAILERS) throw this.#error("trailers too large", "HPE_HEADER_OVERFLOW")
      if (line === "") {
        this.#state = DONE
        return
      }
      // Parsed as strictly as the head: a malformed trailer line is an error, never guessed at.
      const colon = line.indexOf(":")
      const name = colon > 0 ? line.slice(0, colon) : ""
      if (!TOKEN.test(name)) throw this.#error("invalid trailer line", "HPE_INVALID_HEADER_TOKEN")
      const value = trimOws(line.slice(colon + 1))
      if ((this.#strict ? /[^\t\x20-\x7e\x80-\xff]/ : /[\0\r\n]/).test(value))
        throw this.#error("invalid trailer value", "HPE_INVALID_HEADER_TOKEN")
      const lower = name.toLowerCase()
      if (FORBIDDEN_TRAILERS.has(lower)) return
      this.trailers ??= {}
      const trailers = this.trailers
      const existing = trailers[lower]
      if (existing === undefined) trailers[lower] = value
      else if (Array.isArray(existing)) existing.push(value)
      else trailers[lower] = [existing, value]
      return
    }
    const m = (this.#strict ? STRICT_SIZE_LINE : SIZE_LINE).exec(line)
    if (!m) throw this.#error("invalid chunk size", "HPE_INVALID_CHUNK_SIZE")
    const size = Number.parseInt(m[1]!, 16)
    if (size === 0) this.#state = TRAILERS
    else {
      this.#remaining = size
      this.#state = DATA
    }
  }
}

function backendError(message: string, code: string): Error {
  return new BackendProtocolError(message, code)
}
