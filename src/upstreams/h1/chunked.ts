/** @module chunked: a strict decoder for a chunked response body (RFC 9112 §7.1), fed the socket's bytes as they come. */
import { BackendProtocolError } from "./response-head.ts"

const SIZE_LINE = /^([0-9A-Fa-f]{1,12})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/
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
  #state = SIZE
  #remaining = 0
  #line = ""
  #trailerBytes = 0

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
          if (this.#line.length > MAX_LINE)
            throw new BackendProtocolError("chunk line too long", "HPE_CHUNK_EXTENSIONS_OVERFLOW")
          pos = end
          if (nl === -1) return pos
          const line = this.#line
          this.#line = ""
          if (line.length < 2 || line.charCodeAt(line.length - 2) !== 13) {
            throw new BackendProtocolError("bare LF in chunked framing", "HPE_STRICT")
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
      if (line !== "") throw new BackendProtocolError("chunk data longer than its size", "HPE_STRICT")
      this.#state = SIZE
      return
    }
    if (this.#state === TRAILERS) {
      // Trailers are read and dropped (the client side is not told about them, as before with undici's handler).
      this.#trailerBytes += line.length + 2
      if (this.#trailerBytes > MAX_TRAILERS) throw new BackendProtocolError("trailers too large", "HPE_HEADER_OVERFLOW")
      if (line === "") this.#state = DONE
      return
    }
    const m = SIZE_LINE.exec(line)
    if (!m) throw new BackendProtocolError("invalid chunk size", "HPE_INVALID_CHUNK_SIZE")
    const size = Number.parseInt(m[1]!, 16)
    if (size === 0) this.#state = TRAILERS
    else {
      this.#remaining = size
      this.#state = DATA
    }
  }
}
